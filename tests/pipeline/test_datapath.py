"""The whole data path as real processes under a real core."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest
from daq_procs import Daq

from larpixdaq.formats.hdf5file import Hdf5File, verify_checksum
from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline.runfile import read_run_messages, read_run_packets
from larpixdaq.runcontrol.statemachine import LOSS_COUNTERS, run_losses
from larpixdaq.runcontrol.testing import wait_for


@pytest.fixture
def daq_factory(tmp_path):
    made: list[Daq] = []

    def make(**kw) -> Daq:
        d = Daq(tmp_path, **kw)
        made.append(d)
        return d.start()

    yield make
    for d in made:
        d.close()


def _counter(daq: Daq, role: str, name: str) -> int:
    """The sum of counter ``name`` over the components of ``role``, as last reported."""
    return sum(c.get("counters", {}).get(name, 0) for c in daq.clients() if c["role"] == role)


def _losses(run: dict) -> dict:
    """The run's nonzero loss counters, to say why a run was not a success."""
    return run_losses(run["counters"], run["roles"])


def _check_rows_match_sent(daq: Daq, rows: np.ndarray, boards: int, run: int) -> None:
    for g in range(1, boards + 1):
        sent = daq.sent_rows(g, run)
        got = rows[(rows["io_group"] == g) & (rows["packet_type"] != MESSAGE)]
        assert len(sent) > 1000
        assert np.array_equal(got, sent), f"io_group {g}: file rows differ from what was sent"


