"""The configuration of record (what a producer last wrote to its chips) and configuration
written during a run: real processes, a SIGKILLed producer, real HDF5 files."""

from __future__ import annotations

import json
import signal

import h5py
import numpy as np
import pytest
from daq_procs import Daq, Proc

from larpixdaq.pipeline.configrecord import (
    ConfigRecordError,
    load_record,
    record_path,
    save_record,
    update_record,
)
from larpixdaq.runcontrol.testing import wait_for

CHIP = "1-1-11"
THRESHOLD_REGISTER = 64  # threshold_global


def _file_records(run: dict) -> tuple[np.ndarray, list[bytes]]:
    path = next(f for f in run["files"] if f.endswith(".h5"))
    with h5py.File(path, "r") as f:
        return f["configs"][:], [bytes(m).rstrip(b"\0") for m in f["messages"]["message"]]


def _chip(configs: np.ndarray, io_channel: int = 1, chip_id: int = 11) -> np.ndarray:
    return configs[(configs["io_channel"] == io_channel) & (configs["chip_id"] == chip_id)]


def _threshold(daq: Daq) -> int:
    read = daq.op.read_configuration(CHIP).wait()
    assert read.success, read.message
    return read.data["result"]["registers"]["threshold_global"]


def test_a_write_during_a_run_is_in_the_run_file_with_its_time_and_a_message(tmp_path):
    daq = Daq(tmp_path, rate=20_000)
    try:
        daq.start()
        daq.call("prepare_run")
        daq.call("begin_run")
        assert daq.op.send_configuration({CHIP: {"threshold_global": 60}}).wait().success
        assert daq.op.write_configuration(CHIP).wait().success
        daq.call("end_run")
        run = daq.runs_json()[0]
    finally:
        daq.close()
    configs, messages = _file_records(run)
    # the begin snapshot (100 chips), the chip written, the end snapshot
    assert len(configs) == 201
    written = configs[100]
    assert (written["io_channel"], written["chip_id"]) == (1, 11)
    assert written["registers"][THRESHOLD_REGISTER] == 60
    assert configs[0]["timestamp"] <= written["timestamp"] <= configs[-1]["timestamp"]
    assert _chip(configs[:100])[0]["registers"][THRESHOLD_REGISTER] != 60
    assert messages == [b"Beginning run", b"configuration written: 1-1-11", b"Ending run"]


def test_a_restarted_producer_reapplies_and_verifies_the_configuration_of_record(tmp_path):
    daq = Daq(tmp_path, rate=20_000)
    daq.core.extra += ["--rejoin-grace", "60"]
    try:
        daq.start()
        default = _threshold(daq)
        assert default != 60
        assert daq.op.send_configuration({CHIP: {"threshold_global": 60}}).wait().success
        assert daq.op.write_configuration(CHIP).wait().success
        assert _threshold(daq) == 60
        record = load_record(record_path(daq.data / "configuration", "producer-1"))
        assert record[CHIP][THRESHOLD_REGISTER] == 60 and len(record) == 1
        daq.call("prepare_run")
        daq.call("begin_run")

        old = next(p for p in daq.procs if p.args[0] == "producer")
        old_pid = old.proc.pid
        old.send(signal.SIGKILL)
        old.stop()
        new = Proc(old.args, tmp_path / "producer-1-again.log").start()
        daq.procs.append(new)

        def rejoined() -> bool:
            comp = next((c for c in daq.clients() if c["name"] == "producer-1"), None)
            return comp is not None and comp["pid"] != old_pid and comp["state"] == "RUN"
        wait_for(rejoined, timeout=60)
        # The chips hold the recorded setting again, and the software copy agrees.
        assert _threshold(daq) == 60
        check = daq.op.validate_configuration().wait()
        assert check.success and check.data["result"]["match"] is True
        daq.call("end_run")
        run = daq.runs_json()[0]
    finally:
        daq.close()
    assert any("producer-1" in i for i in run["incidents"]), run["incidents"]
    assert run["counters"]["producer-1"]["config_restored_chips"] == 1
    assert run["counters"]["producer-1"]["config_restore_mismatches"] == 0
    configs, messages = _file_records(run)
    assert b"config of record re-applied: 1 chips" in messages
    # every snapshot of the chip in the file, before and after the restart, says 60
    assert set(_chip(configs)["registers"][:, THRESHOLD_REGISTER].tolist()) == {60}


def test_the_record_is_replaced_whole_and_a_torn_one_is_a_clear_error(tmp_path):
    path = record_path(tmp_path / "configuration", "producer-3")
    regs = np.arange(237, dtype=np.uint8)
    save_record(path, 3, {"3-1-11": regs})
    chips = update_record(path, 3, {"3-1-12": regs[::-1]})
    assert sorted(chips) == ["3-1-11", "3-1-12"]
    again = load_record(path)
    assert np.array_equal(again["3-1-11"], regs) and np.array_equal(again["3-1-12"], regs[::-1])
    assert json.loads(path.read_text())["io_group"] == 3
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    assert load_record(tmp_path / "nothing.json") == {}
    path.write_text('{"version": 1, "chips": {"3-1-11": "0a0')  # torn by a crash
    with pytest.raises(ConfigRecordError, match="not readable"):
        load_record(path)


def test_a_bring_up_that_resets_the_chips_takes_them_out_of_the_record(tmp_path):
    from larpixdaq.pipeline.boardactions import BoardActions
    from larpixdaq.pipeline.producer import Producer
    from larpixdaq.pipeline.sources.sim import SimSource

    producer = Producer("p", SimSource(1, rate=0), "tcp://127.0.0.1:9")  # never started
    try:
        board = BoardActions(producer, name="p")
        board.keep_configuration_record_in(tmp_path)
        board.session.update({CHIP: {"threshold_global": 60}})
        board.session.write([CHIP, "1-1-12"])
        assert sorted(load_record(record_path(tmp_path, "p"))) == [CHIP, "1-1-12"]
        list(board.session.bring_up(reset=False))
        assert sorted(load_record(record_path(tmp_path, "p"))) == [CHIP, "1-1-12"]
        list(board.session.bring_up(reset=True))  # the chips are at power-on values again
        assert load_record(record_path(tmp_path, "p")) == {}
        assert board.restore_configuration() is None
    finally:
        producer.source.close()
