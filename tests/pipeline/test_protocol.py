"""The data-path protocol: every message survives a round trip through its parser, and
anything else is refused with a ProtocolError that says which part is wrong."""

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.pipeline.protocol import (
    ACK,
    CREDIT,
    FRAME,
    HELLO,
    KINDS,
    MAX_EPOCH,
    STATS,
    Ack,
    BodyError,
    Credit,
    Frame,
    FrameError,
    FrameHeader,
    ProducerHello,
    ProtocolError,
    Stats,
    StorageHello,
    decode_header,
    encode_header,
    parse_credit,
    parse_frame,
    parse_monitor_message,
    parse_producer_message,
    parse_storage_message,
    stream_seqs,
)

headers = st.builds(
    FrameHeader,
    source=st.text(min_size=1, max_size=20),
    epoch=st.integers(0, MAX_EPOCH),
    seq=st.integers(0, 2**63 - 1),
    io_group=st.integers(0, 255),
    run=st.integers(-1, 2**31),
    t_recv=st.floats(0, 2e9),
    kind=st.sampled_from(KINDS),
    offset=st.integers(0, 2**63 - 1),
    last=st.booleans(),
)
counts = st.integers(0, 2**62)
stream_seq_lists = st.lists(st.tuples(st.text(max_size=12), counts, counts), max_size=5).map(
    tuple)
frames = st.builds(Frame, headers, st.binary(max_size=64))

# What each receiver takes, and a builder of every message it takes.
RECEIVERS = {
    "producer": (parse_producer_message, st.one_of(
        frames, st.builds(ProducerHello, st.text(min_size=1, max_size=20),
                          st.one_of(st.none(), st.integers(0, 255))))),
    "storage": (parse_storage_message, st.one_of(
        st.builds(StorageHello, stream_seq_lists, counts), st.builds(Credit, counts),
        st.builds(Ack, stream_seq_lists))),
    "aggregator->producer": (parse_credit, st.builds(Credit, counts)),
    "aggregator->storage": (parse_frame, frames),
    "monitor": (parse_monitor_message, st.one_of(
        frames, st.builds(Stats, st.dictionaries(st.text(max_size=8), counts, max_size=4),
                          stream_seq_lists))),
}


@pytest.mark.parametrize("receiver", sorted(RECEIVERS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_message_a_receiver_takes_survives_the_round_trip(receiver, data):
    parse, messages = RECEIVERS[receiver]
    msg = data.draw(messages)
    parts = [bytes(p) for p in msg.parts()]  # as they come off a socket
    back = parse(parts)
    assert back == msg
    if isinstance(msg, Frame):
        assert bytes(back.payload) == bytes(msg.payload)
        assert bytes(back.raw_header) == parts[1]  # kept for forwarding unchanged
        assert back.parts()[1] is back.raw_header


verbs = st.sampled_from([HELLO, CREDIT, ACK, FRAME, STATS, b"WHAT", b""])
bodies = st.one_of(
    st.binary(max_size=24),
    st.builds(msgpack.packb, st.recursive(
        st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
        | st.floats(allow_nan=False)
        | st.text(max_size=6),
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["bytes", "credit", "committed", "streams",
                                           "source", "io_group", "counters", "last_seq"]),
                          inner, max_size=4),
        max_leaves=12)),
)


@pytest.mark.parametrize("receiver", sorted(RECEIVERS))
@settings(max_examples=300, deadline=None)
@given(verb=verbs, rest=st.lists(bodies, max_size=3))
def test_any_input_is_a_message_or_a_protocol_error(receiver, verb, rest):
    parse, _ = RECEIVERS[receiver]
    try:
        msg = parse([verb, *rest])
    except ProtocolError as exc:
        assert exc.part in ("parts", "header", "body")
        return
    # Whatever was accepted is a well-formed message that sends the same again.
    assert parse([bytes(p) for p in msg.parts()]) == msg


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_garbage_header_raises_frame_error(raw):
    # Anything may happen to be a valid header; what must never escape is another error type.
    try:
        decode_header(raw)
    except FrameError as exc:
        assert exc.part == "header"


def _fields(**over):
    d = dict(source="a", epoch=1, seq=0, offset=0, io_group=1, run=3, t_recv=1.0,
             kind="data", last=False)
    d.update(over)
    return msgpack.packb(d)


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"\xc1", "not msgpack"),
        (msgpack.packb([1, 2]), "must be a map"),
        (msgpack.packb({"source": "a"}), "lacks"),
        (_fields(seq="1"), "'seq' has a str"),
        (_fields(last=1), "'last' has a int"),
        (_fields(seq=True), "'seq' has a bool"),
        (_fields(kind="video"), "kind 'video'"),
        (_fields(io_group=300), "outside 0..255"),
        (_fields(seq=-1), "never negative"),
    ],
)
def test_bad_headers_say_what_is_wrong(raw, words):
    with pytest.raises(FrameError, match=words):
        decode_header(raw)
    with pytest.raises(FrameError, match=words):
        parse_frame([FRAME, raw, b"payload"])


