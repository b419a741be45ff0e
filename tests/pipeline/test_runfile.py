import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from datagen import expected_rows, make_frames, make_messages
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.formats.hdf5file import Hdf5File, verify_checksum
from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline.runfile import (
    RunFileExists,
    RunWriter,
    StorageError,
    read_run_packets,
)
from larpixdaq.pipeline.runjournal import read_journal, unfinished_runs


def _chip_rows(rows, io_group):
    return rows[(rows["packet_type"] != MESSAGE) & (rows["io_group"] == io_group)]


def test_two_streams_written_in_order_with_markers(tmp_path):
    m1, m2 = make_messages(1, 20), make_messages(2, 15)
    f1, f2 = make_frames("a", 1, m1), make_frames("b", 2, m2)
    w = RunWriter(tmp_path, 42, {"run_type": "physics", "comment": "hello"})
    for i in range(0, 22, 5):
        w.add(f1[i:i + 5] + f2[i:i + 5])
        w.commit()
    summary = w.close()
    assert [Path(p).name for p in summary["files"]] == ["run-000042.h5"]
    rows = read_run_packets(summary["files"])
    assert np.array_equal(_chip_rows(rows, 1), expected_rows(m1, 1))
    assert np.array_equal(_chip_rows(rows, 2), expected_rows(m2, 2))
    with Hdf5File(summary["files"][0]) as f:
        texts = [m.decode() for m in f.messages()["message"]]
        info = f.info()
    assert texts.count("Beginning run") == 2 and texts.count("Ending run") == 2
    assert info.clean_close
    assert info.run["run_number"] == 42 and info.run["comment"] == "hello"
    assert info.run["packets_written"] == len(rows) == summary["counters"]["packets_written"]
    assert info.run["packets_lost"] == 0 and info.run["streams_unfinished"] == 0
    assert verify_checksum(summary["files"][0])
    assert read_journal(tmp_path / "run-000042.journal")[-1]["closed"]
    assert unfinished_runs(tmp_path) == []


def test_duplicates_dropped_and_holes_counted(tmp_path):
    msgs = make_messages(3, 10, words=10)
    frames = make_frames("a", 1, msgs, markers=False)
    w = RunWriter(tmp_path, 1)
    w.add(frames[:6])
    w.add(frames[4:6] + frames[8:])  # two repeats, then frames 6 and 7 never arrive
    c = w.close()["counters"]
    assert c["frames_duplicate"] == 2
    assert c["frames_missing"] == 2
    assert c["packets_lost"] == 20  # two frames of ten words
    rows = read_run_packets([tmp_path / "run-000001.h5"])
    assert np.array_equal(rows, expected_rows(msgs[:6] + msgs[8:], 1))


def test_rollover_into_parts(tmp_path):
    msgs = make_messages(4, 40, words=100)
    w = RunWriter(tmp_path, 7, part_bytes=36 * 1000, chunk_rows=256)
    frames = make_frames("a", 3, msgs)
    for i in range(0, len(frames), 4):
        w.add(frames[i:i + 4])
        w.commit()
    files = w.close()["files"]
    assert len(files) > 3
    assert Path(files[1]).name == "run-000007-p001.h5"
    rows = read_run_packets(files)
    assert np.array_equal(_chip_rows(rows, 3), expected_rows(msgs, 3))
    for p in files:
        assert verify_checksum(p)


def test_decode_errors_counted_by_kind(tmp_path):
    msgs = make_messages(5, 3, words=4)
    bad = [msgs[0][:-3], b"?" + msgs[1][1:], b"D12"]
    frames = make_frames("a", 1, bad + [msgs[2]], markers=False)
    w = RunWriter(tmp_path, 2)
    w.add(frames)
    c = w.close()["counters"]
    assert c["decode_errors_truncated_word"] == 1
    assert c["decode_errors_not_data_message"] == 1
    assert c["decode_errors_truncated_header"] == 1
    assert c["decode_errors"] == 4  # the truncated message also miscounts its words


