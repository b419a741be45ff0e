"""A producer SIGKILLed mid-run and started again under the same name: what it had sent is
in the files exactly once, the hole its death left is an incident of the run and a row of
the run file, and a spill file it left is kept and reported."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
from daq_procs import Daq, Proc

from larpixdaq.formats.hdf5file import Hdf5File
from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline.runfile import read_run_packets
from larpixdaq.runcontrol.statemachine import run_losses
from larpixdaq.runcontrol.testing import wait_for


def _producer(daq: Daq) -> Proc:
    (p,) = (p for p in daq.procs if p.args[0] == "producer" and p.proc is not None)
    return p


def _run_number(daq: Daq) -> int:
    """The run in progress: its number is in the name of the board's recording."""
    wait_for(lambda: list(daq.tmp.glob("sent-1-*.raw")), timeout=20)
    (path,) = daq.tmp.glob("sent-1-*.raw")
    return int(path.stem.split("-")[2])


def _packets_sent(daq: Daq) -> int:
    return sum(c.get("counters", {}).get("packets_sent", 0) for c in daq.clients()
               if c["role"] == "producer")


def _kill_and_restart(daq: Daq, run: int, before_kill=None) -> np.ndarray:
    """SIGKILL producer-1, keep what it recorded, start it again; returns its recording."""
    old = _producer(daq)
    if before_kill is not None:
        before_kill()
    old.stop(signal.SIGKILL)
    record = daq.tmp / f"sent-1-{run}.raw"
    dead = daq.tmp / f"sent-1-{run}-dead.raw"
    record.rename(dead)  # the successor records into a fresh file
    wait_for(lambda: all(c["name"] != "producer-1" for c in daq.clients()), timeout=15)
    daq.procs.append(Proc(old.args, old.log).start())
    return dead


def _rows(daq: Daq, path: Path) -> np.ndarray:
    from larpixdaq.formats.pacman import decode_data_messages
    from larpixdaq.formats.rawfile import open_raw

    with open_raw(path) as f:
        msgs, _ = f.read()
    return decode_data_messages(msgs, 1).rows


def _texts(files) -> list[str]:
    out = []
    for p in files:
        with Hdf5File(p) as f:
            out += [m.decode() for m in f.messages()["message"]]
    return out


def test_a_killed_producer_restarted_records_the_gap_and_loses_nothing_it_sent(tmp_path):
    daq = Daq(tmp_path, boards=1, rate=50_000)
    daq.core.extra += ["--rejoin-grace", "30"]
    try:
        daq.start()
        daq.call("prepare_run")
        daq.call("begin_run")
        run_number = _run_number(daq)
        state = daq.data / "producer-producer-1.state"
        wait_for(lambda: state.exists() and _packets_sent(daq) > 50_000, timeout=20)
        dead = _kill_and_restart(daq, run_number)
        wait_for(lambda: _packets_sent(daq) > 20_000, timeout=20)  # the successor's
        final = daq.op.call("end_run")
        assert final.success, final.message
        run = daq.runs_json()[0]
        gaps = [i for i, t in enumerate(run["incidents"]) if "data gap" in t]
        assert len(gaps) == 1, run["incidents"]
        text = run["incidents"][gaps[0]]
        assert "producer-1" in text and "io_group 1 " in text and "SYNC" in text
        assert gaps[0] in run["resolved_incidents"]
        losses = run_losses(run["counters"], run["roles"])
        assert losses.get("producer-1.run_data_gaps") == 1, losses
        assert run["exit_status"] == "degraded"
        # The hole is a row of the run file, before the successor's data.
        texts = _texts(run["files"])
        (row,) = (t for t in texts if t.startswith("gap "))
        t0, t1 = (int(x) for x in row.split()[1].split("-"))
        assert t0 <= t1 and f"from message time {t0} to {t1}" in text
        # Every packet the killed producer sent is in the files once, then the successor's.
        rows = read_run_packets(run["files"])
        got = rows[(rows["io_group"] == 1) & (rows["packet_type"] != MESSAGE)]
        before, after = _rows(daq, dead), daq.sent_rows(1, run_number)
        k = len(got) - len(after)
        assert 50_000 <= k <= len(before)
        assert np.array_equal(got[:k], before[:k])
        assert np.array_equal(got[k:], after)
    finally:
        daq.close()


def test_a_spill_file_left_by_a_killed_producer_is_kept_and_reported(tmp_path):
    daq = Daq(tmp_path, boards=1, rate=100_000, producer_args=("--hold-mb", "0.2"))
    daq.core.extra += ["--rejoin-grace", "30"]
    try:
        daq.start()
        daq.call("prepare_run")
        daq.call("begin_run")
        wait_for(lambda: _packets_sent(daq) > 10_000, timeout=20)
        daq.aggregator.send(signal.SIGSTOP)  # the producer holds, then spills
        try:
            spill = daq.data / f"spill-producer-1-{_producer(daq).proc.pid}.bin"
            wait_for(lambda: spill.exists() and spill.stat().st_size > 1 << 20, timeout=20)
            run_number = _run_number(daq)
            _kill_and_restart(daq, run_number)
        finally:
            daq.aggregator.send(signal.SIGCONT)
        wait_for(lambda: _packets_sent(daq) > 10_000, timeout=20)
        final = daq.op.call("end_run")
        assert final.success, final.message
        run = daq.runs_json()[0]
        orphan = [t for t in run["incidents"] if "spill file(s) of a dead producer-1" in t]
        assert len(orphan) == 1 and spill.name in orphan[0], run["incidents"]
        assert spill.exists() and spill.stat().st_size > 1 << 20  # kept as it was
        assert run["counters"]["producer-1"]["spill_files_orphaned"] == 1
    finally:
        daq.close()
