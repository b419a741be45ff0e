"""PACMAN message codec: golden messages from the reference library, malformed input,
round trips of data and control messages."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.errors import FormatError
from larpixdaq.formats import packets as P
from larpixdaq.formats import pacman as M
from larpixdaq.formats import rows as R


def test_golden_messages_decode_to_the_reference_rows(golden_dir: Path,
                                                     golden_messages) -> None:
    messages, groups = golden_messages
    with h5py.File(golden_dir / "reference-v2.4.h5", "r") as f:
        reference = f["packets"][:]
    result = M.decode_data_messages(messages, groups)
    assert result.errors == {}
    assert result.rows.dtype == R.PACKETS_DTYPE
    np.testing.assert_array_equal(result.rows, reference)
    # The reference data holds every row type the decoder makes, and bad parity.
    assert set(np.unique(result.rows["packet_type"])) == {0, 2, 3, 4, 6, 7}
    assert (result.rows["valid_parity"][result.rows["packet_type"] < 4] == 0).any()


def test_golden_messages_decode_the_same_one_at_a_time(golden_messages) -> None:
    messages, groups = golden_messages
    together = M.decode_data_messages(messages, groups).rows
    apart = np.concatenate([M.decode_data_messages([m], g).rows for m, g in zip(
        messages, groups, strict=True)])
    np.testing.assert_array_equal(together, apart)


def test_heartbeat_sync_row(golden_messages) -> None:
    messages, groups = golden_messages
    rows = M.decode_data_messages(messages, groups).rows
    sync = rows[rows["packet_type"] == R.SYNC]
    assert set(sync["trigger_type"]) == {ord("S"), ord("H")}


def make_words(rng: np.random.Generator, n: int) -> np.ndarray:
    packets = P.encode_packets(
        packet_type=0, chip_id=rng.integers(11, 111, n), channel_id=rng.integers(0, 64, n),
        timestamp=rng.integers(0, 2**31, n), dataword=rng.integers(0, 256, n),
        downstream_marker=1,
    )
    return M.data_words(rng.integers(1, 5, n), packets, rng.integers(0, 2**32, n))


def test_encoded_data_message_round_trip() -> None:
    rng = np.random.default_rng(7)
    words = M.concat_words([make_words(rng, 5), M.sync_words(10_000_000, b"S", clk_source=1),
                            M.trig_words(1234, trigger_type=2), make_words(rng, 3)])
    message = M.encode_data_message(1_700_000_000, words)
    assert message[:1] == b"D" and len(message) == 8 + 16 * len(words)
    rows = M.decode_data_messages([message], 5).rows
    assert list(rows["packet_type"][:1]) == [R.TIMESTAMP]
    assert rows["timestamp"][0] == 1_700_000_000
    assert (rows["io_group"] == 5).all()
    chip = rows[rows["packet_type"] == 0]
    fields = P.decode_fields(words["packet"][words["type"] == M.WORD_DATA])
    np.testing.assert_array_equal(chip["chip_id"], fields["chip_id"])
    np.testing.assert_array_equal(chip["timestamp"], fields["timestamp"])
    np.testing.assert_array_equal(
        chip["receipt_timestamp"], words["receipt_timestamp"][words["type"] == M.WORD_DATA])
    sync = rows[rows["packet_type"] == R.SYNC][0]
    assert (sync["timestamp"], sync["trigger_type"], sync["dataword"]) == (10_000_000, 83, 1)
    trig = rows[rows["packet_type"] == R.TRIGGER][0]
    assert (trig["timestamp"], trig["trigger_type"]) == (1234, 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 30), st.integers(0, 3),
                          st.integers(0, 3)), min_size=1, max_size=6),
       st.integers(0, 2**32 - 1))
def test_rows_to_messages_is_the_inverse_of_decode(messages: list, seed: int) -> None:
    """Messages of data, SYNC and TRIG words in any order, decoded to v2.4 rows and rebuilt
    from the rows, decode to the same rows (what a replay of a recorded file relies on)."""
    rng = np.random.default_rng(seed)
    sent = []
    for stamp, n_data, n_sync, n_trig in messages:
        syncs = [M.sync_words(int(rng.integers(0, 2**32)), kind, clk_source=int(rng.integers(2)))
                 for kind in rng.choice([b"S", b"H", b"C"], n_sync)]
        words = M.concat_words([make_words(rng, n_data), *syncs,
                                M.trig_words(rng.integers(0, 2**32, n_trig),
                                             rng.integers(0, 256, n_trig))])
        sent.append(M.encode_data_message(stamp, words[rng.permutation(len(words))]))
    rows = M.decode_data_messages(sent, 3).rows
    again = M.decode_data_messages(M.rows_to_messages(rows), 3).rows
    np.testing.assert_array_equal(again, rows)


def test_rows_to_messages_splits_what_one_message_cannot_hold() -> None:
    rng = np.random.default_rng(4)
    rows = M.decode_data_messages([M.encode_data_message(77, make_words(rng, 12))], 1).rows
    rebuilt = M.rows_to_messages(rows, max_words=5)
    assert [len(m) for m in rebuilt] == [8 + 16 * n for n in (5, 5, 2)]
    again = M.decode_data_messages(rebuilt, 1).rows
    chip = again[again["packet_type"] == 0]
    np.testing.assert_array_equal(chip, rows[rows["packet_type"] == 0])
    assert (again["timestamp"][again["packet_type"] == R.TIMESTAMP] == 77).all()


def test_large_batch_spanning_several_blocks_keeps_order() -> None:
    rng = np.random.default_rng(3)
    sizes = [0, 1, 40_000, 2, M.BLOCK_ROWS - 40_000, 17, 30_000]  # crosses block edges
    word_sets = [make_words(rng, n) for n in sizes]
    messages = [M.encode_data_message(i, w) for i, w in enumerate(word_sets)]
    rows = M.decode_data_messages(messages, np.arange(len(sizes))).rows
    assert len(rows) == len(sizes) + sum(sizes)
    ts_rows = np.flatnonzero(rows["packet_type"] == R.TIMESTAMP)
    assert list(rows["timestamp"][ts_rows]) == list(range(len(sizes)))
    assert list(np.diff(np.append(ts_rows, len(rows))) - 1) == sizes
    chip = rows[rows["packet_type"] == 0]
    all_words = M.concat_words(word_sets)
    np.testing.assert_array_equal(chip["receipt_timestamp"], all_words["receipt_timestamp"])
    np.testing.assert_array_equal(chip["io_group"], np.repeat(np.arange(len(sizes)), sizes))


# ------------------------------------------------------------------ malformed data input


def good_message(n: int = 3, stamp: int = 100) -> bytes:
    return M.encode_data_message(stamp, make_words(np.random.default_rng(n), n))


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        (b"", "truncated_header"),
        (b"D\x00\x00", "truncated_header"),
        (M.encode_request([M.Ping()]), "not_data_message"),
        (b"X" + bytes(7), "not_data_message"),
    ],
)
def test_unusable_message_is_skipped_and_counted(bad: bytes, kind: str) -> None:
    result = M.decode_data_messages([good_message(2, 1), bad, good_message(3, 2)], 1)
    assert result.errors == {kind: 1}
    assert list(result.rows["timestamp"][result.rows["packet_type"] == R.TIMESTAMP]) == [1, 2]
    assert len(result.rows) == 2 + 3 + 2


def test_truncated_word_keeps_the_whole_words() -> None:
    message = good_message(4)[:-5]
    result = M.decode_data_messages([message], 1)
    assert result.errors == {"truncated_word": 1, "word_count_mismatch": 1}
    assert len(result.rows) == 1 + 3


def test_word_count_that_disagrees_is_counted() -> None:
    message = bytearray(good_message(4))
    message[6] = 9
    result = M.decode_data_messages([bytes(message)], 1)
    assert result.errors == {"word_count_mismatch": 1}
    assert len(result.rows) == 1 + 4


def test_unknown_word_type_is_skipped_and_counted() -> None:
    words = make_words(np.random.default_rng(1), 4)
    words["type"][1] = ord("Z")
    words["type"][3] = ord("P")
    result = M.decode_data_messages([M.encode_data_message(5, words)], 1)
    assert result.errors == {"unknown_word_type": 2}
    chip = result.rows[result.rows["packet_type"] == 0]
    np.testing.assert_array_equal(chip["receipt_timestamp"],
                                  words["receipt_timestamp"][[0, 2]])


def test_empty_batch() -> None:
    result = M.decode_data_messages([], 1)
    assert len(result.rows) == 0 and result.errors == {}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=6), st.integers(0, 255))
def test_random_bytes_never_raise(messages: list[bytes], io_group: int) -> None:
    result = M.decode_data_messages(messages, io_group)
    assert result.rows.dtype == R.PACKETS_DTYPE
    n_type4 = int(np.count_nonzero(result.rows["packet_type"] == R.TIMESTAMP))
    skipped = result.errors.get("truncated_header", 0) + result.errors.get("not_data_message", 0)
    assert n_type4 + skipped == len(messages)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=16, max_size=16), max_size=20), st.integers(0, 2**32 - 1))
def test_random_words_in_a_valid_header_never_raise(raw_words: list[bytes], stamp: int) -> None:
    message = M.HEADER.pack(b"D", stamp, len(raw_words)) + b"".join(raw_words)
    result = M.decode_data_messages([message], 1)
    known = sum(w[0] in (M.WORD_DATA, M.WORD_SYNC, M.WORD_TRIG) for w in raw_words)
    assert len(result.rows) == 1 + known
    assert result.errors.get("unknown_word_type", 0) == len(raw_words) - known


def test_word_arrays_in_other_layouts_are_accepted() -> None:
    rng = np.random.default_rng(9)
    a, b = make_words(rng, 3), M.sync_words(7)
    expected = a.tobytes() + b.tobytes()
    promoted = np.concatenate([a, b])  # numpy packs the overlapping fields: 31 bytes
    assert promoted.dtype.itemsize != 16
    assert M.encode_data_message(1, promoted)[8:] == expected
    as_bytes = np.frombuffer(expected, np.uint8).reshape(-1, 16)
    assert M.encode_data_message(1, as_bytes)[8:] == expected
    with pytest.raises(FormatError, match="not PACMAN words"):
        M.encode_data_message(1, np.zeros((2, 8), np.uint8))


def test_too_many_words_refused() -> None:
    with pytest.raises(FormatError, match="at most 65535 words"):
        M.encode_data_message(0, np.zeros(70000, M.WORD_DTYPE))


# ------------------------------------------------------------------- control messages


def test_golden_request_and_reply(golden_dir: Path) -> None:
    lines = [x for x in (golden_dir / "pacman-request-reply.hex").read_text().splitlines()
             if x and not x.startswith("#")]
    request, reply = (bytes.fromhex(x) for x in lines)
    req = M.decode_control(request)
    packet = int.from_bytes(bytes.fromhex("acaa78563492c376"), "little")
    assert req.kind == b"?"
    assert req.words == (M.Ping(), M.Write(0x10, 0xFF), M.Read(0x10, 0), M.Tx(3, packet))
    rep = M.decode_control(reply)
    assert rep.kind == b"!"
    assert rep.words == (M.Ping(), M.Write(0x10, 0xFF), M.Read(0x10, 0xFF), M.Tx(3, packet),
                         M.Err(2, b"unknown word"))
    assert M.encode_request(req.words, req.timestamp) == request
    assert M.encode_reply(rep.words, rep.timestamp) == reply


control_words = st.one_of(
    st.just(M.Ping()),
    st.builds(M.Write, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(M.Read, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(M.Tx, st.integers(0, 255), st.integers(0, 2**64 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(control_words, max_size=10), st.integers(0, 2**32 - 1),
       st.lists(st.builds(M.Err, st.integers(0, 255),
                          st.binary(max_size=14).map(lambda b: b.rstrip(b"\0"))), max_size=2))
def test_control_round_trip(words: list, stamp: int, errs: list) -> None:
    assert M.decode_control(M.encode_request(words, stamp)).words == tuple(words)
    reply = M.decode_control(M.encode_reply(words + errs, stamp))
    assert reply.words == tuple(words + errs) and reply.timestamp == stamp


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"?\x00", "shorter than the 8-byte header"),
        (M.HEADER.pack(b"D", 0, 0), "not a request"),
        (M.HEADER.pack(b"?", 0, 1) + b"P" + bytes(14), "trailing bytes"),
        (M.HEADER.pack(b"?", 0, 2) + b"P" + bytes(15), "header says 2 words"),
        (M.HEADER.pack(b"?", 0, 1) + b"Q" + bytes(15), "unknown word type b'Q'"),
        (M.HEADER.pack(b"?", 0, 1) + b"E" + bytes(15), "unknown word type b'E'"),
    ],
)
def test_malformed_control_message_says_what_is_wrong(message: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        M.decode_control(message)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_control_bytes_decode_or_raise_format_error(message: bytes) -> None:
    """Only FormatError may come out (no struct.error, IndexError...), and whatever decodes
    survives a re-encode."""
    try:
        decoded = M.decode_control(message)
    except FormatError:
        return
    again = M.decode_control(M.encode_control(decoded.kind, decoded.words, decoded.timestamp))
    assert again == decoded


@pytest.mark.parametrize(
    "word", [M.Write(2**32, 0), M.Read(0, -1), M.Tx(256, 0), M.Tx(1, 2**64), M.Err(300)]
)
def test_out_of_range_control_word_refused(word: M.ControlWord) -> None:
    with pytest.raises(FormatError, match="does not fit"):
        M.encode_request([word])
