"""Configuration and routine actions through real processes: core, aggregator, storage,
a producer with a simulated board; the Operator talks only to the core."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest
from daq_procs import Daq

from larpixdaq.runcontrol.operator import Ack, Operator, Progress, Result
from larpixdaq.runcontrol.testing import wait_for

CHIP = "1-1-11"


@pytest.fixture(scope="module")
def daq(tmp_path_factory):
    d = Daq(tmp_path_factory.mktemp("boardactions"), rate=20_000,
            routines=tmp_path_factory.mktemp("routines"))
    try:
        yield d.start()
    finally:
        d.close()


def producer_counter(daq, name: str) -> int:
    """``name`` of producer-1 as of now: from a heartbeat the core received at least a
    quarter second after this call began, so no earlier change is still on its way."""
    t0 = time.monotonic()

    def fresh():
        asked = time.monotonic() - t0
        comp = next(c for c in daq.clients() if c["name"] == "producer-1")
        return comp if asked - comp["last_seen_s"] > 0.25 else None

    return wait_for(fresh)["counters"].get(name, 0)


def final_of(reply):
    responses = list(reply)
    assert isinstance(responses[-1], Result), responses[-1]
    return responses


def test_get_boards_names_the_simulated_board(daq):
    final = daq.op.get_boards().wait()
    assert final.success, final.message
    (name, info), = final.data["boards"].items()
    assert name == "producer-1"
    assert info["kind"] == "sim" and info["io_group"] == 1
    assert info["n_chips"] == 100 and CHIP in info["chips"]


def test_write_read_verify_round_trip(daq):
    assert daq.op.write_configuration([CHIP, "1-1-12"]).wait().success
    read = daq.op.read_configuration(CHIP).wait()
    assert read.success, read.message
    soft = daq.op.retrieve_configuration(CHIP).wait().data["result"]["registers"]
    assert read.data["result"]["registers"] == soft
    check = daq.op.validate_configuration().wait()
    assert check.success and check.data["result"]["match"] is True


def test_send_configuration_then_validate_names_the_differences(daq):
    sent = daq.op.send_configuration({CHIP: {"threshold_global": 77,
                                             "pixel_trim_dac[3]": 9}}).wait()
    assert sent.success, sent.message
    assert sent.data["result"]["updated"][CHIP] == ["pixel_trim_dac", "threshold_global"]
    check = daq.op.validate_configuration(CHIP).wait().data["result"]
    assert check["match"] is False
    diff = check["differences"]
    assert set(diff) == {"threshold_global", "pixel_trim_dac"}
    assert diff["threshold_global"][0] == 77 and diff["threshold_global"][1] != 77
    assert daq.op.write_configuration(CHIP).wait().success
    assert daq.op.validate_configuration(CHIP).wait().data["result"]["match"] is True


@pytest.mark.parametrize("updates, words, counter", [
    ({"9-9-99": {"threshold_global": 1}}, "unknown chip", "board_unknown_chips"),
    ({CHIP: {"no_such_register": 1}}, "unknown register", "board_unknown_registers"),
    ({CHIP: {"threshold_global": 300}}, "out of range", "board_bad_values"),
    ({"not a key": {"threshold_global": 1}}, "bad chip key", "board_bad_chip_keys"),
])
def test_send_configuration_refuses_bad_updates_and_counts_them(daq, updates, words, counter):
    count_before = producer_counter(daq, counter)
    before = daq.op.retrieve_configuration(CHIP).wait().data["result"]["registers"]
    final = daq.op.send_configuration(updates).wait()
    assert not final.success and words in final.message
    after = daq.op.retrieve_configuration(CHIP).wait().data["result"]["registers"]
    assert after == before
    assert producer_counter(daq, counter) == count_before + 1


def test_run_routine_progress_arrives_before_the_result(daq):
    responses = final_of(daq.op.run_routine("threshold_scan", start=30, stop=50, step=10,
                                            dwell=0.05, chip_keys=[CHIP]))
    kinds = [type(r) for r in responses]
    assert kinds[0] is Ack and kinds[-1] is Result
    progress = [r for r in responses if isinstance(r, Progress)]
    assert [p.data["threshold"] for p in progress] == [30, 40, 50]
    final = responses[-1]
    assert final.success, final.message
    assert final.data["result"]["status"] == "success"
    assert final.data["result"]["result"]["thresholds"] == [30, 40, 50]


def test_routines_load_only_from_the_directories_named_at_start_up(daq, tmp_path):
    """A request naming any other directory is refused, and nothing in it runs."""
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\ndef routine(ctx):\n    return 1\n")
    final = daq.op.load_routines(tmp_path).wait()
    assert not final.success
    assert "loaded only from the directories named at start-up" in final.message
    assert str(daq.routines.resolve()) in final.message and not marker.exists()
    names = [r["name"] for r in
             daq.op.list_routines().wait().data["result"]["routines"]]
    assert "evil" not in names
    # Its own directory, by path or by its last part, is accepted.
    assert daq.op.load_routines(daq.routines).wait().success
    assert daq.op.load_routines(daq.routines.name).wait().success


def test_failed_routine_is_a_failed_result_and_the_producer_lives_on(daq):
    (daq.routines / "boom.py").write_text("def routine(ctx, n=1):\n    yield {'n': n}\n"
                                          "    raise ValueError('no good')\n")
    assert daq.op.load_routines().wait().success
    final = daq.op.run_routine("boom").wait()
    assert not final.success
    assert "routine boom failed: ValueError: no good" in final.message
    assert "boom.py:3" in final.message  # the traceback summary
    bad = daq.op.run_routine("hello_world", colour="red").wait()
    assert not bad.success and "bad parameters" in bad.message
    assert daq.op.run_routine("hello_world", name="DAQ").wait().success


def test_readout_continues_while_a_routine_runs_and_configs_reach_the_file(daq):
    (daq.routines / "slow.py").write_text(
        "import time\n"
        "def routine(ctx, seconds=1.5):\n"
        "    t0 = time.monotonic()\n"
        "    while time.monotonic() - t0 < seconds:\n"
        "        ctx.read('1-1-11')\n"
        "        yield {'t': time.monotonic() - t0}\n"
        "    ctx.send_info('slow routine done')\n"
        "    return 'ok'\n")
    assert daq.op.load_routines().wait().success
    daq.call("prepare_run", comment="routine while running")
    daq.call("begin_run")

    def sent():
        comp = next(c for c in daq.clients() if c["name"] == "producer-1")
        return comp.get("counters", {}).get("packets_sent", 0)

    wait_for(lambda: sent() > 0, timeout=10)
    reply = daq.op.run_routine("slow", timeout=30)
    seen = []
    for response in reply:
        if isinstance(response, Progress):
            seen.append(sent())
    assert reply.final.success, reply.final.message
    assert len(seen) >= 3 and seen[-1] > seen[0]  # packets kept flowing meanwhile
    refused = daq.op.run_routine("pedestal", seconds=0.1).wait()
    assert not refused.success and "end the run first" in refused.message
    assert "--sim-rate physics" in refused.message  # the way to take data in a run
    time.sleep(0.3)
    daq.call("end_run")
    run = daq.runs_json()[0]
    path = next(f for f in run["files"] if f.endswith(".h5"))
    with h5py.File(path, "r") as f:
        configs = f["configs"][:]
        messages = [bytes(m).rstrip(b"\0") for m in f["messages"]["message"]]
        packets = f["packets"][:]
    # 100 chips at begin and at end, and the writes of the refused pedestal routine (it set
    # the chips for its measurement, then put them back): each recorded with a message
    assert messages.count(b"configuration written: 100 chips") == 2, messages
    assert len(configs) == 400
    # What the board sent while the routine read chip 11 is part of the run, as a real
    # board's output would be: its config-read replies are in the file.
    replies = packets[(packets["packet_type"] == 3) & (packets["chip_id"] == 11)
                      & (packets["io_channel"] == 1)]
    assert len(np.unique(replies["register_address"])) == 237
    soft = daq.op.retrieve_configuration(CHIP).wait().data["result"]["registers"]
    row = configs[(configs["io_channel"] == 1) & (configs["chip_id"] == 11)][-1]
    assert int(row["registers"][64]) == soft["threshold_global"]
    assert b"slow routine done" in messages
    assert np.count_nonzero(configs["io_group"] == 1) == 400


def test_routine_timeout_aborts_it_and_the_next_one_runs(daq):
    (daq.routines / "forever.py").write_text(
        "import time\n"
        "def routine(ctx):\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
        "        yield {'tick': 1}\n")
    assert daq.op.load_routines().wait().success
    final = daq.op.run_routine("forever", routine_timeout=0.5).wait()
    assert not final.success and "routine forever aborted" in final.message
    assert daq.op.run_routine("hello_world").wait().success


def test_a_source_without_a_board_says_so(tmp_path):
    from larpixdaq.formats.rawfile import write_raw
    from larpixdaq.pipeline.boardactions import BoardActions
    from larpixdaq.pipeline.producer import Producer
    from larpixdaq.pipeline.sources.replay import ReplaySource

    write_raw(tmp_path / "in.raw", [], 3)
    source = ReplaySource(tmp_path / "in.raw", io_group=3)
    producer = Producer("p", source, "tcp://127.0.0.1:1")  # never started: no socket
    actions = BoardActions(producer, name="p")
    assert actions.get_boards()["kind"] == "replay"
    assert actions.get_boards()["reading_out"] is False
    with pytest.raises(Exception, match="no board"):
        actions.session.read()
    assert producer.config_rows is None  # its run snapshot is what the source says: none
    assert source.configs() is None


def test_board_client_time_outs_reach_the_producer_counters():
    import socket

    from larpixdaq.errors import LarpixDaqError
    from larpixdaq.pipeline.boardactions import BoardActions
    from larpixdaq.pipeline.producer import Producer
    from larpixdaq.pipeline.sources.pacman import PacmanSource

    with socket.socket() as s1, socket.socket() as s2:  # two ports nobody answers on
        s1.bind(("127.0.0.1", 0))
        s2.bind(("127.0.0.1", 0))
        ports = s1.getsockname()[1], s2.getsockname()[1]
    source = PacmanSource(1, "127.0.0.1", *ports)
    source.client.timeout = 0.05
    try:
        actions = BoardActions(Producer("p", source, "tcp://127.0.0.1:1"), name="p")
        with pytest.raises(LarpixDaqError, match="did not answer"):
            source.client.ping()
        c = actions.counters()
        assert c["pacman_timeouts"] == source.client.retries
        assert c["pacman_retries"] == source.client.retries - 1
    finally:
        source.close()


def test_stop_routine_from_another_operator_aborts_it_and_the_next_one_runs(daq):
    (daq.routines / "endless.py").write_text(
        "import time\n"
        "def routine(ctx):\n"
        "    n = 0\n"
        "    while True:\n"
        "        time.sleep(0.05)\n"
        "        n += 1\n"
        "        yield {'tick': n}\n")
    assert daq.op.load_routines().wait().success
    idle = daq.op.stop_routine().wait()
    assert idle.success and idle.data["result"]["stopped"] is False
    assert idle.data["result"]["message"] == "no routine is running"
    acts = daq.op.call("actions").data["actions"]["producer-1"]
    assert acts["stop_routine"]["immediate"] is True
    assert "immediate" not in acts["run_routine"]

    failed_before = producer_counter(daq, "routines_failed")
    reply = daq.op.run_routine("endless", timeout=60)
    assert isinstance(next(reply), Ack)
    assert isinstance(next(reply), Progress)  # it is running in the action thread
    with Operator(daq.core.endpoint, timeout=15) as other:
        stopped = other.stop_routine(board="producer-1").wait()
    assert stopped.success, stopped.message
    assert stopped.data["result"]["stopped"] is True
    assert stopped.data["result"]["routine"] == "endless"
    responses = list(reply)
    final = responses[-1]
    assert isinstance(final, Result) and not final.success
    assert "routine endless aborted: stopped by the operator" in final.message
    assert all(isinstance(r, Progress) for r in responses[:-1])

    assert producer_counter(daq, "routines_failed") == failed_before + 1
    again = daq.op.run_routine("hello_world", name="again").wait()
    assert again.success, again.message
    assert again.data["result"]["result"]["greeting"] == "Hello, again!"
    assert daq.op.stop_routine().wait().data["result"]["stopped"] is False


def test_a_routine_in_a_run_analyses_what_the_run_records(tmp_path):
    """With a board whose rate follows its configuration, a data-taking routine may run
    during a run: it sees a copy of the run's data, which is also in the run's file."""
    (tmp_path / "routines").mkdir()
    (tmp_path / "routines" / "count.py").write_text(
        "def routine(ctx, seconds=1.0):\n"
        "    rows = ctx.read_data(seconds)\n"
        "    data = rows[rows['packet_type'] == 0]\n"
        "    return {'packets': int(len(data)), 'syncs': int((rows['packet_type'] == 6).sum())}\n")
    d = Daq(tmp_path / "daq", rate="physics", routines=tmp_path / "routines").start()
    try:
        assert d.op.load_routines(tmp_path / "routines").wait().success
        d.call("prepare_run", comment="calibration as a run", run_type="calibration")
        d.call("begin_run")
        final = d.op.run_routine("count", seconds=1.5, timeout=30).wait()
        assert final.success, final.message
        counted = final.data["result"]["result"]
        assert counted["packets"] > 1000 and counted["syncs"] >= 1
        d.call("end_run")
        run = d.runs_json()[0]
        assert run["exit_status"] == "success" and run["packets_lost"] == 0
        path = next(f for f in run["files"] if f.endswith(".h5"))
        with h5py.File(path, "r") as f:
            in_file = int(np.count_nonzero(f["packets"]["packet_type"] == 0))
        assert in_file >= counted["packets"]
    finally:
        d.close()
