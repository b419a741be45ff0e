"""The web UI: a face of the Operator protocol over HTTP and one WebSocket.

Every button on the page becomes one Operator request to the core (``POST
/api/command/<command>``), so the page can do exactly what the Python ``Operator`` and the
command line can, nothing more. The server never talks to a component directly: it reads the
monitor's snapshots by invoking the monitor's ``snapshot`` action *through the core*, like
any other action.

One background thread (the *poller*) asks the core, about once a second, for its status, its
events, the run list and action list when they change, and the monitor's snapshot; the
answers are pushed to every open WebSocket. See ``docs/web.md`` for the endpoints and the
message table.

The server holds no key that grants anything: a browser logs in (:mod:`.login`) and its
requests go to the core as that user, who the core authorises like any other client; a
browser that has not logged in is anonymous (a viewer, unless the site requires a login).
Requests for a ``Host`` that is not one of this server's names, cross-site requests (a
foreign ``Origin``), state-changing requests without the session's CSRF token, oversized
bodies and bodies that are not strict JSON are refused here (:mod:`.guard`) and counted. The
server binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from larpixdaq.geometry import standard_tile
from larpixdaq.runcontrol.access import Throttle
from larpixdaq.runcontrol.credentials import Credential
from larpixdaq.runcontrol.operator import Operator, Progress, Result, Timeout
from larpixdaq.runcontrol.security import client_keys
from larpixdaq.web import login
from larpixdaq.web.guard import (
    MAX_BODY,
    BadRequest,
    HostCheck,
    Rejects,
    allowed_hosts,
    dumps,
    parse_json,
    read_body,
    same_origin,
)
from larpixdaq.web.sessions import Sessions

STATIC = Path(__file__).resolve().parent / "static"
LOG_LENGTH = 300
LOG_DATA_LIMIT = 20_000  # bytes of JSON kept of a result in the command log


class Hub:
    """The open WebSockets, fed from any thread through one asyncio queue."""

    def __init__(self) -> None:
        self.sockets: set[WebSocket] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue: asyncio.Queue[dict[str, Any]] | None = None
        self.sent = 0
        self.dropped = 0

    def start(self) -> asyncio.Task:
        self.loop = asyncio.get_running_loop()
        self.queue = asyncio.Queue(maxsize=1000)
        return asyncio.create_task(self._pump())

    def publish(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every socket (thread-safe, never blocks)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop is shutting down
            loop.call_soon_threadsafe(self._put, message)

    def _put(self, message: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _pump(self) -> None:
        while True:
            message = await self.queue.get()
            text = dumps(message)
            for ws in list(self.sockets):
                try:
                    await ws.send_text(text)
                    self.sent += 1
                except Exception:  # a closed socket: forget it
                    self.sockets.discard(ws)


class CommandLog:
    """Every command sent from the page, with its progress and its result."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=LOG_LENGTH)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def open(self, command: str, params: dict[str, Any], user: str | None = None
             ) -> dict[str, Any]:
        entry = {"id": next(self._ids), "time": time.time(), "command": command,
                 "params": params, "user": user, "status": "running", "message": "",
                 "data": {}, "progress": [], "elapsed_s": 0.0}
        with self._lock:
            self.entries.append(entry)
        self.hub.publish({"type": "log", "entry": entry})
        return entry

    def update(self, entry: dict[str, Any]) -> None:
        shown = dict(entry)
        size = len(dumps(entry["data"]))
        if size > LOG_DATA_LIMIT:
            shown["data"] = {"truncated": f"{size} bytes of data; see the HTTP response"}
        shown["progress"] = entry["progress"][-20:]
        self.hub.publish({"type": "log", "entry": shown})

    def recent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.entries)


