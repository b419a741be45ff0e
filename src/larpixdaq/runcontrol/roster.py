"""Who is registered with the core, who owns which name, and who may still come back.

Pure: no sockets, no clock, no database. Times are passed in (``now``, in the core's monotonic
seconds); the caller turns what this module decides into messages.

The rules this file keeps:

1. A name belongs to one process (host, pid) at a time.
2. A newer process may take a name over from one that still seems alive only from the same
   host and in the same role, and only when run holds are allowed (``rejoin_grace > 0``): the
   old process died or was restarted there. Another host or another role using the name is a
   configuration mistake, and the holder keeps it.
3. A process that was taken over from stays refused for :data:`SUPERSEDED_TTL` seconds, so it
   stops instead of fighting for the name (after that its host/pid pair may be someone else).
4. A run participant that is gone is *missing* until ``now + rejoin_grace``; while it is, its
   name is kept for its role (and its key). The first registration under that name takes
   the missing entry (the caller resolves the incident); an entry whose deadline passed is
   handed out by :meth:`Roster.expired` exactly once.
5. With CURVE keys, a name belongs to the key that registered it: a registration under a
   registered (or missing) name with another key is refused, whatever host and pid it says.
   Host and pid are only what a process claims; the key is what it holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from larpixdaq.runcontrol import messages as m

#: How long a process replaced by a newer one of the same name stays refused (it is told to
#: stop when it next speaks; after this its host/pid pair may belong to someone else).
SUPERSEDED_TTL = 60.0
#: What a participant recorded in an open run is, when the core restarted and it has not yet
#: registered again.
ABSENT_AFTER_RESTART = "absent after the core restarted"


@dataclass
class Member:
    """A registered component, as the core knows it."""

    name: str
    role: str
    host: str
    pid: int
    identity: bytes
    actions: dict[str, Any]
    counter_names: list[str]
    endpoints: dict[str, Any]
    state: str
    run_number: int | None
    last_seen: float
    counters: dict[str, Any] = field(default_factory=dict)
    io_group: int | None = None  # a producer's board, as it registered
    key: str | None = None  # the CURVE public key it registered with (z85), if keys are on

    def summary(self, now: float) -> dict[str, Any]:
        return {
            "name": self.name, "role": self.role, "host": self.host, "pid": self.pid,
            "state": self.state, "run_number": self.run_number, "counters": self.counters,
            "actions": sorted(self.actions), "endpoints": self.endpoints,
            "last_seen_s": round(now - self.last_seen, 3),
        }


@dataclass
class Missing:
    """A run participant that is gone and may still register again until ``deadline``."""

    name: str
    role: str
    since: float
    deadline: float
    what: str  # "lost", "left", "restarted" or ABSENT_AFTER_RESTART
    key: str | None = None  # the key the name was registered with (None: any may take it)
    #: Index of its incident on the run, filled in once the run database has recorded it;
    #: stays None for a participant absent since a core restart (no incident until it expires).
    incident: int | None = None
    #: Its grace ran out at least once in a steady run and it is held on (the planner's rule 6).
    overdue: bool = False

    @property
    def after_restart(self) -> bool:
        return self.what == ABSENT_AFTER_RESTART

    def summary(self, now: float) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "what": self.what,
                "missing_s": round(now - self.since, 3),
                "remaining_s": round(max(0.0, self.deadline - now), 3)}


@dataclass(frozen=True)
class Admission:
    """What a registration does to the roster, decided before it is applied.

    ``refusal``: the reason to send with ``duplicate-name`` (nothing else applies).
    ``displaces``: an older process under this name that is to be treated as lost (restarted).
    ``reconnects``: the same process registering again (a fresh socket); its old record goes.
    """

    refusal: str | None = None
    displaces: Member | None = None
    reconnects: Member | None = None


class Roster:
    """The registered components, the names kept for missing ones, and refused processes."""

    def __init__(self, rejoin_grace: float) -> None:
        self.rejoin_grace = rejoin_grace
        self.members: dict[str, Member] = {}
        self.missing: dict[str, Missing] = {}
        self._by_identity: dict[bytes, str] = {}
        self._superseded: dict[tuple[str, str, int], tuple[int, float]] = {}

    # --- looking up -----------------------------------------------------------------------

    def name_of(self, identity: bytes) -> str | None:
        return self._by_identity.get(identity)

    def seen(self, identity: bytes, now: float) -> Member | None:
        """Any message is a sign of life: note it for the member behind ``identity``."""
        name = self._by_identity.get(identity)
        if name is None:
            return None
        member = self.members[name]
        member.last_seen = now
        return member

    def services(self) -> dict[str, Any]:
        """Every member's advertised endpoints merged; the first one wins for a key."""
        services: dict[str, Any] = {}
        for member in self.members.values():
            for key, value in member.endpoints.items():
                services.setdefault(key, value)
        return services

    def silent(self, now: float, timeout: float) -> list[Member]:
        """Members not heard from for longer than ``timeout`` (to be declared lost)."""
        return [x for x in self.members.values() if now - x.last_seen > timeout]

    def next_deadline(self) -> float | None:
        return min((x.deadline for x in self.missing.values()), default=None)

    # --- registration ---------------------------------------------------------------------

    def admit(self, msg: m.Register, identity: bytes, now: float,
              run_number: int | None, key: str | None = None) -> Admission:
        """Decide what a registration does (rules 1-5); records a take-over (rule 3).
        ``key``: the peer's CURVE public key (z85) when keys are on."""
        held = self._key_refusal(msg.name, key)
        if held is not None:
            return Admission(refusal=held)
        process = (msg.name, msg.host, msg.pid)
        superseded = self._superseded.get(process)
        if superseded is not None:
            if now < superseded[1]:
                return Admission(refusal=(
                    f"component {msg.name} pid {msg.pid} on {msg.host} was replaced by pid "
                    f"{superseded[0]}; this process should stop"))
            del self._superseded[process]
        old = self.members.get(msg.name)
        same_process = old is not None and (old.host, old.pid) == (msg.host, msg.pid)
        if old is not None and not same_process and (
            self.rejoin_grace <= 0 or old.host != msg.host or old.role != msg.role
        ):
            return Admission(refusal=(
                f"a component named {msg.name!r} is already registered from "
                f"{old.host} pid {old.pid}; choose another name"))
        missing = self.missing.get(msg.name)
        if missing is not None and missing.role != msg.role:
            return Admission(refusal=(
                f"the name {msg.name!r} is kept for {missing.role} {msg.name}, {missing.what}"
                f" during run {run_number if run_number is not None else '?'} and still "
                f"allowed to register again for {max(0.0, missing.deadline - now):.1f} s; a "
                f"{msg.role} cannot take it"))
        if old is None:
            return Admission()
        if not same_process:
            self._superseded[(old.name, old.host, old.pid)] = (msg.pid, now + SUPERSEDED_TTL)
            return Admission(displaces=old)
        return Admission(reconnects=old)

    def _key_refusal(self, name: str, key: str | None) -> str | None:
        """Rule 5: why ``key`` may not take ``name``, or None."""
        for holder in (self.members.get(name), self.missing.get(name)):
            if holder is not None and holder.key is not None and holder.key != key:
                return (f"the name {name!r} is registered with another key; only the holder "
                        "of that key can take it over")
        return None

    def add(self, msg: m.Register, identity: bytes, now: float,
            key: str | None = None) -> tuple[Member, Missing | None]:
        """Record an admitted registration; returns the member and the missing entry it takes.

        A displaced process must have been removed first (:meth:`remove`); a reconnecting one
        is replaced here.
        """
        old = self.members.get(msg.name)
        if old is not None:
            self._by_identity.pop(old.identity, None)
        member = Member(
            name=msg.name, role=msg.role, host=msg.host, pid=msg.pid, identity=identity,
            actions=msg.actions, counter_names=list(msg.counters), endpoints=msg.endpoints,
            state=msg.state, run_number=msg.run_number, last_seen=now, io_group=msg.io_group,
            key=key,
        )
        self.members[msg.name] = member
        self._by_identity[identity] = msg.name
        return member, self.missing.pop(msg.name, None)

    def remove(self, name: str) -> Member:
        member = self.members.pop(name)
        self._by_identity.pop(member.identity, None)
        return member

    # --- the rejoin grace -----------------------------------------------------------------

    def hold(self, name: str, role: str, now: float, what: str,
             key: str | None = None) -> Missing:
        """Keep ``name`` for ``role`` (and ``key``) until ``now + rejoin_grace``."""
        entry = Missing(name, role, now, now + self.rejoin_grace, what, key=key)
        self.missing[name] = entry
        return entry

    def expired(self, now: float) -> list[Missing]:
        """Missing entries whose grace has run out; each is handed out once, then forgotten."""
        gone = [x for x in self.missing.values() if now > x.deadline]
        for x in gone:
            del self.missing[x.name]
        return gone

    def release_all(self) -> None:
        """The run closed: nobody is expected back into it."""
        self.missing.clear()
