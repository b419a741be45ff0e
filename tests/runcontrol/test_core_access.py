"""Access control in a real core process: every role against every command and action,
through the Operator and through the command line; the audit trail; who ran the run."""

from __future__ import annotations

import pytest
from roles_expected import EXPECTED_ACTIONS, EXPECTED_COMMANDS, ROLES, allowed

from larpixdaq.cli import main
from larpixdaq.runcontrol.credentials import Credential
from larpixdaq.runcontrol.operator import Operator
from larpixdaq.runcontrol.policy import Role
from larpixdaq.runcontrol.testing import CoreProcess
from larpixdaq.runcontrol.users import UserStore

#: Parameters that get every command past the access check without changing anything (the
#: core is in STOP with no component): what comes back then is the command's own answer.
HARMLESS = {"prepare_run": {"not_a_parameter": "x"}, "run": {"run_number": 999_999},
            "runs": {"limit": 1}, "audit": {"limit": 1}}


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    with UserStore(tmp / "runs.sqlite") as store:
        users = {role: Credential(f"{role}-user", store.add_user(f"{role}-user",
                                                                 Role.parse(role)))
                 for role in ROLES}
        users["expired"] = Credential("late", store.add_user("late", Role.EXPERT,
                                                             expires_s=-60))
        users["target"] = Credential("target", store.add_user("target", Role.OPERATOR))
    with CoreProcess(tmp / "runs.sqlite") as c:
        yield c, users, tmp / "runs.sqlite"


def op_as(core, who):
    endpoint, users, _ = core[0].endpoint, core[1], core[2]
    return Operator(endpoint, timeout=15, credential=users[who] if who else False)


def is_access_refusal(final) -> bool:
    return final.data.get("refused") is not None


@pytest.mark.parametrize("role", [*ROLES, None])
@pytest.mark.parametrize("command", sorted(EXPECTED_COMMANDS))
def test_operator_each_role_each_command(core, command, role):
    with op_as(core, role) as op:
        final = op.call(command, HARMLESS.get(command, {}))
    held = role or "viewer"  # anonymous clients are viewers by default
    if allowed(held, EXPECTED_COMMANDS[command]):
        assert not is_access_refusal(final), final.message
    else:
        who = f"user {role}-user ({role})" if role else "an anonymous client (viewer)"
        assert final.message == (f"{who} may not {command}: it needs "
                                 f"{EXPECTED_COMMANDS[command]}")
        assert final.data["refused"] == "denied"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(EXPECTED_ACTIONS))
def test_operator_each_role_each_action(core, action, role):
    with op_as(core, role) as op:
        final = op.invoke("nobody", action).wait()
    if allowed(role, EXPECTED_ACTIONS[action]):
        assert not final.success and "no component named 'nobody'" in final.message
    else:
        assert final.message == (f"user {role}-user ({role}) may not invoke {action}: it "
                                 f"needs {EXPECTED_ACTIONS[action]}")


#: CLI forms of the commands that have one.
CLI_FORMS = {"status": ["status"], "runs": ["runs", "--limit", "1"], "audit": ["audit"],
             "prepare_run": ["prepare", "--comment", "x"], "begin_run": ["begin"],
             "end_run": ["end"], "reset": ["reset"]}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("command", sorted(CLI_FORMS))
def test_cli_each_role_each_command(core, command, role, monkeypatch, capsys):
    cred = core[1][role]
    monkeypatch.setenv("LARPIX_DAQ_USER", cred.user)
    monkeypatch.setenv("LARPIX_DAQ_TOKEN", cred.token)
    code = main([*CLI_FORMS[command], "--core", core[0].endpoint])
    err = capsys.readouterr().err
    refusal = (f"user {role}-user ({role}) may not {command}: it needs "
               f"{EXPECTED_COMMANDS[command]}")
    if allowed(role, EXPECTED_COMMANDS[command]):
        assert "may not" not in err
        if command == "prepare_run":  # it went through: end the run it made
            assert code == 0
            monkeypatch.delenv("LARPIX_DAQ_USER")
            monkeypatch.delenv("LARPIX_DAQ_TOKEN")
            assert main(["end", "--core", core[0].endpoint]) == 0
    else:
        assert code == 1 and err.strip().endswith(refusal)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(EXPECTED_ACTIONS))
