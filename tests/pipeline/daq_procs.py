"""The data path as real processes for tests: core, aggregator, storage, producers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from larpixdaq.formats.pacman import decode_data_messages
from larpixdaq.formats.rawfile import open_raw
from larpixdaq.processes import end_process
from larpixdaq.runcontrol.operator import Operator
from larpixdaq.runcontrol.testing import CoreProcess, wait_for

CLI = [sys.executable, "-m", "larpixdaq.cli"]


class Proc:
    """One `larpix-daq` subcommand in a subprocess; its first stdout line is kept."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.first_line = ""

    def start(self) -> Proc:
        err = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self._err = err
        self.proc = subprocess.Popen([*CLI, *self.args], stdout=subprocess.PIPE, stderr=err,
                                     text=True)
        self.first_line = self.proc.stdout.readline()
        if not self.first_line:
            self.stop()
            raise RuntimeError(f"{self.args[0]} did not start; see {self.log}:\n"
                               f"{self.log.read_text()[-2000:]}")
        return self

    def send(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        end_process(self.proc, sig, grace=10.0)
        self.proc.stdout.close()
        self._err.close()
        code, self.proc = self.proc.returncode, None
        return code


class Daq:
    """A core and a data path; every process is stopped by :meth:`close`."""

    def __init__(self, tmp: Path, boards: int = 1, rate: float = 100_000,
                 data: Path | None = None, discover: bool = False,
                 routines: Path | None = None, db: Path | None = None,
                 storage_args: list[str] | None = None,
                 aggregator_args: tuple[str, ...] = (),
                 producer_args: tuple[str, ...] = ()) -> None:
        self.discover = discover
        self.routines = routines  # the producers' routine directory (--routines)
        self.storage_args = list(storage_args or [])
        self.aggregator_args = list(aggregator_args)
        self.producer_args = list(producer_args)
        self.tmp = tmp
        self.data = data or tmp / "data"
        self.procs: list[Proc] = []
        self.core = CoreProcess(db or tmp / "runs.sqlite",
                                extra=["--ack-timeout", "8", "--heartbeat-timeout", "0.8"])
        self.boards = boards
        self.rate = rate
        self.storage: Proc | None = None

    def _proc(self, name: str, args: list[str]) -> Proc:
        p = Proc(args, self.tmp / f"{name}.log").start()
        self.procs.append(p)
        return p

    def start(self) -> Daq:
        self.core.start()
        c = ["--core", self.core.endpoint]
        self.start_aggregator()
        self.start_storage()
        for g in range(1, self.boards + 1):
            self._proc(f"producer-{g}", [
                "producer", *c, *self._agg(self.inlet), "--io-group", str(g),
                "--sim-rate", str(self.rate), "--words-per-message", "1000",
                "--record", str(self.tmp / f"sent-{g}-{{run}}.raw"),
                "--data-dir", str(self.data), *self.producer_args,
                *(["--routines", str(self.routines)] if self.routines else [])])
        self.op = Operator(self.core.endpoint, timeout=15)
        wait_for(lambda: len(self.clients()) == 2 + self.boards, timeout=15)
        return self

    def start_run(self, rejoin_grace: float) -> Daq:
        """Start, prepare and begin, with the core holding a run for a lost component
        ``rejoin_grace`` seconds: where every fault test of the data path begins."""
        self.core.extra += ["--rejoin-grace", str(rejoin_grace)]
        self.start()
        self.call("prepare_run")
        self.call("begin_run")
        return self

    def start_aggregator(self) -> Proc:
        """The aggregator; started again, it binds the addresses the first one had (its
        peers reconnect to them)."""
        ports = getattr(self, "inlet", None) and [self.inlet, self.outlet, self.monitor]
        inlet, outlet, monitor = ports or ["tcp://127.0.0.1:0"] * 3
        self.aggregator = self._proc("aggregator", [
            "aggregator", "--core", self.core.endpoint, "--inlet", inlet, "--outlet", outlet,
            "--monitor", monitor, *self.aggregator_args])
        line = self.aggregator.first_line.replace(",", " ")
        self.inlet, self.outlet, self.monitor = [w for w in line.split() if "://" in w][:3]
        return self.aggregator

    def _agg(self, address: str) -> list[str]:
        """Explicit address, or none: then the one the aggregator advertised to the core."""
        return [] if self.discover else ["--aggregator", address]

    def start_storage(self) -> Proc:
        self.storage = self._proc("storage", [
            "storage", "--core", self.core.endpoint, *self._agg(self.outlet),
            "--data-dir", str(self.data), *self.storage_args])
        return self.storage

    def clients(self) -> list[dict]:
        final = self.op.call("clients")
        return final.data["components"] if final.success else []

    def call(self, what: str, **kw) -> dict:
        final = getattr(self.op, what)(**kw).wait()
        assert final.success, final.message
        return final.data

    def runs_json(self) -> list[dict]:
        out = subprocess.run([*CLI, "runs", "--json", "--core", self.core.endpoint],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def sent_rows(self, io_group: int, run: int) -> np.ndarray:
        with open_raw(self.tmp / f"sent-{io_group}-{run}.raw") as f:
            msgs, _ = f.read()
        return decode_data_messages(msgs, io_group).rows

    def close(self) -> None:
        if hasattr(self, "op"):
            self.op.close()
        for p in reversed(self.procs):
            p.stop()
        self.core.terminate()


def wait_seconds(seconds: float) -> None:
    time.sleep(seconds)
