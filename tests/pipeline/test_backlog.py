"""The producer's backlog: memory up to a budget, then a spill file read back in order."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.pipeline.backlog import Backlog, Pending


def _item(seq: int, size: int = 100) -> Pending:
    return Pending(5, seq, b"h%d" % seq, bytes([seq % 256]) * size, size // 16)


def test_beyond_the_budget_frames_spill_to_disk_and_come_back_in_order(tmp_path):
    b = Backlog(1000, tmp_path, "p")
    for seq in range(30):
        b.push(_item(seq))
    assert b.mem_bytes <= 1000 and b.frames_spilled == 20 and len(b) == 30
    spill = b.spill_path
    assert spill.exists() and spill.stat().st_size >= 20 * 100
    got = []
    for seq in range(30, 40):  # more arrive while the first ones leave: behind the spill
        got.append(b.pop().seq)
        b.push(_item(seq))
    while b.peek() is not None:
        item = b.pop()
        assert item.payload == bytes([item.seq % 256]) * 100 and item.header == b"h%d" % item.seq
        got.append(item.seq)
    assert got == list(range(40))
    assert b.frames_replayed == b.frames_spilled and not spill.exists()


def test_without_a_spill_directory_everything_stays_in_memory(tmp_path):
    b = Backlog(100, None, "p")
    for seq in range(5):
        b.push(_item(seq))
    assert b.frames_spilled == 0 and b.mem_bytes == 500
    assert [p.seq for p in b.drain()] == list(range(5))


def test_a_spill_file_that_cannot_be_written_keeps_frames_in_memory_counted(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    b = Backlog(100, blocker / "spill", "p")
    for seq in range(4):
        b.push(_item(seq))
    assert b.spill_errors == 3 and len(b) == 4
    assert [p.seq for p in b.drain()] == list(range(4))


def test_frames_put_back_go_first(tmp_path):
    b = Backlog(250, tmp_path, "p")
    for seq in range(3, 8):
        b.push(_item(seq))
    b.push_front([_item(0), _item(1), _item(2)])
    assert [p.seq for p in b.drain()] == list(range(8))


def test_a_file_left_by_another_process_is_not_touched(tmp_path):
    theirs = tmp_path / f"spill-p-{os.getpid()}.bin"
    theirs.write_bytes(b"someone else's")
    b = Backlog(100, tmp_path, "p")
    for seq in range(3):
        b.push(_item(seq))
    assert theirs.read_bytes() == b"someone else's"
    assert b.spill_errors == 2 and [p.seq for p in b.drain()] == [0, 1, 2]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["push", "pop"]), st.integers(1, 300)), max_size=80),
       st.integers(0, 1000))
def test_any_mix_of_pushes_and_pops_keeps_the_order(tmp_path_factory, ops, budget):
    b = Backlog(budget, tmp_path_factory.mktemp("spill"), "p")
    seq, out = 0, []
    for op, size in ops:
        if op == "push":
            b.push(_item(seq, size))
            seq += 1
        elif b.peek() is not None:
            out.append(b.pop().seq)
        assert b.mem_bytes <= max(budget, 0) + 300 * 2 or b.spill_errors
    out += [p.seq for p in b.drain()]
    assert out == list(range(seq))
    assert b.frames_replayed == b.frames_spilled
    b.close()
