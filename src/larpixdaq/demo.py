"""Synthetic PACMAN data: realistic raw files without a board, for the demo and benchmarks.

The messages look like what a PACMAN publishes during a run: each carries ~1000 DATA words
from the chips of a tile (chip ids 11-110 on io_channels 1-4), packet timestamps that
advance with a 10 MHz clock, a SYNC word at every second boundary, an occasional TRIG word,
and a small fraction of packets with a flipped parity bit, as a real, slightly noisy link
delivers. Everything is built with the vectorised encoders; the only Python loop is one
iteration per message.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from larpixdaq.formats.packets import encode_packets
from larpixdaq.formats.pacman import (
    WORD_DTYPE,
    data_words,
    encode_data_message,
    sync_words,
    trig_words,
)
from larpixdaq.formats.rawfile import RawWriter

CLOCK_HZ = 10_000_000


def synthetic_messages(
    n_packets: int,
    *,
    words_per_message: int = 1000,
    io_groups: tuple[int, ...] = (1, 2),
    seed: int = 0,
    parity_error_rate: float = 1e-3,
    start_unix: int | None = None,
    packet_rate_hz: float = 1e5,
) -> tuple[list[bytes], np.ndarray]:
    """About ``n_packets`` data packets as PACMAN data messages, with their io_groups."""
    rng = np.random.default_rng(seed)
    start_unix = int(time.time()) if start_unix is None else start_unix
    n = max(0, int(n_packets))
    ticks = np.cumsum(rng.exponential(CLOCK_HZ / packet_rate_hz, n)).astype(np.int64)
    packets = encode_packets(
        packet_type=0,
        chip_id=rng.integers(11, 111, n),
        channel_id=rng.integers(0, 64, n),
        timestamp=ticks % CLOCK_HZ,
        first_packet=rng.integers(0, 2, n),
        dataword=rng.integers(0, 256, n),
        trigger_type=rng.choice(4, n, p=[0.97, 0.01, 0.01, 0.01]),
        local_fifo=0,
        shared_fifo=0,
        downstream_marker=1,
    )
    flip = rng.random(n) < parity_error_rate
    packets[flip] ^= np.uint64(1 << 63)
    words = data_words(rng.integers(1, 5, n), packets, (ticks % (1 << 32)).astype(np.uint32))
    second = ticks // CLOCK_HZ
    bounds = np.arange(0, n, words_per_message).tolist() + [n]
    messages: list[bytes] = []
    groups = np.asarray(io_groups, dtype=np.uint8)
    msg_groups = groups[np.arange(len(bounds) - 1) % len(groups)]
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        part = words[a:b]
        extra = []
        if i == 0 or second[a] != second[a - 1]:
            extra.append(sync_words(int((second[a] * CLOCK_HZ) % (1 << 32)), b"S"))
        if i % 7 == 3:
            extra.append(trig_words(int(ticks[a] % (1 << 32)), 2))
        if extra:
            part = np.concatenate([*extra, part]).astype(WORD_DTYPE)
        messages.append(encode_data_message(start_unix + int(second[a]), part))
    return messages, msg_groups


def write_synthetic_raw(
    path: str | Path, n_packets: int, *, overwrite: bool = True, **kwargs: Any
) -> int:
    """Write a synthetic raw file; returns the number of messages written."""
    messages, groups = synthetic_messages(n_packets, **kwargs)
    with RawWriter(path, overwrite=overwrite, swmr=False) as w:
        for start in range(0, len(messages), 4096):
            w.append(messages[start : start + 4096], groups[start : start + 4096])
    return len(messages)
