"""LArPix v2 packet codec: check vectors from the format reference, parity, round trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from larpixdaq.errors import FormatError
from larpixdaq.formats import packets as P


def test_data_packet_check_vector() -> None:
    word = P.encode_packets(
        packet_type=P.DATA, chip_id=171, channel_id=42, timestamp=0x12345678, first_packet=1,
        dataword=0xC3, trigger_type=2, local_fifo=1, shared_fifo=3, downstream_marker=1,
    )
    assert P.to_bytes(word) == bytes.fromhex("acaa78563492c376")
    fields = P.decode_fields(P.from_bytes(bytes.fromhex("acaa78563492c376")))
    assert fields["chip_id"][0] == 171
    assert fields["channel_id"][0] == 42
    assert fields["timestamp"][0] == 0x12345678
    assert fields["dataword"][0] == 0xC3
    assert fields["shared_fifo"][0] == 3
    assert fields["valid_parity"][0]


def test_config_write_check_vector() -> None:
    word = P.encode_packets(
        packet_type=P.CONFIG_WRITE, chip_id=5, register_address=0x80, register_data=0x5A
    )
    assert P.to_bytes(word) == bytes.fromhex("16006a0100000080")


def test_flipping_any_bit_breaks_parity() -> None:
    word = P.encode_packets(packet_type=P.DATA, chip_id=12, channel_id=3, timestamp=99)
    flipped = word ^ (np.uint64(1) << np.arange(64, dtype=np.uint64))
    assert P.valid_parity(word)
    assert not P.valid_parity(flipped).any()


def test_explicit_parity_is_kept_even_when_wrong() -> None:
    good = P.encode_packets(packet_type=P.CONFIG_WRITE, chip_id=1, register_address=122,
                            register_data=12)
    bad_bit = 1 - int(P.get_field(good, "parity"))
    bad = P.encode_packets(packet_type=P.CONFIG_WRITE, chip_id=1, register_address=122,
                           register_data=12, parity=bad_bit)
    assert not P.valid_parity(bad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chip_id": 256}, "chip_id=256 does not fit in 8 bits"),
        ({"chip_id": -1}, "chip_id=-1"),
        ({"chip_id": 3, "channel_id": 64}, "channel_id=64"),
        ({"chip_id": 3, "timestamp": 2**31}, "timestamp=2147483648"),
        ({"chip_id": 3, "channel_id": 1, "register_address": 4}, "either data fields"),
        ({"chip_id": 3, "parity": 2}, "parity must be 0 or 1"),
    ],
)
def test_out_of_range_fields_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        P.encode_packets(packet_type=0, **kwargs)


def test_from_bytes_refuses_partial_packets() -> None:
    with pytest.raises(FormatError, match="not a whole number"):
        P.from_bytes(b"\x00" * 9)


def test_unknown_field_name() -> None:
    with pytest.raises(FormatError, match="unknown packet field 'chip'"):
        P.get_field(np.uint64(0), "chip")


data_packets = st.fixed_dictionaries(
    {
        "packet_type": st.sampled_from([P.DATA, P.TEST]),
        "chip_id": st.integers(0, 255),
        "channel_id": st.integers(0, 63),
        "timestamp": st.integers(0, 2**31 - 1),
        "first_packet": st.integers(0, 1),
        "dataword": st.integers(0, 255),
        "trigger_type": st.integers(0, 3),
        "local_fifo": st.integers(0, 3),
        "shared_fifo": st.integers(0, 3),
        "downstream_marker": st.integers(0, 1),
    }
)
config_packets = st.fixed_dictionaries(
    {
        "packet_type": st.sampled_from([P.CONFIG_WRITE, P.CONFIG_READ]),
        "chip_id": st.integers(0, 255),
        "register_address": st.integers(0, 255),
        "register_data": st.integers(0, 255),
        "downstream_marker": st.integers(0, 1),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(data_packets, config_packets))
def test_round_trip_one_packet(fields: dict) -> None:
    word = P.encode_packets(**fields)
    assert P.valid_parity(word)
    decoded = P.decode_fields(P.from_bytes(P.to_bytes(word)))
    for name, value in fields.items():
        assert decoded[name][0] == value, name


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.uint64, st.integers(0, 200)))
def test_with_parity_always_gives_odd_parity_and_keeps_low_bits(words: np.ndarray) -> None:
    fixed = P.with_parity(words)
    assert P.valid_parity(fixed).all()
    low = np.uint64((1 << 63) - 1)
    assert ((fixed & low) == (words & low)).all()


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.uint64, st.integers(0, 200)))
def test_fields_reassemble_every_bit(words: np.ndarray) -> None:
    f = P.decode_fields(words)
    data_view = P.encode_packets(
        packet_type=f["packet_type"], chip_id=f["chip_id"], channel_id=f["channel_id"],
        timestamp=f["timestamp"], first_packet=f["first_packet"], dataword=f["dataword"],
        trigger_type=f["trigger_type"], local_fifo=f["local_fifo"],
        shared_fifo=f["shared_fifo"], downstream_marker=f["downstream_marker"],
        parity=f["parity"],
    )
    assert (data_view == words).all()
