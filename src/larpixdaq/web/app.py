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

Cross-site requests are refused: a command must be a JSON ``POST`` and, when the browser
sends an ``Origin``, it must be this server's own. The server binds to 127.0.0.1 unless told
otherwise.
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
from urllib.parse import urlsplit

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from larpixdaq.geometry import standard_tile
from larpixdaq.runcontrol.operator import Operator, Progress, Result, Timeout
from larpixdaq.runcontrol.security import client_keys

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
            text = json.dumps(message, separators=(",", ":"), default=str)
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

    def open(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        entry = {"id": next(self._ids), "time": time.time(), "command": command,
                 "params": params, "status": "running", "message": "", "data": {},
                 "progress": [], "elapsed_s": 0.0}
        with self._lock:
            self.entries.append(entry)
        self.hub.publish({"type": "log", "entry": entry})
        return entry

    def update(self, entry: dict[str, Any]) -> None:
        shown = dict(entry)
        size = len(json.dumps(entry["data"], default=str))
        if size > LOG_DATA_LIMIT:
            shown["data"] = {"truncated": f"{size} bytes of data; see the HTTP response"}
        shown["progress"] = entry["progress"][-20:]
        self.hub.publish({"type": "log", "entry": shown})

    def recent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.entries)


class Bridge:
    """Operators to the core: a pool for commands from the page, one for the poller."""

    def __init__(self, core: str, *, timeout: float = 10.0, pool: int = 4,
                 keys: Any = None) -> None:
        self.core = core
        self.timeout = timeout
        self._pool: queue.Queue[Operator] = queue.Queue()
        self._all: list[Operator] = []
        for _ in range(pool):
            op = Operator(core, timeout=timeout, keys=keys)
            self._all.append(op)
            self._pool.put(op)

    def run(self, command: str, params: dict[str, Any], log: CommandLog,
            timeout: float | None = None) -> dict[str, Any]:
        """Send one command, logging its progress and result; returns the log entry."""
        entry = log.open(command, params)
        started = time.monotonic()
        op = self._pool.get()
        try:
            for response in op.request(command, params, timeout=timeout):
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

    def call(self, command: str, params: dict[str, Any]) -> Result | Timeout:
        """One request without logging (reads: status, runs, ...); the final response."""
        op = self._pool.get()
        try:
            return op.call(command, params)
        finally:
            self._pool.put(op)

    def close(self) -> None:
        for op in self._all:
            op.close()


class Poller(threading.Thread):
    """Asks the core what changed, about once a ``interval``, and tells the hub."""

    def __init__(self, core: str, hub: Hub, interval: float = 1.0, keys: Any = None) -> None:
        super().__init__(name="web-poller", daemon=True)
        self.core = core
        self.keys = keys
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
        op = Operator(self.core, timeout=max(2.0, self.interval * 2), keys=self.keys)
        seen_state: tuple[Any, ...] = ()
        seen_components: tuple[str, ...] = ()
        next_runs = 0.0
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
        final = op.call("invoke", {"component": monitors[0], "action": "snapshot",
                                   "params": {}})
        if isinstance(final, Result) and final.success:
            self._emit({"type": "monitor", "data": final.data.get("result")})
        else:
            self._emit({"type": "monitor", "data": None, "message": final.message})


class WebDaq:
    """The state of one web server: hub, command log, bridge, poller."""

    def __init__(self, core: str, *, interval: float = 1.0, timeout: float = 10.0,
                 keys: Any = None) -> None:
        self.core = core
        self.keys = client_keys(keys)  # loaded once: a bad key directory fails here
        self.interval = interval
        self.timeout = timeout
        self.hub = Hub()
        self.log = CommandLog(self.hub)
        self.bridge: Bridge | None = None
        self.poller: Poller | None = None
        self._pump: asyncio.Task | None = None

    async def startup(self) -> None:
        self._pump = self.hub.start()
        self.bridge = Bridge(self.core, timeout=self.timeout, keys=self.keys)
        self.poller = Poller(self.core, self.hub, self.interval, self.keys)
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

def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status_code=status)


def _same_origin(request: Request | WebSocket) -> bool:
    """No Origin (curl, scripts) or this server's own; anything else is another site."""
    origin = request.headers.get("origin")
    if not origin:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _daq(request: Request | WebSocket) -> WebDaq:
    return request.app.state.daq