def test_configs_frame_of_partial_rows_is_rejected_and_counted(tmp_path):
    from larpixdaq.formats.rows import CONFIGS_DTYPE
    from larpixdaq.pipeline.protocol import FrameHeader

    msgs = make_messages(6, 2, words=4)
    frames = make_frames("a", 1, msgs, markers=False)
    good = np.zeros(2, CONFIGS_DTYPE).tobytes()
    frames.insert(1, (FrameHeader("a", 7, 1, 1, 1, 2.0, "configs", 4), good[:-5]))
    frames.insert(2, (FrameHeader("a", 7, 2, 1, 1, 2.0, "configs", 4), good))
    frames = [(dataclasses.replace(h, seq=i), p) for i, (h, p) in enumerate(frames)]
    w = RunWriter(tmp_path, 3)
    w.add(frames)
    c = w.close()["counters"]
    assert c["decode_errors_configs_size"] == 1
    assert c["configs_written"] == 2
    assert c["frames_written"] == 3  # two data frames and the whole configs frame
    with Hdf5File(w.files[0]) as f:
        assert len(f.configs()) == 2
        assert f.info().run["decode_errors_configs_size"] == 1


def test_info_text_the_file_cannot_hold_whole_is_counted(tmp_path):
    from larpixdaq.pipeline.protocol import FrameHeader

    texts = [b"Beginning run", b"x" * 70, b"bad \xff byte", b"Ending run"]
    frames = [(FrameHeader("a", 7, i, 1, 1, 1.0, "info", 0), t) for i, t in enumerate(texts)]
    w = RunWriter(tmp_path, 4)
    w.add(frames)
    c = w.close()["counters"]
    assert c["messages_written"] == 4 and c["messages_truncated"] == 2
    with Hdf5File(w.files[0]) as f:
        assert f.messages()["message"][1] == b"x" * 64
        assert f.info().run["messages_truncated"] == 2


def test_unwritable_directory_is_a_clear_error(tmp_path):
    # Tests run as root here, where permission bits do not stop writes; a path through a
    # regular file cannot be written by anyone.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot write run 3 in .*not-a-dir.*writable"):
        RunWriter(blocker / "data", 3)


_KILLED_WRITER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from datagen import make_frames, make_messages
from larpixdaq.pipeline.runfile import RunWriter
frames = make_frames("a", 1, make_messages(9, 60, words=200))
w = RunWriter({d!r}, 5, chunk_rows=512)
w.add(frames[:20]); w.commit()
w.add(frames[20:45])  # several whole chunks reach the file, no commit
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_resume_after_kill_writes_every_frame_once(tmp_path):
    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER.format(tests=tests,
                                                                       d=str(tmp_path))])
    assert proc.returncode == -9
    assert unfinished_runs(tmp_path) == [5]
    msgs = make_messages(9, 60, words=200)
    frames = make_frames("a", 1, msgs)
    w = RunWriter(tmp_path, 5, chunk_rows=512)
    assert w.committed() == {("a", 7): 19}
    w.add(frames[10:])  # the aggregator resends everything it kept
    summary = w.close()
    c = summary["counters"]
    assert c["restarts"] == 1 and c["frames_duplicate"] == 10 and c["packets_lost"] == 0
    names = [Path(p).name for p in summary["files"]]
    assert names == ["run-000005.h5", "run-000005-p001.h5"]
    rows = read_run_packets(summary["files"])
    assert np.array_equal(_chip_rows(rows, 1), expected_rows(msgs, 1))
    assert c["packets_written"] == len(rows)
    with Hdf5File(summary["files"][0]) as f:
        assert f.info().header["recovered"] > 0 and f.info().clean_close
    # The repaired part is complete: its checksum covers exactly the rows it kept, and
    # like every finished part it is read-only.
    for p in summary["files"]:
        assert verify_checksum(p) is True
        assert Path(p).stat().st_mode & 0o777 == 0o444


