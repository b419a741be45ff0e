"""The online monitor: how many packets a second its accumulators digest, and snapshot cost."""

from __future__ import annotations

import json

import numpy as np

from bench.table import Row, best_time, of_memcpy
from larpixdaq.formats import packets as K
from larpixdaq.formats import pacman as P
from larpixdaq.pipeline.monitorstate import MonitorState
from larpixdaq.pipeline.protocol import FrameHeader

TITLE = "Online monitor accumulators (decode, count, snapshot)"


def _frames(n_msgs: int, words: int, tiles: int) -> tuple[list[FrameHeader], list[bytes]]:
    rng = np.random.default_rng(3)
    headers, payloads = [], []
    for i in range(n_msgs):
        pk = K.encode_packets(packet_type=0, chip_id=rng.integers(11, 111, words),
                              channel_id=rng.integers(0, 64, words),
                              timestamp=np.arange(words), dataword=rng.integers(0, 256, words))
        io_channel = rng.integers(1, 4 * tiles + 1, words)
        payloads.append(P.encode_data_message(1_700_000_000, P.data_words(io_channel, pk)))
        headers.append(FrameHeader("p1", 1, i, 1, 1, 0.0, "data", i * words))
    return headers, payloads


def run(quick: bool) -> list[Row]:
    rows = []
    n_msgs, words = (16, 4096) if quick else (64, 4096)
    for tiles in (1, 8):
        headers, payloads = _frames(n_msgs, words, tiles)
        state = MonitorState()

        def feed(state=state, headers=headers, payloads=payloads) -> None:
            state.reset(0.0, 1)
            state.add(headers, payloads, 0.5)

        t = best_time(feed, 3)
        rows.append(Row(f"add() batch of {n_msgs} x {words}-word messages, {tiles} tile(s)",
                        n_msgs * words / t, "packets/s", "decode + hit/ADC/chip counts; words "
                        f"{of_memcpy(n_msgs * words * 16 / t)}"))
        state.tick(1.5)
        t = best_time(lambda state=state: state.snapshot(1.6), 3)
        size = len(json.dumps(state.snapshot(1.6)))
        rows.append(Row(f"snapshot(), {tiles} tile(s)", t * 1e3, "ms", f"{size / 1e3:.0f} kB JSON"))
    return rows
