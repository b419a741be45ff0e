"""Simulated board: physics data rate (generate_packets), real-time factor, config traffic."""

from __future__ import annotations

import numpy as np

from bench.table import Row, best_time, peak_rss_mb
from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.formats import packets as pk
from larpixdaq.formats.network import load_network

TITLE = "simulated board: data generation and configuration traffic"
TARGET = 10e6


def _packets_rate(tiles: int, n: int, threshold: int | None, repeat: int) -> float:
    board = SimulatedBoard(tiles=tiles, seed=1).bring_up_all(threshold=threshold)
    board.generate_packets(1000)  # build the rate tables outside the timing
    got = [0]

    def work() -> None:
        got[0] = board.generate_packets(n).size

    t = best_time(work, repeat)
    return got[0] / t


def _wire_bring_up(board: SimulatedBoard) -> int:
    net = load_network(board.network_config())
    sent = 0
    for ch in range(1, 5):
        words = []
        for step in net.bring_up_order(board.io_group, ch):
            for w in step.writes:
                word = int(pk.encode_packets(packet_type=2, chip_id=w.parity_chip_id,
                                             register_address=w.register, register_data=w.value))
                words.append((word & ~(0xFF << 2)) | (w.chip_id << 2))
        board.transmit(ch, np.asarray(words, dtype=np.uint64))
        sent += len(words)
    return sent


def run(quick: bool) -> list[Row]:
    n = 1_000_000 if quick else 10_000_000
    repeat = 2 if quick else 3
    rows: list[Row] = []
    for tiles, thr, label in ((1, None, "1 tile, trimmed ~2.5 Hz/ch"),
                              (8, None, "8 tiles, trimmed ~2.5 Hz/ch"),
                              (8, 0, "8 tiles, flooded (threshold 0)")):
        rate = _packets_rate(tiles, n, thr, repeat)
        rows.append(Row(f"generate_packets({n:.0e}), {label}", rate, "packets/s",
                        f"target >= {TARGET:.0e}: {'ok' if rate >= TARGET else 'MISSED'}"))

    small = SimulatedBoard(tiles=1, seed=1).bring_up_all()
    small.generate_packets(4096)
    calls = 100 if quick else 500
    t = best_time(lambda: [small.generate_packets(4096) for _ in range(calls)], repeat)
    rate = calls * 4096 / t
    rows.append(Row("generate_packets(4096) per call, 1 tile trimmed", rate, "packets/s",
                    f"message-sized calls; target >= {TARGET:.0e}: "
                    f"{'ok' if rate >= TARGET else 'MISSED'}"))

    sim_s = 0.5 if quick else 2.0
    for thr, label in ((None, "trimmed"), (0, "flooded, 32 saturated UARTs")):
        board = SimulatedBoard(tiles=8, seed=2).bring_up_all(threshold=thr)
        board.generate(0.01)
        wall = best_time(lambda b=board: b.generate(sim_s), 1)
        rows.append(Row(f"generate(), 8 tiles {label}: simulated s per wall s", sim_s / wall,
                        "x", "real-time factor (> 1: faster than a real board)"))

    def bring_up() -> None:
        b = SimulatedBoard(tiles=1, seed=3)
        b.pacman_write(0x10, 1)
        _wire_bring_up(b)

    probe = SimulatedBoard(tiles=1, seed=3)
    probe.pacman_write(0x10, 1)
    n_bring = _wire_bring_up(probe)
    t = best_time(bring_up, repeat)
    rows.append(Row("wire bring-up of one tile (100 chips)", t * 1e3, "ms",
                    f"{n_bring} config writes incl. board construction"))

    cfg = SimulatedBoard(tiles=1, seed=4).bring_up_all()
    ids = cfg.chips.design_id[cfg.chips.io_channel == 1]
    regs = np.arange(237)
    full = pk.encode_packets(packet_type=3, chip_id=np.repeat(ids, 237),
                             register_address=np.tile(regs, ids.size))
    t = best_time(lambda: cfg.transmit(1, full), repeat)
    rows.append(Row("config reads handled (25 chips x 237 registers)", full.size / t,
                    "packets/s", "per-packet control path"))
    rows.append(Row("peak memory", peak_rss_mb(), "MB"))
    return rows
