"""PACMAN emulator output rate and client round-trip latency over loopback."""

from __future__ import annotations

import time

import numpy as np
import zmq

from bench.table import Row
from larpixdaq.boards.pacman_client import PacmanClient
from larpixdaq.boards.pacman_emulator import PacmanEmulator
from larpixdaq.formats import packets as K
from larpixdaq.formats import pacman as P

TITLE = "PACMAN emulator and client over loopback"


class ReplayBoard:
    """Pre-made physics words handed out as fast as asked: measures sockets, not physics."""

    io_group = 1

    def __init__(self, n: int = 1 << 16) -> None:
        rng = np.random.default_rng(1)
        pk = K.encode_packets(packet_type=0, chip_id=rng.integers(11, 111, n),
                              channel_id=rng.integers(0, 64, n),
                              timestamp=np.arange(n), dataword=rng.integers(0, 256, n),
                              downstream_marker=1)
        self.words = P.data_words(rng.integers(1, 5, n), pk, np.arange(n))
        self.at = 0
        self.registers: dict[int, int] = {}

    def pacman_write(self, register: int, value: int) -> None:
        self.registers[register] = value

    def pacman_read(self, register: int) -> int:
        return self.registers.get(register, 0)

    def transmit(self, io_channel: int, packets: np.ndarray) -> None:
        pass

    def generate(self, seconds: float) -> np.ndarray:
        return self.words[:0]

    def generate_packets(self, n: int) -> np.ndarray:
        if self.at + n > len(self.words):
            self.at = 0
        out = self.words[self.at : self.at + n]
        self.at += n
        return out


def _boards() -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = [("replayed words", ReplayBoard())]
    try:
        from larpixdaq.boards.simboard import SimulatedBoard
    except ImportError:
        return out
    # every chip configured, thresholds a few noise sigmas above the pedestals
    out.append(("simulated tile", SimulatedBoard(io_group=1, tiles=1, seed=0).bring_up_all()))
    return out


def output_rate(board: object, seconds: float, message_words: int) -> tuple[float, float]:
    """Packets/s and messages/s a subscriber receives from a flooding emulator."""
    emu = PacmanEmulator(board, cmd_port=0, data_port=0, echo_port=0, flood=True,
                         message_words=message_words)
    ctx = zmq.Context()
    try:
        emu.start()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100000)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RCVTIMEO, 5000)
        sub.connect(emu.data_endpoint)
        try:
            sub.recv()  # the subscription is live
        except zmq.Again:
            raise RuntimeError(f"the emulator sent nothing: {dict(emu.counters)}") from None
        words = msgs = 0
        end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            if sub.poll(100):
                m = sub.recv(copy=False)
                words += (len(m) - P.HEADER_BYTES) // P.WORD_BYTES
                msgs += 1
        dt = time.perf_counter() - t0
        return words / dt, msgs / dt
    finally:
        emu.stop()
        ctx.destroy(linger=0)


def latencies(fn, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - t0
    return out


def run(quick: bool) -> list[Row]:
    rows: list[Row] = []
    seconds = 0.5 if quick else 3.0
    for name, board in _boards():
        for mw in (1024, 8192):
            pps, mps = output_rate(board, seconds, mw)
            rows.append(Row(f"emulator output, {name}, {mw}-word messages", pps, "packets/s",
                            f"{mps:,.0f} msg/s received by one subscriber"))
    n = 200 if quick else 2000
    with PacmanEmulator(ReplayBoard(), cmd_port=0, data_port=0, echo_port=0) as emu:
        port = int(emu.cmd_endpoint.rsplit(":", 1)[1])
        with PacmanClient(1, cmd_port=port, data_port=int(emu.data_endpoint.rsplit(":", 1)[1])
                          ) as client:
            for _ in range(20):
                client.ping()
            ping = latencies(client.ping, n)
            regs = {0x20000 + 4 * i: i for i in range(100)}
            write = latencies(lambda: client.write_registers(regs), n // 2)
            pk = np.zeros(23700, np.uint64)
            tx = latencies(lambda: client.transmit(1, pk), 10 if quick else 50)
    for label, arr in (("PING", ping), ("100-register WRITE", write)):
        rows.append(Row(f"client {label} round trip p50", float(np.percentile(arr, 50)) * 1e6,
                        "us", f"{len(arr)} requests"))
        rows.append(Row(f"client {label} round trip p99", float(np.percentile(arr, 99)) * 1e6,
                        "us"))
    rows.append(Row("client TX of 23,700 packets (one tile's full config) p50",
                    float(np.percentile(tx, 50)) * 1e3, "ms", "one request, board no-op"))
    rows += tile_operations(3 if quick else 10)
    return rows


def tile_operations(repeat: int) -> list[Row]:
    """Bring-up, configuration write and read-back verify of one simulated tile (100 chips)."""
    try:
        from larpixdaq.boards.simboard import SimulatedBoard
    except ImportError:
        return []
    from larpixdaq.boards.pacman_client import with_network_registers
    from larpixdaq.formats.chipconfig import ChipConfig
    from larpixdaq.formats.network import load_network

    board = SimulatedBoard(io_group=1, tiles=1, seed=0)
    network = load_network(board.network_config())
    times: dict[str, list[float]] = {"bring-up": [], "write": [], "verify": []}
    with PacmanEmulator(board, cmd_port=0, data_port=0, echo_port=0) as emu:
        port = int(emu.cmd_endpoint.rsplit(":", 1)[1])
        data = int(emu.data_endpoint.rsplit(":", 1)[1])
        with PacmanClient(1, cmd_port=port, data_port=data, timeout=2.0) as client:
            for _ in range(repeat):
                t0 = time.perf_counter()
                keys = client.bring_up(network)
                t1 = time.perf_counter()
                configs = with_network_registers({k: ChipConfig() for k in keys}, network)
                client.write_configs(configs)
                t2 = time.perf_counter()
                if not client.verify_configs(configs).ok:
                    raise RuntimeError("verification failed")
                t3 = time.perf_counter()
                times["bring-up"].append(t1 - t0)
                times["write"].append(t2 - t1)
                times["verify"].append(t3 - t2)
    notes = {"bring-up": "100 chips, 4 UARTs, each chip's id read back",
             "write": "23,700 config-write packets", "verify": "23,700 config reads and compare"}
    return [Row(f"tile {name} (client + emulator) median", float(np.median(v)) * 1e3, "ms",
                notes[name]) for name, v in times.items()]
