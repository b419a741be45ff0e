"""The LArPix v2 chips behind one PACMAN, as arrays: register files and hydra-network links.

Every chip holds its 237 configuration registers as one row of an ``(n_chips, 237)`` uint8
array, starting at the power-on defaults (chip id 1, no upstream or downstream UART
enabled, all command inputs enabled). The wiring between chips is what the network
description says (a tree per PACMAN UART, resolved by :mod:`larpixdaq.formats.network`);
whether a packet actually crosses a wire is decided by the registers at both ends, exactly
as on a real tile:

* a command from the PACMAN enters the root chip only if the root's command input
  (``enable_mosi``, register 126) on that UART is on; a chip that is not addressed passes it
  on through each UART whose ``enable_miso_upstream`` bit (register 124) is set, and the
  neighbour takes it only if its own ``enable_mosi`` bit for that UART is on;
* a chip's replies and data leave through the UARTs set in ``enable_miso_downstream``
  (register 125, bits 0-3) and are passed down the same way until they reach the PACMAN.

So, as with real chips, a network only talks once it has been brought up root outward: the
parent's upstream link opened, the chip renamed from the power-on id 1, its downstream link
opened. Configuration traffic is control-path (few packets), so it is handled packet by
packet against routing tables that are rebuilt only when a link register or a chip id
changes; the data path lives in :mod:`larpixdaq.boards.physics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from larpixdaq.formats import packets as pk
from larpixdaq.formats.network import Network, load_network
from larpixdaq.formats.registers import (
    CHIP_ID_REG,
    DEFAULT_REGISTERS,
    DOWNSTREAM_REG,
    MOSI_REG,
    NUM_REGISTERS,
    UPSTREAM_REG,
)
from larpixdaq.formats.registers import field as register_field

EXT = -1
"""Index standing for the PACMAN in parent tables."""

LOAD_DEFAULTS_REG = register_field("load_config_defaults").first_register  # 123
LOAD_DEFAULTS_BIT = 1 << (register_field("load_config_defaults").offset % 8)
TESTPULSE_DAC_REG = register_field("csa_testpulse_dac").first_register  # 108
LINK_REGISTERS = frozenset({CHIP_ID_REG, LOAD_DEFAULTS_REG, UPSTREAM_REG, DOWNSTREAM_REG,
                            MOSI_REG})
N_UARTS = 32

COUNTER_NAMES = (
    "parity_errors",  # config packets from the host with even parity (accepted unless strict)
    "dropped_bad_parity",  # ... of them dropped because the model is strict
    "not_config_packets",  # data/test packets sent by the host: chips ignore them
    "undelivered",  # config packets that reached no chip with that id
    "bad_register",  # writes/reads of an address >= 237
    "replies_lost",  # a read reached a chip whose downstream path is closed
    "config_writes",  # register writes applied (per chip)
    "config_reads",  # reads answered (per chip)
    "bad_io_channel",  # transmit() to a UART outside 1..32
)


@dataclass(frozen=True)
class TestPulse:
    """A falling step of a chip's test-pulse DAC: charge injected on its enabled channels."""

    chip: int
    amplitude: int  # DAC steps
    tick: int


