"""One PACMAN readout board over ZeroMQ: its command socket and its data stream.

:class:`PacmanLink` speaks the board's own protocol. Commands go over a REQ socket in the
lazy-pirate pattern: a request that gets no reply within the time-out is sent again on a
fresh socket (a REQ socket that missed its reply is stuck for good), and after the last try
the error names the board, the request and the time waited, so an operator knows which crate
to look at. Data arrive on a SUB socket as raw message bytes, handed on unchanged. What is
said to the chips behind the board (configuration, bring-up) is built on top of this by
:class:`larpixdaq.boards.pacman_client.PacmanClient`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import zmq

from larpixdaq.errors import LarpixDaqError
from larpixdaq.formats import pacman as P
from larpixdaq.formats.pacman import (
    CLOCK_CTRL_REG,
    CLOCK_CTRL_RESET_BIT,
    RESET_LENGTH_REG,
    RX_ENABLE_REG,
    TILE_ENABLE_REG,
)


class BoardError(LarpixDaqError):
    """A board refused a request (ERR reply) or answered with something unexpected."""


class BoardTimeout(BoardError, TimeoutError):
    """A board did not answer in time."""



class PacmanLink:
    """A connection to one PACMAN board (one io_group): board requests and its data stream."""

    def __init__(
        self,
        io_group: int,
        host: str = "127.0.0.1",
        cmd_port: int = 5555,
        data_port: int = 5556,
        timeout: float = 1.0,
        retries: int = 3,
        context: zmq.Context | None = None,
    ) -> None:
        if retries < 1:
            raise ValueError(f"retries counts tries and must be at least 1, got {retries}")
        self.io_group = int(io_group)
        self.cmd_endpoint = f"tcp://{host}:{cmd_port}"
        self.data_endpoint = f"tcp://{host}:{data_port}"
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.name = f"PACMAN io_group {self.io_group} at {self.cmd_endpoint}"
        self.counters: Counter[str] = Counter()
        self._own_ctx = context is None
        self._ctx = context if context is not None else zmq.Context()
        self._cmd: zmq.Socket | None = None
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        # A PACMAN board cannot be slowed down, and its PUB socket drops silently once the
        # subscriber's queue is full. No receive limit here: while the DAQ is slower than
        # the board, messages wait in this process's memory instead of being lost unseen.
        self._sub.setsockopt(zmq.RCVHWM, 0)
        self._sub.connect(self.data_endpoint)
        self._subscribed = False
        self._data_on = False
        self._stash: list[bytes] = []

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close both sockets (and the context if this client made it)."""
        if self._cmd is not None:
            self._cmd.close(linger=0)
            self._cmd = None
        if self._sub is not None:
            self._sub.close(linger=0)
            self._sub = None  # type: ignore[assignment]
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> PacmanLink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ commands
    def _socket(self) -> zmq.Socket:
        if self._cmd is None:
            s = self._ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(self.cmd_endpoint)
            self._cmd = s
        return self._cmd

    def request_bytes(self, message: bytes, what: str, timeout: float | None = None) -> bytes:
        """Send one request message and return the reply bytes, retrying on time-outs."""
        wait = self.timeout if timeout is None else timeout
        for attempt in range(1, self.retries + 1):
            sock = self._socket()
            sock.send(message)
            self.counters["requests"] += 1
            if sock.poll(int(wait * 1000)):
                return sock.recv()
            # Lazy pirate: a REQ socket that lost its reply can never send again.
            self.counters["timeouts"] += 1
            sock.close(linger=0)
            self._cmd = None
            if attempt < self.retries:
                self.counters["retries"] += 1
        raise BoardTimeout(
            f"{self.name} did not answer {what} within {wait:g} s ({self.retries} tries)"
        )

    def request(self, words: Sequence[P.ControlWord], what: str) -> tuple[P.ControlWord, ...]:
        """Send control words; return the reply words, raising BoardError on any ERR."""
        reply = self.request_bytes(P.encode_request(words, int(time.time())), what)
        return self._check_reply(reply, len(words), what)

    def _check_reply(self, reply: bytes, n: int, what: str) -> tuple[P.ControlWord, ...]:
        try:
            message = P.decode_control(reply)
        except LarpixDaqError as err:
            self.counters["bad_replies"] += 1
            raise BoardError(f"{self.name} sent a malformed reply to {what}: {err}") from None
        errs = [(i, w) for i, w in enumerate(message.words) if isinstance(w, P.Err)]
        if errs:
            self.counters["err_replies"] += 1
            i, w = errs[0]
            raise BoardError(
                f"{self.name} refused {what}: word {i} -> error {w.code} "
                f"{w.message.decode(errors='replace')!r} ({len(errs)} error word(s))"
            )
        if message.kind != P.MSG_REPLY or len(message.words) != n:
            self.counters["bad_replies"] += 1
            raise BoardError(
                f"{self.name} answered {what} with {len(message.words)} word(s), expected {n}"
            )
        return message.words

    def ping(self) -> float:
        """Round-trip time of a PING in seconds; raises BoardTimeout if the board is silent."""
        t0 = time.perf_counter()
        (word,) = self.request([P.Ping()], "PING")
        if not isinstance(word, P.Ping):
            raise BoardError(f"{self.name} answered PING with {word!r}")
        return time.perf_counter() - t0

    def write_registers(self, values: Mapping[int, int] | Iterable[tuple[int, int]]) -> None:
        """Write board registers in one request, in the order given."""
        pairs = list(values.items()) if isinstance(values, Mapping) else list(values)
        if not pairs:
            return
        words = [P.Write(int(r), int(v)) for r, v in pairs]
        self.request(words, f"WRITE of {len(words)} register(s) from 0x{pairs[0][0]:x}")

    def read_registers(self, registers: Iterable[int]) -> list[int]:
        """Read board registers in one request."""
        regs = [int(r) for r in registers]
        if not regs:
            return []
        words = self.request([P.Read(r) for r in regs], f"READ of {len(regs)} register(s)")
        return [w.value for w in words]  # type: ignore[union-attr]

    def write_register(self, register: int, value: int) -> None:
        self.write_registers([(register, value)])

    def read_register(self, register: int) -> int:
        return self.read_registers([register])[0]

    def transmit(self, io_channel: int | np.ndarray, packets: np.ndarray | int) -> None:
        """Send LArPix packets to the chips, as few messages as the format allows.

        ``io_channel`` is one UART for all packets or one per packet.
        """
        pk = np.atleast_1d(np.asarray(packets, dtype=np.uint64))
        ch = np.broadcast_to(np.asarray(io_channel), pk.shape)
        if pk.size and (ch.min() < 1 or ch.max() > 255):
            raise BoardError(f"io_channel must be 1..255, got {int(ch.min())}..{int(ch.max())}")
        for start in range(0, len(pk), P.MAX_WORDS):
            stop = min(len(pk), start + P.MAX_WORDS)
            words = np.zeros(stop - start, P.WORD_DTYPE)
            words["type"] = P.WORD_TX[0]
            words["io_channel"] = ch[start:stop]
            words["packet"] = pk[start:stop]
            message = P.HEADER.pack(P.MSG_REQUEST, int(time.time()), len(words)) + words.tobytes()
            what = f"TX of {len(words)} packet(s)"
            # Big batches take the board a while to digest; allow for it.
            reply = self.request_bytes(message, what, self.timeout + 20e-6 * len(words))
            self._check_tx_reply(reply, len(words), what)
            self.counters["tx_packets"] += len(words)

    def _check_tx_reply(self, reply: bytes, n: int, what: str) -> None:
        if len(reply) != P.HEADER_BYTES + n * P.WORD_BYTES or reply[:1] != P.MSG_REPLY:
            self._check_reply(reply, n, what)  # raises with the details
            return
        types = P.message_words(reply)["type"]
        if (types != P.WORD_TX[0]).any():
            self._check_reply(reply, n, what)

    # ------------------------------------------------------------------ data stream
    def subscribe(self) -> None:
        if not self._subscribed:
            self._sub.setsockopt(zmq.SUBSCRIBE, b"")
            self._subscribed = True

    def unsubscribe(self) -> None:
        if self._subscribed:
            self._sub.setsockopt(zmq.UNSUBSCRIBE, b"")
            self._subscribed = False

    def start_data(self) -> None:
        """Start receiving the board's data messages (see :meth:`recv_messages`).

        The board's PUB goes on sending until it has processed an unsubscription, so what
        was in flight when data was last stopped may still wait in the queue. It was
        published before this start (the data of no run) and must not come out as the new
        run's first messages: it is dropped first. ZeroMQ drops a message no subscription
        matches when the socket is polled, exactly as the board's PUB drops what nobody
        subscribes to, so it is not counted: it was never received."""
        if not self._subscribed:
            self._sub.poll(0)
        self._data_on = True
        self.subscribe()

    def stop_data(self) -> None:
        """Stop receiving; messages already received stay readable."""
        self._data_on = False
        self.unsubscribe()

    def recv_messages(self, timeout: float = 0.0, max_messages: int = 10000) -> list[bytes]:
        """Data messages received so far, unchanged; waits up to ``timeout`` for the first."""
        out, self._stash = self._stash[:max_messages], self._stash[max_messages:]
        if not out and self._sub.poll(int(timeout * 1000)):
            out.append(self._sub.recv())
        while len(out) < max_messages and self._sub.poll(0):
            out.append(self._sub.recv())
        self.counters["data_messages"] += len(out)
        return out

    def _drain(self, limit: int = 1000) -> list[bytes]:
        """Messages already queued (at most ``limit``, so a flood cannot hold us here)."""
        msgs = []
        while len(msgs) < limit and self._sub.poll(0):
            msgs.append(self._sub.recv())
        return msgs

    # ------------------------------------------------------------------ chips' power and reset
    def reset_chips(self, length: int = 64) -> None:
        """Pulse the chips' reset line: every chip goes back to its power-on state."""
        self.write_register(RESET_LENGTH_REG, length)
        clk = self.read_register(CLOCK_CTRL_REG)
        self.write_registers([(CLOCK_CTRL_REG, clk | CLOCK_CTRL_RESET_BIT),
                              (CLOCK_CTRL_REG, clk & ~CLOCK_CTRL_RESET_BIT & 0xFFFFFFFF)])

    def enable_channels(self, io_channels: Iterable[int]) -> None:
        """Power the tiles of these UARTs and enable their receivers (bits are added)."""
        chans = sorted({int(c) for c in io_channels})
        tiles = tx = 0
        for c in chans:
            tiles |= 1 << ((c - 1) // 4)
            tx |= 1 << (c - 1)
        old_tiles, old_rx = self.read_registers([TILE_ENABLE_REG, RX_ENABLE_REG])
        self.write_registers([(TILE_ENABLE_REG, old_tiles | tiles), (RX_ENABLE_REG, old_rx | tx)])