_FULL_DISK = """
import json, os, resource, signal, sys
sys.path.insert(0, {tests!r})
from datagen import make_frames, make_messages
from larpixdaq.pipeline.runfile import RunWriter, StorageError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
# A file size limit fails writes with EFBIG exactly as a full disk fails them with ENOSPC.
resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, 3 << 20))
frames = make_frames("a", 1, make_messages(1, 200, words=500), markers=False)
w = RunWriter({d!r}, 9, chunk_rows=4096)
committed, err = 0, None
try:
    for i in range(0, 200, 5):
        w.add(frames[i:i + 5])
        w.commit()
        committed = w.counters.packets_written
except StorageError as exc:
    err = str(exc)
w.abort()
print(json.dumps({{"error": err, "committed": committed}}), flush=True)
os._exit(0)  # the HDF5 library still holds the broken file; do not let teardown touch it
"""


def test_full_disk_fails_clearly_and_keeps_the_committed_rows_readable(tmp_path):
    import json

    tests = str(Path(__file__).resolve().parent)
    out = subprocess.run([sys.executable, "-c", _FULL_DISK.format(tests=tests, d=str(tmp_path))],
                         capture_output=True, text=True, timeout=60)
    result = json.loads(out.stdout)
    assert result["error"].startswith("writing run 9 to ")
    assert "File too large" in result["error"]
    rows = read_run_packets([tmp_path / "run-000009.h5"])
    assert len(rows) == result["committed"] > 0
    msgs = make_messages(1, 200, words=500)
    expected = expected_rows(msgs, 1)
    assert np.array_equal(rows, expected[: len(rows)])


_MSGS = {g: make_messages(20 + g, 12, words=3) for g in (1, 2)}
_FRAMES = {g: make_frames(f"s{g}", g, _MSGS[g], markers=False) for g in (1, 2)}


@st.composite
def deliveries(draw):
    """Batches as the aggregator may deliver them: per stream in order, any part of what was
    already sent may come again (a resend after a restart), never a hole."""
    sent = {1: 0, 2: 0}
    batches = []
    for _ in range(draw(st.integers(1, 8))):
        batch = []
        for g in draw(st.permutations([1, 2])):
            start = draw(st.integers(0, sent[g]))
            stop = draw(st.integers(start, min(len(_FRAMES[g]), sent[g] + 4)))
            batch += _FRAMES[g][start:stop]
            sent[g] = max(sent[g], stop)
        batches.append(batch)
    return batches, sent


@settings(max_examples=60, deadline=None)
@given(deliveries())
def test_any_redelivery_writes_each_frame_once(tmp_path_factory, plan):
    batches, sent = plan
    w = RunWriter(tmp_path_factory.mktemp("run"), 1, chunk_rows=16)
    for batch in batches:
        w.add(batch)
        w.commit()
    summary = w.close()
    rows = read_run_packets(summary["files"])
    for g in (1, 2):
        assert np.array_equal(_chip_rows(rows, g), expected_rows(_MSGS[g][: sent[g]], g))
    c = summary["counters"]
    assert c["frames_missing"] == 0 and c["packets_lost"] == 0
    assert c["frames_written"] == sent[1] + sent[2]
    assert c["frames_written"] + c["frames_duplicate"] == sum(map(len, batches))


def test_a_resume_cut_short_leaves_no_empty_part(tmp_path):
    msgs = make_messages(12, 6, words=20)
    frames = make_frames("a", 1, msgs)
    w = RunWriter(tmp_path, 8)
    w.add(frames[:4])
    w.commit()
    w._writer.close(clean=False)  # the process dies here: nothing more reaches the files
    w._journal.close()
    again = RunWriter(tmp_path, 8)  # resumes...
    again.abort()  # ...and is stopped before any frame arrived
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == ["run-000008.h5"]
    last = RunWriter(tmp_path, 8)
    last.add(frames)
    files = last.close()["files"]
    assert [Path(p).name for p in files] == ["run-000008.h5", "run-000008-p001.h5"]
    rows = read_run_packets(files)
    assert np.array_equal(_chip_rows(rows, 1), expected_rows(msgs, 1))


