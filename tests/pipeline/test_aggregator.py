"""The aggregator's protocol against real sockets: credit, retention until ACK, resend after a
storage restart, monitor sampling, malformed input."""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq
from datagen import make_frames, make_messages

from larpixdaq.pipeline.aggregator import Aggregator
from larpixdaq.pipeline.protocol import (
    ACK,
    CREDIT,
    FRAME,
    HELLO,
    STATS,
    WELCOME,
    decode_header,
    encode_header,
)
from larpixdaq.runcontrol.testing import wait_for


@pytest.fixture
def agg():
    a = Aggregator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0",
                   window=1 << 20, monitor_rate=1000, storage_timeout=0.5).start()
    socks = []

    def dealer(address):
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(address)
        socks.append(s)
        return s

    a.dealer = dealer
    yield a
    for s in socks:
        s.close(0)
    a.stop()


def _recv(sock, timeout=3.0):
    assert sock.poll(timeout * 1000), "nothing arrived"
    return sock.recv_multipart()


def _credit(sock) -> int:
    """The next CREDIT a producer gets (past the WELCOME and relayed ACKs)."""
    parts = _recv(sock)
    while parts[0] in (WELCOME, ACK):
        parts = _recv(sock)
    assert parts[0] == CREDIT
    return msgpack.unpackb(parts[1])["bytes"]


def _frames(n, words=100):
    return make_frames("p", 1, make_messages(11, n, words=words), markers=False)


def test_producer_credit_is_bounded_by_the_window(agg):
    prod = agg.dealer(agg.inlet)
    prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
    granted = _credit(prod)
    assert 0 < granted <= agg.window
    # Without a storage nothing leaves: the aggregator holds frames and grants no more
    # once the window is used up.
    frames = _frames(40, words=1000)  # 16 kB each
    sent = 0
    for h, payload in frames:
        if granted <= 0:
            break
        prod.send_multipart([FRAME, encode_header(h), payload])
        granted -= len(payload)
        sent += 1
    wait_for(lambda: agg.snapshot()["frames_in"] == sent)
    while prod.poll(200):
        granted += _credit(prod)
    assert agg.snapshot()["bytes_held"] + max(granted, 0) <= agg.window + len(frames[0][1])


def test_eight_producers_joining_one_by_one_all_get_credit(agg):
    # A 2x2 has 8 boards; the first to join must not sit on the whole window while the later
    # ones wait (a slow board can take minutes to use a large grant).
    producers = []
    for i in range(8):
        prod = agg.dealer(agg.inlet)
        prod.send_multipart([HELLO, msgpack.packb({"source": f"p{i}"})])
        producers.append(prod)
        wait_for(lambda n=i + 1: agg.snapshot()["producers"] == n)
    for i, prod in enumerate(producers):
        assert _credit(prod) > 0, f"producer p{i} got no credit"


def test_frames_held_until_acked_and_resent_to_a_restarted_storage(agg):
    prod = agg.dealer(agg.inlet)
    prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
    _credit(prod)
    frames = _frames(10)
    for h, payload in frames:
        prod.send_multipart([FRAME, encode_header(h), payload])
    wait_for(lambda: agg.snapshot()["frames_in"] == 10)

    store = agg.dealer(agg.outlet)
    store.send_multipart([HELLO, msgpack.packb({"committed": [], "credit": 1 << 20})])
    got = [decode_header(_recv(store)[1]).seq for _ in range(10)]
    assert got == list(range(10))
    store.send_multipart([ACK, msgpack.packb({"streams": [["p", 7, 3]]})])
    wait_for(lambda: agg.snapshot()["frames_held"] == 6)

    # The storage dies; a new one has frames up to 5 on disk and gets 6..9 again, in order,
    # once the old one has been silent for storage_timeout (before that it is refused).
    again = agg.dealer(agg.outlet)
    hello = [HELLO, msgpack.packb({"committed": [["p", 7, 5]], "credit": 1 << 20})]

    def second_hello_while_the_first_speaks():
        store.send_multipart([CREDIT, msgpack.packb({"bytes": 0})])  # a sign of life
        again.send_multipart(hello)
        return agg.snapshot()["storage_hellos_refused"] >= 1
    wait_for(second_hello_while_the_first_speaks)
    assert not again.poll(100)  # refused: nothing for the second one
    store.close(0)
    wait_for(lambda: time.monotonic() - agg._storage_heard > agg.storage_timeout)
    again.send_multipart(hello)
    got = [decode_header(_recv(again)[1]).seq for _ in range(4)]
    assert got == [6, 7, 8, 9]
    assert not again.poll(200)
    again.send_multipart([ACK, msgpack.packb({"streams": [["p", 7, 9]]})])
    wait_for(lambda: agg.snapshot()["frames_held"] == 0)
    snap = agg.snapshot()
    assert snap["frames_resent"] == 4 and snap["bytes_held"] == 0


