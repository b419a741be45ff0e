"""A full disk under the real data path: the run fails with the cause, nothing unwritten is
acknowledged, every file opens afterwards and the next run needs only room, no restart."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from daq_procs import Daq

from larpixdaq.formats.hdf5file import Hdf5File, verify_checksum
from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline.runfile import read_run_packets
from larpixdaq.pipeline.runjournal import read_journal
from larpixdaq.runcontrol.testing import wait_for


@pytest.fixture
def daq_on_small_disk(tmp_path, small_disk):
    # Half the disk is taken already: a run at 100 k packets/s fills the rest in a second
    # or two; removing the other files is the operator making room.
    filler = small_disk.path / "other-files"
    filler.write_bytes(b"\x00" * (8 << 20))
    daq = Daq(tmp_path, boards=1, rate=100_000, data=small_disk.path / "data",
              storage_args=["--reserve-mb", "0.5"])
    try:
        yield daq.start(), filler
    finally:
        daq.close()


def _opens_elsewhere(path: Path) -> dict:
    """Open ``path`` with h5py in another process (one that holds nothing of it)."""
    code = ("import h5py, json, sys; f = h5py.File(sys.argv[1], 'r'); "
            "print(json.dumps({'rows': int(f['packets'].shape[0])}))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-500:]
    return json.loads(out.stdout)


def _storage(daq: Daq) -> dict:
    return next(c for c in daq.clients() if c["role"] == "storage")


def test_full_disk_fails_the_run_loudly_and_the_next_run_needs_only_room(daq_on_small_disk):
    daq, filler = daq_on_small_disk
    op = daq.op
    storage_pid = _storage(daq)["pid"]
    number = daq.call("prepare_run", comment="fills the disk")["run_number"]
    daq.call("begin_run")

    # The alarm reaches the operator at once, with the cause, and the run is in ERROR.
    alarms: list = []

    def alarmed():
        alarms.extend(e for e in op.poll_events(0.2) if e.kind == "alarm")
        return alarms

    wait_for(alarmed, timeout=60)
    assert "no space left on device" in alarms[0].message.lower()
    assert alarms[0].data["component"] == "storage"
    wait_for(lambda: op.call("status").data["state"] == "ERROR", timeout=10)
    status = op.call("status").data
    assert any("no space left on device" in i.lower() for i in status["incidents"])

    # Storage holds back: frames keep being refused, none acknowledged, so the aggregator
    # holds them and its window stops the producer (what it holds stops growing).
    def refused():
        return _storage(daq)["counters"].get("frames_refused", 0)

    wait_for(lambda: refused() > 0, timeout=10)

    # The part is readable by anyone while the disk is still full.
    part = daq.data / f"run-{number:06d}.h5"
    during = _opens_elsewhere(part)["rows"]
    assert during > 0

    final = op.end_run().wait()
    assert final.success, final.message
    run = daq.runs_json()[0]
    assert run["run_number"] == number and run["exit_status"] == "failed"
    st = run["counters"]["storage"]
    assert st["run_write_errors"] == 1 and st["run_frames_refused"] > 0
    assert st["run_frames_outside_run"] == 0
    # Nothing acknowledged that is not on disk: the run says written exactly what the file
    # holds, and those rows are the first ones the board sent, in order.
    rows = read_run_packets([part])
    assert len(rows) == during
    assert run["packets_written"] == len(rows)
    sent = daq.sent_rows(1, number)
    data_rows = rows[rows["packet_type"] != MESSAGE]
    assert np.array_equal(data_rows, sent[: len(data_rows)])

    # Room again: the failed run's files are finished without a restart ...
    filler.unlink()

    def finished():
        records = read_journal(daq.data / f"run-{number:06d}.journal")
        return records[-1].get("closed") and part.stat().st_mode & 0o777 == 0o444

    wait_for(finished, timeout=20)
    with Hdf5File(part) as f:
        info = f.info()
    assert info.clean_close and info.header["recovered"] > 0
    assert verify_checksum(part) is True
    assert len(read_run_packets([part])) == during

    # ... and the same storage takes the next run, all of it.
    nxt = daq.call("prepare_run", comment="after")["run_number"]
    daq.call("begin_run")
    time.sleep(0.3)
    daq.call("end_run")
    run = daq.runs_json()[0]
    assert run["run_number"] == nxt and run["exit_status"] == "success", run
    rows = read_run_packets(run["files"])
    assert np.array_equal(rows[rows["packet_type"] != MESSAGE], daq.sent_rows(1, nxt))
    assert _storage(daq)["pid"] == storage_pid
