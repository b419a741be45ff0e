"""Frames for pipeline tests: seeded PACMAN data messages wrapped in frame headers."""

from __future__ import annotations

import numpy as np

from larpixdaq.formats.pacman import data_words, decode_data_messages, encode_data_message
from larpixdaq.pipeline.protocol import FrameHeader


def make_messages(seed: int, n_messages: int, words: int = 50) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_messages):
        packets = rng.integers(0, 2**62, size=words, dtype=np.uint64)
        w = data_words(rng.integers(1, 33, size=words), packets, receipt_timestamp=i)
        out.append(encode_data_message(1_700_000_000 + i, w))
    return out


def make_frames(source: str, io_group: int, messages: list[bytes], run: int = 1,
                epoch: int = 7, markers: bool = True) -> list:
    frames = []
    seq = 0
    offset = 0
    if markers:
        frames.append((FrameHeader(source, epoch, seq, io_group, run, 1.0, "info", offset),
                       b"Beginning run"))
        seq += 1
    for msg in messages:
        frames.append((FrameHeader(source, epoch, seq, io_group, run, 2.0, "data", offset), msg))
        offset += (len(msg) - 8) // 16
        seq += 1
    if markers:
        frames.append((FrameHeader(source, epoch, seq, io_group, run, 3.0, "info", offset,
                                   last=True), b"Ending run"))
    return frames


def expected_rows(messages: list[bytes], io_group: int) -> np.ndarray:
    return decode_data_messages(messages, io_group).rows
