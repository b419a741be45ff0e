"""The core's access check: who sent a command, may they, and the audit trail of it.

The core calls :meth:`Access.check` for every command before doing anything with it; that is
the one place where run control is granted or refused, for the ``Operator``, the command line
and the web page alike (the web server holds no key of its own: it forwards the logged-in
user's credential). Each refusal is one line naming the user, their role, the request and the
role it needs, and is counted.

Verifying a token costs a KDF (:mod:`.users`), on the core's single thread, so a token that
verified once is remembered (by a SHA-256 of it) together with the stored hash it matched;
later uses only re-read that row, so a removed token, a removed user or a changed role takes
effect at once. Failures are counted per client (the ZeroMQ peer) and per user name; past
:attr:`Throttle.free` failures in :attr:`Throttle.window` seconds, that key is refused
without any KDF for a delay that doubles with each further failure (up to a minute), so
guessing is slowed down and cannot make the core spend its time hashing.
"""

from __future__ import annotations

import collections
import getpass
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from larpixdaq.runcontrol import policy
from larpixdaq.runcontrol.credentials import (
    Credential,
    read_token_file,
    save_token_file,
    token_file,
)
from larpixdaq.runcontrol.policy import Role
from larpixdaq.runcontrol.users import (
    TokenRow,
    UserStore,
    check_secret,
    valid_user_name,
    well_formed_token,
)

#: Counter names, defined once (the core's status shows them).
COUNTERS = ("auth_accepted", "auth_denied", "auth_bad_token", "auth_expired",
            "auth_malformed", "auth_throttled", "auth_anonymous_refused")
CACHE_SIZE = 1024


