"""Control messages between components, the core and operators: typed, versioned, msgpack.

Every message is a msgpack map ``{"v": PROTOCOL_VERSION, "type": NAME, ...fields}``. The
types are small frozen dataclasses; :func:`encode` turns one into bytes and :func:`decode`
turns bytes back into one, checking the version, the type and every field's type, and
raising :class:`MessageError` that says what was wrong. Never pickle: a control port must
not run code chosen by whoever can reach it.

Requests carry an ``id`` (a short string chosen by the sender); every reply to a request
(:class:`Ack`, :class:`Progress`, :class:`Result`) repeats it, so replies are matched by id
and never by arrival order. See ``docs/runcontrol.md`` for who sends what.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from larpixdaq.errors import LarpixDaqError

PROTOCOL_VERSION = 1
MAX_ID_LENGTH = 64


class MessageError(LarpixDaqError, ValueError):
    """Bytes that are not a valid control message of this protocol version."""


#: The wire types a field's annotation allows: a ``float`` field takes an int too (a sender
#: may well write 5 for 5.0); a ``bool`` is never taken for an int.
_WIRE_TYPES: dict[Any, tuple[type, ...]] = {
    str: (str,), int: (int,), float: (int, float), bool: (bool,), dict: (dict,), list: (list,),
}


@dataclass(frozen=True)
class Message:
    """Base of every control message; ``TYPE`` is its name on the wire."""

    TYPE: ClassVar[str] = ""


@dataclass(frozen=True)
class Register(Message):
    """Component -> core: here I am, this is what I do. Answered by Welcome or Reject."""

    TYPE: ClassVar[str] = "register"
    name: str
    role: str
    host: str
    pid: int
    actions: dict = field(default_factory=dict)
    counters: list = field(default_factory=list)
    state: str = "STOP"
    run_number: int | None = None
    endpoints: dict = field(default_factory=dict)
    #: A producer's io_group (the board it reads): what the core admits its frames with.
    io_group: int | None = None


@dataclass(frozen=True)
class Welcome(Message):
    """Core -> component: registration accepted; the current state and heartbeat timing."""

    TYPE: ClassVar[str] = "welcome"
    name: str
    state: str
    run: dict | None = None
    heartbeat_interval: float = 0.2
    heartbeat_timeout: float = 0.8
    services: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Reject(Message):
    """Core -> peer: refused (duplicate name, not registered, bad request)."""

    TYPE: ClassVar[str] = "reject"
    code: str
    message: str


@dataclass(frozen=True)
class Heartbeat(Message):
    """Both ways: I am alive. Components add their state, run and live counters; the core
    adds its state, run and the services components advertise (e.g. the log collector)."""

    TYPE: ClassVar[str] = "heartbeat"
    name: str
    state: str
    run_number: int | None = None
    counters: dict = field(default_factory=dict)
    services: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Bye(Message):
    """Component -> core: leaving on purpose (not a loss)."""

    TYPE: ClassVar[str] = "bye"
    name: str


@dataclass(frozen=True)
class Command(Message):
    """Operator -> core: a request by name (``prepare_run``, ``status``, ``invoke``...).

    ``user`` and ``token`` say who sends it; the core authorises every command by the user's
    role (:mod:`.policy`). Without them the sender is anonymous (a viewer at most).
    """

    TYPE: ClassVar[str] = "command"
    id: str
    command: str
    params: dict = field(default_factory=dict)
    timeout: float | None = None
    user: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # a logged command never shows its token
        return (f"Command(id={self.id!r}, command={self.command!r}, params={self.params!r}, "
                f"user={self.user!r})")


@dataclass(frozen=True)
class Transition(Message):
    """Core -> component: carry out ``prepare``/``begin``/``end``/``reset`` for ``run``."""

    TYPE: ClassVar[str] = "transition"
    id: str
    transition: str
    run: dict | None = None


@dataclass(frozen=True)
class Invoke(Message):
    """Core -> component: run one of your registered actions with these parameters."""

    TYPE: ClassVar[str] = "invoke"
    id: str
    action: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Ack(Message):
    """Reply: request received (for a transition: carried out, with ``ok`` and ``data``)."""

    TYPE: ClassVar[str] = "ack"
    id: str
    ok: bool = True
    message: str = ""
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Progress(Message):
    """Reply: an intermediate step of a long request."""

    TYPE: ClassVar[str] = "progress"
    id: str
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Result(Message):
    """Reply: the final answer to a request, success or failure, with a message."""

    TYPE: ClassVar[str] = "result"
    id: str
    success: bool
    message: str = ""
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Alarm(Message):
    """Component -> core: something the run cannot carry on with (storage cannot write);
    the core tells the operators, records it on the run and fails the run."""

    TYPE: ClassVar[str] = "alarm"
    name: str
    message: str
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Notice(Message):
    """Component -> core: something the run must remember that does not stop it (a board's
    data has a hole where its producer was dead); the core tells the operators and records
    it on the run as an incident, marked resolved (it is a fact about the data, not a
    problem still open: the counters the component reports say what it cost)."""

    TYPE: ClassVar[str] = "notice"
    name: str
    message: str
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Event(Message):
    """Core -> operators: something happened that nobody asked about (a component lost)."""

    TYPE: ClassVar[str] = "event"
    kind: str
    message: str
    data: dict = field(default_factory=dict)
    time: float = 0.0


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (Register, Welcome, Reject, Heartbeat, Bye, Command, Transition, Invoke, Ack,
                Progress, Result, Event, Alarm, Notice)
}


@functools.cache
def wire_fields(cls: type[Message]) -> dict[str, tuple[type, ...]]:
    """Each field of a message type and the wire types it accepts, read from its annotations,
    so that a field's type is declared once, where the field is."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[type, ...]] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        parts = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        out[f.name] = tuple(t for part in parts
                            for t in ((part,) if part is type(None) else _WIRE_TYPES[part]))
    return out


