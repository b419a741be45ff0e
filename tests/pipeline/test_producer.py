"""Producer sources and the producer's flow control, with real sockets and files."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.commands.pipeline import make_source
from larpixdaq.errors import CommandError
from larpixdaq.formats.hdf5file import Hdf5File
from larpixdaq.formats.pacman import decode_data_messages, encode_data_message
from larpixdaq.formats.rawfile import write_raw
from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline.aggregator import Aggregator
from larpixdaq.pipeline.producer import Producer, free_name
from larpixdaq.pipeline.protocol import (
    CREDIT,
    FRAME,
    HELLO,
    Ack,
    Credit,
    Welcome,
    decode_header,
)
from larpixdaq.pipeline.runfile import read_run_packets
from larpixdaq.pipeline.sources.replay import ReplaySource
from larpixdaq.pipeline.sources.sim import SimSource
from larpixdaq.pipeline.storage import StorageLink
from larpixdaq.runcontrol.testing import wait_for


def _board_messages() -> list[bytes]:
    board = SimulatedBoard(2, seed=5).bring_up_all()
    msgs = []
    for _ in range(5):
        words = board.generate(0.3)  # chip data and SYNC words
        msgs.append(encode_data_message(int(board.time), words))
    msgs.append(encode_data_message(9, board.generate_packets(300)[:300]))
    return msgs


@pytest.fixture
def path(tmp_path):
    agg = Aggregator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", None).start()
    store = StorageLink(agg.outlet, tmp_path / "data", commit_interval=0.05).start()
    made = []

    def producer(source) -> Producer:
        p = Producer(f"p{len(made)}", source, agg.inlet).start()
        made.append(p)
        return p

    yield producer, store
    for p in made:
        p.stop()
    store.stop()
    agg.stop()


def _run(store, producer, run, until):
    store.prepare(run, {"run_type": "replay"})
    producer.prepare(run)
    producer.begin()
    wait_for(until, timeout=15)
    producer.end()
    return store.end()


def test_replay_of_raw_then_of_the_hdf5_file_it_made(tmp_path, path):
    make_producer, store = path
    # Board-made packets only: v2.4 rows do not keep the unused bits of config packets that
    # random test words would set, so only real packets survive the second leg unchanged.
    msgs = _board_messages()
    raw = tmp_path / "in.raw"
    write_raw(raw, msgs, 2)
    src = ReplaySource(raw, io_group=2, speed=0)
    first = _run(store, make_producer(src), 1, lambda: src.finished)
    rows = read_run_packets(first["files"])
    chip = rows[rows["packet_type"] != MESSAGE]
    assert np.array_equal(chip, decode_data_messages(msgs, 2).rows)

    src2 = ReplaySource(first["files"][0], io_group=2, speed=0)
    second = _run(store, make_producer(src2), 2, lambda: src2.finished)
    rows2 = read_run_packets(second["files"])
    assert np.array_equal(rows2[rows2["packet_type"] != MESSAGE], chip)
    with Hdf5File(second["files"][0]) as f:
        texts = [m.decode() for m in f.messages()["message"]]
    assert texts == ["Beginning run", "Ending run"]


def test_sim_source_keeps_its_rate_and_stream_is_complete(path):
    make_producer, store = path
    src = SimSource(1, rate=40_000, words_per_message=500)
    p = make_producer(src)
    t0 = time.monotonic()
    summary = _run(store, p, 3, lambda: p.counters.packets_sent >= 20_000)
    elapsed = time.monotonic() - t0
    c = summary["counters"]
    assert c["packets_lost"] == 0 and c["frames_missing"] == 0
    assert c["words_received"] == p.counters.packets_sent
    # Paced, not flat out: a generous bound that only a missing rate limit breaks.
    assert p.counters.packets_sent < 40_000 * elapsed * 3 + 20_000


def test_without_credit_the_producer_waits_and_says_so(tmp_path):
    ctx = zmq.Context.instance()
    silent = ctx.socket(zmq.ROUTER)  # an aggregator that never grants credit
    silent.setsockopt(zmq.LINGER, 0)
    silent.bind("tcp://127.0.0.1:0")
    p = Producer("p", SimSource(1, rate=0, words_per_message=100),
                 silent.getsockopt_string(zmq.LAST_ENDPOINT)).start()
    try:
        p.prepare(1)
        p.begin()
        with pytest.raises(TimeoutError, match="nothing was sent or acknowledged for 0.3 s"):
            p.end(patience=0.3)
        assert p.counters.frames_sent == 0 and p.counters.credit_waits >= 1
    finally:
        p.stop()
        silent.close(0)


def test_malformed_messages_from_the_aggregator_are_counted(tmp_path):
    import msgpack

    ctx = zmq.Context.instance()
    agg = ctx.socket(zmq.ROUTER)
    agg.setsockopt(zmq.LINGER, 0)
    agg.bind("tcp://127.0.0.1:0")
    p = Producer("p", SimSource(1, rate=0, words_per_message=100),
                 agg.getsockopt_string(zmq.LAST_ENDPOINT)).start()
    try:
        assert agg.poll(3000)
        identity = agg.recv_multipart()[0]  # the producer's HELLO
        agg.send_multipart([identity, *Welcome(7).parts()])
        agg.send_multipart([identity, CREDIT, b"\xc1"])
        agg.send_multipart([identity, CREDIT, msgpack.packb({"kilobytes": 1})])
        agg.send_multipart([identity, b"WHAT", b"x", b"y"])
        agg.send_multipart([identity, CREDIT, msgpack.packb({"bytes": 1000})])
        wait_for(lambda: p.snapshot()["bad_messages"] == 3 and p.credit == 1000)
    finally:
        p.stop()
        agg.close(0)


def test_what_a_stop_leaves_unsent_is_counted():
    import msgpack

    ctx = zmq.Context.instance()
    agg = ctx.socket(zmq.ROUTER)  # grants one byte, then nothing
    agg.setsockopt(zmq.LINGER, 0)
    agg.bind("tcp://127.0.0.1:0")
    # a paced board (as a real one): read out while frames wait for credit
    p = Producer("p", SimSource(1, rate=100_000, words_per_message=100),
                 agg.getsockopt_string(zmq.LAST_ENDPOINT)).start()
    try:
        assert agg.poll(3000)
        identity = agg.recv_multipart()[0]  # HELLO
        agg.send_multipart([identity, *Welcome(7).parts()])
        p.prepare(1)
        p.begin()  # data flows from here
        # One byte of credit: one frame goes (overdrawing it), then the producer waits.
        agg.send_multipart([identity, CREDIT, msgpack.packb({"bytes": 1})])
        assert agg.poll(3000) and agg.recv_multipart()[1] == FRAME
        # It holds what it read from the board meanwhile (behind "Beginning run").
        wait_for(lambda: p.counters.credit_waits >= 1 and len(p.backlog) >= 3)
    finally:
        p.stop()
        agg.close(0)
    assert p.counters.frames_sent == 1
    assert p.counters.messages_unsent >= 1


@pytest.mark.parametrize("board, words", [
    ("video", "unknown board"), ("pacman:", "needs a host"), ("pacman:h:x", "bad PACMAN ports"),
    ("replay:", "needs a file"), ("replay:/no/such.h5", "does not exist"),
])
def test_bad_board_specs(board, words):
    with pytest.raises(CommandError, match=words):
        make_source(board, 1)


class FakeClock:
    """The wall clock of a physics-rate source, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_physics_rate_follows_the_board_configuration():
    clock = FakeClock()
    src = SimSource(1, rate="physics", seed=3, clock=clock)
    src.start()

    def a_second() -> np.ndarray:
        """1.1 s of board time, so that exactly one SYNC (each 1e7 ticks) falls in it."""
        packets = []
        for _ in range(11):
            clock.now += 0.1
            packets.extend(src.read(0))
        return decode_data_messages(packets, 1).rows

    trimmed = a_second()
    data = trimmed[trimmed["packet_type"] == 0]
    assert len(data) > 1000
    assert np.count_nonzero(trimmed["packet_type"] == 6) == 1  # one SYNC per second
    src.board.set_threshold(255)  # every channel far above its pedestal: quiet
    quiet = a_second()
    assert np.count_nonzero(quiet["packet_type"] == 0) < len(data) / 20