@pytest.mark.parametrize("boards", [1, 3])
def test_runs_record_every_packet_sent(daq_factory, boards):
    # With several boards, producers and storage find the aggregator through the core.
    daq = daq_factory(boards=boards, rate=50_000, discover=boards > 1)
    daq.call("prepare_run", comment="pipeline test", run_type="test")
    daq.call("begin_run")

    def each_producer_sent() -> bool:  # enough for the checks below, however slow the machine
        sent = [c.get("counters", {}).get("packets_sent", 0) for c in daq.clients()
                if c["role"] == "producer"]
        return len(sent) == boards and min(sent) > 2000

    wait_for(each_producer_sent)
    daq.call("end_run")
    run = daq.runs_json()[0]
    files = run["files"]
    assert [Path(f).name for f in files] == [f"run-{run['run_number']:06d}.h5"]
    rows = read_run_packets(files)
    _check_rows_match_sent(daq, rows, boards, run["run_number"])
    assert run["packets_written"] == len(rows)
    assert run["packets_lost"] == 0
    assert run["exit_status"] == "success"
    # Every declared loss counter is reported under its name (a renamed one would be read
    # as zero by the exit-status rule and hide losses).
    for name, role in run["roles"].items():
        for counter in LOSS_COUNTERS.get(role, ()):
            assert run["counters"][name][counter] == 0, (name, counter)
    texts = read_run_messages(files)
    assert texts.count("Beginning run") == boards and texts.count("Ending run") == boards
    with Hdf5File(files[0]) as f:
        info = f.info()
        configs = f.configs()
    # Each board's registers at begin and at end of the run.
    assert info.n_configs == 2 * boards * (len(configs) // (2 * boards)) > 0
    assert sorted(set(configs["io_group"].tolist())) == list(range(1, boards + 1))
    assert info.clean_close and info.run["packets_written"] == len(rows)
    assert info.run["run_type"] == "test" and info.run["comment"] == "pipeline test"
    assert verify_checksum(files[0])

    # A second run gets its own file and starts from scratch.
    daq.call("prepare_run")
    daq.call("begin_run")
    time.sleep(0.2)
    daq.call("end_run")
    second = daq.runs_json()[0]
    assert second["run_number"] == run["run_number"] + 1
    assert second["packets_lost"] == 0
    assert second["packets_written"] == len(read_run_packets(second["files"]))


def test_storage_killed_mid_run_loses_nothing(tmp_path):
    daq = Daq(tmp_path, boards=2, rate=100_000)
    # Room for a restart on a busy machine: the run is held until storage is back.
    try:
        daq.start_run(rejoin_grace=30)
        wait_for(lambda: _counter(daq, "storage", "packets_written") > 0)
        daq.storage.stop(signal.SIGKILL)
        # Run control notices the loss (a heartbeat time-out later) and holds the run;
        # meanwhile the producers go on until their credit runs out, and the aggregator
        # keeps every frame.
        wait_for(lambda: all(c["role"] != "storage" for c in daq.clients()))
        assert daq.op.call("status").data["state"] == "RUN"
        daq.start_storage()
        wait_for(lambda: _counter(daq, "storage", "packets_written") > 0)  # the new storage
        assert daq.op.call("status").data["state"] == "RUN"
        final = daq.op.call("end_run")
        assert final.success, final.message
        run = daq.runs_json()[0]
        assert run["exit_status"] == "success"
        # The storage's loss is an incident, resolved when it registered again. (Another
        # component whose heartbeat came late on a loaded machine may add its own.)
        (storage,) = (i for i, text in enumerate(run["incidents"]) if "storage" in text)
        assert "registered again" in run["incidents"][storage]
        assert storage in run["resolved_incidents"]
        files = run["files"]
        assert len(files) >= 2  # the part written before the kill, and the one after
        rows = read_run_packets(files)
        _check_rows_match_sent(daq, rows, 2, run["run_number"])
        assert run["packets_written"] == len(rows)
        assert run["packets_lost"] == 0
        assert run["counters"]["storage"]["restarts"] == 1
        texts = read_run_messages(files)
        assert texts.count("Beginning run") == 2 and texts.count("Ending run") == 2
    finally:
        daq.close()


def test_unwritable_data_directory_fails_the_prepare_clearly(daq_factory, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    daq = daq_factory(boards=1, data=blocker / "data")
    final = daq.op.prepare_run().wait()
    assert not final.success
    assert "storage" in final.message and "cannot write run" in final.message
    assert "a-file" in final.message


def test_a_run_whose_file_is_already_there_is_refused_and_the_file_kept(daq_factory, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    theirs = data / "run-000001.h5"
    theirs.write_bytes(b"a file this DAQ did not write")
    daq = daq_factory(boards=1, data=data)
    final = daq.op.prepare_run().wait()
    assert not final.success
    assert "run-000001.h5 already in" in final.message and "not touching it" in final.message
    assert theirs.read_bytes() == b"a file this DAQ did not write"

    def refused():
        storage = next(c for c in daq.clients() if c["role"] == "storage")
        return storage["counters"]["files_refused"] == 1

    wait_for(refused, timeout=10)  # the counter travels in the next heartbeat


def test_aggregator_killed_mid_run_loses_nothing(tmp_path):
    """The producers keep every frame until storage has committed it: a new aggregator gets
    what the killed one held again, storage drops what it already had, nothing is lost."""
    daq = Daq(tmp_path, boards=2, rate=100_000)
    try:
        daq.start_run(rejoin_grace=30)
        wait_for(lambda: _counter(daq, "storage", "packets_written") > 0)
        daq.aggregator.stop(signal.SIGKILL)
        wait_for(lambda: all(c["role"] != "aggregator" for c in daq.clients()))
        assert daq.op.call("status").data["state"] == "RUN"
        daq.start_aggregator()
        # Producers that sent to the killed aggregator send their unacknowledged frames again.
        wait_for(lambda: _counter(daq, "producer", "frames_resent") > 0, timeout=20)
        wait_for(lambda: _counter(daq, "aggregator", "frames_acked") > 0, timeout=20)
        final = daq.op.call("end_run")
        assert final.success, final.message
        run = daq.runs_json()[0]
        (agg,) = (i for i, text in enumerate(run["incidents"]) if "aggregator" in text)
        assert agg in run["resolved_incidents"]
        rows = read_run_packets(run["files"])
        _check_rows_match_sent(daq, rows, 2, run["run_number"])
        assert run["packets_written"] == len(rows)
        assert run["packets_lost"] == 0
        assert run["exit_status"] == "success", (run["incidents"], _losses(run))
        texts = read_run_messages(run["files"])
        assert texts.count("Beginning run") == 2 and texts.count("Ending run") == 2
    finally:
        daq.close()


def test_storage_stalled_the_boards_spill_and_nothing_is_lost(tmp_path):
    """Storage stopped (SIGSTOP): the aggregator's small window fills, the producers go on
    reading their boards, hold 100 kB in memory and spill the rest to disk; when storage
    goes on, everything is replayed in order and the run is complete."""
    daq = Daq(tmp_path, boards=2, rate=100_000, aggregator_args=("--window-mb", "2"),
              producer_args=("--hold-mb", "0.1", "--spill-dir", str(tmp_path / "spill")))
    try:
        daq.start_run(rejoin_grace=60)
        wait_for(lambda: _counter(daq, "storage", "packets_written") > 0)
        daq.storage.send(signal.SIGSTOP)
        try:
            wait_for(lambda: _counter(daq, "producer", "frames_spilled") > 100, timeout=30)
            assert list((tmp_path / "spill").glob("spill-producer-*.bin"))
        finally:
            daq.storage.send(signal.SIGCONT)
        wait_for(lambda: any(c["role"] == "storage" for c in daq.clients()), timeout=30)

        def drained() -> bool:
            # The end of the run comes after the backlog (the end has the core's ack time).
            producers = [c["counters"] for c in daq.clients() if c["role"] == "producer"]
            return len(producers) == 2 and all(
                c["frames_spilled"] > 0 and c["frames_replayed"] == c["frames_spilled"]
                for c in producers)

        wait_for(drained, timeout=60)
        final = daq.op.call("end_run")
        assert final.success, final.message
        run = daq.runs_json()[0]
        rows = read_run_packets(run["files"])
        _check_rows_match_sent(daq, rows, 2, run["run_number"])
        assert run["packets_written"] == len(rows) and run["packets_lost"] == 0
        assert run["exit_status"] == "success", (run["incidents"], _losses(run))
        for g in (1, 2):
            c = run["counters"][f"producer-{g}"]
            assert c["frames_spilled"] > 0 and c["frames_replayed"] == c["frames_spilled"]
            assert c["max_bytes_held"] <= 0.1 * (1 << 20) + 16_100
        assert not list((tmp_path / "spill").glob("*.bin"))  # drained files are removed
    finally:
        daq.storage.send(signal.SIGCONT)
        daq.close()


def test_storage_stalled_past_the_grace_comes_back_and_the_run_succeeds(tmp_path):
    """A stall is not a death: storage stopped (SIGSTOP) for longer than the core's rejoin
    grace comes back with nothing lost, its incident is resolved and the run is a success."""
    daq = Daq(tmp_path, boards=1, rate=50_000)
    try:
        daq.start_run(rejoin_grace=1.5)
        wait_for(lambda: _counter(daq, "storage", "packets_written") > 0)
        seen: list = []

        def event(kind: str) -> bool:
            seen.extend(daq.op.poll_events(0.05))
            return any(e.kind == kind and "storage" in e.message for e in seen)

        daq.storage.send(signal.SIGSTOP)
        try:
            wait_for(lambda: event("overdue"), timeout=30)  # the grace ran out
            assert daq.op.call("status").data["state"] == "RUN"
        finally:
            daq.storage.send(signal.SIGCONT)
        wait_for(lambda: event("rejoined"), timeout=30)
        final = daq.op.call("end_run")
        assert final.success, final.message
        run = daq.runs_json()[0]
        (lost,) = (i for i, text in enumerate(run["incidents"]) if "storage" in text)
        assert lost in run["resolved_incidents"]
        rows = read_run_packets(run["files"])
        _check_rows_match_sent(daq, rows, 1, run["run_number"])
        assert run["exit_status"] == "success", (run["incidents"], _losses(run))
    finally:
        daq.storage.send(signal.SIGCONT)
        daq.close()