def encode(message: Message) -> bytes:
    """The wire bytes of ``message``."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": message.TYPE}
    for f in dataclasses.fields(message):
        body[f.name] = getattr(message, f.name)
    try:
        return msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise MessageError(
            f"cannot encode a {message.TYPE} message: {exc} (only None, bool, int64, float, "
            "str, bytes, list and dict travel on the wire)"
        ) from None


def decode(data: bytes) -> Message:
    """Parse and validate wire bytes; :class:`MessageError` says what was wrong."""
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated exception types
        raise MessageError(f"not a msgpack message ({type(exc).__name__}: {exc})") from None
    if not isinstance(body, dict):
        raise MessageError(f"a message must be a map, got {type(body).__name__}")
    version = body.get("v")
    if version != PROTOCOL_VERSION:
        raise MessageError(
            f"protocol version {version!r} is not supported; this side speaks {PROTOCOL_VERSION}"
        )
    kind = body.get("type")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise MessageError(
            f"unknown message type {kind!r}; known: {', '.join(sorted(MESSAGE_TYPES))}"
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(body) - set(fields) - {"v", "type"}
    if unknown:
        raise MessageError(f"{kind} message has unknown field(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in body:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise MessageError(f"{kind} message lacks the field {name!r}")
            continue
        value = body[name]
        allowed = wire_fields(cls)[name]
        if isinstance(value, bool) and bool not in allowed:
            ok = False
        else:
            ok = isinstance(value, allowed)
        if not ok:
            names = " or ".join(t.__name__ for t in allowed)
            raise MessageError(
                f"{kind} field {name!r} must be {names}, got {type(value).__name__}"
            )
        values[name] = value
    if "id" in values and not 0 < len(values["id"]) <= MAX_ID_LENGTH:
        raise MessageError(f"{kind} id must be 1 to {MAX_ID_LENGTH} characters")
    return cls(**values)


@dataclass(frozen=True)
class RunInfo:
    """What a component is told about the run it prepares for."""

    run_number: int
    run_type: str = "physics"
    comment: str = ""
    data_dir: str = "."
    start_time: float = 0.0
    config_hash: str | None = None
    #: The run's admitted streams, ``{source: [io_group, epoch_base]}`` (see
    #: :mod:`larpixdaq.runcontrol.admitted`): the aggregator and storage refuse the rest.
    admitted: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunInfo:
        """Build from a wire dict, ignoring fields a newer core may add."""
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d.get("run_number"), int):
            raise MessageError("run info lacks an integer run_number")
        return cls(**{k: v for k, v in d.items() if k in names})