def _run_with_configs(tmp_path, run, start_threshold, end_threshold):
    """A run file whose configs table holds a start and an end snapshot of two chips."""
    from larpixdaq.formats.chipconfig import ChipConfig
    from larpixdaq.formats.rows import CONFIGS_DTYPE
    from larpixdaq.pipeline.protocol import FrameHeader

    def snapshot(threshold, stamp):
        rows = np.zeros(2, CONFIGS_DTYPE)
        rows["timestamp"] = stamp
        rows["io_group"], rows["io_channel"], rows["chip_id"] = 1, 1, [11, 12]
        cfg = ChipConfig()
        cfg["threshold_global"] = threshold
        rows["registers"][:, :237] = cfg.to_registers()
        return rows.tobytes()

    frames = [(FrameHeader("a", 7, 0, 0, 0, 1.0, "configs", 0), snapshot(start_threshold, run)),
              (FrameHeader("a", 7, 1, 0, 0, 2.0, "configs", 0), snapshot(end_threshold, 99))]
    w = RunWriter(tmp_path / str(run), run)
    w.add(frames)
    w.close()
    with Hdf5File(w.files[0]) as f:
        return f.info().run["config_hash"]


def test_the_run_records_the_hash_of_the_configuration_it_started_with(tmp_path):
    a = _run_with_configs(tmp_path, 1, 40, 40)
    assert len(a) == 64 and int(a, 16) >= 0
    # Same start configuration (taken at another time, ended differently): same hash.
    assert _run_with_configs(tmp_path, 2, 40, 77) == a
    # One register different at the start: another hash.
    assert _run_with_configs(tmp_path, 3, 41, 40) != a


def test_an_operator_given_config_hash_is_kept(tmp_path):
    w = RunWriter(tmp_path, 4, {"config_hash": "abc123"})
    w.close()
    with Hdf5File(w.files[0]) as f:
        assert f.info().run["config_hash"] == "abc123"


def test_finished_parts_and_journal_are_read_only(tmp_path):
    frames = make_frames("a", 1, make_messages(4, 40, words=200))
    w = RunWriter(tmp_path, 6, part_bytes=2000 * 36, chunk_rows=512)
    for i in range(0, len(frames), 8):
        w.add(frames[i:i + 8])
        w.commit()
        if i == 0:
            assert w.path.stat().st_mode & 0o222, "the part being written is writable"
    files = [Path(p) for p in w.close()["files"]]
    assert len(files) > 2  # rolled over, so parts were finished before the close too
    for p in [*files, tmp_path / "run-000006.journal"]:
        assert p.stat().st_mode & 0o777 == 0o444, p
    assert all(verify_checksum(p) for p in files)


def test_a_run_whose_file_exists_without_its_journal_is_refused_untouched(tmp_path):
    # Run 7 was written and closed; then its journal went (deleted by hand, or another
    # DAQ with a fresh run database hands out 7 again).
    w = RunWriter(tmp_path, 7)
    w.add(make_frames("a", 1, make_messages(5, 10, words=20)))
    first = w.close()["files"][0]
    (tmp_path / "run-000007.journal").unlink()
    before = Path(first).read_bytes()
    stat = Path(first).stat()
    with pytest.raises(RunFileExists, match=r"run 7: run-000007.h5 already in .*not touching"):
        RunWriter(tmp_path, 7)
    after = Path(first).stat()
    assert Path(first).read_bytes() == before
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert not (tmp_path / "run-000007.journal").exists()  # no journal claims it now
    assert unfinished_runs(tmp_path) == []