def test_storage_credit_limits_what_is_sent(agg):
    prod = agg.dealer(agg.inlet)
    prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
    _credit(prod)
    frames = _frames(6, words=100)  # 1608 bytes each
    for h, payload in frames:
        prod.send_multipart([FRAME, encode_header(h), payload])
    store = agg.dealer(agg.outlet)
    store.send_multipart([HELLO, msgpack.packb({"committed": [], "credit": 2000})])
    assert len([_recv(store) for _ in range(2)]) == 2  # the second overdraws the credit
    assert not store.poll(300)
    store.send_multipart([CREDIT, msgpack.packb({"bytes": 5000})])
    # -1216 + 5000 = 3784: frames 2, 3 and 4 (the last one overdraws again), not 5.
    assert [decode_header(_recv(store)[1]).seq for _ in range(3)] == [2, 3, 4]
    assert not store.poll(300)


def test_monitor_gets_samples_and_stats(agg):
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(agg.monitor)
    try:
        prod = agg.dealer(agg.inlet)
        prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
        _credit(prod)
        seen_frame = seen_stats = False
        frames = _frames(200)
        i = 0
        deadline = time.monotonic() + 30
        while not (seen_frame and seen_stats):
            assert time.monotonic() < deadline, f"monitor got frame {seen_frame} stats {seen_stats}"
            if i < len(frames):
                h, payload = frames[i]
                prod.send_multipart([FRAME, encode_header(h), payload])
                i += 1
            if sub.poll(20):
                parts = sub.recv_multipart()
                if parts[0] == FRAME:
                    seen_frame = decode_header(parts[1]).source == "p"
                elif parts[0] == STATS:
                    seen_stats = "frames_in" in msgpack.unpackb(parts[1])["counters"]
        snap = agg.snapshot()
        assert snap["frames_to_monitor"] + snap["frames_not_to_monitor"] == snap["frames_in"]
    finally:
        sub.close(0)


def test_monitor_gets_every_run_marker_even_between_samples():
    """Data frames are rate-limited to monitors; the rare info frames never are."""
    a = Aggregator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", "tcp://127.0.0.1:0",
                   window=1 << 20, monitor_rate=0.01).start()  # one data frame per 100 s
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(a.monitor)
    prod = ctx.socket(zmq.DEALER)
    prod.setsockopt(zmq.LINGER, 0)
    prod.connect(a.inlet)
    try:
        prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
        _credit(prod)
        # The PUB socket drops what it sends before the subscription is in place: send
        # data until one sample arrives, then the whole run with its markers.
        probe = make_frames("warm", 1, make_messages(5, 200, words=10), markers=False)
        for h, payload in probe:
            prod.send_multipart([FRAME, encode_header(h), payload])
            if sub.poll(20) and sub.recv_multipart()[0] == FRAME:
                break
        else:
            pytest.fail("the monitor subscription never received a frame")
        for h, payload in make_frames("p", 1, make_messages(6, 30, words=10)):
            prod.send_multipart([FRAME, encode_header(h), payload])
        kinds = []
        while sub.poll(1000):
            parts = sub.recv_multipart()
            if parts[0] == FRAME and decode_header(parts[1]).source == "p":
                kinds.append(decode_header(parts[1]).kind)
        assert kinds.count("info") == 2  # "Beginning run" and "Ending run"
        assert kinds.count("data") == 1  # the first data frame; the rest fall in the limit
    finally:
        sub.close(0)
        prod.close(0)
        a.stop()


def test_malformed_messages_are_counted_and_ignored(agg):
    prod = agg.dealer(agg.inlet)
    prod.send_multipart([FRAME, b"\xc1not msgpack", b"payload"])
    prod.send_multipart([b"WHAT"])
    store = agg.dealer(agg.outlet)
    store.send_multipart([ACK, b"\x00"])  # from a storage that never said hello
    wait_for(lambda: agg.snapshot()["bad_messages"] == 3)
    prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
    assert _credit(prod) > 0  # still serving
    assert agg.snapshot()["frames_held"] == 0


def test_hello_whose_body_is_not_a_map_is_counted_and_the_loop_goes_on(agg):
    prod = agg.dealer(agg.inlet)
    prod.send_multipart([HELLO, msgpack.packb(["p"])])
    store = agg.dealer(agg.outlet)
    store.send_multipart([HELLO, msgpack.packb(7)])
    wait_for(lambda: agg.snapshot()["bad_messages"] == 2)
    prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
    assert _credit(prod) > 0  # the loop survived both
    assert agg.snapshot()["storage_connected"] == 0


def _next(sock, verb):
    """The next message of ``verb`` a peer gets, skipping others."""
    parts = _recv(sock)
    while parts[0] != verb:
        parts = _recv(sock)
    return parts


