"""The access policy (pure): every command and action against every role."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from roles_expected import EXPECTED_ACTIONS, EXPECTED_COMMANDS, ROLES, allowed

from larpixdaq.runcontrol import policy
from larpixdaq.runcontrol.policy import Role, decide


def test_the_policy_covers_exactly_the_commands_and_actions_listed_here():
    assert set(policy.COMMAND_ROLES) == set(EXPECTED_COMMANDS)
    assert set(policy.ACTION_ROLES) == set(EXPECTED_ACTIONS)


@pytest.mark.parametrize("role", [*ROLES, None])
@pytest.mark.parametrize("command", sorted(EXPECTED_COMMANDS))
def test_each_role_against_each_command(command, role):
    held = Role.parse(role) if role else None
    d = decide("alice" if role else None, held, command, {})
    assert d.allowed is allowed(role, EXPECTED_COMMANDS[command])
    if not d.allowed:
        who = f"user alice ({role})" if role else "an anonymous client (no role)"
        assert d.reason == f"{who} may not {command}: it needs {EXPECTED_COMMANDS[command]}"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(EXPECTED_ACTIONS))
def test_each_role_against_each_action(action, role):
    d = decide("bob", Role.parse(role), "invoke", {"component": "p", "action": action})
    assert d.allowed is allowed(role, EXPECTED_ACTIONS[action])
    assert d.what == f"invoke {action}"
    if not d.allowed:
        assert d.reason == (f"user bob ({role}) may not invoke {action}: it needs "
                            f"{EXPECTED_ACTIONS[action]}")


@given(st.text(min_size=1, max_size=30))
def test_unknown_commands_and_actions_need_expert(name):
    if name not in EXPECTED_COMMANDS:
        assert not decide("o", Role.OPERATOR, name, {}).allowed
        assert decide("e", Role.EXPERT, name, {}).allowed
    if name not in EXPECTED_ACTIONS:
        assert not decide("o", Role.OPERATOR, "invoke", {"action": name}).allowed
        assert decide("e", Role.EXPERT, "invoke", {"action": name}).allowed


@pytest.mark.parametrize("params", [{}, {"action": 3}, {"action": None}])
def test_an_invoke_without_an_action_name_needs_expert(params):
    assert not decide("o", Role.OPERATOR, "invoke", params).allowed
    assert decide("e", Role.EXPERT, "invoke", params).allowed


def test_roles_parse_and_order():
    assert Role.parse(" Operator ") is Role.OPERATOR
    assert Role.VIEWER < Role.OPERATOR < Role.EXPERT
    with pytest.raises(ValueError, match="roles: viewer, operator, expert"):
        Role.parse("admin")
