"""The web API over a real socket: `larpix-daq web` (uvicorn) on a port chosen at run time,
in front of a real DAQ of processes, spoken to with an HTTP client and a WebSocket client
as a browser or a script would (the in-process test client skips the server and its
socket: HTTP parsing, headers, the WebSocket handshake)."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import urlsplit

import httpx2
import pytest
from daq_procs import Daq
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from larpixdaq.runcontrol.credentials import find_credential
from larpixdaq.runcontrol.testing import wait_for


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(daq, base URL) with the web server as its own process; all stopped at the end."""
    d = Daq(tmp_path_factory.mktemp("server"), boards=1, rate=20_000)
    try:
        d.start()
        c = ["--core", d.core.endpoint]
        d._proc("monitor", ["monitor", *c])
        web = d._proc("web", ["web", *c, "--port", "0", "--interval", "0.2"])
        url = re.search(r"http://\S+", web.first_line).group(0)
        wait_for(lambda: any(x["role"] == "monitor" for x in d.clients()))
        yield d, url
    finally:
        d.close()


@pytest.fixture
def http(server):
    """A script with the local expert's token (the one the core wrote for this user)."""
    cred = find_credential(server[0].core.endpoint)
    with httpx2.Client(base_url=server[1], timeout=30,
                       headers={"authorization": f"Bearer {cred.user}:{cred.token}"}) as client:
        yield client


def test_without_a_credential_control_is_refused_over_the_socket(server):
    with httpx2.Client(base_url=server[1], timeout=30) as anonymous:
        assert anonymous.get("/api/status").status_code == 200
        r = anonymous.post("/api/command/prepare_run", json={})
        assert r.status_code == 403 and "may not prepare_run" in r.json()["message"]
        r = anonymous.get("/api/status", headers={"host": "rebound.example"})
        assert r.status_code == 403


def _ws_url(base: str) -> str:
    return "ws://" + urlsplit(base).netloc + "/ws"


def test_page_status_and_a_run_over_the_socket(server, http):
    daq, base = server
    page = http.get("/")
    assert page.status_code == 200 and "LArPix DAQ" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert http.get("/api/status").json()["data"]["state"] == "STOP"
    with connect(_ws_url(base), open_timeout=30) as ws:
        hello = json.loads(ws.recv(timeout=30))
        assert hello["type"] == "hello"
        r = http.post("/api/command/prepare_run", json={"comment": "over the socket"})
        assert r.status_code == 200, r.text
        run = r.json()["data"]["run_number"]
        assert http.post("/api/command/begin_run", json={}).status_code == 200

        def filled():
            snap = http.get("/api/monitor").json().get("data")
            return snap if snap and snap["run_number"] == run and snap["tiles"] else None

        wait_for(filled, interval=0.2)
        # The server pushes the commands just sent and the state over the WebSocket.
        logged, states = set(), set()
        deadline = time.monotonic() + 30
        while not ({"prepare_run", "begin_run"} <= logged and "RUN" in states):
            assert time.monotonic() < deadline, f"pushed log {logged}, states {states}"
            msg = json.loads(ws.recv(timeout=30))
            if msg["type"] == "log" and msg["entry"]["status"] == "ok":
                logged.add(msg["entry"]["command"])
            elif msg["type"] == "status":
                states.add(msg["data"]["state"])
        r = http.post("/api/command/end_run", json={})
        assert r.status_code == 200 and r.json()["data"]["run"]["exit_status"] == "success"
    assert http.get(f"/api/runs/{run}").json()["data"]["run"]["comment"] == "over the socket"


def test_refusals_over_the_socket(server, http):
    base = server[1]
    r = http.post("/api/command/begin_run", json={})  # in STOP
    assert r.status_code == 409 and "begin_run" in r.json()["message"]
    r = http.post("/api/command/prepare_run", json={}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    same = http.post("/api/command/status", json={}, headers={"origin": base.rstrip("/")})
    assert same.status_code == 200  # the page's own origin is accepted
    r = http.post("/api/command/status", content=b"{not json",
                  headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = http.post("/api/command/status", content=b"comment=x",
                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert http.get("/api/nonsense").status_code == 404
    assert http.get("/api/status").json()["data"]["state"] == "STOP"


def test_a_cross_site_websocket_is_refused_at_the_handshake(server):
    with pytest.raises(InvalidStatus) as refused, connect(
            _ws_url(server[1]), origin="http://evil.example", open_timeout=30):
        pass
    assert refused.value.response.status_code == 403
