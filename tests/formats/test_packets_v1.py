"""LArPix v1 packet codec: round trips, parity, bad input, and byte equality with the
reference library's own v1 packets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.errors import FormatError
from larpixdaq.formats import packets_v1 as V

data_fields = st.fixed_dictionaries({
    "packet_type": st.sampled_from([V.DATA, V.TEST]),
    "chip_id": st.integers(0, 255),
    "channel_id": st.integers(0, 127),
    "timestamp": st.integers(0, 2**24 - 1),
    "dataword": st.integers(0, 1023),
    "fifo_half_flag": st.integers(0, 1),
    "fifo_full_flag": st.integers(0, 1),
})
config_fields = st.fixed_dictionaries({
    "packet_type": st.sampled_from([V.CONFIG_WRITE, V.CONFIG_READ]),
    "chip_id": st.integers(0, 255),
    "register_address": st.integers(0, 255),
    "register_data": st.integers(0, 255),
})


@settings(max_examples=300, deadline=None)
@given(st.one_of(data_fields, config_fields))
def test_round_trip_through_wire_bytes(fields: dict) -> None:
    word = V.encode_packets(**fields)
    wire = V.to_bytes(word)
    assert len(wire) == 7
    back = V.decode_fields(V.from_bytes(wire))
    assert back["valid_parity"][0]
    for name, value in fields.items():
        assert back[name][0] == value, name


def test_any_flipped_bit_breaks_parity() -> None:
    word = V.encode_packets(packet_type=V.DATA, chip_id=9, channel_id=100, dataword=1000)
    flipped = word ^ (np.uint64(1) << np.arange(54, dtype=np.uint64))
    assert V.valid_parity(word).all() and not V.valid_parity(flipped).any()


def test_many_packets_at_once() -> None:
    rng = np.random.default_rng(0)
    n = 1000
    words = V.encode_packets(packet_type=0, chip_id=rng.integers(0, 256, n),
                             channel_id=rng.integers(0, 128, n),
                             timestamp=rng.integers(0, 2**24, n))
    back = V.from_bytes(V.to_bytes(words))
    np.testing.assert_array_equal(back, words)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"packet_type": 0, "channel_id": 128}, "channel_id=128 does not fit in 7 bits"),
    ({"packet_type": 0, "dataword": 1024}, "dataword=1024"),
    ({"packet_type": 0, "downstream_marker": 1}, "unknown v1 packet field"),
    ({"packet_type": 2, "channel_id": 1, "register_data": 1}, "either data fields"),
    ({}, "no fields given"),
])
def test_bad_fields_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        V.encode_packets(**kwargs)


def test_bad_wire_bytes_are_refused() -> None:
    with pytest.raises(FormatError, match="not a whole number of 7-byte"):
        V.from_bytes(bytes(8))
    with pytest.raises(FormatError, match="above bit 53"):
        V.from_bytes(bytes(6) + b"\xff")
    with pytest.raises(FormatError, match="above bit 53"):
        V.to_bytes(np.uint64(1 << 60))


@pytest.mark.reference
@settings(max_examples=200, deadline=None)
@given(st.one_of(data_fields, config_fields))
def test_same_bytes_as_the_reference_library(fields: dict) -> None:
    from larpix.packet.packet_v1 import Packet_v1

    ref = Packet_v1()
    names = {"chip_id": "chipid"}
    for name, value in fields.items():
        setattr(ref, names.get(name, name), value)
    ref.assign_parity()
    ours = V.to_bytes(V.encode_packets(**fields))
    assert ours == ref.bytes()
    parsed = Packet_v1(ref.bytes())
    back = V.decode_fields(V.from_bytes(ref.bytes()))
    assert back["chip_id"][0] == parsed.chipid
    assert back["valid_parity"][0] == parsed.has_valid_parity()