class ChipNetwork:
    """All chips of one io_group: registers, wiring, routing, config packet handling.

    ``strict_parity`` makes chips drop config packets with a parity error instead of
    accepting them (both are counted); the reference bring-up sends the chip-id write with
    a parity bit computed for the new id, so the tolerant default is what real networks
    are brought up with.
    """

    def __init__(
        self,
        network: Network | Mapping[str, object],
        io_group: int,
        strict_parity: bool = False,
    ) -> None:
        net = network if isinstance(network, Network) else load_network(network)
        self.io_group = int(io_group)
        self.strict_parity = bool(strict_parity)
        io_channel: list[int] = []
        design_id: list[int] = []
        parent: list[int] = []
        up_uart: list[int] = []  # parent's UART sending up to me (-1: the PACMAN)
        my_rx: list[int] = []  # my UART receiving from my parent
        ds_uart: list[int] = []  # my UART sending down to my parent
        parent_rx: list[int] = []  # parent's UART receiving from me (-1: the PACMAN)
        depth: list[int] = []
        self.order: dict[int, list[int]] = {}
        index: dict[tuple[int, int], int] = {}
        for (g, ch), tree in net.trees.items():
            if g != self.io_group:
                continue
            if not 1 <= ch <= N_UARTS:
                raise ValueError(f"io_channel {ch} of the network is outside 1..{N_UARTS}")
            hops = tree.depth()
            rows: list[int] = []
            for cid in tree.order():
                if not isinstance(cid, int):
                    continue
                parents = tree.parents(cid)
                if not parents:
                    continue
                p, p_uart = parents[0]
                node = tree.nodes[cid]
                i = len(design_id)
                index[(ch, cid)] = i
                rows.append(i)
                io_channel.append(ch)
                design_id.append(cid)
                if isinstance(p, int):
                    parent.append(index[(ch, p)])
                    up_uart.append(p_uart)
                    parent_rx.append(tree.nodes[p].mosi_uarts[cid])
                else:
                    parent.append(EXT)
                    up_uart.append(-1)
                    parent_rx.append(-1)
                my_rx.append(node.mosi_uarts[p])
                ds_uart.append(node.miso_ds_uarts[p])
                depth.append(hops.get(cid, 0))
            self.order[ch] = rows
        self.n = len(design_id)
        self.index = index
        self.io_channel = np.asarray(io_channel, dtype=np.int64)
        self.design_id = np.asarray(design_id, dtype=np.int64)
        self.parent = np.asarray(parent, dtype=np.int64)
        self.up_uart = np.asarray(up_uart, dtype=np.int64)
        self.my_rx = np.asarray(my_rx, dtype=np.int64)
        self.ds_uart = np.asarray(ds_uart, dtype=np.int64)
        self.parent_rx = np.asarray(parent_rx, dtype=np.int64)
        self.depth = np.asarray(depth, dtype=np.int64)
        self.registers = np.tile(DEFAULT_REGISTERS, (self.n, 1))
        self.powered = np.ones(self.n, dtype=bool)
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        self.pulses: list[TestPulse] = []
        self.version = 0  # bumped by every register change; physics caches on it
        self._routes_dirty = True
        self._ds_ok = np.zeros(self.n, dtype=bool)
        self._deliver: dict[int, dict[int, list[int]]] = {}

    # ---- access for tests and the board ------------------------------------------------
    def index_of(self, io_channel: int, chip_id: int) -> int:
        """Row of the chip that the network file names ``chip_id`` on ``io_channel``."""
        try:
            return self.index[(int(io_channel), int(chip_id))]
        except KeyError:
            raise KeyError(
                f"no chip {self.io_group}-{io_channel}-{chip_id} on this board"
            ) from None

    def __getitem__(self, key: tuple[int, int]) -> np.ndarray:
        """The live 237 registers of chip ``(io_channel, chip_id)`` (its network-file id)."""
        return self.registers[self.index_of(*key)]

    def __len__(self) -> int:
        return self.n

    @property
    def chip_ids(self) -> np.ndarray:
        """The chip id each chip currently answers to (register 122)."""
        return self.registers[:, CHIP_ID_REG]

    def addresses(self) -> list[tuple[int, int]]:
        """(io_channel, chip_id) of every chip, by its network-file id."""
        return list(self.index)

    # ---- state changes -------------------------------------------------------------------
    def reset(self, chips: np.ndarray | None = None) -> None:
        """Power-on defaults for all chips (or a boolean/index selection of them)."""
        sel = slice(None) if chips is None else chips
        self.registers[sel] = DEFAULT_REGISTERS
        self.pulses = [p for p in self.pulses if chips is not None and not _selected(chips, p.chip)]
        self._changed(routes=True)

    def set_powered(self, powered: np.ndarray) -> None:
        """Chips losing power forget their configuration; routing follows the power state."""
        powered = np.asarray(powered, dtype=bool)
        lost = self.powered & ~powered
        if lost.any():
            self.reset(lost)
        self.powered = powered.copy()
        self._changed(routes=True)

    def _changed(self, routes: bool) -> None:
        self.version += 1
        if routes:
            self._routes_dirty = True

    # ---- routing -------------------------------------------------------------------------
    def _bit(self, rows: np.ndarray, reg: int, uart: np.ndarray) -> np.ndarray:
        return ((self.registers[rows, reg] >> np.maximum(uart, 0)) & 1).astype(bool)

    def _rebuild_routes(self) -> None:
        """Which chips commands reach (per id) and which chips can send down to the PACMAN."""
        regs = self.registers
        ds_ok = np.zeros(self.n, dtype=bool)
        cmd_ok = np.zeros(self.n, dtype=bool)
        deliver: dict[int, dict[int, list[int]]] = {}
        ids = regs[:, CHIP_ID_REG].tolist()
        for ch, rows in self.order.items():
            table: dict[int, list[int]] = {}
            shadow: dict[int, frozenset[int]] = {}
            for i in rows:  # parents come before children
                p = int(self.parent[i])
                rx_on = bool((regs[i, MOSI_REG] >> self.my_rx[i]) & 1) and bool(self.powered[i])
                send_down = bool((regs[i, DOWNSTREAM_REG] >> self.ds_uart[i]) & 1)
                if p == EXT:
                    cmd_ok[i] = rx_on
                    ds_ok[i] = send_down and bool(self.powered[i])
                    shadow[i] = frozenset()
                else:
                    up_on = bool((regs[p, UPSTREAM_REG] >> self.up_uart[i]) & 1)
                    cmd_ok[i] = cmd_ok[p] and up_on and rx_on
                    parent_rx = bool((regs[p, MOSI_REG] >> self.parent_rx[i]) & 1)
                    ds_ok[i] = ds_ok[p] and send_down and parent_rx and bool(self.powered[i])
                    # a packet addressed to the parent (or any ancestor) stops there
                    shadow[i] = shadow[p] | {ids[p]}
                if cmd_ok[i] and ids[i] not in shadow[i]:
                    table.setdefault(ids[i], []).append(i)
            deliver[ch] = table
        self._deliver = deliver
        self._ds_ok = ds_ok
        self._cmd_ok = cmd_ok
        self._routes_dirty = False

    @property
    def downstream_ok(self) -> np.ndarray:
        """Chips whose packets reach the PACMAN (bool per chip)."""
        if self._routes_dirty:
            self._rebuild_routes()
        return self._ds_ok

    @property
    def command_ok(self) -> np.ndarray:
        """Chips that commands from the PACMAN can reach (bool per chip)."""
        if self._routes_dirty:
            self._rebuild_routes()
        return self._cmd_ok

    # ---- configuration packets ------------------------------------------------------------
    def receive(self, io_channel: int, packets: np.ndarray | int, tick: int = 0) -> np.ndarray:
        """Apply the packets the PACMAN sent on one UART, in order; return the reply packets.

        Replies (config-read answers, downstream_marker 1) are returned only for chips whose
        downstream path to the PACMAN is open. Falling steps of ``csa_testpulse_dac`` are
        recorded in :attr:`pulses` at ``tick``.
        """
        ch = int(io_channel)
        if not 1 <= ch <= N_UARTS:
            self.counters["bad_io_channel"] += 1
            raise ValueError(f"io_channel {io_channel} is outside 1..{N_UARTS}")
        words = np.atleast_1d(np.asarray(packets, dtype=np.uint64)).ravel()
        if words.size == 0:
            return np.zeros(0, dtype=np.uint64)
        f = pk.decode_fields(words)
        ptype = f["packet_type"].tolist()
        target = f["chip_id"].tolist()
        addr = f["register_address"].tolist()
        data = f["register_data"].tolist()
        good = f["valid_parity"].tolist()
        replies: list[int] = []
        regs = self.registers
        changed = False
        for k in range(words.size):
            t = ptype[k]
            if t not in (pk.CONFIG_WRITE, pk.CONFIG_READ):
                self.counters["not_config_packets"] += 1
                continue
            if not good[k]:
                self.counters["parity_errors"] += 1
                if self.strict_parity:
                    self.counters["dropped_bad_parity"] += 1
                    continue
            if self._routes_dirty:
                self._rebuild_routes()
            chips = self._deliver.get(ch, {}).get(target[k])
            if not chips:
                self.counters["undelivered"] += 1
                continue
            a = addr[k]
            if a >= NUM_REGISTERS:
                self.counters["bad_register"] += 1
                continue
            if t == pk.CONFIG_WRITE:
                value = data[k]
                for i in chips:
                    old = int(regs[i, a])
                    regs[i, a] = value
                    self.counters["config_writes"] += 1
                    if a == TESTPULSE_DAC_REG and value < old:
                        self.pulses.append(TestPulse(i, old - value, int(tick)))
                    if a == LOAD_DEFAULTS_REG and value & LOAD_DEFAULTS_BIT:
                        regs[i] = DEFAULT_REGISTERS
                changed = True
                if a in LINK_REGISTERS:
                    self._changed(routes=True)
            else:
                if self._routes_dirty:
                    self._rebuild_routes()
                for i in chips:
                    if not self._ds_ok[i]:
                        self.counters["replies_lost"] += 1
                        continue
                    self.counters["config_reads"] += 1
                    replies.append(_read_reply(int(regs[i, CHIP_ID_REG]), a, int(regs[i, a])))
        if changed:
            self._changed(routes=False)
        return np.asarray(replies, dtype=np.uint64)

    # ---- direct configuration (no wire) ------------------------------------------------------
    def configure_links(self, differential: bool = True) -> None:
        """Give every chip its network id and open every link of the tree, as a bring-up would."""
        regs = self.registers
        regs[:, CHIP_ID_REG] = self.design_id.astype(np.uint8)
        regs[:, UPSTREAM_REG] = 0
        regs[:, DOWNSTREAM_REG] = (1 << self.ds_uart).astype(np.uint8) | (
            0xF0 if differential else 0
        )
        mosi = (1 << self.my_rx).astype(np.int64)
        has_parent = self.parent != EXT
        np.bitwise_or.at(mosi, self.parent[has_parent], 1 << self.parent_rx[has_parent])
        regs[:, MOSI_REG] = mosi.astype(np.uint8)
        up = np.zeros(self.n, dtype=np.int64)
        np.bitwise_or.at(up, self.parent[has_parent], 1 << self.up_uart[has_parent])
        regs[:, UPSTREAM_REG] = up.astype(np.uint8)
        self._changed(routes=True)

    def write_field(self, name: str, value: int | np.ndarray, chips: np.ndarray | None = None
                    ) -> None:
        """Set a register field on many chips at once, bypassing the wire (tests, set-up).

        ``value`` broadcasts to ``(n_selected, count)``: a scalar or per-channel list for all
        chips, or one value per selected chip for a scalar field.
        """
        f = register_field(name)
        rows = np.arange(self.n) if chips is None else np.asarray(chips)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        lo, hi = f.first_register, f.last_register + 1
        bits = np.unpackbits(self.registers[rows, lo:hi], axis=1, bitorder="little")
        vals = np.asarray(value, dtype=np.int64)
        if not f.is_list and vals.ndim == 1:
            vals = vals[:, None]  # one value per selected chip
        vals = np.broadcast_to(vals, (len(rows), f.count))
        shifts = np.arange(f.element_width, dtype=np.int64)
        new = ((vals[..., None] >> shifts) & 1).astype(np.uint8).reshape(len(rows), f.width)
        start = f.offset - lo * 8
        bits[:, start : start + f.width] = new
        self.registers[rows, lo:hi] = np.packbits(bits, axis=1, bitorder="little")
        self._changed(routes=any(r in LINK_REGISTERS for r in range(lo, hi)))

    def read_field(self, name: str) -> np.ndarray:
        """A field of every chip: ``(n,)`` for scalars, ``(n, count)`` for lists (int64)."""
        return field_values(self.registers, name)


def field_values(registers: np.ndarray, name: str) -> np.ndarray:
    """One field decoded from ``(n, 237)`` register rows, vectorised over chips."""
    f = register_field(name)
    lo, hi = f.first_register, f.last_register + 1
    bits = np.unpackbits(registers[:, lo:hi], axis=1, bitorder="little")
    start = f.offset - lo * 8
    seg = bits[:, start : start + f.width].reshape(len(registers), f.count, f.element_width)
    vals = seg.astype(np.int64) @ (np.int64(1) << np.arange(f.element_width, dtype=np.int64))
    return vals if f.is_list else vals[:, 0]


def _read_reply(chip_id: int, address: int, value: int) -> int:
    word = (pk.CONFIG_READ | (chip_id << 2) | (address << 10) | (value << 18) | (1 << 62))
    if bin(word).count("1") % 2 == 0:
        word |= 1 << 63
    return word


def _selected(chips: np.ndarray, i: int) -> bool:
    chips = np.asarray(chips)
    return bool(chips[i]) if chips.dtype == bool else bool(np.isin(i, chips))
