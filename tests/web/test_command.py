"""`larpix-daq web` and `larpix-daq monitor` on the command line: start, serve, refuse clearly."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import httpx2

from larpixdaq.runcontrol.testing import CoreProcess

CLI = [sys.executable, "-m", "larpixdaq.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_web_serves_and_stops_on_sigterm(tmp_path):
    with CoreProcess(tmp_path / "runs.sqlite") as core:
        proc = subprocess.Popen([*CLI, "web", "--core", core.endpoint, "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            url = re.search(r"http://\S+", line).group(0)
            assert core.endpoint in line
            st = httpx2.get(url + "api/status", timeout=10).json()
            assert st["success"] and st["data"]["state"] == "STOP"
        finally:
            proc.terminate()
            assert proc.wait(10) == 0
            proc.stdout.close()
            proc.stderr.close()


def test_web_refuses_a_taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_cli("web", "--core", "tcp://127.0.0.1:1", "--port", str(port))
    assert out.returncode != 0
    assert f"cannot serve on 127.0.0.1:{port}" in out.stderr and "--port" in out.stderr


def test_bad_intervals_are_refused():
    out = run_cli("web", "--interval", "0", "--port", "0")
    assert out.returncode != 0 and "--interval must be positive" in out.stderr
    out = run_cli("monitor", "--interval", "-1")
    assert out.returncode != 0 and "--interval must be positive" in out.stderr


def test_monitor_refuses_an_unusable_publish_address():
    out = run_cli("monitor", "--publish", "tcp://256.1.1.1:5")
    assert out.returncode != 0 and "monitor cannot publish on tcp://256.1.1.1:5" in out.stderr


def test_a_missing_key_directory_is_refused(tmp_path):
    missing = str(tmp_path / "no-keys")
    for args in (["web", "--port", "0"], ["monitor"]):
        out = run_cli(*args, "--keys", missing)
        assert out.returncode != 0 and "no-keys" in out.stderr, out.stderr


def test_web_talks_to_a_core_that_demands_keys(tmp_path):
    keys = tmp_path / "keys"
    made = run_cli("keys", str(keys))
    assert made.returncode == 0, made.stderr
    with CoreProcess(tmp_path / "runs.sqlite", extra=["--keys", str(keys)]) as core:
        proc = subprocess.Popen([*CLI, "web", "--core", core.endpoint, "--port", "0",
                                 "--keys", str(keys)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            line = proc.stdout.readline()
            assert "CURVE keys" in line
            url = re.search(r"http://\S+", line).group(0)
            st = httpx2.get(url + "api/status", timeout=10).json()
            assert st["success"] and st["data"]["state"] == "STOP"
        finally:
            proc.terminate()
            proc.wait(10)
            proc.stdout.close()