def test_resume_takes_a_new_part_name_and_leaves_a_file_it_did_not_write(tmp_path):
    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER.format(tests=tests,
                                                                       d=str(tmp_path))])
    assert proc.returncode == -9
    foreign = tmp_path / "run-000005-p001.h5"
    foreign.write_bytes(b"somebody else's file")
    msgs = make_messages(9, 60, words=200)
    frames = make_frames("a", 1, msgs)
    w = RunWriter(tmp_path, 5, chunk_rows=512)
    w.add(frames[10:])
    summary = w.close()
    assert foreign.read_bytes() == b"somebody else's file"
    names = [Path(p).name for p in summary["files"]]
    assert names == ["run-000005.h5", "run-000005-p002.h5"]
    assert summary["counters"]["part_names_taken"] == 1
    rows = read_run_packets(summary["files"])
    assert np.array_equal(_chip_rows(rows, 1), expected_rows(msgs, 1))


def test_a_part_the_journal_names_but_never_committed_is_removed_on_resume(tmp_path):
    # Killed after a rollover created the next part and before the commit that names it:
    # that part is this run's own (the journal says it opened it) and holds nothing
    # acknowledged, so it goes; the data comes again.
    w = RunWriter(tmp_path, 8, chunk_rows=512)
    frames = make_frames("a", 1, make_messages(6, 20, words=50))
    w.add(frames[:10])
    w.commit()
    w._writer.flush()
    w._open_part(1)  # what a rollover does before the commit line that names the new part
    own = w.path
    assert own.exists()
    w._writer.close(clean=False)
    w._journal.close()
    w.closed = True
    again = RunWriter(tmp_path, 8, chunk_rows=512)
    assert not own.exists()
    again.add(frames)
    summary = again.close()
    assert summary["counters"]["frames_duplicate"] == 10
    assert [Path(p).name for p in summary["files"]] == ["run-000008.h5", "run-000008-p002.h5"]


_FILL_DISK = """
import json, os, sys
sys.path.insert(0, {tests!r})
from datagen import make_frames, make_messages
from larpixdaq.pipeline.runfile import RunWriter, StorageError
frames = make_frames("a", 1, make_messages(1, 600, words=1000), markers=False)
if {raced}:  # another program takes the room between the check and the write
    RunWriter._check_room = lambda self, need: None
w = RunWriter({d!r}, 11, reserve_bytes=1 << 20)
committed, err = 0, None
try:
    for i in range(0, len(frames), 10):
        w.add(frames[i:i + 10])
        w.commit()
        committed = w.counters.packets_written
except StorageError as exc:
    err = f"{{type(exc).__name__}}: {{exc}}"
w.abort()
print(json.dumps({{"error": err, "committed": committed, "held": w.held,
                  "written": w.counters.packets_written}}), flush=True)
os._exit(0)  # a library that met the full disk cannot even be shut down cleanly
"""


def _fill_with_a_writer(small_disk, raced):
    tests = str(Path(__file__).resolve().parent)
    code = _FILL_DISK.format(tests=tests, d=str(small_disk.path), raced=raced)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def _rows_elsewhere(path):
    """The part's rows, read by a fresh process with h5py."""
    code = "import h5py, sys; print(h5py.File(sys.argv[1], 'r')['packets'].shape[0])"
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-500:]
    return int(out.stdout)


def test_the_reserve_stops_writing_before_the_disk_is_full(small_disk):
    result = _fill_with_a_writer(small_disk, raced=False)
    assert result["error"].startswith("DiskFull: writing run 11 to ")
    assert "no space left on device" in result["error"] and not result["held"]
    part = small_disk.path / "run-000011.h5"
    # Cut back to the commit, and finished: checksum, clean-close mark, read-only.
    assert _rows_elsewhere(part) == result["committed"] == result["written"] > 0
    assert verify_checksum(part) is True
    assert part.stat().st_mode & 0o777 == 0o444


