"""`larpix-daq up` as a real process tree: start, take a run, survive a killed child, stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from larpixdaq.runcontrol.operator import Operator
from larpixdaq.runcontrol.testing import wait_for

CLI = [sys.executable, "-m", "larpixdaq.cli"]


def _free_base_port() -> int:
    """A port with the next dozen free too (the data path uses core port + 1..12)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base > 60000:
            continue
        ok = True
        for off in (1, 10, 11, 12):
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", base + off))
                except OSError:
                    ok = False
        if ok:
            return base
    raise RuntimeError("no free port range")


@pytest.fixture
def up(tmp_path):
    port = _free_base_port()
    core = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path / "up.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([*CLI, "up", "--core", core, "--data-dir", str(tmp_path / "d"),
                             "--board", "sim", "--board", "sim", "--sim-rate", "50000",
                             "--no-web"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    op = Operator(core, timeout=5)
    try:
        yield proc, op, core, tmp_path
    finally:
        op.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


def _components(op):
    final = op.call("clients")
    return {c["name"]: c for c in final.data["components"]} if final.success else {}


def test_up_runs_restarts_and_stops(up):
    proc, op, core, tmp = up
    names = {"logs", "aggregator", "storage", "producer-1", "producer-2"}
    wait_for(lambda: names <= set(_components(op)), timeout=30)
    out = subprocess.run([*CLI, "run", "--duration", "0.5", "--core", core],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = json.loads(subprocess.run([*CLI, "runs", "--json", "--core", core],
                                     capture_output=True, text=True, timeout=30).stdout)
    assert runs[0]["exit_status"] == "success"
    assert runs[0]["packets_written"] > 0 and runs[0]["packets_lost"] == 0
    assert runs[0]["files"] == [str(tmp / "d" / "run-000001.h5")]

    # A child that dies is started again.
    old_pid = _components(op)["producer-2"]["pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: _components(op).get("producer-2", {}).get("pid", old_pid) != old_pid,
             timeout=30)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    children = subprocess.run(["pgrep", "-f", core], capture_output=True, text=True).stdout
    assert children.strip() == ""


def _up_args(tmp_path, *extra: str):
    import argparse

    from larpixdaq.commands.up import configure

    p = argparse.ArgumentParser()
    configure(p)
    return p.parse_args(["--data-dir", str(tmp_path / "d"), "--core", "tcp://127.0.0.1:5990",
                         *extra])


def test_up_detector_2x2_is_eight_sim_boards_on_io_groups_1_to_8(tmp_path):
    from larpixdaq.commands.up import build

    sup = build(_up_args(tmp_path, "--detector", "2x2", "--no-web"))
    producers = [c for c in sup.children if c.name.startswith("producer-")]
    assert [c.name for c in producers] == [f"producer-{g}" for g in range(1, 9)]
    for g, child in enumerate(producers, start=1):
        a = child.args
        assert a[a.index("--io-group") + 1] == str(g) and a[a.index("--board") + 1] == "sim"
        assert a[a.index("--detector") + 1] == "2x2"
    # without --detector: one standard sim tile, as before
    plain = [c for c in build(_up_args(tmp_path, "--no-web")).children
             if c.name.startswith("producer-")]
    assert [c.name for c in plain] == ["producer-1"] and "--detector" not in plain[0].args


def test_up_refuses_an_unknown_detector(tmp_path):
    from larpixdaq.commands.up import build
    from larpixdaq.errors import CommandError

    with pytest.raises(CommandError, match="no detector"):
        build(_up_args(tmp_path, "--detector", str(tmp_path / "nope.yaml")))


def test_sim_producer_source_is_that_io_group_of_the_detector():
    from larpixdaq.commands.pipeline import make_source
    from larpixdaq.errors import CommandError

    src = make_source("sim", 2, detector="2x2", sim_rate=0)
    try:
        board = src.board
        assert board.tiles == 8 and board.io_group == 2
        # io_group 2 is anode 2 of module 1: tile 15 has 85 chips wired (the field's file)
        assert board.chips.n == 100 * 7 + 85
        assert set(board.chips.io_channel.tolist()) == set(range(1, 33)) - {27, 28, 30}
    finally:
        src.close()
    with pytest.raises(CommandError, match="no chips on io_group 9"):
        make_source("sim", 9, detector="2x2")
