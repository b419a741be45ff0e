"""`larpix-daq routine stop` against a real core and a producer process with a simulated
board: it answers while a routine runs, and the routine ends aborted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from daq_procs import Proc

from larpixdaq.cli import main
from larpixdaq.runcontrol.operator import Ack, Operator, Progress
from larpixdaq.runcontrol.testing import CoreProcess, wait_for


@pytest.fixture
def daq(tmp_path):
    core = CoreProcess(tmp_path / "runs.sqlite").start()
    producer = None
    try:
        producer = Proc(["producer", "--core", core.endpoint, "--data-dir", str(tmp_path),
                         "--aggregator",
                         "tcp://127.0.0.1:9", "--io-group", "1", "--sim-rate", "1000",
                         "--routines", str(tmp_path)],
                        tmp_path / "producer.log").start()
        with Operator(core.endpoint) as op:
            wait_for(lambda: len(op.producers()) == 1, timeout=15)
        yield core.endpoint
    finally:
        if producer is not None:
            producer.stop()
        core.terminate()


def test_routine_stop_aborts_the_running_routine(daq, capsys, tmp_path):
    (tmp_path / "spin.py").write_text(
        "import time\n"
        "def routine(ctx):\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
        "        yield {'spin': 1}\n")
    assert main(["routine", "load", str(tmp_path), "--core", daq]) == 0
    assert "loaded 1 routine(s): spin" in capsys.readouterr().out
    assert main(["routine", "load", str(tmp_path), "--json", "--core", daq]) == 0
    assert json.loads(capsys.readouterr().out)["loaded"] == ["spin"]
    assert main(["routine", "stop", "--core", daq]) == 0
    assert "no routine is running" in capsys.readouterr().out
    with Operator(daq, timeout=30) as op:
        reply = op.run_routine("spin")
        assert isinstance(next(reply), Ack)
        assert isinstance(next(reply), Progress)
        assert main(["routine", "stop", "--core", daq, "--board", "producer-1"]) == 0
        assert "routine spin asked to stop" in capsys.readouterr().out
        final = reply.wait()
    assert not final.success
    assert "routine spin aborted: stopped by the operator" in final.message
    assert main(["routine", "stop", "--json", "--core", daq]) == 0
    assert json.loads(capsys.readouterr().out)["stopped"] is False
    assert main(["routine", "stop", "--board", "nope", "--core", daq]) == 1
    assert "no producer 'nope'" in capsys.readouterr().err


def test_loading_a_directory_not_named_at_start_up_is_one_line_here_and_in_the_console(
        daq, capsys, tmp_path):
    missing = tmp_path / "no-such-dir"
    assert main(["routine", "load", str(missing), "--core", daq]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{missing} is not one of them" in err
    log = tmp_path / "producer.log"
    wait_for(lambda: "is not one of them" in log.read_text(), timeout=15)
    text = log.read_text()
    assert "Traceback" not in text
    assert [ln for ln in text.splitlines() if "is not one of them" in ln][0].count(
        "load_routines failed") == 1


def test_results_are_kept_listed_and_summarised_and_nonsense_is_refused(daq, capsys, tmp_path):
    import numpy as np

    assert main(["routine", "run", "pedestal", "seconds=-1", "--core", daq]) == 1
    cap = capsys.readouterr()
    assert "seconds must be > 0, got -1" in cap.err and "success" not in cap.out
    assert main(["routine", "run", "pedestal", "seconds=0.2", "--core", daq]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 30  # a summary, not 6,400 numbers
    assert "chips.mean  [100 x 64 float64 array]" in out
    kept = out.split("kept in ")[1].split(" (arrays: ")
    summary_file, arrays_file = kept[0], kept[1].rstrip(")\n")
    assert summary_file.startswith(str(tmp_path / "routines"))
    record = json.loads(Path(summary_file).read_text())
    assert record["routine"] == "pedestal" and record["params"] == {"seconds": 0.2}
    with np.load(arrays_file) as npz:
        assert npz["chips.mean"].shape == (100, 64) and len(npz["chips.keys"]) == 100
    # (the producer's --routines directory is tmp_path)
    (tmp_path / "boom.py").write_text("def routine(ctx):\n    raise KeyError('x')\n")
    assert main(["routine", "load", "--core", daq]) == 0
    assert main(["routine", "run", "boom", "--core", daq]) == 1
    assert "(kept in " in capsys.readouterr().err
    assert main(["routine", "results", "--json", "--core", daq]) == 0
    listed = json.loads(capsys.readouterr().out)["results"]
    assert [(r["routine"], r["status"]) for r in listed] == [("boom", "failed"),
                                                               ("pedestal", "success")]
    assert main(["routine", "results", "pedestal", "--core", daq]) == 0
    text = capsys.readouterr().out
    assert "1 result(s) in" in text and "pedestal" in text and "seconds=0.2" in text