class Bridge:
    """Operators to the core: a pool for requests from the page, each sent as its user.

    The operators have no credential of their own (never the local token file): a request
    carries the logged-in user's credential, or none (anonymous)."""

    def __init__(self, core: str, *, timeout: float = 10.0, pool: int = 4,
                 keys: Any = None) -> None:
        self.core = core
        self.timeout = timeout
        self._pool: queue.Queue[Operator] = queue.Queue()
        self._all: list[Operator] = []
        for _ in range(pool):
            op = Operator(core, timeout=timeout, keys=keys, credential=False, kind="web")
            self._all.append(op)
            self._pool.put(op)

    @property
    def client_ids(self) -> list[str]:
        return [op.client_id for op in self._all]

    def run(self, command: str, params: dict[str, Any], log: CommandLog,
            timeout: float | None = None,
            credential: Credential | bool = False) -> dict[str, Any]:
        """Send one command, logging its progress and result; returns the log entry."""
        entry = log.open(command, params, credential.user if credential else None)
        started = time.monotonic()
        op = self._pool.get()
        try:
            for response in op.request(command, params, timeout=timeout,
                                       credential=credential):
                if isinstance(response, Progress):
                    entry["progress"].append(response.data)
                    log.update(entry)
                elif isinstance(response, (Result, Timeout)):
                    entry["status"] = ("ok" if response.success else
                                       "timeout" if isinstance(response, Timeout) else "failed")
                    entry["message"] = response.message
                    entry["data"] = response.data
        finally:
            self._pool.put(op)
        entry["elapsed_s"] = round(time.monotonic() - started, 3)
        log.update(entry)
        return entry

    def call(self, command: str, params: dict[str, Any],
             credential: Credential | bool = False) -> Result | Timeout:
        """One request without logging (reads: status, runs, ...); the final response."""
        op = self._pool.get()
        try:
            return op.call(command, params, credential=credential)
        finally:
            self._pool.put(op)

    def close(self) -> None:
        for op in self._all:
            op.close()


class Poller(threading.Thread):
    """Asks the core what changed, about once a ``interval``, and tells the hub."""

    def __init__(self, core: str, hub: Hub, interval: float = 1.0, keys: Any = None,
                 credential: Credential | bool = False, views: Views | None = None) -> None:
        super().__init__(name="web-poller", daemon=True)
        self.views = views or Views()
        self.core = core
        self.keys = keys
        self.credential = credential  # a viewer's, when the core requires a login
        self.hub = hub
        self.interval = interval
        self.latest: dict[str, dict[str, Any]] = {}
        self.stop_event = threading.Event()
        self._lock = threading.Lock()

    def _emit(self, message: dict[str, Any]) -> None:
        with self._lock:
            self.latest[message["type"]] = message
        self.hub.publish(message)

    def cached(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.latest.values())

    def run(self) -> None:
        op = Operator(self.core, timeout=max(2.0, self.interval * 2), keys=self.keys,
                      credential=self.credential, kind="web-poller")
        seen_state: tuple[Any, ...] = ()
        seen_components: tuple[str, ...] = ()
        next_runs = 0.0
        last_audit: Any = None
        try:
            while not self.stop_event.is_set():
                began = time.monotonic()
                status = op.call("status")
                if not isinstance(status, Result) or not status.success:
                    self._emit({"type": "status", "connected": False,
                                "message": status.message, "core": self.core})
                    seen_state, seen_components = (), ()
                    self.stop_event.wait(self.interval)
                    continue
                st = status.data
                self._emit({"type": "status", "connected": True, "core": self.core, "data": st})
                for ev in op.poll_events():
                    self._emit_event(ev)
                run_number = st["run"]["run_number"] if st.get("run") else None
                state_key = (st["state"], run_number)
                if state_key != seen_state or began >= next_runs:
                    runs = op.call("runs", {"limit": 50})
                    if isinstance(runs, Result) and runs.success:
                        self._emit({"type": "runs", "data": runs.data["runs"]})
                    seen_state, next_runs = state_key, began + 10.0
                audit = op.call("audit", {"limit": 100})
                if isinstance(audit, Result) and audit.success:
                    entries = audit.data["entries"]
                    key = [(e["id"], e["result"]) for e in entries]
                    if key != last_audit:
                        self._emit({"type": "audit", "entries": entries})
                        last_audit = key
                names = tuple(sorted(c["name"] for c in st["components"]))
                if names != seen_components:
                    actions = op.call("actions")
                    if isinstance(actions, Result) and actions.success:
                        self._emit({"type": "actions", "data": actions.data["actions"]})
                        seen_components = names
                self._poll_monitor(op, st)
                self.stop_event.wait(max(0.05, self.interval - (time.monotonic() - began)))
        finally:
            op.close()

    def _emit_event(self, ev: Any) -> None:
        self.hub.publish({"type": "event", "data": {"kind": ev.kind, "message": ev.message,
                                                    "data": ev.data, "time": ev.time}})

    def _poll_monitor(self, op: Operator, st: dict[str, Any]) -> None:
        monitors = [c["name"] for c in st["components"] if c["role"] == "monitor"]
        if not monitors:
            self._emit({"type": "monitor", "data": None,
                        "message": "no monitor is registered with the core"})
            return
        wanted = self.views.tiles()
        params = {} if wanted is None else {"pixels": wanted}
        final = op.call("invoke", {"component": monitors[0], "action": "snapshot",
                                   "params": params})
        if isinstance(final, Result) and final.success:
            self._emit({"type": "monitor", "data": final.data.get("result")})
        else:
            self._emit({"type": "monitor", "data": None, "message": final.message})


