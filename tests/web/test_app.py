"""The web app against a real DAQ: core, aggregator, storage, a simulated board and the monitor,
each its own process; the app itself runs in the test through Starlette's TestClient."""

from __future__ import annotations

import json
import math
import time

import pytest
from daq_procs import Daq
from roles_expected import EXPECTED_ACTIONS, EXPECTED_COMMANDS, ROLES, allowed
from starlette.testclient import TestClient

from larpixdaq.runcontrol.policy import Role
from larpixdaq.runcontrol.testing import wait_for
from larpixdaq.runcontrol.users import UserStore
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
def tokens(daq):
    """A user of each role in the core's database: name -> token."""
    with UserStore(daq.tmp / "runs.sqlite") as store:
        return {role: store.add_user(role, Role.parse(role)) for role in ROLES}


@pytest.fixture(scope="module")
def app(daq):
    # "testserver" is the Host the test client sends: the name people reach this server by.
    return create_app(daq.core.endpoint, interval=0.2, hosts=["testserver"])


@pytest.fixture(scope="module")
def client(app):
    """An anonymous visitor. The app's lifespan (poller, operators) runs while this client
    is open: every test that makes other clients of the app asks for this one too."""
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def sessions(app, client, tokens):
    """A logged-in browser per role: (client with its session cookie, CSRF token)."""
    out = {}
    for role in ROLES:
        c = TestClient(app)
        r = c.post("/login", json={"user": role, "token": tokens[role]})
        assert r.status_code == 200 and r.json()["role"] == role, r.text
        assert "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        out[role] = (c, r.json()["csrf"])
    return out


def post(client, command, params=None, **kw):
    return client.post(f"/api/command/{command}", json=params or {}, **kw)


def post_as(sessions, role, command, params=None):
    c, csrf = sessions[role]
    return post(c, command, params, headers={"x-csrf-token": csrf})


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


def test_a_run_through_the_page_api_fills_the_monitor(client, sessions):
    with client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and isinstance(hello["log"], list)
        r = post_as(sessions, "operator", "prepare_run",
                    {"comment": "from the web", "run_type": "test"})
        assert r.status_code == 200, r.text
        run = r.json()["data"]["run_number"]
        assert post_as(sessions, "operator", "begin_run").status_code == 200
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
        r = post_as(sessions, "expert", "end_run")
        assert r.status_code == 200 and r.json()["data"]["run"]["exit_status"] == "success"
    runs = client.get("/api/runs").json()["data"]["runs"]
    assert runs[0]["run_number"] == run and runs[0]["comment"] == "from the web"
    assert (runs[0]["prepared_by"], runs[0]["begun_by"], runs[0]["ended_by"]) == (
        "operator", "operator", "expert")
    one = client.get(f"/api/runs/{run}").json()
    assert one["success"] and one["data"]["run"]["run_type"] == "test"
    log = client.get("/api/log").json()["entries"]
    assert [(e["command"], e["user"]) for e in log[-3:]] == [
        ("prepare_run", "operator"), ("begin_run", "operator"), ("end_run", "expert")]


def test_control_without_logging_in_is_refused_by_the_core(client):
    r = post(client, "prepare_run", {"comment": "anonymous"})
    assert r.status_code == 403
    assert r.json()["message"] == ("an anonymous client (viewer) may not prepare_run: it "
                                   "needs operator")
    r = post(client, "invoke", {"component": "producer-1", "action": "write_configuration",
                                "params": {}})
    assert r.status_code == 403 and "may not invoke write_configuration" in r.json()["message"]
    assert client.get("/api/status").json()["data"]["state"] == "STOP"
    audit = client.get("/api/audit?limit=5").json()["data"]["entries"]
    assert audit[0]["result"] == "refused" and audit[0]["user"] is None
    assert audit[0]["command"] == "invoke write_configuration"


