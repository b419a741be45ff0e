"""Arguments shared by the commands: --core from the environment, NAME=VALUE parsing."""

from __future__ import annotations

import argparse

import pytest

from larpixdaq.commands.common import DEFAULT_CORE, add_core_argument, parse_assignments
from larpixdaq.errors import CommandError


def test_core_address_comes_from_the_environment_when_not_given(monkeypatch) -> None:
    monkeypatch.delenv("LARPIX_DAQ_CORE", raising=False)
    p = argparse.ArgumentParser()
    add_core_argument(p)
    assert p.parse_args([]).core == DEFAULT_CORE
    monkeypatch.setenv("LARPIX_DAQ_CORE", "tcp://10.0.0.5:6000")
    p = argparse.ArgumentParser()
    add_core_argument(p)
    assert p.parse_args([]).core == "tcp://10.0.0.5:6000"
    assert p.parse_args(["--core", "tcp://127.0.0.1:7"]).core == "tcp://127.0.0.1:7"


def test_assignments_are_json_when_they_parse_else_text() -> None:
    assert parse_assignments(["a=3", "b=[1, 2]", "c=hello", "d=", "e=x=y"]) == {
        "a": 3, "b": [1, 2], "c": "hello", "d": "", "e": "x=y"}


@pytest.mark.parametrize("word", ["novalue", "=5"])
def test_a_word_without_a_name_is_refused(word: str) -> None:
    with pytest.raises(CommandError, match="is not NAME=VALUE"):
        parse_assignments([word])
