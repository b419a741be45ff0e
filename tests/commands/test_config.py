"""`larpix-daq config` and `larpix-daq routine` against a real core and two producer
processes with simulated boards."""

from __future__ import annotations

import json
import re

import pytest
from daq_procs import Proc

from larpixdaq.cli import main
from larpixdaq.formats.chipconfig import ChipConfig
from larpixdaq.runcontrol.operator import Operator
from larpixdaq.runcontrol.testing import CoreProcess, wait_for


@pytest.fixture(scope="module")
def daq(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("config-cli")
    core = CoreProcess(tmp / "runs.sqlite").start()
    procs = []
    routines = tmp / "routines"
    routines.mkdir()
    try:
        for g in (1, 2):
            procs.append(Proc(["producer", "--core", core.endpoint, "--data-dir", str(tmp),
                               "--aggregator",
                               "tcp://127.0.0.1:9", "--io-group", str(g), "--sim-rate", "1000",
                               "--routines", str(routines)],
                              tmp / f"producer-{g}.log").start())
        with Operator(core.endpoint) as op:
            wait_for(lambda: len(op.producers()) == 2, timeout=15)
        yield core.endpoint, routines
    finally:
        for p in procs:
            p.stop()
        core.terminate()


def cli(daq, *argv):
    return main([*argv, "--core", daq[0]])


def test_show_lists_both_boards(daq, capsys):
    assert cli(daq, "config", "show") == 0
    out = capsys.readouterr().out
    assert "producer-1: sim io_group 1, 100 chips" in out
    assert "producer-2: sim io_group 2, 100 chips" in out


def test_several_boards_need_board_and_an_unknown_board_is_named(daq, capsys):
    assert cli(daq, "config", "write") == 1
    err = capsys.readouterr().err
    assert "2 producers: choose one with board=NAME (producer-1, producer-2)" in err
    assert cli(daq, "config", "read", "--board", "nope") == 1
    assert "no producer 'nope'; producers: producer-1, producer-2" in capsys.readouterr().err


def test_set_verify_write_verify(daq, capsys):
    b = ["--board", "producer-1"]
    assert cli(daq, "config", "set", "1-1-11", "threshold_global=77", "pixel_trim_dac[0]=3",
               *b) == 0
    assert "pixel_trim_dac" in capsys.readouterr().out
    assert cli(daq, "config", "verify", "1-1-11", *b) == 1
    cap = capsys.readouterr()
    assert "1-1-11 threshold_global: software 77, chip" in cap.out
    assert "configuration differs: 1-1-11: pixel_trim_dac, threshold_global" in cap.err
    assert cli(daq, "config", "write", "1-1-11", *b) == 0
    assert cli(daq, "config", "verify", "1-1-11", *b) == 0
    assert "1 chip(s) match the software copy" in capsys.readouterr().out
    assert cli(daq, "config", "read", "1-1-11", "--json", *b) == 0
    read = json.loads(capsys.readouterr().out)
    assert read["chips"]["1-1-11"]["threshold_global"] == 77
    assert read["chips"]["1-1-11"]["pixel_trim_dac"][0] == 3


def test_bad_set_is_a_one_line_error(daq, capsys):
    assert cli(daq, "config", "set", "1-1-11", "bogus=1", "--board", "producer-1") == 1
    assert "unknown register 'bogus'" in capsys.readouterr().err
    assert cli(daq, "config", "set", "1-1-11", "threshold_global", "--board", "producer-1") == 1
    assert "is not NAME=VALUE" in capsys.readouterr().err


def test_load_a_chip_file_then_show(daq, capsys, tmp_path):
    cfg = ChipConfig()
    cfg["threshold_global"] = 99
    cfg.save(tmp_path / "config-2-1-12.json")
    assert cli(daq, "config", "load", str(tmp_path), "--board", "producer-2") == 0
    assert "2-1-12" in capsys.readouterr().out
    assert cli(daq, "config", "show", "2-1-12", "--board", "producer-2") == 0
    out = capsys.readouterr().out
    assert "chip 2-1-12" in out and "threshold_global" in out and " 99" in out
    assert "chip_id                            12" in out  # the network's id is kept


def test_bring_up_shows_progress_per_io_channel(daq, capsys):
    assert cli(daq, "config", "bring-up", "--board", "producer-2") == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "io_channel=" in ln]
    # chips per io_channel of the v2 tile as wired (the field's layout file: 24, 26, 26, 24)
    assert len(lines) == 4 and all("ok=True" in ln for ln in lines)
    assert [ln.split("chips=")[1].split()[0] for ln in lines] == ["24", "26", "26", "24"]
    assert cli(daq, "config", "write", "--board", "producer-2") == 0
    assert cli(daq, "config", "verify", "--board", "producer-2") == 0


