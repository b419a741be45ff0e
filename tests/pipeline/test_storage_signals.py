"""SIGTERM to a real storage process: it leaves within the grace ``larpix-daq up`` gives
(the supervisor's), exits 0, and leaves its file as a clean close (idle) or as a committed
part its journal resumes (mid-run). And the case that made ``up`` kill storage: stopped
while a run's end waits for a stream whose producer is gone, it closes the file at once."""

from __future__ import annotations

import inspect
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from daq_procs import Daq
from datagen import make_frames, make_messages

from larpixdaq.formats.hdf5file import Hdf5File, verify_checksum
from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline.protocol import FRAME, encode_header
from larpixdaq.pipeline.runfile import read_run_packets
from larpixdaq.pipeline.runjournal import journal_path
from larpixdaq.pipeline.storage import StorageComponent, StorageLink
from larpixdaq.runcontrol.messages import RunInfo
from larpixdaq.runcontrol.testing import wait_for
from larpixdaq.supervisor import Supervisor

#: What `up` waits after SIGTERM before it kills a child.
GRACE = inspect.signature(Supervisor).parameters["grace"].default


def _storage_written(daq: Daq) -> int:
    return sum(c.get("counters", {}).get("packets_written", 0)
               for c in daq.clients() if c["role"] == "storage")


def _sigterm(daq: Daq) -> tuple[int, float]:
    """SIGTERM storage; its exit code and how long it took (fails past the grace)."""
    proc = daq.storage.proc
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(GRACE)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"storage outlived SIGTERM by {GRACE} s") from None
    took = time.monotonic() - started
    daq.storage.stop()  # reaps, closes its pipes
    return code, took


def test_idle_storage_leaves_on_sigterm_and_its_file_stays_clean(tmp_path):
    daq = Daq(tmp_path, boards=1, rate=50_000)
    try:
        daq.start()
        daq.call("prepare_run")
        daq.call("begin_run")
        wait_for(lambda: _storage_written(daq) > 0, timeout=20)
        daq.call("end_run")
        (path,) = daq.runs_json()[0]["files"]
        before = Path(path).read_bytes()
        code, _ = _sigterm(daq)
        assert code == 0
        assert Path(path).read_bytes() == before  # leaving touches no finished file
        with Hdf5File(path) as f:
            assert f.info().clean_close
        assert verify_checksum(path)
        log = (tmp_path / "storage.log").read_text()
        assert "Traceback" not in log and "could not commit" not in log
    finally:
        daq.close()


def test_storage_sigtermed_mid_run_commits_and_the_run_resumes_whole(tmp_path):
    daq = Daq(tmp_path, boards=1, rate=50_000)
    daq.core.extra += ["--rejoin-grace", "30"]  # the run waits for storage to come back
    try:
        daq.start()
        daq.call("prepare_run")
        daq.call("begin_run")
        wait_for(lambda: _storage_written(daq) > 0, timeout=20)
        code, _ = _sigterm(daq)
        assert code == 0
        assert "Traceback" not in (tmp_path / "storage.log").read_text()
        # What it committed is a part its journal names; a new storage resumes the run.
        assert journal_path(daq.data, 1).is_file()
        daq.start_storage()
        wait_for(lambda: _storage_written(daq) > 0, timeout=20)
        final = daq.op.call("end_run")
        assert final.success, final.message
        run = daq.runs_json()[0]
        assert run["counters"]["storage"]["restarts"] == 1
        rows = read_run_packets(run["files"])
        got = rows[rows["packet_type"] != MESSAGE]
        sent = daq.sent_rows(1, run["run_number"])
        assert len(sent) > 1000 and np.array_equal(got, sent)
        assert run["packets_lost"] == 0
        for p in run["files"]:
            with Hdf5File(p) as f:
                assert f.info().clean_close
    finally:
        daq.close()


@pytest.fixture
def aggregator_socket():
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    yield sock
    sock.close(0)


def test_stopping_during_an_end_that_waits_for_a_gone_stream_closes_the_file_at_once(
        aggregator_socket, tmp_path):
    """`up` stops the producers before storage: a run's end under way in storage then
    waits for an end marker that never comes. Stopping must not wait that out."""
    patience = 60.0  # far past the grace: without the fix stop() would block this long
    link = StorageLink(aggregator_socket.getsockopt_string(zmq.LAST_ENDPOINT), tmp_path,
                       commit_interval=0.05).start()
    comp = StorageComponent("storage-t", "tcp://127.0.0.1:9", link)
    link_stopped = False
    try:
        assert aggregator_socket.poll(5000), "storage never said hello"
        identity = aggregator_socket.recv_multipart()[0]
        (path,) = comp.on_prepare(RunInfo(run_number=7))["files"]
        for h, payload in make_frames("p", 1, make_messages(4, 1, words=8), run=7,
                                      markers=False):  # data, never the stream's end
            aggregator_socket.send_multipart([identity, FRAME, encode_header(h), payload])
        wait_for(lambda: link.snapshot().get("packets_written", 0) > 0, timeout=10)
        ending = comp._transitions.submit(link.end, patience)
        wait_for(lambda: link._ending is not None, timeout=10)
        started = time.monotonic()
        comp.stop()  # what SIGTERM does (run_forever -> stop)
        link_stopped = True
        took = time.monotonic() - started
        assert took < GRACE, f"stop took {took:.1f} s"
        summary = ending.result(timeout=1)
        assert summary["counters"]["streams_unfinished"] == 1
        with Hdf5File(path) as f:
            info = f.info()
        assert info.clean_close and info.run["packets_written"] == len(read_run_packets([path]))
        assert verify_checksum(path)
    finally:
        if not link_stopped:
            comp.stop()