def test_a_part_the_library_cannot_close_on_a_full_disk_still_opens_elsewhere(small_disk):
    result = _fill_with_a_writer(small_disk, raced=True)
    assert "No space left on device" in result["error"]
    # The library still held the part when the writer gave up on it; its write flags were
    # cleared all the same, so any other program reads every committed row.
    assert result["held"] is True
    assert _rows_elsewhere(small_disk.path / "run-000011.h5") >= result["committed"] > 0


def test_a_frame_sent_again_is_a_duplicate_other_bytes_under_its_seq_a_conflict(tmp_path):
    msgs = make_messages(5, 6, words=10)
    frames = make_frames("a", 1, msgs, markers=False)
    w = RunWriter(tmp_path, 1)
    w.add(frames[:4])
    forged_payload = make_messages(99, 1, words=10)[0]
    w.add([frames[2],  # the same frame again: a resend
           (frames[3][0], forged_payload)])  # other bytes under seq 3: a conflict
    w.add(frames[4:])
    summary = w.close()
    c = summary["counters"]
    assert c["frames_duplicate"] == 1
    assert c["frames_conflicting"] == 1
    assert c["frames_missing"] == 0 and c["packets_lost"] == 0
    # The file holds what was written first under each seq, nothing of the forged frame.
    assert np.array_equal(_chip_rows(read_run_packets(summary["files"]), 1),
                          expected_rows(msgs, 1))


def test_a_commit_is_on_the_disk_before_it_is_acknowledged(tmp_path, synced):
    """What :meth:`RunWriter.commit` returns is acknowledged upstream and forgotten there, so
    the part's rows must be on the disk itself before the journal line that claims them is,
    and that line before the commit returns; a new file's name is synced into its directory."""
    frames = make_frames("a", 1, make_messages(1, 12))
    w = RunWriter(tmp_path, 5)
    part, journal = tmp_path / "run-000005.h5", tmp_path / "run-000005.journal"
    assert synced.paths == [journal, tmp_path]  # part 0 and the journal are named durably
    synced.clear()
    w.add(frames[:6])
    w.commit()
    assert synced.paths == [part, journal]
    synced.clear()
    w.commit()  # nothing new: nothing to wait for
    assert synced.paths == []
    w.add(frames[6:])
    summary = w.close()
    # the last commit, then the sealed part (clean-close mark, checksum), then the closed line
    assert synced.paths == [part, journal, part, journal]
    assert read_journal(journal)[-1]["closed"]
    assert summary["counters"]["frames_written"] == len(frames)


def test_a_new_part_is_synced_when_the_last_one_is_finished(tmp_path, synced):
    frames = make_frames("a", 1, make_messages(1, 40, words=200))
    w = RunWriter(tmp_path, 6, part_bytes=36 * 1000, chunk_rows=256)
    journal = tmp_path / "run-000006.journal"
    synced.clear()
    for frame in frames:
        w.add([frame])
        w.commit()
    w.close()
    parts = [tmp_path / f"run-000006{'' if k == 0 else f'-p{k:03d}'}.h5" for k in range(3)]
    assert all(p.exists() for p in parts[:2])
    for earlier, later in zip(parts, parts[1:], strict=False):
        if not later.exists():
            break
        # the finished part is on the disk, then its successor is named in the directory,
        # before the successor's first commit
        finished = max(i for i, p in enumerate(synced.paths) if p == earlier)
        # its last commit (rows, journal line), once more closed and sealed, and only then
        # the journal line naming the successor and the directory entry
        assert synced.paths[finished - 2:finished + 3] == [earlier, journal, earlier, journal,
                                                           tmp_path]
        assert synced.paths.index(later) > finished + 2


def test_without_durable_nothing_waits_for_the_disk(tmp_path, synced):
    frames = make_frames("a", 1, make_messages(1, 12))
    w = RunWriter(tmp_path, 7, durable=False)
    w.add(frames)
    w.commit()
    summary = w.close()
    assert synced.paths == []
    assert read_run_packets(summary["files"]).size > 0


