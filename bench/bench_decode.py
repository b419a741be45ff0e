"""Decode throughput: PACMAN data messages -> v2.4 ``packets`` rows, ours vs larpix-control."""

from __future__ import annotations

import cProfile
import io
import pstats
import time

import numpy as np

from bench.table import Row, best_time, of_memcpy
from larpixdaq.demo import synthetic_messages
from larpixdaq.formats.packets import encode_packets
from larpixdaq.formats.pacman import data_words, decode_data_messages, encode_data_message

TITLE = "decode PACMAN data messages into v2.4 rows (one core)"
TARGET = 30e6


def _reference_rate(messages: list[bytes], groups: list[int]) -> float | None:
    """Packets/s of larpix-control's own parser on the same kind of messages."""
    try:
        from larpix.format.pacman_msg_format import parse
    except ImportError:
        return None
    n_words = sum((len(m) - 8) // 16 for m in messages)

    def work() -> None:
        for group, msg in zip(groups, messages, strict=True):
            parse(msg, io_group=group)

    return n_words / best_time(work, 1)


def _data_only_messages(n_packets: int, words: int) -> list[bytes]:
    rng = np.random.default_rng(4)
    packets = encode_packets(
        packet_type=0, chip_id=rng.integers(11, 111, n_packets),
        channel_id=rng.integers(0, 64, n_packets), timestamp=rng.integers(0, 1 << 31, n_packets),
        dataword=rng.integers(0, 256, n_packets), downstream_marker=1,
    )
    w = data_words(rng.integers(1, 5, n_packets), packets, 7)
    return [encode_data_message(1, w[i : i + words]) for i in range(0, n_packets, words)]


def profile_top(messages: list[bytes], groups: object, n: int = 8) -> str:
    """Where the decoder spends its time (cumulative), for the report when below target."""
    prof = cProfile.Profile()
    prof.enable()
    decode_data_messages(messages, groups)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(n)
    return out.getvalue()


def run(quick: bool) -> list[Row]:
    rows: list[Row] = []
    n_packets = 1_000_000 if quick else 8_000_000
    repeat = 2 if quick else 3
    best = 0.0
    for words in (1000, 4000):
        t0 = time.perf_counter()
        msgs, groups = synthetic_messages(n_packets, words_per_message=words, seed=1)
        build = time.perf_counter() - t0
        n_words = sum((len(m) - 8) // 16 for m in msgs)
        dt = best_time(lambda m=msgs, g=groups: decode_data_messages(m, g), repeat)
        rate = n_words / dt
        best = max(best, rate)
        rows.append(Row(
            f"ours, {len(msgs):,} msgs x {words} words", rate, "packets/s",
            f"{n_words * 16 / dt / 1e6:,.0f} MB/s of words, "
            f"{of_memcpy(n_words * 16 / dt)}; target 30 M; input built in {build:.1f} s",
        ))
    # Messages of DATA words only (no SYNC/TRIG word anywhere in the batch) take the
    # decoder's fast path; a batch with any timing word takes the general one.
    words_only = _data_only_messages(n_packets // 4, 1000)
    n_words = sum((len(m) - 8) // 16 for m in words_only)
    only_rate = n_words / best_time(lambda: decode_data_messages(words_only, 1), repeat)
    rows.append(Row("ours, DATA words only, 1000 words/msg", only_rate, "packets/s",
                    f"no SYNC/TRIG word in the batch; {of_memcpy(only_rate * 16)}"))
    # The real data path decodes in batches (convert: 2048 messages at a time).
    msgs, groups = synthetic_messages(n_packets // 4, words_per_message=1000, seed=2)
    batch = 256
    n_words = sum((len(m) - 8) // 16 for m in msgs)

    def batched() -> None:
        for s in range(0, len(msgs), batch):
            decode_data_messages(msgs[s : s + batch], groups[s : s + batch])

    batched_rate = n_words / best_time(batched, repeat)
    rows.append(Row(f"ours, batches of {batch} msgs x 1000 words", batched_rate, "packets/s",
                    "the batch a live reader would decode; with SYNC and TRIG words; "
                    f"{of_memcpy(batched_rate * 16)}"))
    best = max(best, batched_rate)
    ref_msgs, ref_groups = synthetic_messages(
        20_000 if not quick else 5_000, words_per_message=1000, seed=3
    )
    ref = _reference_rate(ref_msgs, ref_groups.tolist())
    if ref is not None:
        rows.append(Row("larpix-control 3.7 pacman_msg_format.parse", ref, "packets/s",
                        f"{sum((len(m) - 8) // 16 for m in ref_msgs):,} packets"))
        rows.append(Row("ratio ours / reference", best / ref, "x", "best of ours above"))
    rows.append(Row("target met (>= 30 M packets/s)", float(best >= TARGET), "yes=1",
                    f"best {best / 1e6:.1f} M packets/s; the target is "
                    f"{of_memcpy(TARGET * 16)} here; one huge batch pays page faults on its "
                    "fresh output array"))
    return rows


if __name__ == "__main__":
    msgs, groups = synthetic_messages(4_000_000, words_per_message=1000, seed=1)
    print(profile_top(msgs, groups, 15))