@dataclass
class Throttle:
    """Failures per key (client, user name) and the delay they earn. Pure: ``now`` is given.

    ``free`` failures within ``window`` seconds cost nothing; each one after that blocks the
    key for ``base`` seconds, doubled per further failure, at most ``cap``.
    """

    free: int = 5
    window: float = 60.0
    base: float = 1.0
    cap: float = 60.0
    _failures: dict[str, collections.deque] = field(default_factory=dict)
    _blocked_until: dict[str, float] = field(default_factory=dict)

    def blocked_for(self, key: str, now: float) -> float:
        """Seconds ``key`` must still wait (0: it may try)."""
        until = self._blocked_until.get(key, 0.0)
        return max(0.0, until - now)

    def failure(self, key: str, now: float) -> None:
        times = self._failures.setdefault(key, collections.deque())
        times.append(now)
        while times and times[0] < now - self.window:
            times.popleft()
        extra = len(times) - self.free
        if extra > 0:
            self._blocked_until[key] = now + min(self.cap, self.base * 2 ** (extra - 1))
        if len(self._failures) > 10_000:  # forget the oldest keys rather than grow for ever
            for old in list(self._failures)[:1000]:
                self._failures.pop(old, None)
                self._blocked_until.pop(old, None)

    def success(self, key: str) -> None:
        self._failures.pop(key, None)
        self._blocked_until.pop(key, None)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: allowed or not, as whom, and the reason for a refusal."""

    allowed: bool
    user: str | None
    role: Role | None
    what: str
    required: Role
    reason: str = ""
    code: str = ""  # "" | "denied" | "bad-credential" | "expired" | "malformed" | "throttled"


@dataclass
class _Known:
    token_id: int
    stored: str


class Access:
    """Authentication (tokens in the user tables) and authorisation (:mod:`.policy`)."""

    def __init__(self, db_path: str | Path, *, anonymous: Role | None = Role.VIEWER,
                 throttle: Throttle | None = None) -> None:
        self.users = UserStore(db_path)
        self.anonymous = anonymous
        self.throttle = throttle or Throttle()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.last_refusal = ""
        self._known: collections.OrderedDict[str, _Known] = collections.OrderedDict()

    def close(self) -> None:
        self.users.close()

    def remember(self, user: str, token: str) -> bool:
        """Verify a credential now (the core's own local one, at start-up) so its first
        command does not wait for the KDF; whether it verified."""
        row = self._verify(user, token)
        if row is not None:
            digest = hashlib.sha256(token.encode()).hexdigest()
            self._known[f"{user}\0{digest}"] = _Known(row.id, row.hash)
        return row is not None

    def check(self, client: str, user: str | None, token: str | None, command: str,
              params: dict[str, Any], now: float | None = None) -> Verdict:
        """May this request go ahead? ``client`` names the peer (for throttling)."""
        now = time.monotonic() if now is None else now
        who = self.authenticate(client, user, token, now)
        if isinstance(who, Verdict):
            self.last_refusal = who.reason
            return Verdict(False, who.user, None, policy.request_name(command, params),
                           policy.required_role(command, params), who.reason, who.code)
        name, role = who
        decision = policy.decide(name, role, command, params)
        if not decision.allowed:
            if name is None and role is None:
                self.counters["auth_anonymous_refused"] += 1
                reason = (f"{decision.what} needs a login: this site requires one (send a "
                          "user and token)")
            else:
                self.counters["auth_denied"] += 1
                reason = decision.reason
            self.last_refusal = reason
            return Verdict(False, name, role, decision.what, decision.required, reason,
                           "denied")
        self.counters["auth_accepted"] += 1
        return Verdict(True, name, role, decision.what, decision.required)

    def authenticate(self, client: str, user: str | None, token: str | None,
                     now: float) -> tuple[str | None, Role | None] | Verdict:
        """(user, role) for a good credential or none at all; a refusing Verdict otherwise."""
        def refuse(code: str, reason: str, counter: str) -> Verdict:
            self.counters[counter] += 1
            return Verdict(False, user if valid_user_name(user) else None, None, "",
                           Role.VIEWER, reason, code)

        if user is None and token is None:
            return None, self.anonymous
        if not valid_user_name(user) or not well_formed_token(token):
            part = "user name" if not valid_user_name(user) else "token"
            self._fail(client, None, now)
            return refuse("malformed", f"malformed credential: the {part} is not one this "
                          "DAQ gives out", "auth_malformed")
        wait = max(self.throttle.blocked_for(f"client:{client}", now),
                   self.throttle.blocked_for(f"user:{user}", now))
        if wait > 0:
            return refuse("throttled", f"too many failed credentials; try again in "
                          f"{wait:.0f} s", "auth_throttled")
        digest = hashlib.sha256(token.encode()).hexdigest()
        found = self._remembered(user, digest)
        if found is None:
            found = self._verify(user, token)
            if found is not None:
                self._known[f"{user}\0{digest}"] = _Known(found.id, found.hash)
                while len(self._known) > CACHE_SIZE:
                    self._known.popitem(last=False)
        if found is None:
            self._fail(client, user, now)
            return refuse("bad-credential", f"unknown user {user} or wrong token",
                          "auth_bad_token")
        if found.expires is not None and found.expires < time.time():
            self._fail(client, user, now)
            return refuse("expired", f"the token of user {user} expired at "
                          f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(found.expires))}",
                          "auth_expired")
        record = self.users.get_user(user)
        if record is None:
            return refuse("bad-credential", f"unknown user {user} or wrong token",
                          "auth_bad_token")
        self.throttle.success(f"client:{client}")
        return user, record.role

    def _fail(self, client: str, user: str | None, now: float) -> None:
        self.throttle.failure(f"client:{client}", now)
        if user is not None:
            self.throttle.failure(f"user:{user}", now)

    def _remembered(self, user: str, digest: str) -> TokenRow | None:
        known = self._known.get(f"{user}\0{digest}")
        if known is None:
            return None
        row = self.users.token(known.token_id)
        if row is None or row.user != user or row.hash != known.stored:
            del self._known[f"{user}\0{digest}"]
            return None
        self._known.move_to_end(f"{user}\0{digest}")
        return row

    def _verify(self, user: str, token: str) -> TokenRow | None:
        rows = self.users.tokens_of(user)
        if not rows:
            # Spend the same KDF as for a real user, so a reply's timing does not say which
            # user names exist.
            check_secret(token, "scrypt$8192$8$1$00$00")
            return None
        for row in rows:
            if check_secret(token, row.hash):
                return row
        return None


LOCAL_LABEL = "local"


def local_user_name() -> str:
    """The name the local credential is made for: the operating-system user."""
    name = getpass.getuser()
    return name if valid_user_name(name) else "local-admin"


def ensure_local_admin(db_path: str | Path, core_address: str,
                       user: str | None = None) -> tuple[Credential, Path, bool]:
    """The local user's credential for the core at ``core_address``: kept if its token file
    still holds a token the database accepts, made otherwise (the user created as expert if
    missing; a user the site already has keeps the role the site gave). Returns the
    credential, the token file and whether a new token was made.

    Only the owner of the token file can read it (0600), so this gives the person who
    started the DAQ on this machine its keys and nobody else, as Jupyter's token file does.
    """
    user = user or local_user_name()
    path = token_file(core_address)
    with UserStore(db_path) as store:
        current = read_token_file(path)
        if current is not None and current.user == user:
            for row in store.tokens_of(user):
                if row.label == LOCAL_LABEL and check_secret(current.token, row.hash):
                    return current, path, False
        if store.get_user(user) is None:
            token = store.add_user(user, Role.EXPERT, label=LOCAL_LABEL)
        else:
            store.revoke_tokens(user, LOCAL_LABEL)
            token = store.new_token(user, label=LOCAL_LABEL)
    credential = Credential(user, token)
    return credential, save_token_file(core_address, credential), True