def test_cli_each_role_each_action(core, action, role, monkeypatch, capsys):
    cred = core[1][role]
    monkeypatch.setenv("LARPIX_DAQ_USER", cred.user)
    monkeypatch.setenv("LARPIX_DAQ_TOKEN", cred.token)
    assert main(["invoke", "nobody", action, "--core", core[0].endpoint]) == 1
    err = capsys.readouterr().err
    if allowed(role, EXPECTED_ACTIONS[action]):
        assert "no component named 'nobody'" in err
    else:
        assert err.strip().endswith(f"user {role}-user ({role}) may not invoke {action}: it "
                                    f"needs {EXPECTED_ACTIONS[action]}")


def test_bad_and_expired_credentials_are_refused_in_one_line(core):
    _, users, _ = core
    cases = {
        "expired": (users["expired"], "the token of user late expired at"),
        "wrong": (Credential("expert-user", "ldq_" + "z" * 43),
                  "unknown user expert-user or wrong token"),
        "malformed": (Credential("expert-user", "password1"),
                      "malformed credential: the token is not one this DAQ gives out"),
    }
    for name, (cred, text) in cases.items():
        with Operator(core[0].endpoint, timeout=15, credential=cred) as op:
            final = op.call("status")
        assert not final.success and final.message.startswith(text), name
        assert "\n" not in final.message
    with op_as(core, "viewer") as op:
        counters = op.call("status").data["counters"]
    assert counters["auth_expired"] >= 1 and counters["auth_bad_token"] >= 1
    assert counters["auth_malformed"] >= 1


def test_repeated_failures_from_one_client_are_slowed_down(core):
    wrong = Credential("target", "ldq_" + "q" * 43)
    with Operator(core[0].endpoint, timeout=15, credential=wrong) as op:
        messages = [op.call("status").message for _ in range(7)]
        assert all(m == "unknown user target or wrong token" for m in messages[:5])
        assert messages[-1].startswith("too many failed credentials; try again in")
        # Anything from this connection waits too, while the delay lasts...
        right = op.call("status", credential=core[1]["viewer"])
        assert right.message.startswith("too many failed credentials")
    # ...and so does the guessed user from elsewhere; other users are not held up.
    with op_as(core, "target") as other:
        assert other.call("status").message.startswith("too many failed credentials")
    with op_as(core, "viewer") as other:
        final = other.call("status")
        assert final.success and final.data["counters"]["auth_throttled"] >= 2


def test_the_audit_trail_and_the_run_record_name_who_did_what(core):
    with op_as(core, "operator") as op:
        assert op.call("prepare_run", {"comment": "audited"}).success
        assert op.call("begin_run").success
    with op_as(core, "expert") as op:
        refused = op.call("begin_run")  # already running: accepted by role, failed by state
        final = op.call("end_run")
        assert final.success
        run = final.data["run"]
        assert (run["prepared_by"], run["begun_by"], run["ended_by"]) == (
            "operator-user", "operator-user", "expert-user")
        assert not refused.success
    with op_as(core, "viewer") as op:
        assert not op.call("reset").success
        entries = op.call("audit", {"limit": 6}).data["entries"]
    latest = [(e["user"], e["command"], e["result"]) for e in reversed(entries)][-5:]
    assert latest == [("operator-user", "prepare_run", "success"),
                      ("operator-user", "begin_run", "success"),
                      ("expert-user", "begin_run", "failed"),
                      ("expert-user", "end_run", "success"),
                      ("viewer-user", "reset", "refused")]
    prepare = next(e for e in entries if e["command"] == "prepare_run")
    assert prepare["params"]["comment"] == "audited" and prepare["role"] == "operator"
    assert prepare["client"].startswith("op@")
    # Accepted reads are not audited (the page polls status every second); refused ones are.
    with op_as(core, "viewer") as op:
        everything = op.call("audit", {"limit": 1000}).data["entries"]
    reads = {(e["command"], e["accepted"]) for e in everything
             if e["command"] in ("status", "audit")}
    assert reads == {("status", False)}


def test_a_core_that_requires_a_login_answers_nothing_to_anonymous_clients(tmp_path):
    with UserStore(tmp_path / "runs.sqlite") as store:
        token = store.add_user("reader", Role.VIEWER)
    with CoreProcess(tmp_path / "runs.sqlite", extra=["--require-login"]) as core:
        with Operator(core.endpoint, timeout=15, credential=False) as op:
            final = op.call("status")
        assert not final.success
        assert final.message == ("status needs a login: this site requires one (send a user "
                                 "and token)")
        with Operator(core.endpoint, timeout=15, credential=Credential("reader", token)) as op:
            status = op.call("status")
            assert status.success and status.data["login_required"] is True
            assert status.data["counters"]["auth_anonymous_refused"] == 1
        with Operator(core.endpoint, timeout=15) as op:  # the local token file: expert
            assert op.call("prepare_run").success and op.call("end_run").success
