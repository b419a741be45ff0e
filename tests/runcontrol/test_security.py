"""CURVE on the control port: authorised clients get in, everyone else gets nothing."""

from __future__ import annotations

import pytest

from larpixdaq import Operator
from larpixdaq.cli import main
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.operator import Result, Timeout
from larpixdaq.runcontrol.security import ClientKeys, KeysError, ServerKeys, create_keys
from larpixdaq.runcontrol.testing import CoreProcess


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    create_keys(d)
    create_keys(d, "intruder")
    (d / "authorized" / "intruder.key").unlink()  # has a pair, but is not authorised
    return d


@pytest.fixture
def secure_core(tmp_path, keys):
    with CoreProcess(tmp_path / "runs.sqlite", ["--keys", str(keys)]) as core:
        yield core


def test_key_layout(keys):
    names = sorted(p.name for p in keys.iterdir())
    assert names == ["authorized", "client.key", "client.key_secret", "core.key",
                     "core.key_secret", "intruder.key", "intruder.key_secret"]
    assert sorted(p.name for p in (keys / "authorized").iterdir()) == ["client.key"]
    assert oct((keys / "client.key_secret").stat().st_mode & 0o777) == "0o600"
    assert ClientKeys.load(keys).server_public == ServerKeys(keys).public


def test_missing_keys_are_clear_errors(tmp_path):
    with pytest.raises(KeysError, match="no key .*core.key.*larpix-daq keys"):
        ClientKeys.load(tmp_path)
    with pytest.raises(KeysError, match="core's own key"):
        create_keys(tmp_path / "k", "core")
    with pytest.raises(KeysError, match="no key"):
        Operator("tcp://127.0.0.1:1", keys=tmp_path / "nothing")


def test_authorised_clients_only(secure_core, keys):
    with Operator(secure_core.endpoint, keys=keys, timeout=5) as op:
        assert isinstance(op.call("status"), Result)
    comp = Component("board", secure_core.endpoint, role="producer", keys=keys,
                     heartbeat_interval=0.05).start()
    try:
        assert comp.wait_registered(5)
    finally:
        comp.stop()
    with Operator(secure_core.endpoint, timeout=0.5) as op:
        assert isinstance(op.call("status"), Timeout)  # no keys at all
    intruder = ClientKeys.load(keys, "intruder")
    with Operator(secure_core.endpoint, keys=intruder, timeout=0.5) as op:
        assert isinstance(op.call("status"), Timeout)
    fake = Component("fake-board", secure_core.endpoint, keys=intruder,
                     heartbeat_interval=0.05).start()
    try:
        assert not fake.wait_registered(0.5)
    finally:
        fake.stop()


def test_keys_command_and_secured_cli(secure_core, keys, tmp_path, capsys, monkeypatch):
    assert main(["keys", str(keys), "--name", "shift-crew"]) == 0
    assert "shift-crew" in capsys.readouterr().out
    assert (keys / "authorized" / "shift-crew.key").exists()
    monkeypatch.setenv("LARPIX_DAQ_KEYS", str(keys))
    assert main(["status", "--core", secure_core.endpoint]) == 0
    assert "state: STOP" in capsys.readouterr().out
    assert main(["status", "--core", secure_core.endpoint, "--keys",
                 str(tmp_path / "none")]) == 1
    assert "no key" in capsys.readouterr().err
