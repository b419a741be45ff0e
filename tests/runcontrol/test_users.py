"""Users and tokens in SQLite: hashed, never in clear; the local token file."""

from __future__ import annotations

import os
import stat

import pytest

from larpixdaq.runcontrol.access import ensure_local_admin
from larpixdaq.runcontrol.credentials import (
    Credential,
    find_credential,
    read_token_file,
    token_file,
)
from larpixdaq.runcontrol.policy import Role
from larpixdaq.runcontrol.users import (
    UserError,
    UserStore,
    check_secret,
    hash_secret,
    well_formed_token,
)


def test_tokens_are_stored_salted_and_hashed_never_in_clear(tmp_path):
    db = tmp_path / "runs.sqlite"
    with UserStore(db) as store:
        t1 = store.add_user("alice", Role.OPERATOR)
        t2 = store.new_token("alice")
        rows = store.tokens_of("alice")
    assert well_formed_token(t1) and t1 != t2
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert t1.encode() not in raw and t2.encode() not in raw
    assert [check_secret(t1, r.hash) for r in rows] == [True, False]
    assert [check_secret(t2, r.hash) for r in rows] == [False, True]
    # salted: the same secret hashes differently each time
    assert hash_secret(t1) != hash_secret(t1)
    assert rows[0].hash.startswith("scrypt$")


def test_check_secret_refuses_wrong_and_damaged_hashes():
    stored = hash_secret("ldq_" + "a" * 43)
    assert check_secret("ldq_" + "a" * 43, stored)
    assert not check_secret("ldq_" + "a" * 42 + "b", stored)
    assert not check_secret("ldq_" + "a" * 43, stored.replace("scrypt", "md5"))
    assert not check_secret("ldq_" + "a" * 43, "garbage")
    assert not check_secret("ldq_" + "a" * 43, "scrypt$x$8$1$00$00")


def test_users_add_list_set_role_remove(tmp_path):
    with UserStore(tmp_path / "db.sqlite") as store:
        store.add_user("bob", Role.VIEWER)
        with pytest.raises(UserError, match="already exists"):
            store.add_user("bob", Role.EXPERT)
        with pytest.raises(UserError, match="bad user name"):
            store.add_user("no spaces", Role.VIEWER)
        store.set_role("bob", Role.EXPERT)
        assert [(u.name, u.role, u.tokens) for u in store.list_users()] == [
            ("bob", Role.EXPERT, 1)]
        store.remove_user("bob")
        assert store.list_users() == [] and store.tokens_of("bob") == []
        with pytest.raises(UserError, match="no user bob"):
            store.set_role("bob", Role.VIEWER)


def test_local_admin_is_made_once_kept_and_remade_when_the_file_is_stale(tmp_path):
    db = tmp_path / "runs.sqlite"
    cred, path, made = ensure_local_admin(db, "tcp://127.0.0.1:5999", user="carol")
    assert made and path == token_file("tcp://localhost:5999")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert find_credential("tcp://127.0.0.1:5999") == cred
    with UserStore(db) as store:
        assert store.get_user("carol").role is Role.EXPERT
    again, _, made = ensure_local_admin(db, "tcp://127.0.0.1:5999", user="carol")
    assert not made and again == cred
    # Another database (a new data directory): the file's token is not known there.
    other, _, made = ensure_local_admin(tmp_path / "other.sqlite", "tcp://127.0.0.1:5999",
                                        user="carol")
    assert made and other.token != cred.token and read_token_file(path) == other
    # A site that made carol a viewer keeps her a viewer; the local token is replaced.
    with UserStore(db) as store:
        store.set_role("carol", Role.VIEWER)
    third, _, made = ensure_local_admin(db, "tcp://127.0.0.1:5999", user="carol")
    with UserStore(db) as store:
        assert made and store.get_user("carol").role is Role.VIEWER
        assert len(store.tokens_of("carol")) == 1


def test_environment_credential_wins_and_repr_hides_the_token(monkeypatch):
    monkeypatch.setenv("LARPIX_DAQ_USER", "dave")
    monkeypatch.setenv("LARPIX_DAQ_TOKEN", "ldq_secret")
    cred = find_credential("tcp://10.0.0.1:5550")
    assert cred == Credential("dave", "ldq_secret") and "secret" not in repr(cred)