def test_physics_rate_catches_up_in_bounded_steps_after_a_stall():
    clock = FakeClock()
    src = SimSource(1, rate="physics", seed=3, clock=clock)
    src.start()
    clock.now += 3.0  # the producer was held up (no credit) for 3 s
    reads = 0
    while clock.now - src._t_last > 1e-9:
        src.read(0)
        reads += 1
    assert reads == 6  # 0.5 s of simulated time a read: nothing skipped, nothing huge


@pytest.mark.parametrize("text, words", [("fast", "neither a rate"), ("-5", "negative")])
def test_bad_sim_rate(text, words):
    import argparse

    from larpixdaq.commands.pipeline import sim_rate

    with pytest.raises(argparse.ArgumentTypeError, match=words):
        sim_rate(text)


def test_pacman_board_through_the_client(tmp_path, path):
    from larpixdaq.boards.pacman_emulator import PacmanEmulator
    from larpixdaq.formats.rawfile import open_raw
    from larpixdaq.pipeline.sources.pacman import PacmanSource

    make_producer, store = path
    emu = PacmanEmulator(SimulatedBoard(1, seed=2).bring_up_all(), cmd_port=0, data_port=0,
                         echo_port=0).start()
    try:
        ports = {k: int(v.rsplit(":", 1)[1]) for k, v in emu.endpoints().items()}
        src = PacmanSource(1, "127.0.0.1", ports["cmd"], ports["data"])
        p = make_producer(src)
        p.record_path = tmp_path / "got-{run}.raw"
        summary = _run(store, p, 4, lambda: p.counters.packets_sent > 2000)
    finally:
        emu.stop()
    with open_raw(tmp_path / "got-4.raw") as f:
        msgs, _ = f.read()
    rows = read_run_packets(summary["files"])
    assert np.array_equal(rows[rows["packet_type"] != MESSAGE], decode_data_messages(msgs, 1).rows)
    assert summary["counters"]["packets_lost"] == 0


