"""The raw PACMAN message file (v0.0): golden file, round trips, SWMR, bad files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.errors import FormatError
from larpixdaq.formats.rawfile import (
    RawWriter,
    is_raw_file,
    iter_chunks,
    open_raw,
    write_raw,
)


def test_reads_the_golden_raw_file(golden_dir: Path, golden_messages) -> None:
    msgs, groups = golden_messages
    with open_raw(golden_dir / "raw-messages.h5") as f:
        assert f.n_messages == 6
        meta = f.meta
        got, got_groups = f.read()
    assert meta["version"] == "0.0" and meta["io_version"] == "0.0"
    assert isinstance(meta["created"], float)
    assert got == msgs
    assert got_groups.dtype == np.uint8 and got_groups.tolist() == groups


def test_layout_of_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "raw.h5"
    with RawWriter(path, chunk_messages=16) as w:
        w.append([b"D\x00\x00\x00\x00\x00\x00\x00", b"abc"], io_groups=[1, 2])
    with h5py.File(path, "r") as f:
        meta = f["meta"].attrs
        assert meta["version"] == "0.0" and meta["io_version"] == "0.0"
        assert meta["modified"] >= meta["created"]
        for name in ("msgs", "msg_headers"):
            assert f[name].maxshape == (None,)
            assert f[name].compression == "gzip"
            assert f[name].chunks == (16,)
        assert h5py.check_vlen_dtype(f["msgs"].dtype) == np.dtype("u1")
        assert f["msg_headers"].dtype == np.dtype([("io_groups", "u1")])
        assert f["msg_headers"]["io_groups"].tolist() == [1, 2]


@settings(max_examples=30, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.binary(min_size=0, max_size=200), max_size=8), min_size=1, max_size=5
    ),
    chunk=st.integers(1, 7),
)
def test_round_trip_in_any_batching(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[bytes]], chunk: int
) -> None:
    path = tmp_path_factory.mktemp("raw") / "r.h5"
    everything: list[bytes] = []
    groups: list[int] = []
    with RawWriter(path, swmr=False) as w:
        for i, batch in enumerate(batches):
            w.append(batch, io_groups=i % 256)
            everything += batch
            groups += [i % 256] * len(batch)
    got: list[bytes] = []
    got_groups: list[int] = []
    for msgs, g in iter_chunks(path, chunk_messages=chunk):
        assert 0 < len(msgs) <= chunk and len(msgs) == len(g)
        got += msgs
        got_groups += g.tolist()
    assert got == everything and got_groups == groups


def test_swmr_reader_follows_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    w = RawWriter(path, swmr=True)
    try:
        with open_raw(path, swmr=True) as r:
            assert r.n_messages == 0
            w.append([b"one", b"two"], 3)
            r.refresh()
            assert r.n_messages == 2
            w.append([b"three"], 4)
            r.refresh()
            msgs, groups = r.read()
            assert msgs == [b"one", b"two", b"three"] and groups.tolist() == [3, 3, 4]
    finally:
        w.close()


def test_writer_refuses_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "w.h5"
    with RawWriter(path) as w:
        with pytest.raises(ValueError, match="2 entries for 3 messages"):
            w.append([b"a", b"b", b"c"], [1, 2])
        with pytest.raises(ValueError, match="0..255"):
            w.append([b"a"], 256)
        assert w.n_messages == 0
    with pytest.raises(ValueError, match="closed"):
        w.append([b"a"], 1)
    with pytest.raises(FileExistsError):
        RawWriter(path)
    write_raw(path, [b"x"], 1, overwrite=True)
    assert open_raw(path).read()[0] == [b"x"]


def test_reader_errors(tmp_path: Path, golden_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_raw(tmp_path / "missing.h5")
    text = tmp_path / "t.txt"
    text.write_text("hello")
    with pytest.raises(FormatError, match="not a readable HDF5"):
        open_raw(text)
    assert not is_raw_file(text)
    with pytest.raises(FormatError, match="not a raw PACMAN"):
        open_raw(golden_dir / "reference-v2.4.h5")
    assert not is_raw_file(golden_dir / "reference-v2.4.h5")
    assert is_raw_file(golden_dir / "raw-messages.h5")
    future = tmp_path / "future.h5"
    write_raw(future, [b"m"], 1)
    with h5py.File(future, "r+") as f:
        f["meta"].attrs["version"] = "1.0"
    with pytest.raises(FormatError, match="version '1.0'"):
        open_raw(future)
    uneven = tmp_path / "uneven.h5"
    write_raw(uneven, [b"m", b"n"], 1)
    with h5py.File(uneven, "r+") as f:
        f["msg_headers"].resize((1,))
    with pytest.raises(FormatError, match="2 messages but 1 headers"):
        open_raw(uneven)
    wrongtype = tmp_path / "wrongtype.h5"
    with h5py.File(wrongtype, "w") as f:
        f.create_group("meta").attrs["version"] = "0.0"
        f["msgs"] = np.zeros(2, dtype=np.uint8)
        f["msg_headers"] = np.zeros(2, dtype=[("io_groups", "u1")])
    with pytest.raises(FormatError, match="not variable-length"):
        open_raw(wrongtype)


def test_truncated_file_gives_format_error(tmp_path: Path) -> None:
    path = tmp_path / "big.h5"
    rng = np.random.default_rng(1)
    msgs = [rng.bytes(2000) for _ in range(400)]
    write_raw(path, msgs, 1)
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError):
        for _ in iter_chunks(cut, 64):
            pass


@pytest.mark.reference
def test_reference_library_reads_our_raw_file(tmp_path: Path, golden_messages) -> None:
    from larpix.format.rawhdf5format import from_rawfile, len_rawfile

    msgs, groups = golden_messages
    path = tmp_path / "ours.h5"
    with RawWriter(path, swmr=True) as w:
        w.append(msgs[:2], groups[:2])
        w.append(msgs[2:], np.asarray(groups[2:]))
    assert len_rawfile(str(path)) == 6
    loaded = from_rawfile(str(path))
    assert loaded["version"] == "0.0" and loaded["io_version"] == "0.0"
    assert loaded["msgs"] == msgs
    assert [int(g) for g in loaded["msg_headers"]["io_groups"]] == groups


def test_directory_and_bad_chunk_size(tmp_path: Path, golden_dir: Path) -> None:
    with pytest.raises(FormatError, match="not a file"):
        open_raw(tmp_path)
    with pytest.raises(ValueError, match="chunk_messages"):
        list(iter_chunks(golden_dir / "raw-messages.h5", chunk_messages=0))