class Views:
    """Which tiles' 70 x 70 maps the open pages show (a page says so on its WebSocket).

    A detector of 64 tiles has 300,000 pixels: the poller asks the monitor for the maps of
    the tiles someone looks at, not for all of them every second. With no page having said,
    it asks for all (what the monitor gives by default)."""

    MAX_PER_PAGE = 16

    def __init__(self) -> None:
        self._by_socket: dict[int, list[str]] = {}
        self._lock = threading.Lock()

    def set(self, socket_id: int, tiles: Any) -> bool:
        """A page's choice: a list of "io_group/tile" (at most 16); False if malformed."""
        if not isinstance(tiles, list) or len(tiles) > self.MAX_PER_PAGE or not all(
                isinstance(t, str) and len(t) < 16 for t in tiles):
            return False
        with self._lock:
            self._by_socket[socket_id] = list(tiles)
        return True

    def drop(self, socket_id: int) -> None:
        with self._lock:
            self._by_socket.pop(socket_id, None)

    def tiles(self) -> list[str] | None:
        with self._lock:
            if not self._by_socket:
                return None
            return sorted({t for v in self._by_socket.values() for t in v})


async def _page_message(daq: WebDaq, ws: WebSocket, text: str) -> None:
    """What a page sends besides "ping": ``{"type": "view", "tiles": [...]}``; anything
    else is counted and ignored."""
    try:
        msg = json.loads(text)
    except ValueError:
        msg = None
    if isinstance(msg, dict) and msg.get("type") == "view" and daq.views.set(
            id(ws), msg.get("tiles")):
        return
    daq.rejects.add("bad_ws_message")


class WebDaq:
    """The state of one web server: hub, command log, bridge, poller."""

    def __init__(self, core: str, *, interval: float = 1.0, timeout: float = 10.0,
                 keys: Any = None, require_login: bool = False,
                 session_ttl: float = 12 * 3600, session_idle: float = 2 * 3600,
                 max_body: int = MAX_BODY, poll_credential: Credential | None = None) -> None:
        self.core = core
        self.keys = client_keys(keys)  # loaded once: a bad key directory fails here
        self.interval = interval
        self.timeout = timeout
        self.require_login = require_login
        self.max_body = max_body
        self.poll_credential: Credential | bool = poll_credential or False
        self.sessions = Sessions(ttl=session_ttl, idle=session_idle)
        self.rejects = Rejects()
        self.login_throttle = Throttle()
        self.hub = Hub()
        self.views = Views()
        self.log = CommandLog(self.hub)
        self.bridge: Bridge | None = None
        self.poller: Poller | None = None
        self._pump: asyncio.Task | None = None

    async def startup(self) -> None:
        self._pump = self.hub.start()
        self.bridge = Bridge(self.core, timeout=self.timeout, keys=self.keys)
        self.poller = Poller(self.core, self.hub, self.interval, self.keys,
                             self.poll_credential, self.views)
        self.poller.start()

    async def shutdown(self) -> None:
        if self.poller is not None:
            self.poller.stop_event.set()
            await run_in_threadpool(self.poller.join, 10)
        for ws in list(self.hub.sockets):
            with contextlib.suppress(Exception):
                await ws.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        if self.bridge is not None:
            self.bridge.close()


# --- request handling -------------------------------------------------------------------------

class _JSON(JSONResponse):
    """JSON that a browser can parse even when a component reported a NaN."""

    def render(self, content: Any) -> bytes:
        return dumps(content).encode()


def _error(status: int, message: str) -> JSONResponse:
    return _JSON({"success": False, "message": message}, status_code=status)


def _daq(request: Request | WebSocket) -> WebDaq:
    return request.app.state.daq


#: HTTP status of a refusal by the core, by its code (see runcontrol.access.Verdict).
_REFUSAL_STATUS = {"denied": 403, "bad-credential": 401, "expired": 401, "malformed": 401,
                   "throttled": 429}


