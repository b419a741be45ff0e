"""Frames kept in frame files exported to LArPix+HDF5 v2.4: the rows storage would have
written, each frame once across files, one run if asked, never over an existing file; and
the frame log of a real producer SIGKILLed mid-run, exported and checked against what the
board sent."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
from daq_procs import Daq
from datagen import expected_rows, make_frames, make_messages
from hypothesis import given
from hypothesis import strategies as st

from larpixdaq.formats.hdf5file import Hdf5File, read_packets
from larpixdaq.formats.rawfile import open_raw
from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline.backlog import Backlog, Pending
from larpixdaq.pipeline.frameexport import Entry, export_frames, plan_frames
from larpixdaq.pipeline.framefiles import Record, read_records, summarise_file
from larpixdaq.pipeline.framelog import FrameLog
from larpixdaq.pipeline.protocol import KIND_DATA, encode_header
from larpixdaq.runcontrol.testing import wait_for


def _log(directory: Path, frames: list, name: str = "producer-1",
         segment_bytes: int = 64 << 20) -> list[Path]:
    log = FrameLog(directory, name, segment_bytes=segment_bytes)
    for h, payload in frames:
        assert log.append(h.epoch, h.seq, encode_header(h), payload)
    paths = log.paths
    log.close()
    return paths


def _spill(directory: Path, frames: list) -> Path:
    """A spill file as the backlog leaves it: with no memory budget every frame after the
    first goes to disk; the first is pushed twice so all of ``frames`` are spilled."""
    backlog = Backlog(0, directory, "producer-1")
    for h, payload in [frames[0], *frames]:
        backlog.push(Pending(h.epoch, h.seq, encode_header(h), payload))
    backlog.close()
    assert backlog.frames_spilled == len(frames)
    return backlog.spill_path


def _data_rows(path: Path) -> np.ndarray:
    rows = read_packets(path)
    return rows[rows["packet_type"] != MESSAGE]


def _texts(path: Path) -> list[str]:
    with Hdf5File(path) as f:
        return [m.decode() for m in f.messages()["message"]]


def test_a_log_and_a_spill_file_holding_the_same_frames_give_each_frame_once(tmp_path):
    a, b = make_messages(1, 40, words=30), make_messages(2, 25, words=20)
    one = make_frames("producer-1", 1, a, run=7, epoch=3)
    two = make_frames("producer-1", 2, b, run=7, epoch=5)
    # The log has both streams, interleaved and in two segments; the spill file 15 frames
    # of stream 3 again, and is given first.
    mixed = [f for pair in zip(one, two, strict=False) for f in pair] + one[len(two):]
    logs = _log(tmp_path / "data", mixed, segment_bytes=20_000)
    assert len(logs) >= 2
    spill = _spill(tmp_path / "spill", one[10:25])
    out = tmp_path / "out.h5"
    s = export_frames([spill, *logs], out)
    assert s.frames_read == len(mixed) + 15 and s.frames_written == len(mixed)
    assert s.frames_duplicate == 15 and s.frames_conflicting == 0
    want = np.concatenate([expected_rows(a, 1), expected_rows(b, 2)])
    assert np.array_equal(_data_rows(out), want)
    assert _texts(out) == ["Beginning run", "Ending run"] * 2
    rows = read_packets(out)
    # The message rows stand where their frames were in each stream: first and last.
    at = np.flatnonzero(rows["packet_type"] == MESSAGE).tolist()
    n_a = len(expected_rows(a, 1))
    assert at == [0, n_a + 1, n_a + 2, len(rows) - 1]
    assert [(d["epoch"], d["seq_first"], d["seq_last"], d["missing"]) for d in s.streams] == [
        (3, 0, 41, 0), (5, 0, 26, 0)]
    assert s.n_rows == len(rows) and s.messages_written == 4
    with Hdf5File(out) as f:
        info = f.info()
    assert info.clean_close and info.run["frames_duplicate"] == 15
    assert not out.with_name("out.h5.part").exists()


def test_a_copy_with_other_bytes_is_left_out_and_counted(tmp_path):
    msgs = make_messages(3, 8, words=10)
    frames = make_frames("producer-1", 1, msgs, run=4, epoch=1)
    (log,) = _log(tmp_path, frames)
    other = make_frames("producer-1", 1, make_messages(9, 8, words=10), run=4, epoch=1)
    spill = _spill(tmp_path / "spill", other[3:5])  # seqs 3, 4 with other payloads
    s = export_frames([log, spill], tmp_path / "out.h5")  # the log first: it wins
    assert s.frames_conflicting == 2 and s.frames_duplicate == 0
    assert np.array_equal(_data_rows(tmp_path / "out.h5"), expected_rows(msgs, 1))


def test_only_the_run_asked_for_is_exported(tmp_path):
    a, b = make_messages(4, 12, words=16), make_messages(5, 9, words=16)
    frames = (make_frames("producer-1", 1, a, run=7, epoch=3)
              + make_frames("producer-1", 1, b, run=8, epoch=4))
    (log,) = _log(tmp_path, frames)
    s = export_frames([log], tmp_path / "run8.h5", run=8)
    assert np.array_equal(_data_rows(tmp_path / "run8.h5"), expected_rows(b, 1))
    assert s.frames_other_runs == len(a) + 2 and s.frames_written == len(b) + 2
    with Hdf5File(tmp_path / "run8.h5") as f:
        assert f.info().run["run_number"] == 8
    with pytest.raises(ValueError, match="no frame to export of run 9"):
        export_frames([log], tmp_path / "run9.h5", run=9)
    assert not (tmp_path / "run9.h5").exists()


def test_torn_and_damaged_records_are_reported_and_the_rest_exported(tmp_path):
    msgs = make_messages(6, 20, words=12)
    frames = make_frames("producer-1", 1, msgs, run=2, epoch=8, markers=False)
    (log,) = _log(tmp_path, frames)
    data = bytearray(log.read_bytes())
    at = np.cumsum([0] + [8 + len(encode_header(h)) + len(p) for h, p in frames]).tolist()
    data[at[5] + 8:at[5] + 9] = b"\xc1"  # record 5's header unreadable
    log.write_bytes(bytes(data[:-7]))  # the last record torn
    s = export_frames([log], tmp_path / "out.h5")
    assert [d["offset"] for d in s.damaged] == [at[5]] and s.damaged_count == 1
    assert [t["offset"] for t in s.torn_tails] == [at[19]]
    kept = [m for i, m in enumerate(msgs) if i not in (5, 19)]
    assert np.array_equal(_data_rows(tmp_path / "out.h5"), expected_rows(kept, 1))
    assert s.streams == [{"source": "producer-1", "epoch": 8, "seq_first": 0, "seq_last": 18,
                          "frames": 18, "missing": 1}]


def test_an_existing_output_is_never_replaced(tmp_path):
    frames = make_frames("producer-1", 1, make_messages(7, 3, words=4), run=1, epoch=1)
    (log,) = _log(tmp_path, frames)
    out = tmp_path / "out.h5"
    out.write_bytes(b"someone's analysis")
    with pytest.raises(FileExistsError):
        export_frames([log], out)
    assert out.read_bytes() == b"someone's analysis"
    # A partial file of an export cut short is not written over either.
    out2 = tmp_path / "out2.h5"
    (tmp_path / "out2.h5.part").write_bytes(b"left by a kill")
    with pytest.raises(FileExistsError):
        export_frames([log], out2)
    assert not out2.exists() and (tmp_path / "out2.h5.part").read_bytes() == b"left by a kill"
    with pytest.raises(ValueError, match="not a producer frame log"):
        export_frames([tmp_path / "out.h5"], tmp_path / "out3.h5")


# -- the plan, pure --------------------------------------------------------------------------

entries = st.lists(st.builds(
    Entry, source=st.sampled_from(["a", "b"]), epoch=st.integers(0, 2), seq=st.integers(0, 6),
    file=st.integers(0, 2), offset=st.integers(0, 3), length=st.just(8),
    kind=st.just(KIND_DATA), run=st.integers(1, 2), io_group=st.just(1), t_recv=st.just(0.0),
    digest=st.integers(0, 1)), max_size=40)


@given(entries, st.sampled_from([None, 1, 2]))
def test_the_plan_takes_each_place_once_in_stream_order_the_first_file_winning(es, run):
    plan = plan_frames(es, run)
    mine = [e for e in es if run is None or e.run == run]
    keys = [(e.source, e.epoch, e.seq) for e in plan.frames]
    assert keys == sorted({(e.source, e.epoch, e.seq) for e in mine})
    for e in plan.frames:
        copies = [c for c in mine if (c.source, c.epoch, c.seq) == (e.source, e.epoch, e.seq)]
        assert (e.file, e.offset) == min((c.file, c.offset) for c in copies)
    differ = sum(1 for c in mine for e in plan.frames
                 if (c.source, c.epoch, c.seq) == (e.source, e.epoch, e.seq)
                 and c.digest != e.digest)
    assert plan.conflicting == differ
    assert plan.duplicates + plan.conflicting + len(plan.frames) == len(mine)
    assert plan.other_runs == len(es) - len(mine)


# -- a real producer, SIGKILLed --------------------------------------------------------------


def test_the_frame_log_of_a_sigkilled_producer_exports_what_its_board_sent(tmp_path):
    """Storage is stopped, so nothing is acknowledged and the producer's frame log grows;
    the producer is SIGKILLed and not started again. Its log, read back, holds the messages
    its board recording holds from where the log begins, in order, each once."""
    daq = Daq(tmp_path, boards=1, rate=50_000)
    try:
        daq.start_run(rejoin_grace=60)
        wait_for(lambda: list(daq.tmp.glob("sent-1-*.raw")), timeout=20)
        (sent,) = daq.tmp.glob("sent-1-*.raw")
        run_number = int(sent.stem.split("-")[2])
        daq.storage.send(signal.SIGSTOP)
        try:
            logs = lambda: sorted(daq.data.glob("framelog-producer-1-*.bin"))  # noqa: E731
            wait_for(lambda: sum(p.stat().st_size for p in logs()) > 2 << 20, timeout=30)
            (producer,) = (p for p in daq.procs if p.args[0] == "producer")
            producer.stop(signal.SIGKILL)
            daq.procs.remove(producer)
        finally:
            daq.storage.send(signal.SIGCONT)
        paths = logs()
        with open_raw(sent) as f:
            recorded, _ = f.read()
    finally:
        daq.close()
    summaries = [summarise_file(p) for p in paths]
    assert all(s["damaged"]["count"] == 0 for s in summaries)
    logged = [r for p in paths for r in read_records(p) if isinstance(r, Record)]
    data = [r.payload for r in logged if r.header.kind == KIND_DATA]
    assert {r.header.run for r in logged} == {run_number}
    # Storage had acknowledged a part before it stopped: the log begins inside the
    # recording, then holds it to its end (and at most one read more, logged before it was
    # recorded when the kill came).
    start = recorded.index(data[0])
    assert data[:len(recorded) - start] == recorded[start:]
    assert len(data) - (len(recorded) - start) <= 2
    out = tmp_path / "dead.h5"
    s = export_frames(paths, out, run=run_number)
    assert s.frames_written == len(logged) and s.decode_errors == {}
    assert np.array_equal(_data_rows(out), expected_rows(data, 1))
    recorded_rows = expected_rows(recorded[start:], 1)
    assert np.array_equal(_data_rows(out)[:len(recorded_rows)], recorded_rows)
    words = sum(s_["data_words"] for s_ in summaries)
    assert words == sum((len(m) - 8) // 16 for m in data)