def test_a_tap_keeps_what_fits_and_counts_the_rest():
    from larpixdaq.pipeline.datatap import DataTap

    tap = DataTap(max_messages=2)
    assert tap.offer([b"a", b"b", b"c"]) == 1
    assert tap.offer([b"d"]) == 1
    assert tap.dropped == 2
    assert tap.take(0.2) == [b"a", b"b"]


def test_a_routine_tap_that_overflows_counts_the_drop_and_the_run_goes_on(path):
    """A routine reading the run's data slower than the board sends: its copy drops what
    does not fit, the producer counts it, nothing raises, and the run loses nothing."""
    make_producer, store = path
    src = SimSource(1, rate=0, words_per_message=20, pool=16)
    p = make_producer(src)
    p.tap_messages = 4
    store.prepare(5, {"run_type": "tap"})
    p.prepare(5)
    p.begin()
    wait_for(lambda: p.counters.frames_sent > 100, timeout=15)
    got = p.read_run_data(0.5)
    assert len(got) > 0
    dropped = p.counters.tap_messages_dropped
    assert dropped > 0
    assert p.snapshot()["tap_messages_dropped"] == dropped
    # Data kept flowing past the overflow, and nothing more is counted once the tap is gone.
    sent = p.counters.packets_sent
    wait_for(lambda: p.counters.packets_sent > sent, timeout=15)
    assert p.counters.tap_messages_dropped == dropped
    p.end()
    summary = store.end()
    assert summary["counters"]["packets_lost"] == 0
    assert summary["counters"]["words_received"] == p.counters.packets_sent


class FakeAggregator:
    """A ROUTER that answers HELLO with WELCOME ``instance`` and grants what the test says."""

    def __init__(self, instance: int = 1) -> None:
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("tcp://127.0.0.1:0")
        self.address = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.instance = instance
        self.identity: bytes | None = None
        self.frames: list = []

    def pump(self, seconds: float = 0.1) -> None:
        """Take what arrived: answer HELLOs, keep frames."""
        deadline = time.monotonic() + seconds
        while self.sock.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            identity, *parts = self.sock.recv_multipart()
            if parts[0] == HELLO:
                self.identity = identity
                self.sock.send_multipart([identity, *Welcome(self.instance).parts()])
            elif parts[0] == FRAME:
                self.frames.append(decode_header(parts[1]))

    def grant(self, nbytes: int) -> None:
        self.sock.send_multipart([self.identity, *Credit(nbytes).parts()])

    def ack(self, source: str, epoch: int, seq: int) -> None:
        self.sock.send_multipart([self.identity, *Ack(((source, epoch, seq),)).parts()])

    def close(self) -> None:
        self.sock.close(0)