def _refusal_status(data: dict[str, Any], default: int) -> int:
    return _REFUSAL_STATUS.get(data.get("refused"), default) if isinstance(data, dict) \
        else default


async def _command(request: Request, command: str, params: dict[str, Any],
                   timeout: float | None = None) -> JSONResponse:
    daq = _daq(request)
    credential = login.credential_for(request)
    entry = await run_in_threadpool(daq.bridge.run, command, params, daq.log, timeout,
                                    credential)
    status = {"ok": 200, "failed": 409, "timeout": 504}.get(entry["status"], 500)
    if status == 409:
        status = _refusal_status(entry["data"], 409)
    body = {"success": entry["status"] == "ok", "message": entry["message"],
            "data": entry["data"], "progress": entry["progress"], "log_id": entry["id"],
            "status": entry["status"]}
    return _JSON(body, status_code=status)


async def index(request: Request) -> Response:
    if _daq(request).require_login and login.session_of(request) is None:
        return RedirectResponse("/login", status_code=303)
    return FileResponse(STATIC / "index.html")


async def post_command(request: Request) -> Response:
    """``POST /api/command/<command>`` with the command's parameters as a JSON object."""
    daq = _daq(request)
    if not same_origin(request.headers):
        daq.rejects.add("origin")
        return _error(403, "commands from another site are refused")
    refusal = login.check_state_change(request)
    if refusal is not None:
        return refusal
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        daq.rejects.add("not_json")
        return _error(415, "send the parameters as JSON (Content-Type: application/json)")
    params = parse_json(await read_body(request, daq.max_body))
    if not isinstance(params, dict):
        daq.rejects.add("not_object")
        return _error(400, "the body must be a JSON object of parameter name -> value")
    timeout = params.pop("_timeout", None)
    if timeout is not None and (isinstance(timeout, bool) or
                                not isinstance(timeout, (int, float)) or
                                not 0 < timeout <= 3600 * 24):
        daq.rejects.add("bad_timeout")
        return _error(400, "_timeout must be a number of seconds, above 0 and at most a day")
    return await _command(request, request.path_params["command"], params, timeout)


async def get_read(request: Request) -> Response:
    """Read-only requests (status, clients, actions, runs, run): same answers as the Operator."""
    what = request.path_params["what"]
    params: dict[str, Any] = {}
    daq = _daq(request)
    if what in ("runs", "audit") and "limit" in request.query_params:
        try:
            params["limit"] = int(request.query_params["limit"])
        except ValueError:
            daq.rejects.add("bad_query")
            return _error(400, "limit must be an integer")
        if not 0 < params["limit"] <= 100_000:
            daq.rejects.add("bad_query")
            return _error(400, "limit must be 1 to 100000")
    if what not in ("status", "clients", "actions", "runs", "audit"):
        return _error(404, f"no such read: {what}; try status, clients, actions, runs, audit")
    refusal = login.check_read(request)
    if refusal is not None:
        return refusal
    final = await run_in_threadpool(daq.bridge.call, what, params,
                                    login.credential_for(request))
    return _final(final)


async def get_run(request: Request) -> Response:
    daq = _daq(request)
    refusal = login.check_read(request)
    if refusal is not None:
        return refusal
    final = await run_in_threadpool(daq.bridge.call, "run",
                                    {"run_number": request.path_params["number"]},
                                    login.credential_for(request))
    return _final(final)


def _final(final: Result | Timeout) -> JSONResponse:
    status = 200 if final.success else (504 if isinstance(final, Timeout) else
                                        _refusal_status(final.data, 409))
    return _JSON({"success": final.success, "message": final.message,
                  "data": final.data}, status_code=status)


async def get_monitor(request: Request) -> Response:
    """The latest monitor snapshot the poller fetched (through the core)."""
    daq = _daq(request)
    refusal = login.check_read(request)
    if refusal is not None:
        return refusal
    latest = {m["type"]: m for m in daq.poller.cached()} if daq.poller else {}
    snap = latest.get("monitor")
    if snap is None or snap.get("data") is None:
        message = snap.get("message") if snap else "no snapshot yet"
        return _error(404, message or "no snapshot yet")
    return _JSON({"success": True, "data": snap["data"]})


