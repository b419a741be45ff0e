"""Loading routine files and running routines to a typed outcome, whatever they do."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from larpixdaq.boards.session import BoardSession
from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.routines import (
    ABORTED,
    FAILED,
    SUCCESS,
    RoutineError,
    RoutineRegistry,
    execute,
    run_to_end,
)
from larpixdaq.routines.context import RoutineContext
from larpixdaq.routines.testing import run_routine_offline


def write(path, text):
    path.write_text(text)
    return path


def test_builtins_are_listed_with_their_parameters():
    reg = RoutineRegistry()
    assert reg.names() == ["hello_world", "pedestal", "quickstart", "testpulse",
                           "threshold_scan", "trim"]
    hello = next(d for d in reg.describe() if d["name"] == "hello_world")
    assert hello["params"] == [{"name": "name", "required": False, "default": "world",
                                "type": "str"}]
    assert hello["origin"] == "built-in" and hello["doc"]


def test_load_directory_reports_each_bad_file_and_loads_the_good_ones(tmp_path):
    write(tmp_path / "good.py", "NAME = 'nice'\ndef routine(ctx, x=1):\n    return x * 2\n")
    write(tmp_path / "syntax.py", "def routine(ctx:\n    pass\n")
    write(tmp_path / "nofunc.py", "def other(ctx):\n    pass\n")
    write(tmp_path / "importfail.py", "import no_such_module_here\n")
    write(tmp_path / "_private.py", "raise SystemExit\n")
    write(tmp_path / "noctx.py", "def routine():\n    pass\n")
    reg = RoutineRegistry()
    report = reg.load_directory(tmp_path)
    assert report.loaded == ["nice"]
    assert set(report.errors) == {"syntax.py", "nofunc.py", "importfail.py", "noctx.py"}
    assert "syntax error at line 1" in report.errors["syntax.py"]
    assert "defines no function `routine(ctx, ...)`" in report.errors["nofunc.py"]
    assert "ModuleNotFoundError" in report.errors["importfail.py"]
    assert "context as its first parameter" in report.errors["noctx.py"]
    assert "nice" in reg.names()


def test_missing_directory_and_unknown_routine_are_clear_errors(tmp_path):
    reg = RoutineRegistry()
    with pytest.raises(RoutineError, match="no routine directory"):
        reg.load_directory(tmp_path / "nope")
    with pytest.raises(RoutineError, match="no routine 'nope'; known: hello_world"):
        reg.get("nope")


def test_offline_run_of_bad_files_gives_failed_results(tmp_path):
    out = run_routine_offline(write(tmp_path / "syntax.py", "def routine(ctx:\n"))
    assert out.status == FAILED and "syntax error" in out.message
    out = run_routine_offline(write(tmp_path / "nofunc.py", "x = 1\n"))
    assert out.status == FAILED and "defines no function" in out.message
    out = run_routine_offline("no_such_routine")
    assert out.status == FAILED and "no routine 'no_such_routine'" in out.message


def test_bad_parameters_are_a_failed_result_naming_the_accepted_ones():
    out = run_routine_offline("hello_world", colour="red")
    assert out.status == FAILED
    assert "bad parameters for routine hello_world" in out.message
    assert "accepted: name" in out.message


def test_an_exception_is_a_failed_result_with_a_traceback_summary(tmp_path):
    path = write(tmp_path / "boom.py",
                 "def helper():\n    raise KeyError('gone')\n"
                 "def routine(ctx):\n    yield {'step': 1}\n    helper()\n")
    out = run_routine_offline(path)
    assert out.status == FAILED
    assert out.message == "routine boom failed: KeyError: 'gone'"
    assert "boom.py:5 in routine" in out.traceback and "boom.py:2 in helper" in out.traceback
    assert out.progress == [{"step": 1}]


def test_results_and_progress_become_plain_json():
    def numbers(ctx):
        yield 3  # a bare value becomes {"value": 3}
        yield {"a": np.int64(2)}
        return {"x": np.arange(3), "y": np.float32(0.5)}

    out = run_routine_offline(numbers)
    assert out.status == SUCCESS
    assert out.progress == [{"value": 3}, {"a": 2}]
    assert out.result == {"x": [0, 1, 2], "y": 0.5}
    assert out.to_dict()["status"] == "success"


def test_a_result_that_is_not_json_fails():
    out = run_routine_offline(lambda ctx: {"s": object()})
    assert out.status == FAILED and "not JSON-serialisable" in out.message
    out = run_routine_offline(lambda ctx: float("nan"))
    assert out.status == FAILED and "not JSON-serialisable" in out.message


def test_stop_flag_aborts_at_the_next_step():
    stop = threading.Event()
    steps = []

    def forever(ctx):
        i = 0
        while True:
            i += 1
            yield {"i": i}

    def watch(step):
        steps.append(step)
        if step["i"] == 3:
            stop.set()

    reg = RoutineRegistry(builtins=False)
    spec = reg.register(forever)
    ctx = RoutineContext(BoardSession.for_sim(SimulatedBoard(1).bring_up_all()), stop=stop)
    out = run_to_end(execute(spec, ctx, {}), watch)
    assert out.status == ABORTED and "stop requested" in out.message
    assert [s["i"] for s in steps] == [1, 2, 3]


def test_check_stop_inside_a_routine_aborts_it():
    def polite(ctx):
        ctx.stop.set()
        ctx.check_stop()
        return "never"

    out = run_routine_offline(polite)
    assert out.status == ABORTED


def test_read_data_is_refused_when_the_run_data_cannot_answer():
    def refuse(seconds, stop):
        raise RuntimeError("the simulated board sends at a fixed rate in run 7")

    ctx = RoutineContext(BoardSession.for_sim(SimulatedBoard(1).bring_up_all()),
                         run_data=refuse)
    with pytest.raises(RuntimeError, match="cannot read the board's data now: .*run 7"):
        ctx.read_data(0.1)


def test_read_data_in_a_run_is_the_run_data_and_outside_it_the_board():
    from larpixdaq.formats.packets import encode_packets
    from larpixdaq.formats.pacman import data_words, encode_data_message

    tapped = [encode_data_message(5, data_words(1, encode_packets(
        packet_type=0, chip_id=[11, 12, 13], channel_id=4, downstream_marker=1)))]
    in_run = {"flowing": True}

    def run_data(seconds, stop):
        return tapped if in_run["flowing"] else None

    ctx = RoutineContext(BoardSession.for_sim(SimulatedBoard(1, seed=2).bring_up_all()),
                         run_data=run_data)
    rows = ctx.read_data(0.5)
    assert list(rows["chip_id"][rows["packet_type"] == 0]) == [11, 12, 13]
    in_run["flowing"] = False
    rows = ctx.read_data(0.5)  # the board itself: its physics over half a simulated second
    assert np.count_nonzero(rows["packet_type"] == 0) > 100


def test_routine_sees_the_board_data_and_the_software_copy():
    def count(ctx, seconds=0.5):
        rows = ctx.read_data(seconds)
        return {"packets": int((rows["packet_type"] == 0).sum()),
                "threshold": ctx.configs["1-1-11"]["threshold_global"]}

    board = SimulatedBoard(1, seed=1).bring_up_all()
    out = run_routine_offline(count, board=board)
    assert out.status == SUCCESS
    assert out.result["packets"] > 100
    assert out.result["threshold"] == int(board.chips[(1, 11)][64])