def test_encode_refuses_bad_header():
    with pytest.raises(FrameError):
        encode_header(FrameHeader("a", 0, 0, io_group=256))
    with pytest.raises(FrameError):
        encode_header(FrameHeader("a", 0, 0, io_group=1, kind="x"))


GOOD_HEADER = _fields()


@pytest.mark.parametrize("parse, parts, part, words", [
    (parse_frame, [FRAME, GOOD_HEADER], "parts", "has 2 parts"),
    (parse_credit, [CREDIT, msgpack.packb({"bytes": 1}), b""], "parts", "has 3 parts"),
    (parse_monitor_message, [STATS], "parts", "has 1 parts"),
    (parse_frame, [b"FRAMES", GOOD_HEADER, b""], "parts", "FRAMES"),
    (parse_producer_message, [b"WHAT"], "parts", "unexpected producer message"),
    (parse_producer_message, [HELLO, msgpack.packb(["p"])], "body", "must be a map"),
    (parse_producer_message, [HELLO, b"\xc1"], "body", "not msgpack"),
    (parse_storage_message, [ACK, b"\x00"], "body", "must be a map"),
    (parse_storage_message, [ACK, msgpack.packb({})], "body", "lacks streams"),
    (parse_storage_message, [ACK, msgpack.packb({"streams": [["s", 1, "9"]]})], "body",
     "seq must be a number"),
    (parse_storage_message, [HELLO, msgpack.packb({"committed": [["s", 1]]})], "body",
     r"\[source, epoch, seq\]"),
    (parse_storage_message, [CREDIT, msgpack.packb({"bytes": float("inf")})], "body",
     "bytes is inf"),
    (parse_storage_message, [b"NACK", msgpack.packb({})], "parts", "NACK"),
    (parse_credit, [CREDIT, msgpack.packb({"kilobytes": 1})], "body", "lacks bytes"),
    (parse_credit, [CREDIT, b"\xc1"], "body", "not msgpack"),
    (parse_credit, [b"WHAT", b"x", b"y"], "parts", "of 3 parts"),
    (parse_monitor_message, [FRAME, b"\xc1", b""], "header", "not msgpack"),
    (parse_monitor_message, [STATS, b"\xc1"], "body", "not msgpack"),
    (parse_monitor_message, [b"junk"], "parts", "junk"),
])
def test_malformed_messages_name_the_wrong_part(parse, parts, part, words):
    with pytest.raises(ProtocolError, match=words) as caught:
        parse(parts)
    assert caught.value.part == part
    assert isinstance(caught.value, BodyError) == (part == "body")
    assert isinstance(caught.value, FrameError) == (part == "header")


def test_storage_verb_alone_has_an_empty_body():
    assert parse_storage_message([HELLO]) == StorageHello((), 0)


def test_producer_hello_without_io_group_is_still_a_hello():
    assert parse_producer_message([HELLO, msgpack.packb({"source": "p"})]) == ProducerHello("p")


def test_stats_without_counters_keep_none():
    # Monitors only display stats: a stats body that is no map is not an error.
    assert parse_monitor_message([STATS, msgpack.packb(7)]) == Stats()
    assert parse_monitor_message([STATS, msgpack.packb({"counters": [1]})]) == Stats()


def test_stream_seqs_lists_each_stream_once():
    assert stream_seqs({("a", 1): 5, ("b", 2): 0}) == (("a", 1, 5), ("b", 2, 0))


def test_frames_off_a_real_socket_are_parsed_without_a_copy():
    ctx = zmq.Context.instance()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.setsockopt(zmq.LINGER, 0)
        b.setsockopt(zmq.LINGER, 0)
        a.bind("tcp://127.0.0.1:0")
        b.connect(a.getsockopt_string(zmq.LAST_ENDPOINT))
        sent = Frame(FrameHeader("p", 7, 3, 2, run=9, kind="info"), b"Beginning run")
        b.send_multipart(sent.parts())
        assert a.poll(5000)
        got = parse_frame(a.recv_multipart(copy=False))
        assert got.header == sent.header
        assert isinstance(got.payload, zmq.Frame) and got.size == len(b"Beginning run")
        assert bytes(got.payload.buffer) == b"Beginning run"
    finally:
        a.close(0)
        b.close(0)
