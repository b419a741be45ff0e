"""docs/operating.md tells the truth: its commands parse, its routine calls are accepted, its
example routine works, and it names every alarm the monitor raises."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from larpixdaq.cli import build_parser
from larpixdaq.commands.common import parse_assignments
from larpixdaq.routines import RoutineRegistry
from larpixdaq.routines.testing import run_routine_offline

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "operating.md").read_text()
EXAMPLES = ROOT / "docs" / "examples" / "routines"


def _command_lines() -> list[str]:
    """Every `larpix-daq ...` command of the guide: code-block lines and table cells."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", GUIDE, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("larpix-daq "):
                lines.append(line)
    lines += re.findall(r"\| `(larpix-daq [^`]+)` \|", GUIDE)
    return lines


COMMANDS = _command_lines()


def test_the_guide_has_the_commands_of_a_whole_session():
    used = {shlex.split(c)[1] for c in COMMANDS}
    assert {"pacman-emulator", "up", "config", "routine", "run", "runs", "inspect", "core",
            "logs", "aggregator", "storage", "producer", "monitor", "web"} <= used


@pytest.mark.parametrize("line", COMMANDS)
def test_each_command_exists_with_these_flags(line, capsys):
    try:
        args = build_parser().parse_args(shlex.split(line)[1:])
    except SystemExit:
        pytest.fail(f"{line!r} does not parse: {capsys.readouterr().err}")
    assert getattr(args, "_run", None), line
    if args.command == "routine" and args.what == "run":
        registry = RoutineRegistry()
        registry.load_directory(EXAMPLES)
        registry.get(args.name).check(parse_assignments(args.params))  # raises if refused


def test_the_power_routine_sets_and_reads_back_the_supplies():
    out = run_routine_offline(str(EXAMPLES / "pacman_power.py"), vddd_mv=1700.0,
                              vdda_mv=1800.0, uart_clock_ratio=8)
    assert out.ok, out.message + out.traceback
    assert abs(out.result["vddd_mv"] - 1700.0) <= 4 and abs(out.result["vdda_mv"] - 1800) <= 4
    assert out.result["iddd_ma"] > 0 and out.result["tile_enable"] == 1
    refused = run_routine_offline(str(EXAMPLES / "pacman_power.py"), vddd_mv=5000)
    assert not refused.ok and "vddd_mv must be <=" in refused.message


def test_every_alarm_kind_of_the_monitor_is_explained():
    source = (ROOT / "src" / "larpixdaq" / "pipeline" / "monitorstate.py").read_text()
    kinds = set(re.findall(r'Alarm\("([a-z_]+)"', source))
    assert len(kinds) >= 6
    explained = set(re.findall(r"^\| `([a-z_]+)` \| (?:warning|error) \|", GUIDE, flags=re.M))
    assert explained == kinds


def core_source() -> str:
    """The run-control core's code: the loop and the pure modules that decide for it."""
    folder = ROOT / "src" / "larpixdaq" / "runcontrol"
    return "\n".join((folder / f"{name}.py").read_text()
                     for name in ("core", "planner", "roster", "commands"))


def test_every_event_kind_of_the_core_is_named():
    source = core_source()
    kinds = set(re.findall(r'(?:_event|Notify)\("([a-z-]+)"', source)) | {"lost", "left"}
    section = GUIDE[GUIDE.index("## 10. Incidents"):]
    for kind in kinds:
        assert f"`{kind}`" in section, kind


@pytest.mark.parametrize("fragment", [
    "lost: no heartbeat for", "restarted: pid", "left", "did not register again within",
    "did not register again after the core restarted", "core restarted during", "failed: ",
    "refused", "did not acknowledge", "while joining"])
def test_each_incident_the_core_records_is_explained(fragment):
    source = core_source()
    source = re.sub(r'"\s*\n\s*f?"', "", source)  # adjacent literals of one message joined
    section = GUIDE[GUIDE.index("## 10. Incidents"):]
    assert fragment in source, f"the core no longer says {fragment!r}: update the guide"
    assert fragment in section


@pytest.mark.parametrize("fragment", [
    "data gap: ", "died and was restarted; io_group ", "has no data from message time ",
    "(last SYNC before, first after)", "spill file(s) of a dead ",
    "sent again from its frame log", "that a dead ", "logged and storage may not have: kept in "])
def test_each_incident_a_producer_reports_is_explained(fragment):
    source = (ROOT / "src" / "larpixdaq" / "pipeline" / "gapmark.py").read_text()
    source = re.sub(r'"\s*\n\s*f?"', "", source)  # adjacent literals of one message joined
    section = GUIDE[GUIDE.index("## 10. Incidents"):]
    assert fragment in source, f"the producer no longer says {fragment!r}: update the guide"
    assert fragment in section
