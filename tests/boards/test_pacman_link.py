"""The PACMAN link (the board's command and data sockets) against emulated boards and
sockets that misbehave, over real loopback sockets."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import pytest
import zmq
from loopback import free_port, port_of

from larpixdaq.boards.pacman_link import BoardError, BoardTimeout, PacmanLink
from larpixdaq.formats import pacman as P


@pytest.fixture
def link(connect: Callable[..., PacmanLink]) -> Callable[..., PacmanLink]:
    """Links to emulators (or to nothing), closed after the test."""
    return partial(connect, cls=PacmanLink)


def test_ping_and_register_batches(emulator, link):
    client = link(emulator)
    assert client.ping() > 0
    before = emulator.counters["requests"]
    client.write_registers({0x2010: 4, 0x3010: 5, 0x1014: 64})
    assert client.read_registers([0x2010, 0x3010, 0x1014, 0x99]) == [4, 5, 64, 0]
    assert emulator.counters["requests"] - before == 2  # one message each way
    assert client.read_register(0x3010) == 5


def test_transmit_bulk_reaches_the_uarts_in_few_messages(emulator, link):
    client = link(emulator)
    pk = np.arange(1, 70001, dtype=np.uint64)
    ch = np.where(pk % 2 == 0, 1, 2)
    before = emulator.counters["requests"]
    client.transmit(ch, pk)
    assert emulator.counters["requests"] - before == 2  # 65535 + the rest
    got = {c: np.concatenate([p for cc, p in emulator.board.transmitted if cc == c])
           for c in (1, 2)}
    assert np.array_equal(got[1], pk[ch == 1]) and np.array_equal(got[2], pk[ch == 2])


def test_an_err_reply_is_a_clear_error_naming_the_board(emulator, link):
    client = link(emulator)
    with pytest.raises(BoardError, match=r"PACMAN io_group 1 at tcp://127\.0\.0\.1:\d+ refused"):
        client.write_registers([(0x10, 1), (0xDEAD, 1)])
    assert client.counters["err_replies"] == 1
    assert client.ping() > 0


def test_a_board_that_is_not_there_times_out_naming_it(link):
    port = free_port()
    client = link(cmd_port=port, data_port=free_port(), timeout=0.1, retries=3)
    with pytest.raises(BoardTimeout) as err:
        client.ping()
    assert str(err.value) == (
        f"PACMAN io_group 1 at tcp://127.0.0.1:{port} did not answer PING within 0.1 s (3 tries)"
    )
    assert client.counters["timeouts"] == 3 and client.counters["retries"] == 2


def test_a_stopped_board_times_out_and_a_restarted_one_answers_again(start_emulator, link):
    emu = start_emulator()
    port = port_of(emu.cmd_endpoint)
    client = link(emu, timeout=0.1, retries=2)
    assert client.ping() > 0
    emu.stop()
    with pytest.raises(BoardTimeout, match="did not answer READ of 1 register"):
        client.read_register(0x10)
    start_emulator(cmd_port=port)
    assert client.ping() > 0  # the fresh REQ socket reconnects


def test_a_board_that_swallows_requests_times_out(link):
    ctx = zmq.Context()
    try:
        sink = ctx.socket(zmq.ROUTER)
        sink.setsockopt(zmq.LINGER, 0)
        port = sink.bind_to_random_port("tcp://127.0.0.1")
        client = link(cmd_port=port, data_port=free_port(), timeout=0.05, retries=2)
        with pytest.raises(BoardTimeout, match=f"127.0.0.1:{port} did not answer WRITE"):
            client.write_register(0x10, 1)
        sink.close()
    finally:
        ctx.destroy(linger=0)


@pytest.fixture
def rogue_board() -> Iterator[tuple[int, list[bytes]]]:
    """A REP socket answering every request with the next canned reply."""
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    replies: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if rep.poll(20):
                rep.recv()
                rep.send(replies.pop(0) if replies else b"")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port, replies
    stop.set()
    t.join()
    rep.close()
    ctx.destroy(linger=0)


def test_malformed_or_short_replies_are_clear_errors(rogue_board, link):
    port, replies = rogue_board
    client = link(cmd_port=port, data_port=free_port(), timeout=2.0)
    replies += [b"junk", P.encode_reply([P.Ping(), P.Ping()]), P.encode_reply([P.Read(1, 2)])]
    with pytest.raises(BoardError, match="malformed reply to PING"):
        client.ping()
    with pytest.raises(BoardError, match=r"answered READ of 1 register\(s\) with 2 word"):
        client.read_register(1)
    with pytest.raises(BoardError, match="answered PING with"):
        client.ping()
    assert client.counters["bad_replies"] == 2


NO_WORDS = np.zeros(0, dtype=P.WORD_DTYPE)


def test_data_a_board_sent_before_a_start_never_comes_after_it(link):
    """A board's PUB goes on sending until it has processed an unsubscription: what was in
    flight then waits in the subscriber's queue. It is the data of no run (published before
    this start), so a start must not hand it out as the first data of the new one."""
    ctx = zmq.Context.instance()
    board = ctx.socket(zmq.PUB)
    board.setsockopt(zmq.LINGER, 0)
    try:
        data_port = board.bind_to_random_port("tcp://127.0.0.1")
        client = link(cmd_port=free_port(), data_port=data_port)
        client.start_data()
        old = [P.encode_data_message(1_700_000_000, NO_WORDS)]
        deadline = time.monotonic() + 30
        while not client.recv_messages(0.05):  # subscribed for sure: data flows
            board.send(old[0])
            assert time.monotonic() < deadline, "the subscription never took"
        client.stop_data()
        for i in range(200):  # right after the unsubscription: some of these are in flight
            board.send(P.encode_data_message(1_700_000_001 + i, NO_WORDS))
        time.sleep(0.5)  # whatever was in flight has arrived by now
        client.start_data()
        new = P.encode_data_message(1_800_000_000, NO_WORDS)
        got: list[bytes] = []
        deadline = time.monotonic() + 30
        while new not in got:
            board.send(new)
            got += client.recv_messages(0.05)
            assert time.monotonic() < deadline, "no data after the start"
        assert set(got) == {new}, f"{len([m for m in got if m != new])} messages from before"
    finally:
        board.close(0)
