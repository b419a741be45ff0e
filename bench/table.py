"""The one row type and table printer every benchmark shares."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass


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
    width = max([len(r.name) for r in rows] + [len("measure")])
    print(f"\n## {title}\n")
    print(f"| {'measure'.ljust(width)} | {'value':>12} | unit        | note")
    print(f"|{'-' * (width + 2)}|{'-' * 14}|-------------|------")
    for r in rows:
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
