"""A small stand-in board with the simulated-board interface, for socket tests.

It models just enough to exercise the protocol: PACMAN registers, chips that power up as
chip 1 and are reached one at a time in a chain (the first chip not yet given an id on a
UART answers to chip 1), config writes and reads with replies, and data from unmasked
channels whose rate falls with the global threshold.
"""

from __future__ import annotations

import numpy as np

from larpixdaq.formats import packets as K
from larpixdaq.formats import pacman as P
from larpixdaq.formats.registers import NUM_REGISTERS, default_registers

CHIP_ID_REG = 122


class StandInBoard:
    def __init__(self, io_group: int = 1, channels: int = 2, chips_per_channel: int = 3,
                 seed: int = 0) -> None:
        self.io_group = io_group
        self.registers: dict[int, int] = {}
        self.rng = np.random.default_rng(seed)
        self.clock = 0  # 10 MHz ticks
        self.pending: list[np.ndarray] = []
        self.transmitted: list[tuple[int, np.ndarray]] = []
        self.channels = list(range(1, channels + 1))
        # chips[ch] = list of register arrays in chain order (root first)
        self.chips = {ch: [default_registers().copy() for _ in range(chips_per_channel)]
                      for ch in self.channels}
        self.first_id = 11

    def pacman_write(self, register: int, value: int) -> None:
        if register == 0xDEAD:
            raise ValueError("register 0xdead is read-only")
        old = self.registers.get(0x1010, 0)
        self.registers[register] = value
        if register == 0x1010 and old & 4 and not value & 4:
            for ch in self.channels:
                self.chips[ch] = [default_registers().copy() for _ in self.chips[ch]]

    def pacman_read(self, register: int) -> int:
        return self.registers.get(register, 0)

    def _receiving(self, ch: int) -> bool:
        tile = (ch - 1) // 4
        return bool(self.registers.get(0x10, 0) >> tile & 1 and
                    self.registers.get(0x18, 0) >> (ch - 1) & 1)

    def _target(self, ch: int, chip_id: int) -> np.ndarray | None:
        for regs in self.chips.get(ch, []):
            if regs[CHIP_ID_REG] == chip_id:
                return regs
        return None

    def transmit(self, io_channel: int, packets: np.ndarray) -> None:
        packets = np.atleast_1d(np.asarray(packets, dtype=np.uint64))
        self.transmitted.append((io_channel, packets.copy()))
        f = K.decode_fields(packets)
        for i in range(len(packets)):
            regs = self._target(io_channel, int(f["chip_id"][i]))
            if regs is None:
                continue
            addr = int(f["register_address"][i])
            if addr >= NUM_REGISTERS:
                continue
            if f["packet_type"][i] == K.CONFIG_WRITE:
                regs[addr] = int(f["register_data"][i])
            elif f["packet_type"][i] == K.CONFIG_READ and self._receiving(io_channel):
                reply = K.encode_packets(packet_type=K.CONFIG_READ, chip_id=int(regs[CHIP_ID_REG]),
                                         register_address=addr, register_data=int(regs[addr]),
                                         downstream_marker=1)
                self.pending.append(P.data_words(io_channel, reply[None], self.clock))

    def generate(self, seconds: float) -> np.ndarray:
        self.clock += int(seconds * 1e7)
        out = self.pending
        self.pending = []
        for ch in self.channels:
            if not self._receiving(ch):
                continue
            for regs in self.chips[ch]:
                if regs[CHIP_ID_REG] == 1:
                    continue
                mask = np.unpackbits(regs[131:139], bitorder="little").astype(bool)
                live = np.flatnonzero(~mask)
                if not live.size:
                    continue
                rate = 2000.0 if regs[64] < 100 else 5.0  # per channel, Hz
                n = self.rng.poisson(rate * seconds * live.size)
                if not n:
                    continue
                pk = K.encode_packets(
                    packet_type=0, chip_id=int(regs[CHIP_ID_REG]),
                    channel_id=self.rng.choice(live, n),
                    timestamp=(self.clock & 0x7FFFFFFF), dataword=self.rng.integers(0, 256, n),
                    downstream_marker=1)
                out.append(P.data_words(ch, pk, self.clock))
        if not out:
            return np.zeros(0, P.WORD_DTYPE)
        return np.concatenate(out)

    def generate_packets(self, n: int) -> np.ndarray:
        pk = K.encode_packets(packet_type=0, chip_id=11, channel_id=self.rng.integers(0, 64, n),
                              timestamp=0, dataword=7, downstream_marker=1)
        return P.data_words(1, pk, 0)

    def network_config(self) -> dict:
        net: dict = {"miso_uart_map": [3, 0, 1, 2], "mosi_uart_map": [0, 1, 2, 3],
                     "usds_link_map": [2, 3, 0, 1]}
        group: dict = {}
        for ch, chips in self.chips.items():
            ids = [self.first_id + 10 * (ch - 1) + i for i in range(len(chips))]
            nodes = [{"chip_id": "ext", "root": True, "miso_us": [None, None, None, ids[0]]}]
            for j, cid in enumerate(ids):
                nxt = ids[j + 1] if j + 1 < len(ids) else None
                nodes.append({"chip_id": cid, "miso_us": [None, None, None, nxt]})
            group[str(ch)] = {"nodes": nodes}
        net[str(self.io_group)] = group
        return {"_config_type": "controller", "name": "standin", "asic_version": 2,
                "layout": None, "network": net}
