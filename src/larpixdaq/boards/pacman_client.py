"""The DAQ's driver of the LArPix chips behind a PACMAN board: configuration and bring-up.

One :class:`PacmanClient` drives the chips of one board (one io_group) through the board's
:class:`~larpixdaq.boards.pacman_link.PacmanLink`. Chip configuration rides on the link's two
paths: config-write and config-read packets are sent in bulk as TX words, and the chips' read
replies come back in the data stream, where they are picked out with the vectorised decoder.
A hydra network is brought up root outward with every chip verified as it joins. Several
boards are driven together by :class:`Boards`, one client per io_group.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from larpixdaq.boards.pacman_link import BoardError, BoardTimeout, PacmanLink
from larpixdaq.formats import packets as K
from larpixdaq.formats import pacman as P
from larpixdaq.formats.chipconfig import ChipConfig
from larpixdaq.formats.chipkey import chip_key, parse_chip_key
from larpixdaq.formats.registers import CHIP_ID_REG, NUM_REGISTERS


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


class PacmanClient(PacmanLink):
    """One PACMAN board's chips: bulk configuration writes, reads, verification, bring-up."""

    def __repr__(self) -> str:
        return f"PacmanClient({self.name})"

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