def test_frames_are_kept_until_storage_acknowledges_and_sent_again_to_a_new_aggregator():
    agg = FakeAggregator(instance=1)
    src = SimSource(1, rate=0, words_per_message=100)
    p = Producer("p", src, agg.address).start()
    try:
        wait_for(lambda: agg.pump() or agg.identity)
        p.prepare(1)
        p.begin()
        # Credit for ten frames: the configs snapshot, "Beginning run", eight data frames
        # (a frame goes while any credit is left).
        agg.grant(src.configs().nbytes + len(b"Beginning run") + 7 * 1608 + 1)
        wait_for(lambda: agg.pump() or len(agg.frames) >= 10)
        assert [h.seq for h in agg.frames] == list(range(10))
        assert len(p.unacked) == 10
        agg.ack("p", p.epoch, 5)
        wait_for(lambda: p.counters.frames_acked == 6)
        assert [x.seq for x in p.unacked] == [6, 7, 8, 9]
        # Another aggregator process answers the next HELLO: 6..9 go out again, first.
        agg.instance = 2
        agg.frames.clear()
        wait_for(lambda: agg.pump() or p.counters.aggregator_changes == 1, timeout=15)
        agg.grant(20 * 1608)
        wait_for(lambda: agg.pump() or len(agg.frames) >= 8)
        seqs = [h.seq for h in agg.frames]
        assert seqs[:4] == [6, 7, 8, 9] and seqs == list(range(6, 6 + len(seqs)))
        assert p.counters.frames_resent == 4
        assert p.counters.frames_sent == seqs[-1] + 1  # a frame sent twice counts once
    finally:
        p.stop()
        agg.close()


def test_a_board_that_runs_on_its_own_is_read_while_there_is_no_credit_and_spills(tmp_path):
    agg = FakeAggregator()
    src = SimSource(1, rate=200_000, words_per_message=500)
    p = Producer("p", src, agg.address, hold_bytes=50_000, spill_dir=tmp_path).start()
    try:
        wait_for(lambda: agg.pump() or agg.identity)
        p.prepare(1)
        p.begin()
        # No credit: the producer goes on reading the board; beyond 50 kB it spills.
        wait_for(lambda: p.snapshot()["frames_spilled"] >= 20, timeout=15)
        assert not agg.frames and list(tmp_path.glob("spill-p-*.bin"))
        assert p.backlog.mem_bytes <= 50_000 + 8008
        agg.grant(1 << 30)
        read = p.counters.packets_sent
        wait_for(lambda: agg.pump() or p.snapshot()["frames_replayed"] >= 20, timeout=15)
        wait_for(lambda: agg.pump() or p.counters.packets_sent > read + 100_000, timeout=15)
        seqs = [h.seq for h in agg.frames]
        assert seqs == list(range(len(seqs)))  # in order, no hole: held, spilled, replayed
        offsets = [h.offset for h in agg.frames]
        assert offsets == sorted(offsets)
    finally:
        p.stop()
        agg.close()


def test_nothing_is_read_out_before_begin_and_what_arrives_anyway_is_kept_and_counted(path):
    """A run prepared and left waiting: the board is not read out until Begin. What reaches
    the stream meanwhile (the board's output during a configuration action, a routine's
    data) is kept in the run before "Beginning run" and counted."""
    make_producer, store = path
    src = SimSource(1, rate=0, words_per_message=100)  # flat out once read out
    p = make_producer(src)
    store.prepare(7, {"run_type": "test"})
    p.prepare(7)
    early = _board_messages()[:2]
    src.board_output(early[0])  # as during a configuration action in READY
    assert p.send_data([early[1]])  # as a routine does
    wait_for(lambda: p.counters.frames_sent >= 2, timeout=15)
    # The operator waits between prepare and begin; the board is not read meanwhile.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert p.counters.frames_sent == 2, p.counters
        time.sleep(0.05)
    assert p.counters.messages_before_begin == 2
    early_words = p.counters.packets_sent
    p.begin()
    wait_for(lambda: p.counters.packets_sent > early_words + 10_000, timeout=15)
    p.end()
    summary = store.end()
    assert summary["counters"]["packets_lost"] == 0
    rows = read_run_packets(summary["files"])
    markers = np.flatnonzero(rows["packet_type"] == MESSAGE)
    with Hdf5File(summary["files"][0]) as f:
        texts = [m.decode() for m in f.messages()["message"]]
    assert texts == ["Beginning run", "Ending run"]
    before = rows[: markers[0]]
    # both kept, whole (in the order the producer took them: a routine's data first)
    assert any(np.array_equal(before, decode_data_messages(order, 1).rows)
               for order in (early, early[::-1]))
    assert len(rows) - len(before) > 10_000