async def get_layout(request: Request) -> Response:
    """Which chip and channel sit at each pixel of a tile (the hit map's geometry)."""
    tile = standard_tile()
    return JSONResponse({
        "pixels_per_side": tile.columns, "pitch_mm": tile.pitch_mm,
        "chip_id": tile.pixel_chip.tolist(), "channel": tile.pixel_channel.tolist(),
        "unrouted_channels": np.flatnonzero(~tile.routed).tolist(),
    })


async def favicon(request: Request) -> Response:
    """The page's icon (browsers ask for /favicon.ico whatever the page says)."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


async def get_log(request: Request) -> Response:
    refusal = login.check_read(request)
    if refusal is not None:
        return refusal
    return _JSON({"entries": _daq(request).log.recent()})


async def get_metrics(request: Request) -> Response:
    """This server's own counts: HTTP refusals by reason, sessions, WebSocket traffic."""
    daq = _daq(request)
    return _JSON({"success": True, "data": {
        "http_rejected": daq.rejects.snapshot(), "sessions_expired": daq.sessions.expired,
        "ws_sent": daq.hub.sent, "ws_dropped": daq.hub.dropped,
        "login_required": daq.require_login}})


async def bad_request(request: Request, exc: BadRequest) -> Response:
    _daq(request).rejects.add(exc.reason)
    return _error(exc.status, str(exc))


async def websocket(ws: WebSocket) -> None:
    daq = _daq(ws)
    if not same_origin(ws.headers):
        daq.rejects.add("origin")
        await ws.close(code=1008)
        return
    session = login.session_of(ws)
    if daq.require_login and session is None:
        daq.rejects.add("login_required")
        await ws.close(code=1008)
        return
    await ws.accept()
    cached = daq.poller.cached() if daq.poller else []
    await ws.send_text(dumps({"type": "hello", "core": daq.core, "interval": daq.interval,
                              "log": daq.log.recent(),
                              "clients": daq.bridge.client_ids if daq.bridge else []}))
    for message in cached:
        await ws.send_text(dumps(message))
    daq.hub.sockets.add(ws)
    try:
        while True:
            text = await ws.receive_text()
            if text == "ping":
                await ws.send_text(json.dumps({"type": "pong", "time": time.time()}))
            else:
                await _page_message(daq, ws, text)
    except WebSocketDisconnect:
        pass
    finally:
        daq.hub.sockets.discard(ws)
        daq.views.drop(id(ws))


def create_app(core: str, *, interval: float = 1.0, timeout: float = 10.0,
               keys: Any = None, bind_host: str = "127.0.0.1",
               hosts: list[str] | tuple[str, ...] = (), require_login: bool = False,
               session_ttl: float = 12 * 3600, session_idle: float = 2 * 3600,
               max_body: int = MAX_BODY, poll_credential: Credential | None = None
               ) -> Starlette:
    """The web app for the core at ``core``; the poller asks it every ``interval`` s.

    ``keys``: the CURVE key directory (or loaded keys) for a core that demands them; default
    ``$LARPIX_DAQ_KEYS`` if set (see :mod:`larpixdaq.runcontrol.security`). Requests are
    answered only for the loopback names, ``bind_host`` and ``hosts`` (the names people use
    to reach this server). ``require_login``: nothing but the login page without a session.
    ``poll_credential``: who the poller reads status as (a viewer's; needed only when the
    core requires a login).
    """
    daq = WebDaq(core, interval=interval, timeout=timeout, keys=keys,
                 require_login=require_login, session_ttl=session_ttl,
                 session_idle=session_idle, max_body=max_body, poll_credential=poll_credential)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await daq.startup()
        try:
            yield
        finally:
            await daq.shutdown()

    app = Starlette(routes=[
        Route("/", index),
        *login.ROUTES,
        Route("/api/command/{command}", post_command, methods=["POST"]),
        Route("/api/runs/{number:int}", get_run),
        Route("/api/monitor", get_monitor),
        Route("/api/layout", get_layout),
        Route("/favicon.ico", favicon),
        Route("/api/log", get_log),
        Route("/api/metrics", get_metrics),
        Route("/api/{what}", get_read),
        WebSocketRoute("/ws", websocket),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ], lifespan=lifespan, exception_handlers={BadRequest: bad_request},
        middleware=[Middleware(HostCheck, allowed=allowed_hosts(bind_host, hosts),
                               rejects=daq.rejects)])
    app.state.daq = daq
    return app
