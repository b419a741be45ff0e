"""The `larpix-daq` dispatcher: help, unknown commands, one-line errors, a closed pipe."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from larpixdaq import cli


def test_no_command_prints_help_and_fails(capsys) -> None:
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_unknown_command_is_refused(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_every_command_module_declares_distinct_commands() -> None:
    names = [c.name for c in cli.discover_commands()]
    assert len(names) == len(set(names))
    assert {"convert", "inspect", "up", "core", "status", "run", "runs"} <= set(names)


def test_command_error_is_one_line_and_exit_code(capsys, tmp_path) -> None:
    assert cli.main(["inspect", str(tmp_path / "missing.h5")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("larpix-daq inspect: error:")


def test_a_reader_that_goes_away_is_not_a_crash() -> None:
    """`larpix-daq status | head`: the pipe closes under a command that is still printing."""
    code = textwrap.dedent("""
        from larpixdaq import cli
        from larpixdaq.commands import Command

        def chatty(args):
            for i in range(1_000_000):
                print("line", i)
            return 0

        cli.discover_commands = lambda: [Command("chatty", "prints", lambda p: None, chatty)]
        raise SystemExit(cli.main(["chatty"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().startswith(b"line 0")
        proc.stdout.close()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 141
    assert b"Traceback" not in err


README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_lists_exactly_the_commands_the_cli_has() -> None:
    """Regenerate with: python -c 'from larpixdaq.cli import commands_markdown as c; print(c())'
    and paste between the `commands:` markers of README.md."""
    text = README.read_text()
    start = text.index("<!-- commands: generated")
    section = text[text.index("\n", start) + 1:text.index("<!-- commands: end -->")]
    assert section.strip() == cli.commands_markdown().strip()
    # ... and that table names every command of the dispatcher, and only those.
    listed = set(re.findall(r"^\| `larpix-daq ([a-z-]+)", section, flags=re.M))
    assert listed == {c.name for c in cli.discover_commands()}
    assert {"demo", "keys", "routine", "runs"} <= listed


def test_the_readme_names_every_built_in_routine() -> None:
    from larpixdaq.routines import RoutineRegistry

    text = README.read_text()
    for name in RoutineRegistry().names():
        assert f"`{name}`" in text, name
    assert "larpix-daq routine run quickstart" in text
