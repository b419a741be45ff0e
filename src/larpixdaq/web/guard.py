"""What the web server refuses before anything reaches the core, and the counts of it.

* **Host**: a request whose ``Host`` is not a name this server answers to is refused with 403.
  A page on another site that makes its own name resolve to 127.0.0.1 (DNS rebinding) is
  same-origin with itself, so the ``Origin`` check alone cannot stop it; its ``Host`` header
  still carries the attacker's name, which this check refuses.
* **Origin**: when a browser sends one, it must be this server's own.
* **Bodies**: at most :data:`MAX_BODY` bytes (413), read in pieces so a large body is refused
  without being held; JSON only, without ``NaN``/``Infinity``, numbers that fit 64 bits,
  nesting at most :data:`MAX_DEPTH` deep (400).

Every refusal is counted by reason in :class:`Rejects` (shown by ``GET /api/metrics``).
"""

from __future__ import annotations

import json
import math
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

MAX_BODY = 1 << 20
MAX_DEPTH = 32
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class Rejects:
    """HTTP refusals by reason (thread-safe: handlers run in several threads)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, reason: str) -> None:
        with self._lock:
            self.counts[reason] = self.counts.get(reason, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


class BadRequest(Exception):
    """A request refused before it reaches the core; ``status`` is the HTTP status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def allowed_hosts(bind_host: str, names: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """Host names the server answers to: the loopback names, the bind address, the given
    names, and for a wildcard bind this machine's own names."""
    out = set(LOOPBACK_NAMES) | {n.lower() for n in names}
    host = bind_host.strip("[]").lower()
    if host in _WILDCARDS:
        out |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    else:
        out.add(host)
    return frozenset(out)


def host_name(header: str) -> str:
    """``example.org:8080`` -> ``example.org``; ``[::1]:80`` -> ``::1``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """ASGI middleware: refuse HTTP and WebSocket requests for a Host not in ``allowed``."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str], rejects: Rejects) -> None:
        self.app = app
        self.allowed = allowed
        self.rejects = rejects

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.allowed:
                self.rejects.add("host")
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = json.dumps({"success": False, "message": f"host {host!r} is not a name "
                                   "of this server"}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def same_origin(headers: Any) -> bool:
    """No Origin (curl, scripts) or this server's own; anything else is another site."""
    origin = headers.get("origin")
    if not origin:
        return True
    return urlsplit(origin).netloc == headers.get("host", "")


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BadRequest(413, "body_too_large",
                                 f"the body is over {limit} bytes ({declared})")
        except ValueError:
            raise BadRequest(400, "bad_length", "Content-Length is not a number") from None
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, "body_too_large", f"the body is over {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _no_constants(name: str) -> Any:
    raise BadRequest(400, "not_finite", f"{name} is not a number the DAQ accepts")


def parse_json(body: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, integers within 64 bits, finite floats, bounded nesting."""
    try:
        value = json.loads(body or b"{}", parse_constant=_no_constants)
    except RecursionError:
        raise BadRequest(400, "too_deep", f"the JSON is nested over {MAX_DEPTH} deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, "bad_json", f"the body is not JSON: {exc}") from None
    _check(value, 0)
    return value


def _check(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise BadRequest(400, "too_deep", f"the JSON is nested over {MAX_DEPTH} deep")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise BadRequest(400, "out_of_range", f"the number {value} does not fit 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadRequest(400, "not_finite", "a number in the body is not finite")
        return
    items = value.values() if isinstance(value, dict) else value
    for item in items:
        _check(item, depth + 1)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None, so it is valid JSON (a
    component may still report one; the page must not choke on it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """JSON text that browsers can parse: a non-finite number becomes null."""
    try:
        return json.dumps(value, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        return json.dumps(finite(value), separators=(",", ":"), default=str, allow_nan=False)