def test_hello_is_answered_with_this_aggregators_id(agg):
    prod = agg.dealer(agg.inlet)
    prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
    first = msgpack.unpackb(_next(prod, WELCOME)[1])["aggregator"]
    prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
    assert msgpack.unpackb(_next(prod, WELCOME)[1])["aggregator"] == first == agg.instance
    other = Aggregator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", None)
    assert other.instance != agg.instance  # a restarted aggregator is told apart


def test_frames_before_hello_and_duplicates_are_dropped_and_counted(agg):
    prod = agg.dealer(agg.inlet)
    frames = _frames(6)
    # Frames sent before this producer's HELLO (to an aggregator before this one) are not
    # taken: the producer sends them again after the WELCOME, in order.
    for h, payload in frames[3:5]:
        prod.send_multipart([FRAME, encode_header(h), payload])
    wait_for(lambda: agg.snapshot()["frames_unannounced"] == 2)
    prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
    _credit(prod)
    for h, payload in [*frames[:4], *frames[2:]]:  # 2 and 3 twice
        prod.send_multipart([FRAME, encode_header(h), payload])
    wait_for(lambda: agg.snapshot()["frames_in"] == 6)
    snap = agg.snapshot()
    assert snap["frames_duplicate"] == 2 and snap["frames_held"] == 6
    store = agg.dealer(agg.outlet)
    store.send_multipart([HELLO, msgpack.packb({"committed": [], "credit": 1 << 20})])
    assert [decode_header(_recv(store)[1]).seq for _ in range(6)] == list(range(6))
    assert not store.poll(200)


def test_storage_acks_are_relayed_to_the_producer_of_the_stream(agg):
    prods = {}
    for name in ("p", "q"):
        prods[name] = agg.dealer(agg.inlet)
        prods[name].send_multipart([HELLO, msgpack.packb({"source": name})])
        _credit(prods[name])
    for h, payload in _frames(3):
        prods["p"].send_multipart([FRAME, encode_header(h), payload])
    store = agg.dealer(agg.outlet)
    store.send_multipart([HELLO, msgpack.packb({"committed": [], "credit": 1 << 20})])
    [_recv(store) for _ in range(3)]
    store.send_multipart([ACK, msgpack.packb({"streams": [["p", 7, 2], ["q", 9, 4]]})])
    assert msgpack.unpackb(_next(prods["p"], ACK)[1]) == {"streams": [["p", 7, 2]]}
    assert msgpack.unpackb(_next(prods["q"], ACK)[1]) == {"streams": [["q", 9, 4]]}
    # A producer that says HELLO again (or a new one of that name) learns what is on disk.
    again = agg.dealer(agg.inlet)
    again.send_multipart([HELLO, msgpack.packb({"source": "p"})])
    assert msgpack.unpackb(_next(again, ACK)[1]) == {"streams": [["p", 7, 2]]}


def _credits(sock, wait_ms=300) -> int:
    """The credit granted in what arrives until ``wait_ms`` pass quietly (WELCOME and ACK
    are skipped)."""
    total = 0
    while sock.poll(wait_ms):
        parts = sock.recv_multipart()
        if parts[0] == CREDIT:
            total += msgpack.unpackb(parts[1])["bytes"]
    return total


def test_credit_of_producers_that_went_away_comes_back_to_a_real_one():
    # 300 processes say HELLO and go away: without expiry each kept its grant for good, the
    # window stayed handed out and the one real producer was held to what was left.
    a = Aggregator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", None, window=1 << 20,
                   peer_timeout=2.0).start()
    ctx = zmq.Context.instance()
    dead = [ctx.socket(zmq.DEALER) for _ in range(300)]
    real = ctx.socket(zmq.DEALER)
    try:
        for i, s in enumerate(dead):
            s.setsockopt(zmq.LINGER, 0)
            s.connect(a.inlet)
            s.send_multipart([HELLO, msgpack.packb({"source": f"gone-{i}"})])
        wait_for(lambda: a.snapshot()["producer_hellos"] == 300)
        real.setsockopt(zmq.LINGER, 0)
        real.connect(a.inlet)
        hello = [HELLO, msgpack.packb({"source": "real"})]
        real.send_multipart(hello)
        # The window is already handed out to the first ones (credit is never taken back):
        # at most a 1/301 share is left for the real producer.
        assert _credits(real, 300) <= (1 << 20) // 250
        for s in dead:
            s.close(0)
        dead.clear()

        # The real producer speaks (here often, to stay well inside the time-out on a busy
        # machine); the others fall silent and their credit comes back.
        def expired():
            real.send_multipart(hello)
            snap = a.snapshot()
            return snap["producers_expired"] == 300 and snap["producers"] == 1
        wait_for(expired)
        assert a.snapshot()["producers_silent"] == 300
        _credits(real)  # what the HELLOs above were granted
        real.send_multipart(hello)  # a fresh account: now the whole grant
        assert _credits(real) == a.max_grant == (1 << 20) // 32
    finally:
        for s in dead:
            s.close(0)
        real.close(0)
        a.stop()


