"""The DAQ side of a PACMAN readout board: commands, configuration and the data stream.

One :class:`PacmanClient` drives one board (one io_group). Commands go over a REQ socket in
the lazy-pirate pattern: a request that gets no reply within the time-out is sent again on
a fresh socket (a REQ socket that missed its reply is stuck for good), and after the last
try the error names the board, the request and the time waited, so an operator knows which
crate to look at. Data arrive on a SUB socket as raw message bytes, handed on unchanged.

Chip configuration rides on the same two paths: config-write and config-read packets are
sent in bulk as TX words, and the chips' read replies come back in the data stream, where
they are picked out with the vectorised decoder. Several boards are driven together by
:class:`Boards`, one client per io_group.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from larpixdaq.errors import LarpixDaqError
from larpixdaq.formats import packets as K
from larpixdaq.formats import pacman as P
from larpixdaq.formats.chipconfig import ChipConfig
from larpixdaq.formats.chipkey import chip_key, parse_chip_key
from larpixdaq.formats.pacman import (
    CLOCK_CTRL_REG,
    CLOCK_CTRL_RESET_BIT,
    RESET_LENGTH_REG,
    RX_ENABLE_REG,
    TILE_ENABLE_REG,
)
from larpixdaq.formats.registers import CHIP_ID_REG, NUM_REGISTERS


class BoardError(LarpixDaqError):
    """A board refused a request (ERR reply) or answered with something unexpected."""


class BoardTimeout(BoardError, TimeoutError):
    """A board did not answer in time."""


class BringUpError(BoardError):
    """A chip of a hydra network did not answer after being given its id."""


@dataclass
class VerifyResult:
    """Outcome of comparing chips' registers with the configurations meant for them."""

    ok: bool
    differences: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)
    """``{chip_key: {field name: (expected, read)}}`` for chips that answered."""
    missing: dict[str, list[int]] = field(default_factory=dict)
    """``{chip_key: [register addresses that never answered]}``."""

    def summary(self) -> str:
        if self.ok:
            return "all configurations match"
        parts = [f"{k}: {', '.join(sorted(d))}" for k, d in self.differences.items()]
        parts += [f"{k}: {len(r)} register(s) did not answer" for k, r in self.missing.items()]
        return "; ".join(parts)


def _chips_of(keys: Iterable[str], io_group: int, who: str) -> list[tuple[int, int]]:
    out = []
    for key in keys:
        g, ch, cid = parse_chip_key(str(key))
        if g != io_group:
            raise BoardError(f"{who} serves io_group {io_group}, not chip {key}")
        out.append((ch, cid))
    return out


def with_network_registers(
    configs: Mapping[str, ChipConfig], network: Any
) -> dict[str, ChipConfig]:
    """Copies of ``configs`` holding the chip id and link registers the bring-up set.

    A chip configuration written over a live network must keep its id and its UART
    enables, or the chip drops off the network; this takes them from the network
    description so a physics configuration can be written as is.
    """
    from larpixdaq.formats.bringup import bring_up_registers
    from larpixdaq.formats.network import Network, load_network

    net = network if isinstance(network, Network) else load_network(network)
    links: dict[tuple[int, int], dict[int, dict[int, int]]] = {}
    out: dict[str, ChipConfig] = {}
    for key, cfg in configs.items():
        g, ch, cid = parse_chip_key(str(key))
        if (g, ch) not in links:
            links[(g, ch)] = bring_up_registers(net.tree(g, ch))
        regs = cfg.to_registers()
        regs[CHIP_ID_REG] = cid
        for addr, value in links[(g, ch)].get(cid, {}).items():
            regs[addr] = value
        out[str(key)] = ChipConfig.from_registers(regs)
    return out


