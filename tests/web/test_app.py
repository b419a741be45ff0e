"""The web app against a real DAQ: core, aggregator, storage, a simulated board and the monitor,
each its own process; the app itself runs in the test through Starlette's TestClient."""

from __future__ import annotations

import time

import pytest
from daq_procs import Daq
from starlette.testclient import TestClient

from larpixdaq.runcontrol.testing import wait_for
from larpixdaq.web.app import create_app


@pytest.fixture(scope="module")
def daq(tmp_path_factory):
    d = Daq(tmp_path_factory.mktemp("web"), boards=1, rate=20_000)
    try:
        d.start()
        d._proc("monitor", ["monitor", "--core", d.core.endpoint])
        wait_for(lambda: any(c["role"] == "monitor" for c in d.clients()), timeout=15)
        yield d
    finally:
        d.close()


@pytest.fixture(scope="module")
def client(daq):
    with TestClient(create_app(daq.core.endpoint, interval=0.2)) as c:
        yield c


def post(client, command, params=None, **kw):
    return client.post(f"/api/command/{command}", json=params or {}, **kw)


def test_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "LArPix DAQ" in page.text
    for name in ("app.js", "plots.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and len(r.content) > 1000, name
    layout = client.get("/api/layout").json()
    assert layout["pixels_per_side"] == 70 and len(layout["chip_id"]) == 4900
    # pixel (69 - row) * 70 + column holds the (chip, channel) the field's layout file puts
    # at (column, row): 11000 -> [3, 68], 110063 -> [66, 6]
    assert (layout["chip_id"][73], layout["channel"][73]) == (11, 0)
    assert (layout["chip_id"][63 * 70 + 66], layout["channel"][63 * 70 + 66]) == (110, 63)
    assert layout["unrouted_channels"] == [6, 7, 8, 9, 22, 23, 24, 25, 38, 39, 40, 54, 55, 56, 57]


def test_reads_answer_as_the_operator_does(client):
    st = client.get("/api/status").json()
    assert st["success"] and st["data"]["state"] in ("STOP", "READY", "RUN")
    roles = {c["role"] for c in st["data"]["components"]}
    assert {"aggregator", "storage", "producer", "monitor"} <= roles
    acts = client.get("/api/actions").json()["data"]["actions"]
    assert "snapshot" in acts["monitor"]
    assert client.get("/api/nonsense").status_code == 404
    assert client.get("/api/runs?limit=x").status_code == 400


def test_a_run_through_the_page_api_fills_the_monitor(client):
    with client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and isinstance(hello["log"], list)
        r = post(client, "prepare_run", {"comment": "from the web", "run_type": "test"})
        assert r.status_code == 200, r.text
        run = r.json()["data"]["run_number"]
        assert post(client, "begin_run").status_code == 200
        assert client.get("/api/status").json()["data"]["state"] == "RUN"

        def filled():
            r = client.get("/api/monitor")
            snap = r.json().get("data") if r.status_code == 200 else None
            ok = (snap and snap["run_number"] == run and snap["rate"]["last_second"] > 0
                  and snap["tiles"] and sum(snap["adc"]) > 0)
            return snap if ok else None

        snap = wait_for(filled, timeout=15, interval=0.2)
        assert 0 < snap["fraction_seen"]["words"] <= 1
        assert len(snap["tiles"][0]["rate"]) == 4900
        # The WebSocket pushed status, monitor and the log of the commands just sent.
        kinds, log_commands = set(), set()
        deadline = time.monotonic() + 30  # status is pushed every interval: the check runs
        while not ({"status", "monitor"} <= kinds and {"prepare_run", "begin_run"}
                   <= log_commands):
            assert time.monotonic() < deadline, f"pushed only {kinds}, logged {log_commands}"
            msg = ws.receive_json()
            kinds.add(msg["type"])
            if msg["type"] == "log" and msg["entry"]["status"] == "ok":
                log_commands.add(msg["entry"]["command"])
        r = post(client, "end_run")
        assert r.status_code == 200 and r.json()["data"]["run"]["exit_status"] == "success"
    runs = client.get("/api/runs").json()["data"]["runs"]
    assert runs[0]["run_number"] == run and runs[0]["comment"] == "from the web"
    one = client.get(f"/api/runs/{run}").json()
    assert one["success"] and one["data"]["run"]["run_type"] == "test"
    log = client.get("/api/log").json()["entries"]
    assert [e["command"] for e in log[-3:]] == ["prepare_run", "begin_run", "end_run"]


def test_refusals_are_clear(client):
    r = post(client, "begin_run")  # in STOP
    assert r.status_code == 409 and not r.json()["success"]
    assert "begin_run" in r.json()["message"]
    r = post(client, "invoke", {"component": "monitor", "action": "explode", "params": {}})
    assert r.status_code == 409 and "snapshot" in r.json()["message"]  # says what it offers
    r = post(client, "invoke", {"component": "monitor", "action": "clear", "params": {}})
    assert r.status_code == 200 and r.json()["data"]["result"] == "monitor cleared"
    r = client.post("/api/command/status", content=b"comment=x",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = client.post("/api/command/status", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert post(client, "status", [1, 2]).status_code == 400
    r = post(client, "prepare_run", headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    assert client.get("/api/status").json()["data"]["state"] == "STOP"
    r = post(client, "no_such_command")
    assert r.status_code == 409 and "known" in r.json()["message"]


def test_cross_site_websocket_is_refused(client):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect), client.websocket_connect(
            "/ws", headers={"origin": "http://evil.example"}) as ws:
        ws.receive_json()