def _said_value(text: str, name: str) -> int:
    """The number printed right after ``name`` in ``text``."""
    return int(re.search(rf"\b{name} (\d+)", text).group(1))


def test_bring_up_says_what_the_chips_now_hold_and_it_is_true(daq, capsys):
    b = ["--board", "producer-2"]
    assert cli(daq, "config", "bring-up", *b) == 0
    out = capsys.readouterr().out
    assert "power-on configuration" in out and "routine run quickstart" in out
    # What it says the chips hold is what they answer when read back.
    assert cli(daq, "config", "read", "2-1-12", "--json", *b) == 0
    chip = json.loads(capsys.readouterr().out)["chips"]["2-1-12"]
    assert chip["threshold_global"] == _said_value(out, "threshold_global")
    assert chip["channel_mask"] == [_said_value(out, "channel_mask")] * 64
    assert chip["pixel_trim_dac"] == [_said_value(out, "pixel_trim_dac")] * 64
    assert "every channel masked" in out and set(chip["channel_mask"]) == {1}
    assert cli(daq, "config", "bring-up", "--no-reset", *b) == 0
    assert "were not reset" in capsys.readouterr().out
    assert cli(daq, "config", "write", *b) == 0


def test_set_says_the_chips_are_unchanged_and_how_to_write(daq, capsys):
    b = ["--board", "producer-2"]
    assert cli(daq, "config", "set", "2-1-13", "threshold_global=91", *b) == 0
    out = capsys.readouterr().out
    assert "software copy only: 2-1-13 threshold_global" in out
    assert "larpix-daq config write 2-1-13 --board producer-2" in out
    assert cli(daq, "config", "verify", "2-1-13", *b) == 1  # as it said: not on the chip
    capsys.readouterr()
    assert cli(daq, "config", "write", "2-1-13", *b) == 0
    assert cli(daq, "config", "verify", "2-1-13", *b) == 0


def test_show_help_says_what_show_shows(daq, capsys):
    with pytest.raises(SystemExit):
        main(["config", "show", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "(default: all)" not in helptext
    assert "without CHIP: each board's summary" in helptext
    assert "not read from the chips" in helptext
    # ... and that is what it does: no registers without a CHIP.
    assert cli(daq, "config", "show", "--board", "producer-1") == 0
    out = capsys.readouterr().out
    assert "producer-1: sim io_group 1, 100 chips" in out and "threshold_global" not in out


def test_routine_list_run_and_load(daq, capsys):
    tmp_path = daq[1]  # the producers' --routines directory
    b = ["--board", "producer-1"]
    assert cli(daq, "routine", "list", *b) == 0
    out = capsys.readouterr().out
    assert "hello_world(name=\"world\")  [built-in]" in out and "threshold_scan(" in out
    assert cli(daq, "routine", "list", "--json", *b) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["hello_world"]["origin"] == "built-in" and "threshold_scan" in listed
    assert cli(daq, "routine", "run", "hello_world", "name=CLI", *b) == 0
    assert "Hello, CLI!" in capsys.readouterr().out
    assert cli(daq, "routine", "run", "threshold_scan", "start=30", "stop=40", "step=10",
               "dwell=0.05", 'chip_keys=["1-1-11"]', *b) == 0
    out = capsys.readouterr().out
    assert out.index("threshold=30") < out.index("threshold=40") < out.index("(success,")
    (tmp_path / "twice.py").write_text("def routine(ctx, x=2):\n    return {'y': 2 * x}\n")
    (tmp_path / "broken.py").write_text("def routine(ctx:\n")
    assert cli(daq, "routine", "load", str(tmp_path), *b) == 1
    err = capsys.readouterr().err
    assert "broken.py: syntax error" in err and "(loaded: twice)" in err
    assert cli(daq, "routine", "run", "twice", "x=21", "--json", *b) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["status"] == "success" and outcome["result"] == {"y": 42}
    assert cli(daq, "routine", "run", "twice", "z=1", *b) == 1
    assert "bad parameters for routine twice" in capsys.readouterr().err


def test_no_core_is_a_clear_error(capsys):
    assert main(["config", "show", "--core", "tcp://127.0.0.1:9", "--timeout", "0.3"]) == 1
    assert "is `larpix-daq core` running there?" in capsys.readouterr().err
