"""Raw PACMAN file -> LArPix+HDF5 v2.4 conversion: golden rows, batching, bad input."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from larpixdaq.convert import convert
from larpixdaq.demo import synthetic_messages
from larpixdaq.errors import FormatError
from larpixdaq.formats.hdf5file import open_file, read_packets, verify_checksum
from larpixdaq.formats.pacman import decode_data_messages
from larpixdaq.formats.rawfile import write_raw


@pytest.fixture(scope="module")
def synthetic_raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A raw file of ~20k packets and the rows decoding all of it at once gives."""
    msgs, groups = synthetic_messages(20_000, words_per_message=700, seed=5, start_unix=1.8e9)
    path = tmp_path_factory.mktemp("raw") / "synthetic-raw.h5"
    write_raw(path, msgs, groups)
    return path, decode_data_messages(msgs, groups).rows


def test_golden_raw_file_converts_to_the_reference_rows(tmp_path: Path, golden_dir: Path) -> None:
    out = tmp_path / "golden.h5"
    summary = convert(golden_dir / "raw-messages.h5", out)
    with h5py.File(golden_dir / "reference-v2.4.h5", "r") as ref:
        expected = ref["packets"][()]
    np.testing.assert_array_equal(read_packets(out), expected)
    assert summary.n_messages == 6 and summary.n_rows == len(expected)
    assert summary.rows_by_type == {
        "data": 134, "config_write": 42, "config_read": 33, "timestamp": 6, "sync": 7,
        "trigger": 6,
    }
    assert summary.n_chip_packets == 209
    assert summary.parity_errors == int(
        np.count_nonzero((expected["packet_type"] < 4) & (expected["valid_parity"] == 0))
    )
    assert summary.errors == {} and summary.n_errors == 0
    info = open_file(out).info()
    assert info.clean_close is True and info.version == "2.4"
    assert info.run["source_messages"] == 6
    assert verify_checksum(out) is True


@pytest.mark.parametrize("chunk_messages", [1, 7, 10_000])
def test_batch_size_does_not_change_the_rows(
    tmp_path: Path, synthetic_raw: tuple[Path, np.ndarray], chunk_messages: int
) -> None:
    raw, expected = synthetic_raw
    out = tmp_path / "out.h5"
    seen: list[tuple[int, int]] = []
    summary = convert(
        raw, out, chunk_messages=chunk_messages, chunk_rows=4096,
        progress=lambda done, total: seen.append((done, total)),
    )
    np.testing.assert_array_equal(read_packets(out), expected)
    assert summary.n_rows == len(expected)
    assert summary.n_chip_packets == 20_000
    n_msgs = summary.n_messages
    assert seen[-1] == (n_msgs, n_msgs)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert len(seen) == -(-n_msgs // chunk_messages)


def test_gzip_output(tmp_path: Path, synthetic_raw: tuple[Path, np.ndarray]) -> None:
    raw, expected = synthetic_raw
    out = tmp_path / "z.h5"
    convert(raw, out, compression="gzip")
    with h5py.File(out, "r") as f:
        assert f["packets"].compression == "gzip"
    np.testing.assert_array_equal(read_packets(out), expected)


def test_malformed_messages_are_counted_not_fatal(tmp_path: Path) -> None:
    good, _ = synthetic_messages(300, words_per_message=100, seed=1)
    bad_count = bytearray(good[1])
    bad_count[6] ^= 1  # header word count no longer matches the bytes
    unknown_word = bytearray(good[2])
    unknown_word[8] = ord("Z")  # first word has an unknown type
    messages = [
        good[0],
        b"D\x00\x00",  # truncated header
        bytes(bad_count),
        good[1][:-5],  # trailing partial word
        b"?" + good[0][1:],  # a request where data belongs
        bytes(unknown_word),
    ]
    raw = tmp_path / "bad.h5"
    write_raw(raw, messages, 3)
    out = tmp_path / "bad-out.h5"
    summary = convert(raw, out)
    assert summary.n_messages == 6
    assert summary.errors == {
        "truncated_header": 1,
        "word_count_mismatch": 2,
        "truncated_word": 1,
        "not_data_message": 1,
        "unknown_word_type": 1,
    }
    assert summary.n_errors == 6
    rows = read_packets(out)
    assert summary.n_rows == len(rows)
    assert np.count_nonzero(rows["packet_type"] == 4) == 4  # four messages kept
    assert open_file(out).info().run["decode_errors"] == 6


def test_empty_raw_file(tmp_path: Path) -> None:
    raw = tmp_path / "empty.h5"
    write_raw(raw, [], 1)
    summary = convert(raw, tmp_path / "empty-out.h5")
    assert summary.n_messages == 0 and summary.n_rows == 0
    assert len(read_packets(tmp_path / "empty-out.h5")) == 0


def test_bad_arguments_and_files(tmp_path: Path, golden_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        convert(tmp_path / "missing.h5", tmp_path / "o.h5")
    with pytest.raises(FormatError, match="not a raw PACMAN"):
        convert(golden_dir / "reference-v2.4.h5", tmp_path / "o.h5")
    text = tmp_path / "t.h5"
    text.write_text("no")
    with pytest.raises(FormatError):
        convert(text, tmp_path / "o.h5")
    existing = tmp_path / "exists.h5"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        convert(golden_dir / "raw-messages.h5", existing)
    assert existing.read_bytes() == b"keep me"
    convert(golden_dir / "raw-messages.h5", existing, overwrite=True)
    assert len(read_packets(existing)) == 228
    raw = tmp_path / "raw.h5"
    raw.write_bytes((golden_dir / "raw-messages.h5").read_bytes())
    with pytest.raises(ValueError, match="is the input"):
        convert(raw, raw, overwrite=True)
    with pytest.raises(ValueError, match="chunk_messages"):
        convert(raw, tmp_path / "o.h5", chunk_messages=0)
    assert not (tmp_path / "o.h5").exists()


def test_truncated_raw_file_leaves_no_output(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    msgs = [b"D" + rng.bytes(7 + 16 * 500) for _ in range(300)]
    raw = tmp_path / "full.h5"
    write_raw(raw, msgs, 1)
    data = raw.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.h5"
    with pytest.raises(FormatError):
        convert(cut, out, chunk_messages=16)
    assert not out.exists()
    assert not (tmp_path / "out.h5.part").exists()


@pytest.mark.reference
def test_same_rows_as_the_reference_conversion(tmp_path: Path) -> None:
    """larpix-control's documented raw -> v2.4 route gives the rows we give."""
    from larpix.format.hdf5format import to_file
    from larpix.format.pacman_msg_format import parse
    from larpix.format.rawhdf5format import from_rawfile

    msgs, groups = synthetic_messages(1500, words_per_message=250, seed=9, start_unix=1.8e9)
    raw = tmp_path / "raw.h5"
    write_raw(raw, msgs, groups)
    ours = tmp_path / "ours.h5"
    convert(raw, ours)
    loaded = from_rawfile(str(raw))
    packets = []
    for group, msg in zip(loaded["msg_headers"]["io_groups"], loaded["msgs"], strict=True):
        packets.extend(parse(msg, io_group=group))
    theirs = tmp_path / "theirs.h5"
    to_file(str(theirs), packet_list=packets)
    with h5py.File(theirs, "r") as f:
        np.testing.assert_array_equal(read_packets(ours), f["packets"][()])