class PacmanClient:
    """A connection to one PACMAN board (one io_group)."""

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

    def __enter__(self) -> PacmanClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PacmanClient({self.name})"

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
        """Start receiving the board's data messages (see :meth:`recv_messages`)."""
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

    # ------------------------------------------------------------------ chip configuration
    def _config_reads(
        self, chips: Sequence[tuple[int, int]], registers: np.ndarray, timeout: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Read ``registers`` of every chip; values and found flags, shape (chips, regs).

        Reads still unanswered are sent again a few times within ``timeout``: a reply
        lost (for example published before the subscription took hold) costs a resend,
        not the whole read.
        """
        n_chips, n_regs = len(chips), len(registers)
        values = np.zeros((n_chips, n_regs), np.uint8)
        found = np.zeros((n_chips, n_regs), bool)
        if not n_chips or not n_regs:
            return values, found
        # chip index by (io_channel, chip_id); register index by address
        lookup = np.full((256, 256), -1, np.int64)
        for i, (ch, cid) in enumerate(chips):
            lookup[ch, cid] = i
        reg_index = np.full(256, -1, np.int64)
        reg_index[registers] = np.arange(n_regs)
        ch_arr = np.array([c for c, _ in chips], np.int64)
        id_arr = np.array([i for _, i in chips], np.int64)
        was_subscribed = self._subscribed
        self.subscribe()
        # Whatever is queued now predates these reads (e.g. late answers to an earlier
        # read); it must not be taken for their replies.
        stale = self._drain(limit=100000)
        if self._data_on:
            self._stash.extend(stale)
        try:
            deadline = time.monotonic() + timeout
            # Resend what is missing only once replies have stopped coming for a while.
            quiet = min(0.2, max(0.05, timeout / (self.retries + 1)))
            next_send = 0.0
            while True:
                if time.monotonic() >= next_send:
                    ci, ri = np.nonzero(~found)
                    if next_send:
                        self.counters["config_read_resends"] += len(ci)
                    self.transmit(ch_arr[ci], K.encode_packets(
                        packet_type=K.CONFIG_READ, chip_id=id_arr[ci],
                        register_address=registers[ri]))
                    self.counters["config_reads_sent"] += len(ci)
                    next_send = time.monotonic() + quiet
                wait = min(next_send, deadline) - time.monotonic()
                msgs = self._drain()
                if not msgs and wait > 0 and self._sub.poll(int(wait * 1000) + 1):
                    msgs = self._drain()
                if msgs:
                    if self._data_on:
                        self._stash.extend(msgs)
                    if self._take_replies(msgs, lookup, reg_index, values, found):
                        next_send = time.monotonic() + quiet
                if found.all() or time.monotonic() >= deadline:
                    break
        finally:
            if not was_subscribed:
                self.unsubscribe()
        return values, found

    def _take_replies(self, msgs: list[bytes], lookup: np.ndarray, reg_index: np.ndarray,
                      values: np.ndarray, found: np.ndarray) -> int:
        """Record the config-read replies in ``msgs``; returns how many matched."""
        rows = P.decode_data_messages(msgs, self.io_group).rows
        rows = rows[(rows["packet_type"] == K.CONFIG_READ) & (rows["downstream_marker"] == 1)
                    & (rows["valid_parity"] == 1)]
        if not len(rows):
            return 0
        ci = lookup[rows["io_channel"], rows["chip_id"]]
        ri = reg_index[rows["register_address"]]
        ok = (ci >= 0) & (ri >= 0)
        values[ci[ok], ri[ok]] = rows["register_data"][ok]
        found[ci[ok], ri[ok]] = True
        self.counters["config_replies"] += int(ok.sum())
        return int(ok.sum())

    def read_configs(
        self,
        chip_keys: Iterable[str],
        registers: Iterable[int] | None = None,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Read chips' configuration registers: ``{chip_key: uint8 array}``.

        With ``registers`` None the array holds all 237 registers; otherwise the values of
        the registers asked for, in that order. Raises BoardTimeout naming the chips (and
        how many registers) that did not answer.
        """
        keys = [str(k) for k in chip_keys]
        values, found, regs = self._read(keys, registers, timeout)
        if not found.all():
            missing = [(k, int((~found[i]).sum())) for i, k in enumerate(keys)
                       if not found[i].all()]
            shown = ", ".join(f"{k} ({n} of {len(regs)} registers)" for k, n in missing[:8])
            more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
            raise BoardTimeout(
                f"{self.name}: no config-read reply within {self._read_timeout(timeout):g} s "
                f"from {len(missing)} chip(s): {shown}{more}"
            )
        return {k: values[i] for i, k in enumerate(keys)}

    def _read_timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else float(timeout)

    def _read(
        self, keys: list[str], registers: Iterable[int] | None, timeout: float | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        chips = _chips_of(keys, self.io_group, self.name)
        regs = np.arange(NUM_REGISTERS) if registers is None else np.asarray(
            list(registers), dtype=np.int64)
        if regs.size and (regs.min() < 0 or regs.max() >= NUM_REGISTERS):
            raise BoardError(f"register addresses must be 0..{NUM_REGISTERS - 1}")
        values, found = self._config_reads(chips, regs, self._read_timeout(timeout))
        return values, found, regs

    def write_configs(
        self,
        configs: Mapping[str, ChipConfig | np.ndarray],
        registers: Iterable[int] | None = None,
    ) -> int:
        """Write chips' configurations in bulk; returns the number of packets sent."""
        keys = [str(k) for k in configs]
        chips = _chips_of(keys, self.io_group, self.name)
        regs = np.arange(NUM_REGISTERS) if registers is None else np.asarray(
            list(registers), dtype=np.int64)
        if not keys or not regs.size:
            return 0
        table = np.stack([
            c.to_registers() if isinstance(c, ChipConfig)
            else ChipConfig.from_registers(c).to_registers()
            for c in configs.values()
        ])
        ch = np.repeat([c for c, _ in chips], len(regs))
        cid = np.repeat([i for _, i in chips], len(regs))
        addr = np.tile(regs, len(chips))
        data = table[:, regs].ravel()
        pk = K.encode_packets(packet_type=K.CONFIG_WRITE, chip_id=cid, register_address=addr,
                              register_data=data)
        self.transmit(ch, pk)
        self.counters["config_writes_sent"] += len(pk)
        return len(pk)

    def verify_configs(
        self, configs: Mapping[str, ChipConfig], timeout: float | None = None
    ) -> VerifyResult:
        """Read every chip back and compare with ``configs``, field by field."""
        keys = [str(k) for k in configs]
        values, found, regs = self._read(keys, None, timeout)
        result = VerifyResult(ok=True)
        for i, (key, cfg) in enumerate(configs.items()):
            if not found[i].all():
                result.missing[str(key)] = [int(r) for r in regs[~found[i]]]
                continue
            diff = cfg.diff(values[i])
            if diff:
                result.differences[str(key)] = diff
        result.ok = not result.differences and not result.missing
        return result

    # ------------------------------------------------------------------ network bring-up
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

    def bring_up(self, network: Any, reset: bool = True, timeout: float | None = None,
                 differential: bool = True) -> list[str]:
        """Bring up every hydra network of this io_group, verifying each chip as it goes.

        ``network`` is a :class:`larpixdaq.formats.network.Network` (or anything
        ``load_network`` accepts). Chips are configured root outward, one chip per UART
        at a time (every unconfigured chip answers to id 1, so only one may be reachable),
        with all UARTs advancing together. After each chip gets its id it must answer a
        config read of its id register; if it does not, BringUpError names it. Returns the
        keys of the chips brought up.
        """
        from larpixdaq.formats.network import Network, load_network

        net = network if isinstance(network, Network) else load_network(network)
        channels = sorted(c for g, c in net.io_channels() if g == self.io_group)
        if not channels:
            raise BringUpError(f"the network has no chips for {self.name}")
        plans = {c: net.bring_up_order(self.io_group, c, differential=differential)
                 for c in channels}
        self.enable_channels(channels)
        if reset:
            self.reset_chips()
        was_subscribed = self._subscribed
        self.subscribe()
        try:
            done = self._bring_up_waves(plans, timeout)
        finally:
            if not was_subscribed:
                self.unsubscribe()
        self.counters["chips_brought_up"] += len(done)
        return done

    def _bring_up_waves(self, plans: dict[int, list[Any]], timeout: float | None) -> list[str]:
        done: list[str] = []
        for k in range(max(len(p) for p in plans.values())):
            ch_list, pk_list, checks = [], [], []
            for c, plan in plans.items():
                if k >= len(plan):
                    continue
                step = plan[k]
                for w in step.writes:
                    ch_list.append(c)
                    pk_list.append((w.chip_id, w.register, w.value))
                if isinstance(step.chip_id, int):
                    checks.append((c, step))
            if pk_list:
                arr = np.array(pk_list, dtype=np.int64)
                self.transmit(np.array(ch_list), K.encode_packets(
                    packet_type=K.CONFIG_WRITE, chip_id=arr[:, 0], register_address=arr[:, 1],
                    register_data=arr[:, 2]))
            if not checks:
                continue
            keys = [chip_key(self.io_group, c, s.chip_id) for c, s in checks]
            values, found, _ = self._read(keys, [CHIP_ID_REG], timeout)
            for i, (c, step) in enumerate(checks):
                if not found[i, 0] or values[i, 0] != step.chip_id:
                    via = ("the PACMAN" if not isinstance(step.parent, int)
                           else f"chip {chip_key(self.io_group, c, step.parent)} "
                                f"UART {step.parent_uart}")
                    raise BringUpError(
                        f"chip {keys[i]} did not answer a config read of its chip_id after "
                        f"bring-up (reached via {via}; {self.name}, "
                        f"{len(done)} chip(s) up so far)"
                    )
            done.extend(keys)
        return done


class Boards:
    """Several PACMAN boards driven together, one client per io_group."""

    def __init__(self, clients: Iterable[PacmanClient]) -> None:
        self.clients: dict[int, PacmanClient] = {}
        for c in clients:
            if c.io_group in self.clients:
                raise BoardError(f"two boards claim io_group {c.io_group}")
            self.clients[c.io_group] = c

    def __getitem__(self, io_group: int) -> PacmanClient:
        try:
            return self.clients[io_group]
        except KeyError:
            raise BoardError(
                f"no board for io_group {io_group} (boards: {sorted(self.clients)})"
            ) from None

    def _by_group(self, keys: Iterable[str]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for k in keys:
            out.setdefault(parse_chip_key(str(k))[0], []).append(str(k))
        return out

    def ping(self) -> dict[int, float]:
        return {g: c.ping() for g, c in self.clients.items()}

    def bring_up(self, network: Any, **kwargs: Any) -> list[str]:
        from larpixdaq.formats.network import Network, load_network

        net = network if isinstance(network, Network) else load_network(network)
        groups = sorted({g for g, _ in net.io_channels()})
        return [k for g in groups for k in self[g].bring_up(net, **kwargs)]

    def write_configs(self, configs: Mapping[str, ChipConfig]) -> int:
        return sum(
            self[g].write_configs({k: configs[k] for k in keys})
            for g, keys in self._by_group(configs).items()
        )

    def read_configs(self, chip_keys: Iterable[str], **kwargs: Any) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for g, keys in self._by_group(chip_keys).items():
            out.update(self[g].read_configs(keys, **kwargs))
        return out

    def verify_configs(self, configs: Mapping[str, ChipConfig], **kwargs: Any) -> VerifyResult:
        total = VerifyResult(ok=True)
        for g, keys in self._by_group(configs).items():
            r = self[g].verify_configs({k: configs[k] for k in keys}, **kwargs)
            total.differences.update(r.differences)
            total.missing.update(r.missing)
        total.ok = not total.differences and not total.missing
        return total

    def start_data(self) -> None:
        for c in self.clients.values():
            c.start_data()

    def stop_data(self) -> None:
        for c in self.clients.values():
            c.stop_data()

    def recv_messages(self, timeout: float = 0.0) -> list[tuple[int, bytes]]:
        """``(io_group, message)`` from every board; waits up to ``timeout`` overall."""
        poller = zmq.Poller()
        for c in self.clients.values():
            poller.register(c._sub, zmq.POLLIN)
        if not any(c._stash for c in self.clients.values()):
            poller.poll(int(timeout * 1000))
        return [(g, m) for g, c in self.clients.items() for m in c.recv_messages(0.0)]

    def close(self) -> None:
        for c in self.clients.values():
            c.close()
