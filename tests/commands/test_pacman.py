"""`larpix-daq pacman-emulator` as a real process, driven by the client over loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from larpixdaq.boards.pacman_client import PacmanClient
from larpixdaq.cli import main
from larpixdaq.formats.network import load_network


def test_bad_options_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pacman-emulator", "--tiles", "9"]) == 1
    assert "a PACMAN serves 1 to 8 tiles" in capsys.readouterr().err
    assert main(["pacman-emulator", "--cmd-port", "70000"]) == 1
    assert "--cmd-port 70000 is not a TCP port" in capsys.readouterr().err


@pytest.fixture
def emulator_process(tmp_path: Path):
    network = tmp_path / "network.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "larpixdaq.cli", "pacman-emulator", "--cmd-port", "0",
         "--data-port", "0", "--echo-port", "0", "--io-group", "3", "--seed", "5",
         "--write-network", str(network)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = [proc.stdout.readline() for _ in range(5)]
        endpoints = {ln.split()[0]: ln.split()[1] for ln in lines[1:] if ln.strip()}
        yield proc, endpoints, network, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_serves_a_tile_and_stops_cleanly_on_sigterm(emulator_process) -> None:
    proc, endpoints, network_file, lines = emulator_process
    assert lines[0].startswith("PACMAN emulator io_group 3, 1 tile(s)")
    assert set(endpoints) == {"commands", "data", "echo", "network"}
    spec = json.loads(network_file.read_text())
    net = load_network(spec)
    assert {g for g, _ in net.io_channels()} == {3}
    assert len(net.chip_keys()) == 100
    port = int(endpoints["commands"].rsplit(":", 1)[1])
    data = int(endpoints["data"].rsplit(":", 1)[1])
    with PacmanClient(3, cmd_port=port, data_port=data, timeout=2.0) as client:
        assert client.ping() > 0
        keys = client.bring_up(net)
        assert len(keys) == 100
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out.startswith("stopped:") and " 0 errors" in out
