"""Who may do what: the minimum role of every run-control command and component action.

Pure: tables and one decision function, no I/O. The core asks :func:`decide` for every
command it receives (from the ``Operator``, the command line and the web page alike), so
there is exactly one place where access is granted or refused.

Three roles, each including the ones below it:

* ``viewer``: reads (status, monitor, runs, logs, metrics): what anyone who reaches the
  page gets without logging in, unless the site requires a login;
* ``operator``: run control (prepare, begin, end), running the installed routines and
  stopping one, reading the chips back;
* ``expert``: writing chip configurations, bring-up, loading routines, reset.

A command or action missing from the tables needs ``expert``: an action a new component
adds is refused to operators until someone decides it is safe for them, never the other way
round.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Role(enum.IntEnum):
    """Ordered: a higher role may do everything a lower one may."""

    VIEWER = 1
    OPERATOR = 2
    EXPERT = 3

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """``"viewer"`` -> ``Role.VIEWER``; ValueError naming the roles otherwise."""
        try:
            return cls[text.strip().upper()]
        except (KeyError, AttributeError):
            raise ValueError(f"unknown role {text!r}; roles: {', '.join(ROLE_NAMES)}") from None


ROLE_NAMES = tuple(str(r) for r in Role)

#: Core commands -> minimum role. ``invoke`` is decided by the action (ACTION_ROLES).
COMMAND_ROLES: dict[str, Role] = {
    "ping": Role.VIEWER,
    "whoami": Role.VIEWER,
    "status": Role.VIEWER,
    "clients": Role.VIEWER,
    "actions": Role.VIEWER,
    "runs": Role.VIEWER,
    "run": Role.VIEWER,
    "audit": Role.VIEWER,
    "prepare_run": Role.OPERATOR,
    "begin_run": Role.OPERATOR,
    "end_run": Role.OPERATOR,
    "reset": Role.EXPERT,
}

#: Component actions (by name, whatever the component) -> minimum role.
ACTION_ROLES: dict[str, Role] = {
    # reads
    "snapshot": Role.VIEWER,
    "get_boards": Role.VIEWER,
    "list_routines": Role.VIEWER,
    "retrieve_configuration": Role.VIEWER,
    "routine_results": Role.VIEWER,
    # operating: routines from the installed set, reading the chips back, the monitor
    "run_routine": Role.OPERATOR,
    "stop_routine": Role.OPERATOR,
    "read_configuration": Role.OPERATOR,
    "validate_configuration": Role.OPERATOR,
    "clear": Role.OPERATOR,
    # changing the detector or the code it runs
    "write_configuration": Role.EXPERT,
    "send_configuration": Role.EXPERT,
    "load_configuration": Role.EXPERT,
    "load_board": Role.EXPERT,
    "bring_up": Role.EXPERT,
    "load_routines": Role.EXPERT,
}

#: What an unknown command or action needs.
UNKNOWN_ROLE = Role.EXPERT


@dataclass(frozen=True)
class Decision:
    """The answer for one request: allowed or not, what it needed, and why, for people."""

    allowed: bool
    what: str  # "begin_run" or "invoke write_configuration"
    required: Role
    role: Role | None
    reason: str = ""


def request_name(command: str, params: dict[str, Any]) -> str:
    """How a request is named in refusals and the audit: the action for an ``invoke``."""
    if command == "invoke":
        action = params.get("action")
        return f"invoke {action}" if isinstance(action, str) else "invoke"
    return command


def required_role(command: str, params: dict[str, Any]) -> Role:
    """The minimum role for ``command`` with ``params`` (an ``invoke`` by its action)."""
    if command == "invoke":
        action = params.get("action")
        if not isinstance(action, str):
            return UNKNOWN_ROLE
        return ACTION_ROLES.get(action, UNKNOWN_ROLE)
    return COMMAND_ROLES.get(command, UNKNOWN_ROLE)


def decide(user: str | None, role: Role | None, command: str,
           params: dict[str, Any]) -> Decision:
    """May ``user`` (holding ``role``; None: no role at all) send ``command``?

    The refusal reads e.g. ``user alice (viewer) may not begin_run: it needs operator``.
    """
    what = request_name(command, params)
    needed = required_role(command, params)
    if role is not None and role >= needed:
        return Decision(True, what, needed, role)
    who = f"user {user}" if user else "an anonymous client"
    held = f"({role})" if role is not None else "(no role)"
    return Decision(False, what, needed, role,
                    f"{who} {held} may not {what}: it needs {needed}")