def test_refusals_are_clear(client, sessions):
    r = post_as(sessions, "expert", "begin_run")  # in STOP
    assert r.status_code == 409 and not r.json()["success"]
    assert "begin_run" in r.json()["message"]
    r = post_as(sessions, "expert", "invoke",
                {"component": "monitor", "action": "explode", "params": {}})
    assert r.status_code == 409 and "snapshot" in r.json()["message"]  # says what it offers
    r = post_as(sessions, "operator", "invoke",
                {"component": "monitor", "action": "clear", "params": {}})
    assert r.status_code == 200 and r.json()["data"]["result"] == "monitor cleared"
    r = client.post("/api/command/status", content=b"comment=x",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = client.post("/api/command/status", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert post(client, "status", [1, 2]).status_code == 400
    c, csrf = sessions["expert"]
    r = post(c, "prepare_run", headers={"origin": "http://evil.example", "x-csrf-token": csrf})
    assert r.status_code == 403
    assert client.get("/api/status").json()["data"]["state"] == "STOP"
    r = post_as(sessions, "expert", "no_such_command")
    assert r.status_code == 409 and "known" in r.json()["message"]


def test_cross_site_websocket_is_refused(client):
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect), client.websocket_connect(
            "/ws", headers={"origin": "http://evil.example"}) as ws:
        ws.receive_json()


@pytest.mark.parametrize("role", [*ROLES, None])
@pytest.mark.parametrize("command", sorted(EXPECTED_COMMANDS))
def test_web_each_role_each_command(client, sessions, command, role):
    """Allowed: the command's own answer; refused: 403 with the core's one-line reason.
    Parameters keep every command harmless (the DAQ is in STOP)."""
    params = {"prepare_run": {"not_a_parameter": "x"}, "run": {"run_number": 999_999}}
    r = (post_as(sessions, role, command, params.get(command)) if role
         else post(client, command, params.get(command)))
    held = role or "viewer"
    if allowed(held, EXPECTED_COMMANDS[command]):
        assert r.status_code in (200, 409) and "may not" not in r.json()["message"], r.text
    else:
        who = f"user {role} ({role})" if role else "an anonymous client (viewer)"
        assert r.status_code == 403
        assert r.json()["message"] == (f"{who} may not {command}: it needs "
                                       f"{EXPECTED_COMMANDS[command]}")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(EXPECTED_ACTIONS))
def test_web_each_role_each_action(sessions, action, role):
    r = post_as(sessions, role, "invoke", {"component": "nobody", "action": action})
    if allowed(role, EXPECTED_ACTIONS[action]):
        assert r.status_code == 409 and "no component named 'nobody'" in r.json()["message"]
    else:
        assert r.status_code == 403
        assert r.json()["message"] == (f"user {role} ({role}) may not invoke {action}: it "
                                       f"needs {EXPECTED_ACTIONS[action]}")


def test_a_session_without_its_csrf_token_is_refused(sessions):
    c, csrf = sessions["expert"]
    before = c.get("/api/metrics").json()["data"]["http_rejected"].get("csrf", 0)
    assert post(c, "end_run").status_code == 403
    r = post(c, "end_run", headers={"x-csrf-token": csrf[:-1] + "x"})
    assert r.status_code == 403 and "CSRF" in r.json()["message"]
    assert c.get("/api/metrics").json()["data"]["http_rejected"]["csrf"] == before + 2


def test_bearer_token_for_scripts_and_bad_logins(app, client, tokens):
    c = TestClient(app)
    auth = {"authorization": f"Bearer operator:{tokens['operator']}"}
    r = post(c, "invoke", {"component": "nobody", "action": "run_routine"}, headers=auth)
    assert r.status_code == 409 and "no component named" in r.json()["message"]
    bad = {"authorization": f"Bearer operator:{tokens['viewer']}"}
    r = post(c, "status", headers=bad)
    assert r.status_code == 401 and r.json()["message"] == "unknown user operator or wrong token"
    r = c.post("/login", json={"user": "viewer", "token": tokens["operator"]},
               headers={"x-forwarded-for": "ignored"})
    assert r.status_code == 401 and "login refused" in r.json()["message"]
    r = c.get(f"/login?user=expert&token={tokens['expert']}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    info = c.get("/api/session").json()
    assert info["user"] == "expert" and info["role"] == "expert" and info["csrf"]


def test_host_mismatch_is_403(client):
    from starlette.websockets import WebSocketDisconnect

    before = client.get("/api/metrics").json()["data"]["http_rejected"].get("host", 0)
    for path in ("/api/status", "/", "/api/metrics"):
        r = client.get(path, headers={"host": "attacker.example:8080"})
        assert r.status_code == 403 and "not a name of this server" in r.json()["message"]
    with pytest.raises(WebSocketDisconnect), client.websocket_connect(
            "/ws", headers={"host": "attacker.example"}) as ws:
        ws.receive_json()
    assert client.get("/api/status", headers={"host": "localhost:8080"}).status_code == 200
    assert client.get("/api/metrics").json()["data"]["http_rejected"]["host"] == before + 4


def test_repeated_failed_logins_from_one_address_are_slowed_down(app, client, tokens):
    c = TestClient(app, client=("192.0.2.7", 50000))
    wrong = {"user": "expert", "token": "ldq_" + "k" * 43}
    codes = [c.post("/login", json=wrong).status_code for _ in range(7)]
    assert codes[:5] == [401] * 5 and codes[-1] == 429
    r = c.post("/login", json={"user": "expert", "token": tokens["expert"]})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "too many failed logins" in r.json()["message"]
    # Another address is not held up.
    other = TestClient(app, client=("192.0.2.8", 50000))
    assert other.post("/login", json={"user": "viewer", "token": tokens["viewer"]}).json()[
        "success"]


def test_oversized_body_is_413_without_reaching_the_core(client, sessions):
    c, csrf = sessions["operator"]
    big = b'{"comment": "' + b"x" * (2 << 20) + b'"}'
    r = c.post("/api/command/prepare_run", content=big,
               headers={"content-type": "application/json", "x-csrf-token": csrf})
    assert r.status_code == 413
    assert client.get("/api/status").json()["data"]["state"] == "STOP"


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"comment": NaN}', "not_finite"),
    (b'{"x": Infinity}', "not_finite"),
    (b'{"x": 1e999}', "not_finite"),
    (b'{"x": 123456789012345678901234567890}', "out_of_range"),
    (b'{"x": ' + b"[" * 100 + b"]" * 100 + b"}", "too_deep"),
    (b'{"x": ' + b"[" * 100000 + b"]" * 100000 + b"}", "too_deep"),
])
def test_nan_huge_numbers_and_deep_nesting_are_400(client, sessions, body, reason):
    c, csrf = sessions["operator"]
    before = client.get("/api/metrics").json()["data"]["http_rejected"].get(reason, 0)
    r = c.post("/api/command/prepare_run", content=body,
               headers={"content-type": "application/json", "x-csrf-token": csrf})
    assert r.status_code == 400, r.text
    assert client.get("/api/metrics").json()["data"]["http_rejected"][reason] == before + 1
    # The log and the page's hello still parse as JSON afterwards.
    assert isinstance(client.get("/api/log").json()["entries"], list)
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json()["type"] == "hello"


