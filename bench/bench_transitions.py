"""Run-control transition latency: prepare, begin and end with 1, 5 and 20 components.

The core runs as its own process (as in production); the components are threads of this
process with no-op hooks, so the figure is the protocol's cost: operator -> core -> every
group of components in order -> core -> operator, on loopback.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.table import Row
from larpixdaq.pipeline.component import Component
from larpixdaq.runcontrol.operator import Operator
from larpixdaq.runcontrol.testing import CoreProcess, wait_for

TITLE = "Run-control transition latency (core process, loopback)"
ROLES = ["storage", "aggregator", "monitor", "producer"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _measure(n_components: int, cycles: int, workdir: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"prepare_run": [], "begin_run": [], "end_run": []}
    with CoreProcess(workdir / f"runs-{n_components}.sqlite") as core:
        comps = []
        for i in range(n_components):
            role = ROLES[i % len(ROLES)] if n_components > 1 else "producer"
            comps.append(Component(f"c{i}", core.endpoint, role=role).start())
        try:
            for c in comps:
                if not c.wait_registered(10):
                    raise RuntimeError(f"component {c.name} did not register")
            with Operator(core.endpoint, timeout=30) as op:
                wait_for(lambda: len(op.call("clients").data["components"]) == n_components)
                for _ in range(cycles):
                    for command in times:
                        t0 = time.perf_counter()
                        final = op.call(command)
                        times[command].append(time.perf_counter() - t0)
                        if not final.success:
                            raise RuntimeError(f"{command} failed: {final.message}")
        finally:
            for c in comps:
                c.stop()
    return times


def run(quick: bool) -> list[Row]:
    cycles = 20 if quick else 200
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 5, 20):
            times = _measure(n, cycles, Path(tmp))
            for command, values in times.items():
                name = command.removesuffix("_run")
                for q, label in ((0.5, "p50"), (0.99, "p99")):
                    note = "target < 10 ms" if (n == 5 and label == "p50") else ""
                    rows.append(Row(f"{name}, {n} component(s), {label}",
                                    _percentile(values, q) * 1e3, "ms",
                                    f"{len(values)} transitions; {note}".rstrip("; ")))
    return rows