def _when_ended(w: RunWriter, timeout: float = 30.0) -> dict:
    """What :meth:`RunWriter.end_commit` returns once the commit under way has ended."""
    deadline = time.monotonic() + timeout
    while (ended := w.end_commit()) is None:
        assert time.monotonic() < deadline, "the commit's sync never ended"
        time.sleep(0.005)
    return ended


def test_a_started_commit_is_acknowledged_only_once_its_rows_are_on_the_disk(tmp_path,
                                                                               synced):
    frames = make_frames("a", 1, make_messages(4, 30))  # seq 0..31 with the markers
    w = RunWriter(tmp_path, 8)
    journal = tmp_path / "run-000008.journal"
    part = tmp_path / "run-000008.h5"
    w.add(frames[:10])
    assert w.start_commit() is None  # flushed; its rows go to the disk on another thread
    assert w.commit_under_way and w.committed() == {}
    w.add(frames[10:20])  # more rows while the disk writes
    ended = _when_ended(w)
    # the journal line, written after the part's sync, claims what the flush covered only
    assert ended == w.committed() == {("a", 7): 9}
    line = read_journal(journal)[-1]
    assert line["streams"] == {"a\x007": [9, line["streams"]["a\x007"][1], False]}
    assert synced.paths.index(part) < len(synced.paths) - 1
    assert synced.paths[-1] == journal
    assert w.end_commit() is None and not w.commit_under_way
    # the next start ends nothing (none under way) and starts the second
    assert w.start_commit() is None
    summary = w.close()  # ends the one under way, then commits the rest
    assert summary["counters"]["frames_written"] == 20
    assert read_journal(journal)[-1]["closed"]


def test_a_commit_whose_sync_fails_is_never_claimed(tmp_path, monkeypatch):
    import errno
    import os

    frames = make_frames("a", 1, make_messages(5, 20))
    w = RunWriter(tmp_path, 9)
    w.add(frames[:8])
    w.commit()
    real = os.fsync

    def failing_disk(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".h5"):
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", failing_disk)
    w.add(frames[8:])
    w.start_commit()
    with pytest.raises(StorageError, match="Input/output error"):
        _when_ended(w)
    assert w.committed() == {("a", 7): 7}
    monkeypatch.setattr(os, "fsync", real)
    w.abort()  # cut back to the last journal line: the failed commit's rows are not kept
    assert w.counters.frames_written == 8
    assert len(read_run_packets(w.files)) == w.counters.packets_written


_KILLED_DURING_SYNC = """
import os, signal, sys, threading
sys.path.insert(0, {tests!r})
from datagen import make_frames, make_messages
from larpixdaq.pipeline.runfile import RunWriter
frames = make_frames("a", 1, make_messages(9, 60, words=200))
w = RunWriter({d!r}, 5, chunk_rows=512)
w.add(frames[:20]); w.commit()
real, stalled = os.fsync, threading.Event()
def stalled_disk(fd):
    if os.readlink(f"/proc/self/fd/{{fd}}").endswith(".h5"):
        stalled.set(); threading.Event().wait()
    real(fd)
os.fsync = stalled_disk
w.add(frames[20:45]); w.start_commit()
stalled.wait(30)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_while_its_commit_syncs_resumes_from_the_last_journal_line(
        tmp_path):
    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-c", _KILLED_DURING_SYNC.format(
        tests=tests, d=str(tmp_path))], timeout=120)
    assert proc.returncode == -9
    msgs = make_messages(9, 60, words=200)
    frames = make_frames("a", 1, msgs)
    w = RunWriter(tmp_path, 5, chunk_rows=512)
    assert w.committed() == {("a", 7): 19}  # the commit under way was never claimed
    w.add(frames[20:])  # the aggregator resends what was not acknowledged
    summary = w.close()
    c = summary["counters"]
    assert c["frames_duplicate"] == 0 and c["packets_lost"] == 0
    assert np.array_equal(_chip_rows(read_run_packets(summary["files"]), 1),
                          expected_rows(msgs, 1))
