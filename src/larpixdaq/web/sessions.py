"""Logged-in browsers: a random session id in a cookie, the user's credential kept here.

The web server holds no key of its own. A person logs in with their user name and token; the
server asks the core who that is (``whoami``), and on success keeps the credential in memory
under a random session id sent as an ``HttpOnly; SameSite=Strict`` cookie. Every request of
that browser then goes to the core as that user. Each session has its own CSRF token, which
the page sends in the ``X-CSRF-Token`` header of every state-changing request.

A session ends ``ttl`` seconds after login, or ``idle`` seconds after its last use, or at
logout. Pure apart from ``secrets``: the time is passed in.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass

from larpixdaq.runcontrol.credentials import Credential

COOKIE = "larpix_session"
CSRF_HEADER = "x-csrf-token"


@dataclass
class Session:
    id: str
    credential: Credential
    role: str
    csrf: str
    created: float
    last_used: float

    @property
    def user(self) -> str:
        return self.credential.user


class Sessions:
    """Sessions by id; thread-safe (handlers run in a thread pool)."""

    def __init__(self, ttl: float = 12 * 3600, idle: float = 2 * 3600,
                 limit: int = 1000) -> None:
        self.ttl = ttl
        self.idle = idle
        self.limit = limit
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.expired = 0

    def create(self, credential: Credential, role: str, now: float) -> Session:
        session = Session(secrets.token_urlsafe(32), credential, role,
                          secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._drop_expired(now)
            while len(self._by_id) >= self.limit:  # the oldest goes
                del self._by_id[next(iter(self._by_id))]
            self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None, now: float) -> Session | None:
        """The live session of that id (its use noted), or None (unknown or expired)."""
        if not session_id:
            return None
        with self._lock:
            session = self._by_id.get(session_id)
            if session is None:
                return None
            if self._is_expired(session, now):
                del self._by_id[session_id]
                self.expired += 1
                return None
            session.last_used = now
            return session

    def end(self, session_id: str | None) -> None:
        with self._lock:
            self._by_id.pop(session_id or "", None)

    def remaining(self, session: Session, now: float) -> float:
        return max(0.0, min(session.created + self.ttl, session.last_used + self.idle) - now)

    def _is_expired(self, session: Session, now: float) -> bool:
        return now > session.created + self.ttl or now > session.last_used + self.idle

    def _drop_expired(self, now: float) -> None:
        for sid in [s.id for s in self._by_id.values() if self._is_expired(s, now)]:
            del self._by_id[sid]
            self.expired += 1


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf, presented)
