"""A PACMAN readout board on the network, backed by a simulated board.

The emulator speaks the PACMAN protocol byte for byte, so anything that can drive a real
board (the field's client library, or this package's own client) can drive it unchanged:
a REP socket answers requests word by word, a PUB socket publishes data messages (no topic
prefix) and a second PUB socket publishes an echo of every reply.

One thread owns every socket and the board: ZeroMQ sockets are not thread-safe and the
simulated board is pure, so serialising commands and data generation on one thread needs no
lock and keeps the board's time ordering obvious (a command always acts between two
``generate`` calls). Simulated time follows the wall clock: every ``period`` seconds (and
right after a request that sent packets to the chips, so that config-read replies come back
promptly) the board is advanced by the wall time elapsed and whatever it produced is
published.

Two other data modes exist for measurements: ``flood`` (as fast as the board can make
packets) and ``rate`` (a fixed number of physics packets per second, paced by the wall
clock, whatever the chips' configuration would give). :meth:`PacmanEmulator.pause` holds
the data without stopping the board's command service, so a test can know exactly which
messages were published between two instants (``counters`` and ``last_message``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, Protocol

import numpy as np
import zmq

from larpixdaq.errors import FormatError
from larpixdaq.formats import pacman as P

# Error codes carried in ERR reply words (byte 1); the text (bytes 2-15) says the same.
ERR_MALFORMED = 1
ERR_UNKNOWN_WORD = 2
ERR_BAD_CHANNEL = 3
ERR_BOARD = 4

MAX_CATCH_UP = 1.0
"""Longest stretch of simulated time generated at once: if the thread was stalled for
longer, the board falls behind the wall clock instead of producing one enormous burst."""


class Board(Protocol):
    """What the emulator needs from a simulated board."""

    io_group: int

    def pacman_write(self, register: int, value: int) -> None: ...
    def pacman_read(self, register: int) -> int: ...
    def transmit(self, io_channel: int, packets: np.ndarray) -> None: ...
    def generate(self, seconds: float) -> np.ndarray: ...
    def generate_packets(self, n: int, markers: bool = False) -> np.ndarray: ...


def _bind(sock: zmq.Socket, host: str, port: int) -> str:
    """Bind to ``host:port`` (port 0 = any free port); return the endpoint actually bound."""
    if port:
        sock.bind(f"tcp://{host}:{port}")
    else:
        sock.bind(f"tcp://{host}:*")
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _err_word(code: int, text: str) -> bytes:
    return P.encode_control_word(P.Err(code, text.encode()[:14]))


class PacmanEmulator:
    """A PACMAN board server: ``start()`` binds the sockets and serves; ``stop()`` ends it.

    ``message_words`` caps the words per data message (the format allows 65535; a real
    board sends far smaller messages, and small ones keep subscriber latency low).
    ``flood`` replaces real-time data by physics packets sent as fast as the board can make
    them (``generate_packets``), to measure what a subscriber can take. ``rate`` (packets
    per second) replaces it by physics packets at that fixed rate, SYNC words included
    (``generate_packets(n, markers=True)``, paced by the wall clock every ``period``): a
    board that sends a known, steady load whatever its configuration gives (the board's
    own time runs at the pace the packets need, faster or slower than the wall clock).
    """

    def __init__(
        self,
        board: Board,
        host: str = "127.0.0.1",
        cmd_port: int = 5555,
        data_port: int = 5556,
        echo_port: int = 5554,
        period: float = 0.01,
        message_words: int = 4096,
        flood: bool = False,
        rate: float | None = None,
    ) -> None:
        if not 1 <= message_words <= P.MAX_WORDS:
            raise ValueError(f"message_words must be 1..{P.MAX_WORDS}, got {message_words}")
        if period <= 0:
            raise ValueError(f"period must be positive, got {period}")
        if rate is not None and not (isinstance(rate, (int, float)) and 0 < rate < float("inf")):
            raise ValueError(f"rate must be a positive number of packets/s, got {rate!r}")
        if rate is not None and flood:
            raise ValueError("flood and rate are two different data modes: choose one")
        self.board = board
        self.host = host
        self.ports = {"cmd": cmd_port, "data": data_port, "echo": echo_port}
        self.period = period
        self.message_words = message_words
        self.flood = flood
        self.rate = rate
        self.cmd_endpoint = ""
        self.data_endpoint = ""
        self.echo_endpoint = ""
        self.counters: Counter[str] = Counter()
        """requests, request_words, replies, reply_words, errors, errors_<kind>,
        tx_packets, data_messages, data_words, echo_messages, simulated_seconds; with
        ``rate``: rate_packets (DATA words made), rate_idle (nothing configured to send yet),
        rate_behind (the thread fell more than MAX_CATCH_UP behind; that time is skipped)."""
        self.last_message: bytes | None = None
        """The last data message published (with ``counters``, what a subscriber must have
        seen by the time it has this one)."""
        self._pause = threading.Condition()
        self._pause_wanted = False
        self._paused = False
        self._ctx: zmq.Context | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self.generate_error: BaseException | None = None
        """The last exception the board raised while generating data (counted too)."""
        self._started = threading.Event()
        self._pace = (0.0, 0)  # rate mode: since when packets are due, how many were made

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> PacmanEmulator:
        """Bind the three sockets and start serving; returns once the sockets are bound."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        self._ctx = zmq.Context()
        try:
            cmd = self._ctx.socket(zmq.REP)
            data = self._ctx.socket(zmq.PUB)
            echo = self._ctx.socket(zmq.PUB)
            for s in (cmd, data, echo):
                s.setsockopt(zmq.LINGER, 0)
            data.setsockopt(zmq.SNDHWM, 10000)
            self.cmd_endpoint = _bind(cmd, self.host, self.ports["cmd"])
            self.data_endpoint = _bind(data, self.host, self.ports["data"])
            self.echo_endpoint = _bind(echo, self.host, self.ports["echo"])
        except zmq.ZMQError as err:
            self._ctx.destroy(linger=0)
            self._ctx = None
            raise OSError(f"PACMAN emulator cannot bind on {self.host}: {err}") from err
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, args=(cmd, data, echo), name="pacman-emulator", daemon=True
        )
        self._thread.start()
        self._started.wait(5.0)
        return self

    def stop(self) -> None:
        """Stop serving and close every socket; safe to call twice."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(10.0)
        self._thread = None
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
            self._ctx = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def failure(self) -> BaseException | None:
        """The exception that ended the serving thread, if one did."""
        return self._failure

    def __enter__(self) -> PacmanEmulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def endpoints(self) -> dict[str, str]:
        return {"cmd": self.cmd_endpoint, "data": self.data_endpoint, "echo": self.echo_endpoint}

    # ------------------------------------------------------------------ serving loop
    def _serve(self, cmd: zmq.Socket, data: zmq.Socket, echo: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(cmd, zmq.POLLIN)
        last = time.monotonic()
        next_tick = last + self.period
        # Ask the board for many messages' worth at once: its per-call cost is not per word.
        flood_batch = self.message_words * max(1, (1 << 16) // self.message_words)
        self._pace = (last, 0)
        self._started.set()
        try:
            while not self._stop.is_set():
                if self._hold():
                    # Paused: commands are answered, the board's time stands still (a
                    # request's replies come out after the data resumes).
                    if poller.poll(min(self.period * 1000.0, 50.0)):
                        self._answer(cmd, echo)
                    last = next_tick = time.monotonic()
                    self._pace = (last, 0)
                    continue
                if self.rate is not None:
                    wait_ms = max(0.0, (next_tick - time.monotonic()) * 1000.0)
                    if poller.poll(min(wait_ms, 50.0)):
                        self._answer(cmd, echo)  # replies come out with the next packets
                    now = time.monotonic()
                    if now >= next_tick:
                        last = self._paced(data, last, now)
                        next_tick = max(next_tick + self.period, now)
                    continue
                if self.flood:
                    # Commands and their replies keep real time, so a host can bring the
                    # network up and configure it while the board floods.
                    if poller.poll(0) and self._answer(cmd, echo):
                        last = self._tick(data, last)
                    try:
                        words = self.board.generate_packets(flood_batch)
                    except RuntimeError:
                        # Nothing configured to send yet: idle in real time.
                        self.counters["flood_idle"] += 1
                        poller.poll(self.period * 1000.0)
                        last = self._tick(data, last)
                        continue
                    self.publish(data, words)
                    continue
                wait_ms = max(0.0, (next_tick - time.monotonic()) * 1000.0)
                if poller.poll(min(wait_ms, 50.0)) and self._answer(cmd, echo):
                    last = self._tick(data, last)
                now = time.monotonic()
                if now >= next_tick:
                    last = self._tick(data, last)
                    next_tick = max(next_tick + self.period, now)
        except BaseException as err:  # noqa: BLE001 - kept for the owner to inspect
            self._failure = err
        finally:
            for s in (cmd, data, echo):
                s.close(linger=0)

    # ------------------------------------------------------------------ pausing the data
    def pause(self, timeout: float = 10.0) -> None:
        """Stop publishing data (requests are still answered); returns once the serving
        thread has stopped, so nothing is published from then until :meth:`resume`, and
        ``counters`` and ``last_message`` say everything that was."""
        self._set_pause(True, timeout)

    def resume(self, timeout: float = 10.0) -> None:
        """Publish data again (the board's time goes on from where the pause held it);
        returns once the serving thread has taken it up."""
        self._set_pause(False, timeout)

    def _set_pause(self, wanted: bool, timeout: float) -> None:
        with self._pause:
            self._pause_wanted = wanted
            if self._thread is None or not self._thread.is_alive():
                self._paused = wanted  # taken up when serving starts
                return
            if not self._pause.wait_for(lambda: self._paused == wanted, timeout):
                what = "pause" if wanted else "resume"
                raise TimeoutError(f"the emulator's thread did not {what} within {timeout:g} s")

    def _hold(self) -> bool:
        """The serving thread's side of pause/resume: take up what is wanted, say it."""
        with self._pause:
            if self._paused != self._pause_wanted:
                self._paused = self._pause_wanted
                self._pause.notify_all()
            return self._paused

    def _paced(self, data: zmq.Socket, last: float, now: float) -> float:
        """``rate`` mode: publish the physics packets due by ``now`` (SYNCs merged in), and
        the configuration replies that came due; returns the time the board was last
        advanced in real time (when nothing can send yet, time follows the wall clock, so
        a host's configuration is answered)."""
        t0, done = self._pace
        due = self.rate * (now - t0) - done
        if due > self.rate * MAX_CATCH_UP:  # stalled: skip the time rather than burst
            self.counters["rate_behind"] += 1
            t0 = now - MAX_CATCH_UP - done / self.rate
            due = self.rate * MAX_CATCH_UP
        n = int(due)
        if n < 1:
            self._pace = (t0, done)
            return last
        try:
            replies = self.board.generate(0.0)  # the replies that came due meanwhile
            try:
                words = self.board.generate_packets(n, markers=True)
            except RuntimeError:  # nothing configured to send yet: real time
                self.counters["rate_idle"] += 1
                self._pace = (now, 0)
                self.publish(data, replies)
                return self._tick(data, last)
        except Exception as err:  # noqa: BLE001 - a model fault must not stop the commands
            self.counters["errors_generate"] += 1
            self.generate_error = err
            self._pace = (now, 0)
            return now
        made = int(np.count_nonzero(words["type"] == P.WORD_DATA))
        self.counters["rate_packets"] += made
        self._pace = (t0, done + made)
        self.publish(data, np.concatenate([replies, words]) if len(replies) else words)
        return now

    def _answer(self, cmd: zmq.Socket, echo: zmq.Socket) -> bool:
        """Receive one request, send its reply (and the echo); True if packets went out.

        A REP socket that does not reply is stuck for good, so even a fault of the board
        model while handling the request is answered, with an ERR word.
        """
        request = cmd.recv()
        try:
            reply, sent = self.handle_request(request)
        except Exception as err:  # noqa: BLE001 - any fault must still be answered
            self._error("internal")
            reply, sent = self._reply([_err_word(ERR_BOARD, type(err).__name__)]), False
        cmd.send(reply)
        echo.send(reply)
        self.counters["echo_messages"] += 1
        return sent

    def _tick(self, data: zmq.Socket, last: float) -> float:
        """Advance the board by the wall time since ``last`` and publish its words."""
        now = time.monotonic()
        dt = min(now - last, MAX_CATCH_UP)
        if dt <= 0:
            return now
        try:
            words = self.board.generate(dt)
        except Exception as err:  # noqa: BLE001 - a model fault must not stop the commands
            self.counters["errors_generate"] += 1
            self.generate_error = err
            return now
        self.counters["simulated_seconds"] += dt
        self.publish(data, words)
        return now

    def publish(self, data: zmq.Socket, words: np.ndarray) -> None:
        """Send ``words`` as data messages of at most ``message_words`` words each."""
        n = len(words)
        if not n:
            return
        stamp = int(time.time())
        for start in range(0, n, self.message_words):
            chunk = words[start : start + self.message_words]
            try:
                payload = P.encode_data_message(stamp, chunk)
                data.send(payload, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.counters["data_messages_dropped"] += 1
                continue
            self.counters["data_messages"] += 1
            self.counters["data_words"] += len(chunk)
            self.last_message = payload

    # ------------------------------------------------------------------ requests
    def handle_request(self, request: bytes) -> tuple[bytes, bool]:
        """The reply to one request message, and whether it sent packets to the chips.

        A message whose header or length is malformed gets a single ERR word; otherwise
        each word gets its own reply word, an ERR for a word the board does not understand.
        The board is never left half-way through a word: each word either acts or errs.
        """
        self.counters["requests"] += 1
        problem = self._malformed(request)
        if problem:
            self._error("malformed_" + problem.replace(" ", "_"))
            return self._reply([_err_word(ERR_MALFORMED, problem)]), False
        words = P.message_words(request)
        self.counters["request_words"] += len(words)
        out = np.frombuffer(request, dtype=np.uint8, offset=P.HEADER_BYTES).reshape(-1, 16).copy()
        wtype = out[:, 0]
        sent = False
        # Consecutive words of one type act together: TX runs go to the board in bulk.
        bounds = np.flatnonzero(np.diff(wtype)) + 1
        for start, stop in zip(np.r_[0, bounds], np.r_[bounds, len(wtype)], strict=True):
            kind = bytes([wtype[start]])
            if kind == P.WORD_TX:
                sent |= self._do_tx(words[start:stop], out[start:stop])
            else:
                for i in range(start, stop):
                    self._do_word(kind, out[i])
        return self._reply([out.tobytes()]), sent

    @staticmethod
    def _malformed(request: bytes) -> str:
        """What makes a request unreadable as words (at most 14 characters), or ''."""
        size = len(request)
        if size < P.HEADER_BYTES:
            return "short header"
        kind, _, declared = P.HEADER.unpack_from(request)
        n, extra = divmod(size - P.HEADER_BYTES, P.WORD_BYTES)
        if kind != P.MSG_REQUEST:
            return "not a request"
        if extra:
            return "partial word"
        if declared != n:
            return "word count"
        if n == 0:
            return "no words"
        return ""

    def _reply(self, parts: list[bytes]) -> bytes:
        body = b"".join(parts)
        n = len(body) // P.WORD_BYTES
        self.counters["replies"] += 1
        self.counters["reply_words"] += n
        return P.HEADER.pack(P.MSG_REPLY, int(time.time()) & 0xFFFFFFFF, n) + body

    def _error(self, kind: str, n: int = 1) -> None:
        self.counters["errors"] += n
        self.counters["errors_" + kind] += n

    def _do_word(self, kind: bytes, word: np.ndarray) -> None:
        """Act on one non-TX request word, turning ``word`` (16 bytes) into its reply."""
        if kind == P.WORD_PING:
            word[1:] = 0
            self.counters["pings"] += 1
            return
        if kind in (P.WORD_WRITE, P.WORD_READ):
            register = int(word[4:8].view("<u4")[0])
            try:
                if kind == P.WORD_WRITE:
                    value = int(word[12:16].view("<u4")[0])
                    self.board.pacman_write(register, value)
                    self.counters["register_writes"] += 1
                else:
                    value = int(self.board.pacman_read(register)) & 0xFFFFFFFF
                    word[12:16] = np.frombuffer(value.to_bytes(4, "little"), np.uint8)
                    self.counters["register_reads"] += 1
            except (ValueError, KeyError, FormatError) as err:
                self._error("board")
                word[:] = np.frombuffer(_err_word(ERR_BOARD, str(err)), np.uint8)
            return
        self._error("unknown_word")
        text = f"word {kind!r}" if 32 <= kind[0] < 127 else f"word 0x{kind[0]:02x}"
        word[:] = np.frombuffer(_err_word(ERR_UNKNOWN_WORD, text), np.uint8)

    def _do_tx(self, words: np.ndarray, out: np.ndarray) -> bool:
        """Deliver a run of TX words, grouped per UART with each UART's order kept."""
        channels = words["io_channel"]
        packets = words["packet"]
        bad = (channels < 1) | (channels > 32)
        if bad.any():
            self._error("bad_channel", int(bad.sum()))
            for i in np.flatnonzero(bad):
                out[i] = np.frombuffer(
                    _err_word(ERR_BAD_CHANNEL, f"io_channel {int(channels[i])}"), np.uint8
                )
        sent = False
        for ch in np.unique(channels[~bad]):
            sel = channels == ch
            try:
                self.board.transmit(int(ch), packets[sel].astype(np.uint64))
            except (ValueError, KeyError, FormatError) as err:
                self._error("board", int(sel.sum()))
                out[sel] = np.frombuffer(_err_word(ERR_BOARD, str(err)), np.uint8)
                continue
            self.counters["tx_packets"] += int(sel.sum())
            sent = True
        return sent