def test_a_nan_reported_by_a_component_still_reaches_the_page_as_json(client):
    from larpixdaq.web.guard import dumps

    assert dumps({"a": [1.0, math.nan, math.inf]}) == '{"a":[1.0,null,null]}'


def test_a_site_that_requires_a_login_shows_nothing_else(daq, tokens):
    from starlette.websockets import WebSocketDisconnect

    app = create_app(daq.core.endpoint, interval=0.5, hosts=["testserver"],
                     require_login=True)
    with TestClient(app) as c:
        r = c.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert c.get("/login").status_code == 200
        assert c.get("/api/status").status_code == 401
        assert post(c, "status").status_code == 401
        with pytest.raises(WebSocketDisconnect), c.websocket_connect("/ws") as ws:
            ws.receive_json()
        assert c.post("/login", json={"user": "viewer", "token": tokens["viewer"]}).json()[
            "success"]
        assert c.get("/api/status").json()["data"]["state"] == "STOP"
        assert c.get("/", follow_redirects=False).status_code == 200


def test_pages_choose_which_tiles_maps_the_poller_asks_for():
    from larpixdaq.web.app import Views

    views = Views()
    assert views.tiles() is None  # no page has said: the monitor's default
    assert views.set(1, ["1/2", "1/1"]) and views.set(2, ["3/4", "1/1"])
    assert views.tiles() == ["1/1", "1/2", "3/4"]
    for bad in ("1/1", [1], ["x" * 20], ["1/1"] * 17, None):
        assert not views.set(3, bad)
    views.drop(1)
    assert views.tiles() == ["1/1", "3/4"]
    views.drop(2)
    assert views.tiles() is None


def test_a_page_view_reaches_the_monitor_and_a_bad_message_is_counted(client, sessions):
    def metric() -> int:
        return client.get("/api/metrics").json()["data"]["http_rejected"].get(
            "bad_ws_message", 0)

    def tile_one():
        r = client.get("/api/monitor")
        snap = r.json().get("data") if r.status_code == 200 else None
        tiles = [t for t in (snap or {}).get("tiles", []) if (t["io_group"], t["tile"]) == (1, 1)]
        return tiles[0] if tiles and tiles[0]["hits_total"] > 0 else None

    assert post_as(sessions, "operator", "prepare_run", {"comment": "views"}).status_code == 200
    assert post_as(sessions, "operator", "begin_run").status_code == 200
    try:
        assert "rate" in wait_for(tile_one, timeout=15, interval=0.2)  # default: maps
        before = metric()
        with client.websocket_connect("/ws") as ws:
            assert ws.receive_json()["type"] == "hello"
            ws.send_text(json.dumps({"type": "view", "tiles": ["1/9"]}))  # another tile
            wait_for(lambda: (t := tile_one()) is not None and "rate" not in t, timeout=15,
                     interval=0.2)
            ws.send_text("{not json")
            wait_for(lambda: metric() == before + 1, timeout=5, interval=0.1)
        # the page has gone: the poller asks for the default maps again
        wait_for(lambda: (t := tile_one()) is not None and "rate" in t, timeout=15,
                 interval=0.2)
    finally:
        assert post_as(sessions, "expert", "end_run").status_code == 200
