"""The LArPix+HDF5 v2.4 writer and reader: layout, buffering, SWMR, integrity, bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.errors import FormatError
from larpixdaq.formats.hdf5file import (
    Hdf5Writer,
    iter_packets,
    open_file,
    packets_digest,
    read_packets,
    verify_checksum,
)
from larpixdaq.formats.rows import CONFIGS_DTYPE, MESSAGES_DTYPE, PACKETS_DTYPE


def random_rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=n * PACKETS_DTYPE.itemsize, dtype=np.uint8)
    rows = raw.view(PACKETS_DTYPE).copy()
    rows["packet_type"] %= 8
    rows["packet_type"][rows["packet_type"] == 5] = 0  # type 5 needs a messages row
    return rows


@pytest.fixture(scope="module")
def golden_rows(golden_dir: Path) -> np.ndarray:
    with h5py.File(golden_dir / "reference-v2.4.h5", "r") as f:
        return f["packets"][()]


def test_layout_of_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    rows = random_rows(1000)
    with Hdf5Writer(path, chunk_rows=256) as w:
        w.append(rows)
    with h5py.File(path, "r") as f:
        header = f["_header"].attrs
        assert header["version"] == "2.4" and isinstance(header["version"], str)
        assert isinstance(header["created"], float) and isinstance(header["modified"], float)
        assert header["modified"] >= header["created"]
        assert header["clean_close"] == 1
        assert header["packets_sha256"] == hashlib.sha256(rows.tobytes()).hexdigest()
        packets = f["packets"]
        assert packets.dtype == PACKETS_DTYPE and packets.dtype.itemsize == 36
        assert packets.maxshape == (None,) and packets.chunks == (256,)
        assert packets.compression is None
        assert f["messages"].dtype == MESSAGES_DTYPE and f["messages"].shape == (0,)
        assert f["configs"].dtype == CONFIGS_DTYPE
        assert f["configs"].attrs["asic_version"] == "2"
        np.testing.assert_array_equal(packets[()], rows)


@pytest.mark.parametrize("compression", ["gzip", "lzf"])
def test_compression(tmp_path: Path, compression: str) -> None:
    rows = random_rows(5000)
    rows["chip_id"] = 7  # something compressible
    path = tmp_path / "c.h5"
    with Hdf5Writer(path, chunk_rows=1024, compression=compression) as w:
        w.append(rows)
    with h5py.File(path, "r") as f:
        assert f["packets"].compression == compression
    np.testing.assert_array_equal(read_packets(path), rows)


def test_unknown_compression_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compression"):
        Hdf5Writer(tmp_path / "x.h5", compression="zstd")
    assert not (tmp_path / "x.h5").exists()


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 700), max_size=12), chunk=st.integers(1, 300))
def test_any_append_pattern_reads_back_in_order(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], chunk: int
) -> None:
    path = tmp_path_factory.mktemp("p") / "a.h5"
    rows = random_rows(sum(sizes), seed=len(sizes))
    with Hdf5Writer(path, chunk_rows=chunk) as w:
        start = 0
        for n in sizes:
            w.append(rows[start : start + n])
            start += n
            assert w.n_rows == start
    np.testing.assert_array_equal(read_packets(path), rows)
    assert verify_checksum(path) is True


def test_only_whole_chunks_are_written_until_flush(tmp_path: Path) -> None:
    path = tmp_path / "b.h5"
    w = Hdf5Writer(path, chunk_rows=100, swmr=True)
    try:
        w.append(random_rows(250))
        with open_file(path, swmr=True) as r:
            assert r.n_packets == 200  # two whole chunks; 50 rows wait in the buffer
            w.flush()
            r.refresh()
            assert r.n_packets == 250
    finally:
        w.close()


def test_swmr_reader_sees_rows_grow(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    rows = random_rows(3000, seed=3)
    w = Hdf5Writer(path, chunk_rows=512, swmr=True)
    try:
        with open_file(path, swmr=True) as r:
            assert r.n_packets == 0
            seen = []
            for part in np.array_split(rows, 3):
                w.append(part)
                w.flush()
                r.refresh()
                seen.append(r.n_packets)
                np.testing.assert_array_equal(r.read_packets(), rows[: r.n_packets])
            assert seen == [1000, 2000, 3000]
            w.add_message("still running", 5)
            w.flush()
            r.refresh()
            assert r.info().n_messages == 1 and r.n_packets == 3001
    finally:
        w.close()
    assert verify_checksum(path) is True


def test_add_message_writes_a_message_and_a_type5_row(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    with Hdf5Writer(path) as w:
        w.append(random_rows(3))
        assert w.add_message("run started", 1700000000) == 0
        w.append(random_rows(2, seed=1))
        assert w.add_message("run stopped", 1700000100) == 1
    with open_file(path) as f:
        msgs = f.messages()
        rows = f.read_packets()
    assert msgs["message"].tolist() == [b"run started", b"run stopped"]
    assert msgs["index"].tolist() == [0, 1]
    assert msgs["timestamp"].tolist() == [1700000000, 1700000100]
    kind5 = rows[rows["packet_type"] == 5]
    assert np.flatnonzero(rows["packet_type"] == 5).tolist() == [3, 6]
    assert kind5["counter"].tolist() == [0, 1]
    assert kind5["timestamp"].tolist() == [1700000000, 1700000100]


def test_message_longer_than_64_bytes_is_refused(tmp_path: Path) -> None:
    with Hdf5Writer(tmp_path / "m.h5") as w:
        with pytest.raises(ValueError, match="64 bytes"):
            w.add_message("x" * 65, 0)
        assert w.n_messages == 0 and w.n_rows == 0


def test_configs_and_run_metadata(tmp_path: Path, golden_dir: Path) -> None:
    with h5py.File(golden_dir / "reference-v2.4.h5", "r") as f:
        configs = f["configs"][()]
    path = tmp_path / "cfg.h5"
    meta = {"run_number": 12, "operator": "ana", "tiles": [1, 2], "network": {"1": {"2": [3]}}}
    with Hdf5Writer(path, run_metadata=meta) as w:
        w.add_configs(configs)
        w.add_configs(configs[:1])
        w.set_run_metadata({"stop_reason": "end of run"})
    with open_file(path) as f:
        np.testing.assert_array_equal(f.configs(), np.concatenate([configs, configs[:1]]))
        run = f.info().run
    assert run["run_number"] == 12 and run["operator"] == "ana"
    assert run["tiles"] == [1, 2] and run["stop_reason"] == "end of run"
    assert run["network"] == '{"1": {"2": [3]}}'


def test_wrong_row_types_are_refused(tmp_path: Path) -> None:
    with Hdf5Writer(tmp_path / "t.h5") as w:
        with pytest.raises(TypeError, match="PACKETS_DTYPE"):
            w.append(np.zeros(3, dtype=np.uint64))
        with pytest.raises(TypeError, match="CONFIGS_DTYPE"):
            w.add_configs(np.zeros(3, dtype=PACKETS_DTYPE))


def test_existing_file_is_not_overwritten_by_default(tmp_path: Path) -> None:
    path = tmp_path / "e.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        Hdf5Writer(path)
    assert path.read_bytes() == b"precious"
    with Hdf5Writer(path, overwrite=True) as w:
        w.append(random_rows(1))
    assert len(read_packets(path)) == 1


def test_closed_writer_refuses_appends(tmp_path: Path) -> None:
    w = Hdf5Writer(tmp_path / "c.h5")
    w.close()
    w.close()  # closing twice is harmless
    with pytest.raises(ValueError, match="closed"):
        w.append(random_rows(1))


def test_aborted_write_keeps_rows_but_no_clean_mark(tmp_path: Path) -> None:
    path = tmp_path / "abort.h5"
    rows = random_rows(10)
    with pytest.raises(RuntimeError), Hdf5Writer(path) as w:
        w.append(rows)
        raise RuntimeError("the run crashed")
    with open_file(path) as f:
        info = f.info()
        np.testing.assert_array_equal(f.read_packets(), rows)
    assert info.clean_close is False and info.checksum is None
    assert verify_checksum(path) is None


def test_checksum_detects_changed_rows(tmp_path: Path) -> None:
    path = tmp_path / "k.h5"
    with Hdf5Writer(path) as w:
        w.append(random_rows(100))
    assert verify_checksum(path) is True
    with h5py.File(path, "r+") as f:
        row = f["packets"][5]
        row["dataword"] ^= 1
        f["packets"][5] = row
    assert verify_checksum(path) is False
    assert packets_digest(path) != open_file(path).info().checksum


def test_read_ranges_and_iteration(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    rows = random_rows(1000)
    with Hdf5Writer(path, chunk_rows=64) as w:
        w.append(rows)
    np.testing.assert_array_equal(read_packets(path, 100, 250), rows[100:250])
    np.testing.assert_array_equal(read_packets(path, 900, 5000), rows[900:])
    assert len(read_packets(path, 500, 400)) == 0
    parts = list(iter_packets(path, chunk_rows=300))
    assert [len(p) for p in parts] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.concatenate(parts), rows)
    with pytest.raises(ValueError):
        list(iter_packets(path, chunk_rows=0))


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_file(tmp_path / "missing.h5")
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    with pytest.raises(FormatError, match="not a readable HDF5"):
        open_file(text)
    with pytest.raises(FormatError, match="not a file"):
        open_file(tmp_path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(FormatError, match="not a LArPix"):
        open_file(other)
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:
        f.create_group("_header").attrs["version"] = "1.0"
        f["packets"] = np.zeros(1, dtype=PACKETS_DTYPE)
    with pytest.raises(FormatError, match="version 1.0"):
        open_file(old)
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f.create_group("_header").attrs["version"] = "2.4"
        f["packets"] = np.zeros(4, dtype=np.uint32)
    with pytest.raises(FormatError, match="dtype"):
        open_file(wrong)
    nopackets = tmp_path / "nop.h5"
    with h5py.File(nopackets, "w") as f:
        f.create_group("_header").attrs["version"] = "2.4"
    with pytest.raises(FormatError, match="no 'packets'"):
        open_file(nopackets)


def test_truncated_file_gives_format_error(tmp_path: Path) -> None:
    path = tmp_path / "full.h5"
    with Hdf5Writer(path, chunk_rows=4096) as w:
        w.append(random_rows(50000))
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError):
        read_packets(cut)


@pytest.mark.reference
def test_reference_reader_opens_our_file(tmp_path: Path, golden_rows: np.ndarray) -> None:
    """larpix-control reads our rows back to the same packets it would write itself."""
    from larpix.format.hdf5format import from_file, to_file

    ours = tmp_path / "ours.h5"
    with Hdf5Writer(ours, chunk_rows=50, swmr=True, run_metadata={"run": 1}) as w:
        w.append(golden_rows[:100])
        w.add_message("hello from the DAQ", 1795484014)
        w.append(golden_rows[100:])
    loaded = from_file(str(ours), load_configs=True)
    assert loaded["version"] == "2.4"
    packets = loaded["packets"]
    assert len(packets) == len(golden_rows) + 1
    assert packets[100].message == "hello from the DAQ"
    assert packets[100].timestamp == 1795484014
    # the reference writes what it read back; the rows must be the ones we wrote
    again = tmp_path / "again.h5"
    to_file(str(again), packets[:100] + packets[101:])
    expected = golden_rows.copy()
    expected["io_group"][expected["packet_type"] == 4] = 0  # its TimestampPacket drops io_group
    with h5py.File(again, "r") as f:
        np.testing.assert_array_equal(f["packets"][()], expected)


def test_bad_compression_level_leaves_no_open_file(tmp_path: Path) -> None:
    path = tmp_path / "lvl.h5"
    with pytest.raises(ValueError, match="0-9"):
        Hdf5Writer(path, compression="gzip", compression_level=42)
    with Hdf5Writer(path, overwrite=True, compression="gzip", compression_level=1) as w:
        w.append(random_rows(10))
    assert len(read_packets(path)) == 10


def test_file_held_by_a_writer_in_another_process(tmp_path: Path, held_by_child) -> None:
    path = tmp_path / "held.h5"
    writer = f"from larpixdaq.formats.hdf5file import Hdf5Writer\nw = Hdf5Writer({str(path)!r})\n"
    with (held_by_child(writer, "w.close()\n"),
          pytest.raises(FormatError, match="open for writing by another process")):
        open_file(path)
    assert open_file(path).info().clean_close is True


def test_chunk_rows_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        Hdf5Writer(tmp_path / "z.h5", chunk_rows=0)
    assert not (tmp_path / "z.h5").exists()
