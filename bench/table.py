"""The one row type and table printer every benchmark shares, and the yardstick.

Machines here differ by 3x, so a figure alone says little: every table ends with the
machine's memory-copy bandwidth measured in the same run (:func:`memcpy_bandwidth`), and a
throughput's note says what share of it the work moves (:func:`of_memcpy`). Goals are read
as such ratios, or against the reference library doing the same work.
"""

from __future__ import annotations

import functools
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

YARDSTICK_BYTES = 256 << 20
"""Bytes copied to measure memory bandwidth: well beyond any cache."""


@dataclass
class Row:
    """One measured figure: what was measured, its value and unit, and an optional note."""

    name: str
    value: float
    unit: str
    note: str = ""


def format_value(value: float) -> str:
    if value == 0 or value != value:
        return str(value)
    if abs(value) >= 1e6:
        return f"{value / 1e6:,.2f} M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:,.1f} k"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def print_table(title: str, rows: list[Row]) -> None:
    width = max([len(r.name) for r in [*rows, yardstick_row()]] + [len("measure")])
    print(f"\n## {title}\n")
    print(f"| {'measure'.ljust(width)} | {'value':>12} | unit        | note")
    print(f"|{'-' * (width + 2)}|{'-' * 14}|-------------|------")
    for r in [*rows, yardstick_row()]:
        print(f"| {r.name.ljust(width)} | {format_value(r.value):>12} | {r.unit:<11} | {r.note}")


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """The shortest wall time of ``repeat`` calls: the least disturbed by a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@functools.cache
def memcpy_bandwidth() -> float:
    """This machine's memory-copy bandwidth in bytes/s (one core, numpy, best of 5 copies
    of :data:`YARDSTICK_BYTES`), measured once per run."""
    src = np.ones(YARDSTICK_BYTES, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # the pages are faulted in before the clock starts
    return YARDSTICK_BYTES / best_time(lambda: np.copyto(dst, src), 5)


def yardstick_row() -> Row:
    return Row("yardstick: memory copy (this run)", memcpy_bandwidth() / 1e9, "GB/s",
               f"numpy copy of {YARDSTICK_BYTES >> 20} MB, one core, best of 5")


def of_memcpy(bytes_per_second: float) -> str:
    """A throughput as the share of the yardstick it is: ``0.061 of a memory copy``."""
    return f"{bytes_per_second / memcpy_bandwidth():.3f} of a memory copy"
