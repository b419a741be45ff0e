"""Who a web request comes from: a logged-in browser, a script with a token, or anonymous.

* A browser logs in at ``/login`` with its user name and token (a form, or the link that
  `larpix-daq up` prints, ``/login?user=NAME&token=TOKEN``, as Jupyter prints one). The
  server asks the core (``whoami``) whether that credential is good; on success it opens a
  session (:mod:`.sessions`): an ``HttpOnly; SameSite=Strict`` cookie, and a CSRF token the
  page reads from ``GET /api/session`` and sends in ``X-CSRF-Token`` with every POST.
* A script sends ``Authorization: Bearer USER:TOKEN`` (no cookie, so no CSRF token needed:
  a browser never adds that header to a cross-site request by itself).
* Anyone else is anonymous: the core treats them as a viewer, unless the site requires a
  login (then only the login page answers).

Failed logins are counted and, past a few from one client address, slowed down (429).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket

from larpixdaq.runcontrol.credentials import Credential
from larpixdaq.runcontrol.operator import Result
from larpixdaq.web.guard import dumps, parse_json, read_body, same_origin
from larpixdaq.web.sessions import COOKIE, CSRF_HEADER, Session, csrf_ok

LOGIN_BODY_LIMIT = 4096
LOGIN_PAGE = Path(__file__).resolve().parent / "static" / "login.html"


def _json(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _refuse(request: Request, status: int, reason: str, message: str) -> JSONResponse:
    request.app.state.daq.rejects.add(reason)
    return _json({"success": False, "message": message, "login": "/login"}, status)


def session_of(request: Request | WebSocket) -> Session | None:
    daq = request.app.state.daq
    return daq.sessions.get(request.cookies.get(COOKIE), time.monotonic())


def bearer(request: Request) -> Credential | None:
    """The ``Authorization: Bearer USER:TOKEN`` credential, if the header is there."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    user, sep, token = value.strip().partition(":")
    return Credential(user, token) if sep else Credential("", value.strip())


def credential_for(request: Request) -> Credential | bool:
    """Who to send this request to the core as (False: anonymous)."""
    cred = bearer(request)
    if cred is not None:
        return cred
    session = session_of(request)
    return session.credential if session is not None else False


def check_state_change(request: Request) -> Response | None:
    """None if a POST may go on to the core; else the refusal (counted)."""
    if request.headers.get("authorization"):
        return None if bearer(request) is not None else _refuse(
            request, 401, "bad_authorization", "Authorization must be 'Bearer USER:TOKEN'")
    daq = request.app.state.daq
    if COOKIE in request.cookies:
        session = session_of(request)
        if session is None:
            return _refuse(request, 401, "session_expired",
                           "your session has expired or ended; log in again")
        if not csrf_ok(session, request.headers.get(CSRF_HEADER)):
            return _refuse(request, 403, "csrf", "missing or wrong CSRF token (X-CSRF-Token);"
                           " reload the page")
        return None
    if daq.require_login:
        return _refuse(request, 401, "login_required", "log in first")
    return None


def check_read(request: Request) -> Response | None:
    """None if a read may go on; a 401 when the site requires a login and there is none."""
    daq = request.app.state.daq
    if not daq.require_login or request.headers.get("authorization"):
        return None
    if session_of(request) is None:
        return _refuse(request, 401, "login_required", "log in first")
    return None


async def _verify(request: Request, credential: Credential) -> tuple[str, str] | str:
    """(user, role) if the core accepts ``credential``; else why not."""
    daq = request.app.state.daq
    final = await run_in_threadpool(daq.bridge.call, "whoami", {}, credential)
    if isinstance(final, Result) and final.success and final.data.get("user"):
        return final.data["user"], final.data["role"]
    return final.message


async def _login(request: Request, user: Any, token: Any) -> Response | tuple[Session, str]:
    daq = request.app.state.daq
    client = f"ip:{request.client.host if request.client else '?'}"
    now = time.monotonic()
    wait = daq.login_throttle.blocked_for(client, now)
    if wait > 0:
        response = _refuse(request, 429, "login_throttled",
                           f"too many failed logins; try again in {wait:.0f} s")
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    if not isinstance(user, str) or not isinstance(token, str) or not user or not token:
        daq.login_throttle.failure(client, now)
        return _refuse(request, 400, "login_malformed", "give a user name and a token")
    verified = await _verify(request, Credential(user, token))
    if isinstance(verified, str):
        daq.login_throttle.failure(client, now)
        return _refuse(request, 401, "login_failed", f"login refused: {verified}")
    daq.login_throttle.success(client)
    name, role = verified
    return daq.sessions.create(Credential(name, token), role, now), role


def _set_cookie(request: Request, response: Response, session: Session) -> None:
    # No max-age: the server ends the session (so it can tell the page it expired).
    response.set_cookie(COOKIE, session.id, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


async def login_page(request: Request) -> Response:
    """``GET /login``: the form; with ``?user=&token=`` (the printed link), log in at once."""
    query = request.query_params
    if "token" in query:
        outcome = await _login(request, query.get("user"), query.get("token"))
        if isinstance(outcome, Response):
            return outcome
        response = RedirectResponse("/", status_code=303)  # the token leaves the address bar
        _set_cookie(request, response, outcome[0])
        return response
    return FileResponse(LOGIN_PAGE)


async def login_post(request: Request) -> Response:
    """``POST /login`` with ``{"user": ..., "token": ...}`` (JSON or a form)."""
    if not same_origin(request.headers):
        return _refuse(request, 403, "origin", "logins from another site are refused")
    body = await read_body(request, LOGIN_BODY_LIMIT)
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/x-www-form-urlencoded":
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    else:
        form = parse_json(body)
        if not isinstance(form, dict):
            return _refuse(request, 400, "login_malformed", "give a user name and a token")
    outcome = await _login(request, form.get("user"), form.get("token"))
    if isinstance(outcome, Response):
        return outcome
    session, role = outcome
    response = _json({"success": True, "user": session.user, "role": role,
                      "csrf": session.csrf})
    _set_cookie(request, response, session)
    return response


async def logout(request: Request) -> Response:
    if not same_origin(request.headers):
        return _refuse(request, 403, "origin", "requests from another site are refused")
    session = session_of(request)
    if session is not None and not csrf_ok(session, request.headers.get(CSRF_HEADER)):
        return _refuse(request, 403, "csrf", "missing or wrong CSRF token (X-CSRF-Token)")
    request.app.state.daq.sessions.end(request.cookies.get(COOKIE))
    response = _json({"success": True, "message": "logged out"})
    response.delete_cookie(COOKIE, path="/")
    return response


async def session_info(request: Request) -> Response:
    """Who this browser is logged in as, its CSRF token and how long the session lasts."""
    daq = request.app.state.daq
    session = session_of(request)
    body: dict[str, Any] = {"login_required": daq.require_login,
                            "expired": session is None and COOKIE in request.cookies}
    if session is None:
        body.update(user=None, role=None if daq.require_login else "viewer", csrf=None)
    else:
        body.update(user=session.user, role=session.role, csrf=session.csrf,
                    expires_in_s=round(daq.sessions.remaining(session, time.monotonic()), 1))
    return Response(dumps(body), media_type="application/json")


ROUTES = [
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login_post, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/api/session", session_info),
]
