"""The core's access check against a real user database: credentials and throttling."""

from __future__ import annotations

import pytest

from larpixdaq.runcontrol.access import Access, Throttle
from larpixdaq.runcontrol.policy import Role
from larpixdaq.runcontrol.users import UserStore


@pytest.fixture
def setup(tmp_path):
    db = tmp_path / "runs.sqlite"
    with UserStore(db) as store:
        tokens = {"v": store.add_user("v", Role.VIEWER), "o": store.add_user("o", Role.OPERATOR),
                  "e": store.add_user("e", Role.EXPERT),
                  "old": store.add_user("old", Role.EXPERT, expires_s=-1)}
    access = Access(db)
    yield access, tokens, db
    access.close()


def test_roles_from_the_database_decide(setup):
    access, tokens, _ = setup
    assert not access.check("c1", "v", tokens["v"], "begin_run", {}).allowed
    assert access.check("c1", "o", tokens["o"], "begin_run", {}).allowed
    verdict = access.check("c1", "o", tokens["o"], "reset", {})
    assert not verdict.allowed and verdict.code == "denied"
    assert verdict.reason == "user o (operator) may not reset: it needs expert"
    assert access.check("c1", "e", tokens["e"], "reset", {}).allowed
    assert access.counters["auth_denied"] == 2 and access.counters["auth_accepted"] == 2


def test_anonymous_is_a_viewer_unless_a_login_is_required(setup):
    access, _, db = setup
    assert access.check("c", None, None, "status", {}).allowed
    v = access.check("c", None, None, "prepare_run", {})
    assert v.reason == "an anonymous client (viewer) may not prepare_run: it needs operator"
    strict = Access(db, anonymous=None)
    try:
        v = strict.check("c", None, None, "status", {})
        assert not v.allowed and "needs a login" in v.reason
        assert strict.counters["auth_anonymous_refused"] == 1
    finally:
        strict.close()


@pytest.mark.parametrize(("user", "token", "code", "text", "counter"), [
    ("o", "ldq_" + "x" * 43, "bad-credential", "unknown user o or wrong token",
     "auth_bad_token"),
    ("nobody", "ldq_" + "x" * 43, "bad-credential", "unknown user nobody or wrong token",
     "auth_bad_token"),
    ("o", "not a token", "malformed", "malformed credential: the token", "auth_malformed"),
    ("o", None, "malformed", "malformed credential: the token", "auth_malformed"),
    ("bad name!", "ldq_" + "x" * 43, "malformed", "malformed credential: the user name",
     "auth_malformed"),
    (None, "ldq_" + "x" * 43, "malformed", "malformed credential: the user name",
     "auth_malformed"),
])
def test_bad_credentials_are_refused_in_one_line_and_counted(setup, user, token, code, text,
                                                             counter):
    access, _, _ = setup
    v = access.check("c", user, token, "status", {})
    assert not v.allowed and v.code == code and v.reason.startswith(text)
    assert "\n" not in v.reason and access.counters[counter] == 1


def test_an_expired_token_is_refused(setup):
    access, tokens, _ = setup
    v = access.check("c", "old", tokens["old"], "status", {})
    assert not v.allowed and v.code == "expired" and "expired at" in v.reason
    assert access.counters["auth_expired"] == 1


def test_removal_and_role_change_take_effect_at_once_despite_the_cache(setup):
    access, tokens, db = setup
    assert access.check("c", "o", tokens["o"], "begin_run", {}).allowed
    with UserStore(db) as store:
        store.set_role("o", Role.VIEWER)
    assert not access.check("c", "o", tokens["o"], "begin_run", {}).allowed
    with UserStore(db) as store:
        store.remove_user("o")
    v = access.check("c", "o", tokens["o"], "status", {})
    assert not v.allowed and v.code == "bad-credential"


def test_repeated_failures_from_one_client_are_slowed_down(setup):
    access, tokens, _ = setup
    wrong = "ldq_" + "y" * 43
    now = 1000.0
    codes = [access.check("attacker", "e", wrong, "status", {}, now=now + i * 0.01).code
             for i in range(8)]
    assert codes[:6] == ["bad-credential"] * 6 and codes[6:] == ["throttled"] * 2
    # The right token from that client is refused too while the delay lasts...
    v = access.check("attacker", "e", tokens["e"], "status", {}, now=now + 0.2)
    assert v.code == "throttled" and "try again in" in v.reason
    # ...another client naming another user is not affected...
    assert access.check("friend", "v", tokens["v"], "status", {}, now=now + 0.2).allowed
    # ...and after the delay the right token works again.
    assert access.check("attacker", "e", tokens["e"], "status", {}, now=now + 120).allowed
    assert access.counters["auth_throttled"] == 3


def test_throttle_doubles_the_delay_up_to_the_cap():
    t = Throttle(free=2, window=100, base=1, cap=8)
    for i in range(2):
        t.failure("k", 10.0 + i)
    assert t.blocked_for("k", 11.0) == 0
    delays = []
    for i in range(2, 7):
        t.failure("k", 10.0 + i)
        delays.append(t.blocked_for("k", 10.0 + i))
    assert delays == [1, 2, 4, 8, 8]
    t.success("k")
    assert t.blocked_for("k", 17.0) == 0


def test_a_known_token_is_not_hashed_again(setup, monkeypatch):
    from larpixdaq.runcontrol import access as access_module

    access, tokens, _ = setup
    calls = []
    real = access_module.check_secret
    monkeypatch.setattr(access_module, "check_secret",
                        lambda *a: calls.append(1) or real(*a))
    for _ in range(20):
        assert access.check("c", "e", tokens["e"], "status", {}).allowed
    assert len(calls) == 1


def test_remember_verifies_once_so_the_first_command_needs_no_kdf(setup, monkeypatch):
    from larpixdaq.runcontrol import access as access_module

    access, tokens, _ = setup
    assert access.remember("o", tokens["o"]) and not access.remember("o", "ldq_" + "n" * 43)
    calls = []
    real = access_module.check_secret
    monkeypatch.setattr(access_module, "check_secret", lambda *a: calls.append(1) or real(*a))
    assert access.check("c", "o", tokens["o"], "begin_run", {}).allowed
    assert calls == []
