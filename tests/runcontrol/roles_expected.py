"""The expected minimum role of every command and action, written out by hand.

Deliberately not derived from ``larpixdaq.runcontrol.policy``: the tests compare the policy
with this list, so a change to who may do what must be made in both places on purpose.
"""

EXPECTED_COMMANDS = {
    "ping": "viewer",
    "whoami": "viewer",
    "status": "viewer",
    "clients": "viewer",
    "actions": "viewer",
    "runs": "viewer",
    "run": "viewer",
    "audit": "viewer",
    "prepare_run": "operator",
    "begin_run": "operator",
    "end_run": "operator",
    "reset": "expert",
}

EXPECTED_ACTIONS = {
    "snapshot": "viewer",
    "get_boards": "viewer",
    "list_routines": "viewer",
    "retrieve_configuration": "viewer",
    "routine_results": "viewer",
    "run_routine": "operator",
    "stop_routine": "operator",
    "read_configuration": "operator",
    "validate_configuration": "operator",
    "clear": "operator",
    "write_configuration": "expert",
    "send_configuration": "expert",
    "load_configuration": "expert",
    "load_board": "expert",
    "bring_up": "expert",
    "load_routines": "expert",
}

ROLES = ("viewer", "operator", "expert")


def allowed(held: str | None, needed: str) -> bool:
    """Whether a holder of ``held`` may do what needs ``needed`` (None: no role)."""
    return held is not None and ROLES.index(held) >= ROLES.index(needed)