def test_a_silent_producer_heard_again_is_counted_with_the_credit_it_held(agg):
    agg.peer_timeout = 0.3
    prod = agg.dealer(agg.inlet)
    prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
    held = _credits(prod)
    assert held == agg.max_grant
    wait_for(lambda: agg.snapshot()["producers_silent"] == 1)
    assert agg.producers[next(iter(agg.producers))].credit_out == 0  # taken back
    # It comes back with a frame paid from the credit it still held: accepted, and the
    # rest of that credit is counted as handed out again, so nothing more is granted.
    (h, payload), = _frames(1)
    prod.send_multipart([FRAME, encode_header(h), payload])
    wait_for(lambda: agg.snapshot()["frames_in"] == 1)
    assert agg.snapshot()["producers"] == 1
    assert agg.producers[next(iter(agg.producers))].credit_out == held - len(payload)
    assert _credits(prod) == 0  # under an eighth of a grant is missing: none is due


def test_oversize_messages_are_refused_and_counted_not_held(agg):
    from larpixdaq.pipeline.protocol import MAX_PAYLOAD_BYTES

    prod = agg.dealer(agg.inlet)
    prod.send_multipart([HELLO, msgpack.packb({"source": "p"})])
    _credit(prod)
    (h, _), = _frames(1)
    prod.send_multipart([FRAME, encode_header(h), b"\0" * (MAX_PAYLOAD_BYTES + 1)])
    prod.send_multipart([FRAME, b"\x80" * 2000, b""])  # a header over its limit
    wait_for(lambda: agg.snapshot()["frames_oversize"] == 2)
    snap = agg.snapshot()
    assert snap["frames_in"] == 0 and snap["bytes_held"] == 0 and snap["bad_messages"] == 0


def test_admitted_streams_only_and_each_stream_from_one_connection(agg):
    import random

    from larpixdaq.runcontrol.admitted import AdmittedStreams, epoch_in_block, mint

    table = mint({"p": 11}, random.Random(4).getrandbits)
    agg.admit(AdmittedStreams.from_run(1, table))
    epoch = epoch_in_block(table["p"][1], random.Random(5).getrandbits)
    real, other = agg.dealer(agg.inlet), agg.dealer(agg.inlet)
    real.send_multipart([HELLO, msgpack.packb({"source": "p", "io_group": 11})])
    _credit(real)
    frames = make_frames("p", 11, make_messages(11, 6, words=10), epoch=epoch, markers=False)
    for h, payload in frames[:3]:
        real.send_multipart([FRAME, encode_header(h), payload])
    wait_for(lambda: agg.snapshot()["frames_in"] == 3)
    # Another connection says HELLO in p's name (refused: p is alive), then sends p's stream
    # (a forged seq ahead of the real one) and frames of a stream the run does not know.
    other.send_multipart([HELLO, msgpack.packb({"source": "p", "io_group": 11})])
    wait_for(lambda: agg.snapshot()["producer_hellos_refused"] == 1)
    assert not other.poll(100)  # no WELCOME, no credit
    other.send_multipart([HELLO, msgpack.packb({"source": "q", "io_group": 11})])
    wait_for(lambda: agg.snapshot()["producer_hellos"] == 2)
    forged = frames[5][0]
    other.send_multipart([FRAME, encode_header(forged), frames[5][1]])
    for h, payload in make_frames("p", 11, make_messages(12, 2, words=10), epoch=7,
                                  markers=False):
        other.send_multipart([FRAME, encode_header(h), payload])
    # Nor a stream of its own in p's name, with an epoch inside p's block.
    fresh = epoch_in_block(table["p"][1], random.Random(6).getrandbits)
    assert fresh != epoch
    for h, payload in make_frames("p", 11, make_messages(13, 2, words=10), epoch=fresh,
                                  markers=False):
        other.send_multipart([FRAME, encode_header(h), payload])
    wait_for(lambda: agg.snapshot()["frames_not_admitted"] == 5)
    for h, payload in frames[3:]:
        real.send_multipart([FRAME, encode_header(h), payload])
    wait_for(lambda: agg.snapshot()["frames_in"] == 6)
    store = agg.dealer(agg.outlet)
    store.send_multipart([HELLO, msgpack.packb({"committed": [], "credit": 1 << 20})])
    got = [decode_header(_recv(store)[1]) for _ in range(6)]
    assert [(h.epoch, h.seq) for h in got] == [(epoch, i) for i in range(6)]
    assert not store.poll(200)
