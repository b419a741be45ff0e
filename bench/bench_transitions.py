"""Run-control latency: transitions with 1, 5 and 20 components; noticing a lost component.

The core runs as its own process with the production timings (heartbeats every 0.2 s, loss
after 0.8 s of silence); the components are threads of this process with no-op hooks, so the
transition figure is the protocol's cost: operator -> core -> every group of components in
order -> core -> operator, on loopback. Loss detection kills a component process and times
the core's `lost` event at the operator.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.table import Row
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.operator import Operator
from larpixdaq.runcontrol.testing import CoreProcess, wait_for

TITLE = "Run-control latency (core process, loopback, production timings)"
ROLES = ["storage", "aggregator", "monitor", "producer"]
DEFAULTS = ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "0.8", "--ack-timeout", "5"]
_VICTIM = r"""
import sys, time
from larpixdaq.runcontrol.component import Component
c = Component(sys.argv[1], sys.argv[2], role="producer").start()
c.wait_registered(10)
print("registered", flush=True)
time.sleep(3600)
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _measure(n_components: int, cycles: int, workdir: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"prepare_run": [], "begin_run": [], "end_run": []}
    with CoreProcess(workdir / f"runs-{n_components}.sqlite", DEFAULTS) as core:
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


def _loss_detection(kills: int, workdir: Path) -> list[float]:
    delays = []
    with CoreProcess(workdir / "runs-loss.sqlite", DEFAULTS) as core, \
            Operator(core.endpoint, timeout=10) as op:
        for i in range(kills):
            victim = subprocess.Popen([sys.executable, "-c", _VICTIM, f"victim{i}",
                                       core.endpoint], stdout=subprocess.PIPE, text=True)
            try:
                if victim.stdout.readline().strip() != "registered":
                    raise RuntimeError("the victim component did not register")
                op.call("ping")  # make sure the core knows us as an operator
                op.poll_events()
                victim.send_signal(signal.SIGKILL)
                t0 = time.perf_counter()
                victim.wait(5)
                while not any(e.kind == "lost" for e in op.poll_events(0.01)):
                    if time.perf_counter() - t0 > 10:
                        raise RuntimeError("the core did not report the loss")
                delays.append(time.perf_counter() - t0)
            finally:
                if victim.poll() is None:
                    victim.kill()
                    victim.wait(5)
                victim.stdout.close()
    return delays


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
        delays = _loss_detection(3 if quick else 10, Path(tmp))
        for q, label in ((0.5, "p50"), (1.0, "max")):
            rows.append(Row(f"lost component noticed, {label}", _percentile(delays, q) * 1e3,
                            "ms", f"{len(delays)} kills; heartbeat time-out 800 ms; "
                                  "requirement < 1000 ms"))
    return rows
