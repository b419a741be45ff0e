"""The PACMAN emulator over real loopback sockets, driven with raw protocol bytes."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st
from standin import StandInBoard

from larpixdaq.boards.pacman_emulator import (
    ERR_BAD_CHANNEL,
    ERR_BOARD,
    ERR_MALFORMED,
    ERR_UNKNOWN_WORD,
    PacmanEmulator,
)
from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.formats import packets as K
from larpixdaq.formats import pacman as P
from larpixdaq.runcontrol.testing import wait_for


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def req_socket(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, 5000)
    s.connect(endpoint)
    return s


def ask(sock: zmq.Socket, message: bytes) -> bytes:
    sock.send(message)
    return sock.recv()


def sub_socket(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(endpoint)
    return s


def collect(sock: zmq.Socket, seconds: float) -> list[bytes]:
    out = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1):
            out.append(sock.recv())
    return out


def header(reply: bytes) -> tuple[bytes, int, int]:
    return P.HEADER.unpack_from(reply)


def test_ping_is_answered_with_a_pong_byte_for_byte(emulator, ctx):
    s = req_socket(ctx, emulator.cmd_endpoint)
    reply = ask(s, P.encode_request([P.Ping()]))
    kind, stamp, n = header(reply)
    assert (kind, n) == (b"!", 1)
    assert abs(stamp - time.time()) < 5
    assert reply[8:] == b"P" + bytes(15)
    assert emulator.counters["pings"] == 1


def test_endpoints_are_the_bound_free_ports(emulator):
    eps = emulator.endpoints()
    ports = {int(e.rsplit(":", 1)[1]) for e in eps.values()}
    assert len(ports) == 3 and 0 not in ports
    assert all(e.startswith("tcp://127.0.0.1:") for e in eps.values())


def test_write_is_echoed_and_read_returns_the_value(emulator, ctx):
    s = req_socket(ctx, emulator.cmd_endpoint)
    words = [P.Write(0x2010, 4), P.Write(0x1014, 64)]
    reply = P.decode_control(ask(s, P.encode_request(words)))
    assert reply.words == tuple(words)
    assert emulator.board.registers[0x2010] == 4
    reply = P.decode_control(ask(s, P.encode_request([P.Read(0x2010), P.Read(0x1014), P.Read(7)])))
    assert reply.words == (P.Read(0x2010, 4), P.Read(0x1014, 64), P.Read(7, 0))


def test_tx_reaches_the_uart_and_is_echoed(emulator, ctx):
    s = req_socket(ctx, emulator.cmd_endpoint)
    pk = K.encode_packets(packet_type=K.CONFIG_WRITE, chip_id=1, register_address=122,
                          register_data=11)
    words = [P.Tx(2, int(pk)), P.Ping(), P.Tx(1, 5), P.Tx(2, 6)]
    reply = P.decode_control(ask(s, P.encode_request(words)))
    assert reply.words == (P.Tx(2, int(pk)), P.Ping(), P.Tx(1, 5), P.Tx(2, 6))
    sent = {(ch, int(p)) for ch, pks in emulator.board.transmitted for p in pks}
    assert sent == {(2, int(pk)), (1, 5), (2, 6)}
    # order within a UART is kept
    per2 = [int(p) for ch, pks in emulator.board.transmitted if ch == 2 for p in pks]
    assert per2 == [int(pk), 6]
    assert emulator.board.chips[2][0][122] == 11
    assert emulator.counters["tx_packets"] == 3


@pytest.mark.parametrize(
    "message, kind",
    [
        (b"?\x00", "malformed_short_header"),
        (P.encode_reply([P.Ping()]), "malformed_not_a_request"),
        (P.encode_request([P.Ping()]) + b"\x00" * 5, "malformed_partial_word"),
        (P.encode_request([P.Ping()])[:6] + b"\x02\x00" + b"P" + bytes(15), "malformed_word_count"),
        (P.encode_request([]), "malformed_no_words"),
        (b"", "malformed_short_header"),
    ],
)
def test_malformed_message_gets_one_err_word_and_serving_goes_on(emulator, ctx, message, kind):
    s = req_socket(ctx, emulator.cmd_endpoint)
    reply = ask(s, message)
    kind_byte, _, n = header(reply)
    assert (kind_byte, n) == (b"!", 1)
    (err,) = P.decode_control(reply).words
    assert isinstance(err, P.Err) and err.code == ERR_MALFORMED and err.message
    assert emulator.counters["errors"] == 1 and emulator.counters["errors_" + kind] == 1
    assert P.decode_control(ask(s, P.encode_request([P.Ping()]))).words == (P.Ping(),)


def test_unknown_and_reply_only_words_get_err_in_their_place(emulator, ctx):
    s = req_socket(ctx, emulator.cmd_endpoint)
    ping = b"P" + bytes(15)
    junk = b"X" + bytes(15)
    err_in_request = P.encode_control_word(P.Err(1, b"hi"))
    message = struct.pack("<cLxH", b"?", 0, 4) + ping + junk + err_in_request + ping
    reply = P.decode_control(ask(s, message))
    assert len(reply.words) == 4
    assert reply.words[0] == P.Ping() and reply.words[3] == P.Ping()
    for w in reply.words[1:3]:
        assert isinstance(w, P.Err) and w.code == ERR_UNKNOWN_WORD
    assert emulator.counters["errors_unknown_word"] == 2


def test_tx_to_a_uart_that_does_not_exist_is_an_err(emulator, ctx):
    s = req_socket(ctx, emulator.cmd_endpoint)
    reply = P.decode_control(ask(s, P.encode_request([P.Tx(0, 1), P.Tx(33, 1), P.Tx(1, 9)])))
    assert [w.code for w in reply.words[:2]] == [ERR_BAD_CHANNEL, ERR_BAD_CHANNEL]
    assert reply.words[2] == P.Tx(1, 9)
    assert emulator.counters["errors_bad_channel"] == 2


def test_a_board_refusal_is_an_err_and_serving_goes_on(emulator, ctx):
    s = req_socket(ctx, emulator.cmd_endpoint)
    reply = P.decode_control(ask(s, P.encode_request([P.Write(0xDEAD, 1), P.Write(0x10, 1)])))
    assert isinstance(reply.words[0], P.Err) and reply.words[0].code == ERR_BOARD
    assert reply.words[1] == P.Write(0x10, 1)
    assert emulator.counters["errors_board"] == 1


def test_every_reply_is_published_on_the_echo_socket(emulator, ctx):
    echo = sub_socket(ctx, emulator.echo_endpoint)
    s = req_socket(ctx, emulator.cmd_endpoint)
    # wait until the subscription is live
    deadline = time.monotonic() + 5
    while not echo.poll(20):
        ask(s, P.encode_request([P.Ping()]))
        assert time.monotonic() < deadline
    while echo.poll(50):
        echo.recv()
    replies = [ask(s, P.encode_request([P.Write(0x20, i)])) for i in range(3)]
    echoed = [echo.recv() for _ in range(3)]
    assert echoed == replies


def bring_up_standin(ask_fn, board: StandInBoard, threshold: int, channels: int = 64) -> None:
    """Give every chip its id through chip 1 and unmask ``channels`` channels."""
    words = [P.Write(0x10, 1), P.Write(0x18, 0b11)]
    for ch in board.channels:
        for j in range(len(board.chips[ch])):
            cid = board.first_id + 10 * (ch - 1) + j
            words.append(P.Tx(ch, int(K.encode_packets(packet_type=2, chip_id=1,
                                                       register_address=122, register_data=cid))))
            mask = np.ones(64, np.uint8)
            mask[:channels] = 0
            regs = np.packbits(mask, bitorder="little")
            for a, v in [(64, threshold), *zip(range(131, 139), regs, strict=True)]:
                words.append(P.Tx(ch, int(K.encode_packets(packet_type=2, chip_id=cid,
                                                           register_address=a,
                                                           register_data=int(v)))))
    reply = P.decode_control(ask_fn(P.encode_request(words)))
    assert not any(isinstance(w, P.Err) for w in reply.words)


def test_data_flows_only_from_enabled_receivers_and_decodes(start_emulator, ctx):
    board = StandInBoard(channels=2, chips_per_channel=2)
    emu = start_emulator(board)
    sub = sub_socket(ctx, emu.data_endpoint)
    s = req_socket(ctx, emu.cmd_endpoint)
    bring_up_standin(lambda m: ask(s, m), board, threshold=50)
    # Disable channel 2's receiver: its chips stay quiet on the wire.
    ask(s, P.encode_request([P.Write(0x18, 0b01)]))
    collect(sub, 0.05)
    messages = collect(sub, 0.3)
    assert messages
    assert all(m[:1] == b"D" for m in messages)
    result = P.decode_data_messages(messages, io_groups=1)
    assert result.n_errors == 0
    chip = result.rows[result.rows["packet_type"] == 0]
    assert len(chip) > 50
    assert set(chip["io_channel"]) == {1}
    assert set(chip["chip_id"]) <= {11, 12}
    assert chip["valid_parity"].all()
    assert emu.counters["data_words"] >= len(chip)


def test_data_messages_are_split_to_the_word_limit(start_emulator, ctx):
    board = StandInBoard(channels=1, chips_per_channel=3)
    emu = start_emulator(board, message_words=7)
    sub = sub_socket(ctx, emu.data_endpoint)
    s = req_socket(ctx, emu.cmd_endpoint)
    bring_up_standin(lambda m: ask(s, m), board, threshold=10)
    messages = collect(sub, 0.3)
    counts = [header(m)[2] for m in messages]
    assert counts and max(counts) <= 7 and 7 in counts
    assert all(len(m) == 8 + 16 * c for m, c in zip(messages, counts, strict=True))


def test_stop_releases_the_ports(start_emulator, ctx):
    emu = start_emulator()
    port = int(emu.cmd_endpoint.rsplit(":", 1)[1])
    emu.stop()
    emu.stop()  # idempotent
    again = start_emulator(cmd_port=port)
    s = req_socket(ctx, again.cmd_endpoint)
    assert P.decode_control(ask(s, P.encode_request([P.Ping()]))).words == (P.Ping(),)


def test_flood_mode_publishes_full_messages_and_still_answers(start_emulator, ctx):
    emu = start_emulator(flood=True, message_words=100)
    sub = sub_socket(ctx, emu.data_endpoint)
    s = req_socket(ctx, emu.cmd_endpoint)
    messages = collect(sub, 0.1)
    assert messages and all(header(m)[2] == 100 for m in messages)
    assert P.decode_control(ask(s, P.encode_request([P.Ping()]))).words == (P.Ping(),)
    rows = P.decode_data_messages(messages[:5], 1).rows
    assert rows["valid_parity"][rows["packet_type"] == 0].all()


_any_word = st.one_of(
    st.just(P.Ping()),
    st.builds(P.Write, st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1)),
    st.builds(P.Read, st.integers(0, 0xFFFF)),
    st.builds(P.Tx, st.integers(0, 40), st.integers(0, 2**64 - 1)),
)


@settings(max_examples=200, deadline=None)
@given(words=st.lists(_any_word, min_size=1, max_size=20),
       junk=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=3),
       cut=st.integers(0, 3))
def test_every_request_gets_a_well_formed_reply(words, junk, cut):
    """Whatever bytes arrive, the reply is a valid '!' message: one word per request word,
    or a single ERR for a message that cannot be split into words; errors are counted."""
    emu = PacmanEmulator(StandInBoard(channels=4))
    request = bytearray(P.encode_request(words))
    for at, value in junk:
        if at < len(request):
            request[at] = value
    if cut:
        request = request[: len(request) - cut * 5]
    reply, _ = emu.handle_request(bytes(request))
    decoded = P.decode_control(reply)
    assert decoded.kind == b"!"
    errs = sum(isinstance(w, P.Err) for w in decoded.words)
    assert emu.counters["errors"] >= min(errs, 1)
    n_words = (len(request) - 8) // 16
    if len(decoded.words) != n_words or n_words == 0:
        assert len(decoded.words) == 1 and isinstance(decoded.words[0], P.Err)
        assert decoded.words[0].code == ERR_MALFORMED
    if not junk and not cut:
        model: dict[int, int] = {}
        for sent, got in zip(words, decoded.words, strict=True):
            if isinstance(sent, P.Tx) and not 1 <= sent.io_channel <= 32:
                assert isinstance(got, P.Err) and got.code == ERR_BAD_CHANNEL
            elif isinstance(sent, P.Write) and sent.register == 0xDEAD:
                assert isinstance(got, P.Err) and got.code == ERR_BOARD
            elif isinstance(sent, P.Read):
                assert got == P.Read(sent.register, model.get(sent.register, 0))
            else:
                if isinstance(sent, P.Write):
                    model[sent.register] = sent.value
                assert got == sent


class FaultyBoard(StandInBoard):
    def transmit(self, io_channel, packets):
        raise RuntimeError("model bug")


def test_a_fault_in_the_board_model_is_answered_and_serving_goes_on(start_emulator, ctx):
    emu = start_emulator(FaultyBoard())
    s = req_socket(ctx, emu.cmd_endpoint)
    (err,) = P.decode_control(ask(s, P.encode_request([P.Tx(1, 5)]))).words
    assert isinstance(err, P.Err) and err.code == ERR_BOARD and err.message == b"RuntimeError"
    assert emu.counters["errors_internal"] == 1
    assert P.decode_control(ask(s, P.encode_request([P.Ping()]))).words == (P.Ping(),)


def _until(sub: zmq.Socket, last: bytes, timeout: float = 20.0) -> list[bytes]:
    """Every message ``sub`` receives up to and including ``last``."""
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while not out or out[-1] != last:
        left = deadline - time.monotonic()
        assert left > 0 and sub.poll(int(left * 1000) + 1), f"{len(out)} messages, no last"
        out.append(sub.recv())
    return out


def test_rate_mode_publishes_the_fixed_rate_with_syncs_and_pause_holds_it(start_emulator, ctx):
    """A board brought up gives ~18 k packets/s of physics; at rate=100 k the emulator makes
    100 k/s (never more than the wall clock allows), SYNC words included, and a subscriber
    that joined before sees exactly what the counters say was published."""
    board = SimulatedBoard(1, seed=3).bring_up_all()
    physics = board.physics.expected_rate(board._active())
    rate = 100_000
    assert physics < rate / 3
    emu = start_emulator(board, rate=rate, message_words=1000)
    sub = sub_socket(ctx, emu.data_endpoint)
    sub.setsockopt(zmq.RCVHWM, 0)
    assert sub.poll(20_000)  # joined: nothing published from now on is missed
    emu.pause()
    _until(sub, emu.last_message)
    before = dict(emu.counters)
    t0 = time.monotonic()
    emu.resume()
    wait_for(lambda: emu.counters["rate_packets"] - before["rate_packets"] >= rate, timeout=20)
    emu.pause()
    elapsed = time.monotonic() - t0
    made = emu.counters["rate_packets"] - before["rate_packets"]
    assert made <= 1.05 * rate * elapsed + 2000, (made, elapsed)  # never ahead of the clock
    assert made / elapsed > 2 * physics, (made, elapsed)  # not the board's physics rate
    msgs = _until(sub, emu.last_message)
    assert len(msgs) == emu.counters["data_messages"] - before["data_messages"]
    words = np.frombuffer(b"".join(m[P.HEADER_BYTES:] for m in msgs), P.WORD_DTYPE)
    assert len(words) == emu.counters["data_words"] - before["data_words"]
    assert np.count_nonzero(words["type"] == P.WORD_DATA) == made
    assert np.count_nonzero(words["type"] == P.WORD_SYNC) >= 3  # board time ran >= 3 s
    assert max(header(m)[2] for m in msgs) <= 1000
    # Paused: requests are answered (each a turn of the serving loop), nothing published.
    s = req_socket(ctx, emu.cmd_endpoint)
    for _ in range(3):
        assert P.decode_control(ask(s, P.encode_request([P.Ping()]))).words == (P.Ping(),)
    assert emu.counters["data_messages"] - before["data_messages"] == len(msgs)
    assert not sub.poll(0)
    assert emu.counters["rate_behind"] == 0 or elapsed > 1.5  # only a starved thread skips


def test_rate_mode_idles_in_real_time_until_a_chip_can_send(start_emulator, ctx):
    emu = start_emulator(SimulatedBoard(1, seed=3), rate=50_000)  # nothing configured
    s = req_socket(ctx, emu.cmd_endpoint)
    assert P.decode_control(ask(s, P.encode_request([P.Ping()]))).words == (P.Ping(),)
    wait_for(lambda: emu.counters["rate_idle"] >= 3, timeout=20)
    assert emu.counters["rate_packets"] == 0
    assert emu.counters["simulated_seconds"] > 0  # time follows the clock meanwhile


@pytest.mark.parametrize("kwargs", [{"rate": 0}, {"rate": -5.0}, {"rate": float("nan")},
                                    {"rate": 10.0, "flood": True}])
def test_a_rate_that_cannot_be_paced_is_refused(kwargs):
    with pytest.raises(ValueError, match="rate"):
        PacmanEmulator(StandInBoard(), **kwargs)