async def _command(request: Request, command: str, params: dict[str, Any],
                   timeout: float | None = None) -> JSONResponse:
    daq = _daq(request)
    entry = await run_in_threadpool(daq.bridge.run, command, params, daq.log, timeout)
    status = {"ok": 200, "failed": 409, "timeout": 504}.get(entry["status"], 500)
    body = {"success": entry["status"] == "ok", "message": entry["message"],
            "data": entry["data"], "progress": entry["progress"], "log_id": entry["id"],
            "status": entry["status"]}
    return JSONResponse(body, status_code=status)


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def post_command(request: Request) -> Response:
    """``POST /api/command/<command>`` with the command's parameters as a JSON object."""
    if not _same_origin(request):
        return _error(403, "commands from another site are refused")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _error(415, "send the parameters as JSON (Content-Type: application/json)")
    try:
        params = json.loads(await request.body() or b"{}")
    except ValueError as exc:
        return _error(400, f"the body is not JSON: {exc}")
    if not isinstance(params, dict):
        return _error(400, "the body must be a JSON object of parameter name -> value")
    timeout = params.pop("_timeout", None)
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        return _error(400, "_timeout must be a positive number of seconds")
    return await _command(request, request.path_params["command"], params, timeout)


async def get_read(request: Request) -> Response:
    """Read-only requests (status, clients, actions, runs, run): same answers as the Operator."""
    what = request.path_params["what"]
    params: dict[str, Any] = {}
    if what == "runs" and "limit" in request.query_params:
        try:
            params["limit"] = int(request.query_params["limit"])
        except ValueError:
            return _error(400, "limit must be an integer")
    if what not in ("status", "clients", "actions", "runs"):
        return _error(404, f"no such read: {what}; try status, clients, actions, runs")
    daq = _daq(request)
    final = await run_in_threadpool(daq.bridge.call, what, params)
    return _final(final)


async def get_run(request: Request) -> Response:
    daq = _daq(request)
    final = await run_in_threadpool(daq.bridge.call, "run",
                                    {"run_number": request.path_params["number"]})
    return _final(final)


def _final(final: Result | Timeout) -> JSONResponse:
    status = 200 if final.success else (504 if isinstance(final, Timeout) else 409)
    return JSONResponse({"success": final.success, "message": final.message,
                         "data": final.data}, status_code=status)


async def get_monitor(request: Request) -> Response:
    """The latest monitor snapshot the poller fetched (through the core)."""
    daq = _daq(request)
    latest = {m["type"]: m for m in daq.poller.cached()} if daq.poller else {}
    snap = latest.get("monitor")
    if snap is None or snap.get("data") is None:
        message = snap.get("message") if snap else "no snapshot yet"
        return _error(404, message or "no snapshot yet")
    return JSONResponse({"success": True, "data": snap["data"]})


async def get_layout(request: Request) -> Response:
    """Which chip and channel sit at each pixel of a tile (the hit map's geometry)."""
    tile = standard_tile()
    return JSONResponse({
        "pixels_per_side": tile.columns, "pitch_mm": tile.pitch_mm,
        "chip_id": tile.pixel_chip.tolist(), "channel": tile.pixel_channel.tolist(),
        "unrouted_channels": np.flatnonzero(~tile.routed).tolist(),
    })


async def get_log(request: Request) -> Response:
    return JSONResponse({"entries": _daq(request).log.recent()})


async def websocket(ws: WebSocket) -> None:
    if not _same_origin(ws):
        await ws.close(code=1008)
        return
    daq = _daq(ws)
    await ws.accept()
    cached = daq.poller.cached() if daq.poller else []
    await ws.send_text(json.dumps({"type": "hello", "core": daq.core,
                                   "interval": daq.interval, "log": daq.log.recent()},
                                  default=str))
    for message in cached:
        await ws.send_text(json.dumps(message, default=str))
    daq.hub.sockets.add(ws)
    try:
        while True:
            text = await ws.receive_text()
            if text == "ping":
                await ws.send_text(json.dumps({"type": "pong", "time": time.time()}))
    except WebSocketDisconnect:
        pass
    finally:
        daq.hub.sockets.discard(ws)


def create_app(core: str, *, interval: float = 1.0, timeout: float = 10.0,
               keys: Any = None) -> Starlette:
    """The web app for the core at ``core``; the poller asks it every ``interval`` s.

    ``keys``: the CURVE key directory (or loaded keys) for a core that demands them; default
    ``$LARPIX_DAQ_KEYS`` if set (see :mod:`larpixdaq.runcontrol.security`).
    """
    daq = WebDaq(core, interval=interval, timeout=timeout, keys=keys)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        await daq.startup()
        try:
            yield
        finally:
            await daq.shutdown()

    app = Starlette(routes=[
        Route("/", index),
        Route("/api/command/{command}", post_command, methods=["POST"]),
        Route("/api/runs/{number:int}", get_run),
        Route("/api/monitor", get_monitor),
        Route("/api/layout", get_layout),
        Route("/api/log", get_log),
        Route("/api/{what}", get_read),
        WebSocketRoute("/ws", websocket),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ], lifespan=lifespan)
    app.state.daq = daq
    return app