def test_with_nothing_left_to_send_a_silence_of_acks_finds_a_new_aggregator(tmp_path):
    # A file that ends: once it is sent there is no credit to wait for, only frames not yet
    # acknowledged; an aggregator that died with them is found by the acks' silence.
    raw = tmp_path / "few.raw"
    write_raw(raw, make_few := [encode_data_message(i, SimulatedBoard(1, seed=i)
                                                     .bring_up_all().generate_packets(50)[:50])
                                for i in range(4)], 1)
    src = ReplaySource(raw, io_group=1, speed=0)
    agg = FakeAggregator(instance=1)
    p = Producer("p", src, agg.address).start()
    try:
        wait_for(lambda: agg.pump() or agg.identity)
        p.prepare(1)
        p.begin()
        agg.grant(1 << 20)
        wait_for(lambda: agg.pump() or len(agg.frames) >= len(make_few))
        agg.instance = 2  # the aggregator "restarted" and lost them
        agg.frames.clear()
        wait_for(lambda: agg.pump() or p.counters.aggregator_changes == 1, timeout=15)
        agg.grant(1 << 20)
        wait_for(lambda: agg.pump() or len(agg.frames) >= len(make_few))
        assert [h.seq for h in agg.frames][:len(make_few)] == list(range(len(make_few)))
    finally:
        p.stop()
        agg.close()


class _LateQueue(SimSource):
    """A board whose client has messages queued that the data loop has not read yet when
    the run ends (``late``: handed out only to a read that does not wait, as a PACMAN
    client's queue is drained by the producer's last, non-waiting read)."""

    def __init__(self, late: list[bytes]) -> None:
        # read only when nothing waits to be sent, so the data loop's reads always wait
        super().__init__(1, rate=0, words_per_message=10)
        assert not self.runs_on_its_own
        self.late = list(late)

    def read(self, wait: float) -> list[bytes]:
        if wait == 0.0 and self.late and self._flowing:
            out, self.late = self.late, []
            return out
        return super().read(wait)


def test_what_the_board_delivered_before_the_end_is_in_that_run_not_the_next(path):
    make_producer, store = path
    late = _board_messages()[:1]
    src = _LateQueue(late)
    p = make_producer(src)
    summary = _run(store, p, 8, lambda: p.counters.packets_sent > 50)
    rows = read_run_packets(summary["files"])
    markers = np.flatnonzero(rows["packet_type"] == MESSAGE)
    expected = decode_data_messages(late, 1).rows
    tail = rows[markers[-1] - len(expected):markers[-1]]  # just before "Ending run"
    assert np.array_equal(tail, expected)
    assert src.late == []


def test_a_recording_is_never_replaced(tmp_path):
    first = tmp_path / "sent-1-4.raw"
    assert free_name(first) == first
    first.write_bytes(b"kept")
    (tmp_path / "sent-1-4-2.raw").write_bytes(b"kept too")
    assert free_name(first) == tmp_path / "sent-1-4-3.raw"
    assert first.read_bytes() == b"kept"


def test_an_idle_producer_stays_heard_and_keeps_its_name(tmp_path):
    """Between runs (and in a long READY) nothing flows; the producer still says HELLO, so
    the aggregator never takes it for gone (its credit and, in a run, its name)."""
    agg = Aggregator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", None, peer_timeout=2.0).start()
    p = Producer("idle", SimSource(1, rate=1000), agg.inlet).start()
    try:
        wait_for(lambda: agg.snapshot()["producers"] == 1, timeout=10)
        deadline = time.monotonic() + 5.0  # well past the peer time-out
        while time.monotonic() < deadline:
            snap = agg.snapshot()
            assert snap["producers_silent"] == 0 and snap["producers_expired"] == 0, snap
            time.sleep(0.1)
        assert p.counters.hellos >= 3
    finally:
        p.stop()
        agg.stop()
