"""Wire messages: round trips for every type and clear errors for bad bytes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.runcontrol.messages import (
    MESSAGE_TYPES,
    Ack,
    Command,
    Event,
    Heartbeat,
    MessageError,
    Register,
    Result,
    RunInfo,
    Transition,
    decode,
    encode,
)

ids = st.text(min_size=1, max_size=64)
int64 = st.integers(-(2**63), 2**63 - 1)
small = st.dictionaries(st.text(max_size=8), int64 | st.text(max_size=8), max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.builds(Command, id=ids, command=st.text(max_size=20), params=small,
                  timeout=st.none() | st.floats(0, 100)),
        st.builds(Ack, id=ids, ok=st.booleans(), message=st.text(max_size=30), data=small),
        st.builds(Result, id=ids, success=st.booleans(), message=st.text(), data=small),
        st.builds(Heartbeat, name=st.text(max_size=10), state=st.sampled_from(["STOP", "RUN"]),
                  run_number=st.none() | st.integers(0, 2**40), counters=small),
        st.builds(Transition, id=ids, transition=st.sampled_from(["prepare", "end"]),
                  run=st.none() | small),
        st.builds(Event, kind=st.text(max_size=8), message=st.text(), data=small,
                  time=st.floats(0, 2e9)),
    )
)
def test_round_trip(msg):
    assert decode(encode(msg)) == msg


def test_register_round_trip():
    msg = Register(name="p", role="producer", host="h", pid=12,
                   actions={"scan": {"params": ["n"], "doc": "d"}}, counters=["sent"])
    assert decode(encode(msg)) == msg


def _raw(**body):
    return msgpack.packb(body)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xc1garbage", "not a msgpack message"),
        (msgpack.packb([1, 2]), "must be a map"),
        (_raw(v=99, type="ack", id="1"), "protocol version 99"),
        (_raw(v=1, type="explode"), "unknown message type 'explode'"),
        (_raw(v=1, type="ack"), "lacks the field 'id'"),
        (_raw(v=1, type="ack", id=5), "field 'id' must be str"),
        (_raw(v=1, type="ack", id="x", ok=1), "field 'ok' must be bool"),
        (_raw(v=1, type="register", name="a", role="r", host="h", pid=True),
         "field 'pid' must be int"),
        (_raw(v=1, type="welcome", name="a", state="STOP", heartbeat_interval="1"),
         "field 'heartbeat_interval' must be int or float, got str"),
        (_raw(v=1, type="command", id="x", command="status", timeout=False),
         "field 'timeout' must be int or float or NoneType, got bool"),
        (_raw(v=1, type="heartbeat", name="a", state="STOP", counters=[]),
         "field 'counters' must be dict, got list"),
        (_raw(v=1, type="ack", id="x", extra=1), "unknown field"),
        (_raw(v=1, type="ack", id=""), "id must be 1 to 64"),
        (b"", "not a msgpack message"),
    ],
)
def test_malformed_rejected_clearly(data, match):
    with pytest.raises(MessageError, match=match):
        decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash(data):
    try:
        msg = decode(data)
    except MessageError:
        return
    assert type(msg) in MESSAGE_TYPES.values()


def test_number_and_optional_fields_take_what_their_annotation_allows():
    # a float field takes an int, an optional one takes None (nil on the wire)
    hello = decode(_raw(v=1, type="welcome", name="a", state="STOP", run=None,
                        heartbeat_interval=1, heartbeat_timeout=2.5))
    assert hello.heartbeat_interval == 1 and hello.heartbeat_timeout == 2.5 and hello.run is None
    cmd = decode(_raw(v=1, type="command", id="x", command="status", timeout=3, user=None))
    assert cmd.timeout == 3 and cmd.user is None


def test_run_info():
    info = RunInfo(run_number=4, comment="c", start_time=1.5)
    assert RunInfo.from_dict({**info.to_dict(), "future": 1}) == info
    with pytest.raises(MessageError, match="run_number"):
        RunInfo.from_dict({"comment": "x"})


def test_unencodable_value_is_a_clear_error():
    with pytest.raises(MessageError, match="cannot encode a result"):
        encode(Result(id="1", success=True, data={"x": object()}))
    with pytest.raises(MessageError, match="cannot encode"):
        encode(Result(id="1", success=True, data={"x": 2**70}))
