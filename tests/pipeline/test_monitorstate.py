"""The monitor's accumulators, with numbers small enough to check by hand."""

from __future__ import annotations

import json

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.formats.packets import encode_packets
from larpixdaq.formats.pacman import data_words, encode_data_message
from larpixdaq.pipeline.monitorstate import MonitorState, tile_of
from larpixdaq.pipeline.protocol import STATS, FrameHeader, parse_monitor_message

T0 = 1000.0


def message(chip: int, channel: int, n: int, *, adc: int = 5, io_channel: int = 1,
            fifo: int = 0, bad_parity: bool = False) -> bytes:
    packets = encode_packets(packet_type=0, chip_id=np.full(n, chip),
                             channel_id=np.full(n, channel), dataword=adc, local_fifo=fifo,
                             timestamp=np.arange(n))
    if bad_parity:
        packets = packets ^ np.uint64(1 << 63)
    return encode_data_message(1_700_000_000, data_words(io_channel, packets))


class Stream:
    """Frames of one producer stream, with seq and offsets kept as a producer does."""

    def __init__(self, source: str = "p1", io_group: int = 1, run: int = 7, epoch: int = 1):
        self.source, self.io_group, self.run, self.epoch = source, io_group, run, epoch
        self.seq = 0
        self.offset = 0

    def data(self, payload: bytes) -> tuple[FrameHeader, bytes]:
        h = FrameHeader(self.source, self.epoch, self.seq, self.io_group, self.run, 5.0, "data",
                        self.offset)
        self.seq += 1
        self.offset += (len(payload) - 8) // 16
        return h, payload

    def info(self, text: str) -> tuple[FrameHeader, bytes]:
        h = FrameHeader(self.source, self.epoch, self.seq, self.io_group, self.run, 6.0, "info",
                        self.offset)
        self.seq += 1
        return h, text.encode()


def feed(state: MonitorState, frames: list, now: float) -> None:
    state.add([f[0] for f in frames], [f[1] for f in frames], now)


@pytest.fixture
def state() -> MonitorState:
    s = MonitorState()
    s.reset(T0, run_number=7)
    return s


# Pixel numbers of the hit map: row from the top * 70 + column, with (column, row) of
# (chip, channel) as the field's multi_tile_layout-2.3.16.yaml gives them
PIXEL_11_0 = (69 - 68) * 70 + 3  # 11000: [3, 68]
PIXEL_12_1 = (69 - 69) * 70 + 9  # 12001: [9, 69]
PIXEL_110_63 = (69 - 6) * 70 + 66  # 110063: [66, 6]


def tile_map(snap: dict, io_group: int = 1, tile: int = 1) -> dict:
    return next(t for t in snap["tiles"] if t["io_group"] == io_group and t["tile"] == tile)


def test_one_second_of_hits_lands_on_its_pixel(state):
    s = Stream()
    feed(state, [s.data(message(11, 0, 10, adc=5))], T0 + 0.2)
    snap = state.snapshot(T0 + 1.1)
    assert snap["rate"]["last_second"] == 10
    pixel = PIXEL_11_0
    tm = tile_map(snap)
    assert tm["rate"][pixel] == 10 and tm["max"][pixel] == 10 and tm["hits"][pixel] == 10
    assert sum(tm["rate"]) == 10
    assert snap["adc"][5] == 10 and sum(snap["adc"]) == 10
    assert snap["chips"] == [{"key": "1-1-11", "io_group": 1, "io_channel": 1, "chip_id": 11,
                              "rate": 10.0, "max": 10.0, "hits": 10, "adc_mean": 5.0,
                              "adc_width": 0.0}]
    assert snap["counters"]["packets_seen"] == 10
    assert snap["fraction_seen"] == {"frames": 1.0, "words": 1.0}
    assert len(snap["recent"]["chip_id"]) == 10
    json.dumps(snap)  # everything is plain JSON


def test_missed_frames_scale_the_rate_and_are_declared(state):
    s = Stream()
    seen1 = s.data(message(11, 0, 10))
    s.data(message(11, 0, 10))  # the aggregator did not sample this one
    seen2 = s.data(message(11, 0, 10))
    feed(state, [seen1, seen2], T0 + 0.5)
    snap = state.snapshot(T0 + 1.0)
    # 20 packets decoded out of 30 words that went by: 30 packets/s
    assert snap["rate"]["last_second"] == 30
    assert snap["rate"]["scale"] == 1.5
    assert snap["fraction_seen"]["frames"] == pytest.approx(2 / 3)
    assert snap["fraction_seen"]["words"] == pytest.approx(2 / 3)
    assert snap["streams"] == [{"source": "p1", "epoch": 1, "io_group": 1, "frames_seen": 2,
                                "frames_total": 3, "words_seen": 20, "words_total": 30}]
    pixel = PIXEL_11_0
    assert tile_map(snap)["rate"][pixel] == 30
    assert tile_map(snap)["hits"][pixel] == 20  # hits are what was seen


def test_max_keeps_the_busiest_second_and_history_has_every_second(state):
    s = Stream()
    feed(state, [s.data(message(12, 1, 10))], T0 + 0.5)
    feed(state, [s.data(message(12, 1, 4))], T0 + 1.5)
    snap = state.snapshot(T0 + 4.2)  # seconds 2 and 3 had nothing
    assert [h[:2] for h in snap["history"]] == [[0, 10.0], [1, 4.0], [2, 0.0], [3, 0.0]]
    assert snap["rate"]["average"] == 3.5
    assert snap["rate"]["since_start"] == 3.5  # 14 packets in 4 closed seconds
    pixel = PIXEL_12_1
    tm = tile_map(snap)
    assert tm["max"][pixel] == 10 and tm["rate"][pixel] == 0


def test_history_keeps_the_last_100_seconds(state):
    s = Stream()
    for sec in range(130):
        feed(state, [s.data(message(11, 0, 1 + sec % 3))], T0 + sec + 0.5)
    snap = state.snapshot(T0 + 130.5)
    assert len(snap["history"]) == 100
    assert snap["history"][0][0] == 30 and snap["history"][-1][0] == 129


def test_reset_forgets_the_run(state):
    s = Stream()
    feed(state, [s.data(message(11, 0, 10)), s.info("Beginning run")], T0 + 0.5)
    state.add_bad("bad_header")
    state.reset(T0 + 10, run_number=8)
    snap = state.snapshot(T0 + 12)
    assert snap["run_number"] == 8
    assert snap["tiles"] == [] and snap["chips"] == [] and snap["messages"] == []
    assert sum(snap["adc"]) == 0 and snap["counters"]["bad_frames"] == 0
    assert snap["fraction_seen"] == {"frames": None, "words": None}


def test_messages_parity_and_fifo_are_counted(state):
    s = Stream()
    feed(state, [s.info("Beginning run"), s.data(message(11, 0, 3, bad_parity=True)),
                 s.data(message(11, 1, 50, fifo=2))], T0 + 0.5)
    snap = state.snapshot(T0 + 1.0)
    assert [m["text"] for m in snap["messages"]] == ["Beginning run"]
    assert snap["counters"]["parity_errors"] == 3
    assert snap["counters"]["fifo_full_packets"] == 50
    kinds = {a["kind"] for a in snap["alarms"]}
    assert {"parity", "fifo_loss"} <= kinds
    assert snap["recent"]["valid_parity"][:3] == [0, 0, 0]


def test_bad_frames_and_bad_messages_are_counted_by_kind(state):
    s = Stream()
    state.add_bad("bad_header")
    state.add_bad("bad_parts", 2)
    feed(state, [s.data(b"D\x00"), s.data(b"?" + bytes(7)), s.data(message(11, 0, 2))],
         T0 + 0.5)
    snap = state.snapshot(T0 + 1.0)
    assert snap["counters"]["bad_frames"] == 3
    assert snap["decode_errors"] == {"bad_header": 1, "bad_parts": 2, "truncated_header": 1,
                                     "not_data_message": 1}
    assert snap["counters"]["packets_seen"] == 2  # the good message of the batch still counts
    assert any(a["kind"] == "decode_errors" for a in snap["alarms"])


def test_hot_channel_raises_an_alarm(state):
    s = Stream()
    frames = [s.data(message(11 + k, 0, 2)) for k in range(20)]
    frames.append(s.data(message(30, 3, 500)))
    feed(state, frames, T0 + 0.5)
    snap = state.snapshot(T0 + 1.0)
    hot = [a for a in snap["alarms"] if a["kind"] == "hot_channel"]
    assert [a["key"] for a in hot] == ["1-1-30/3"]


def test_silent_chip_and_io_group(state):
    a, b = Stream("p1", 1), Stream("p2", 2)
    feed(state, [a.data(message(11, 0, 5)), b.data(message(11, 0, 5))], T0 + 0.5)
    for sec in range(1, 8):
        feed(state, [a.data(message(12, 0, 5))], T0 + sec + 0.5)
    snap = state.snapshot(T0 + 8.0)
    keys = {(x["kind"], x["key"]) for x in snap["alarms"]}
    assert ("silent_chip", "1-1-11") in keys and ("silent_chip", "2-1-11") in keys
    assert ("silent_chip", "1-1-12") not in keys
    assert ("silent_io_group", "2") in keys and ("silent_io_group", "1") not in keys


def test_every_tile_and_io_group_gets_a_map_and_off_tile_chips_are_kept(state):
    a, b = Stream("p1", 1), Stream("p2", 3)
    feed(state, [a.data(message(11, 0, 2, io_channel=1)), a.data(message(11, 0, 3, io_channel=6)),
                 b.data(message(110, 63, 4, io_channel=16)),
                 a.data(message(5, 0, 7)), a.data(message(11, 6, 1))], T0 + 0.5)
    snap = state.snapshot(T0 + 1.0)
    assert [(t["io_group"], t["tile"]) for t in snap["tiles"]] == [(1, 1), (1, 2), (3, 4)]
    assert len(tile_map(snap, 3, 4)["rate"]) == 4900
    assert tile_map(snap, 3, 4)["rate"][PIXEL_110_63] == 4
    assert sum(tile_map(snap, 1, 1)["hits"]) == 2  # chip 5 and unrouted channel 6: no pixel
    assert snap["counters"]["off_tile_hits"] == 8
    assert {c["key"] for c in snap["chips"]} == {"1-1-11", "1-6-11", "3-16-110", "1-1-5"}
    assert tile_of(1) == 1 and tile_of(4) == 1 and tile_of(5) == 2 and tile_of(0) == 1


def test_other_runs_and_duplicates_are_not_counted(state):
    s = Stream(run=6)
    feed(state, [s.data(message(11, 0, 5))], T0 + 0.2)
    ok = Stream(run=7)
    frame = ok.data(message(11, 0, 5))
    feed(state, [frame, frame], T0 + 0.3)
    snap = state.snapshot(T0 + 1.0)
    assert snap["counters"]["frames_other_run"] == 1
    assert snap["counters"]["duplicate_frames"] == 1
    assert snap["counters"]["packets_seen"] == 5


def test_mismatched_batch_is_refused(state):
    with pytest.raises(ValueError, match="one payload per header"):
        state.add([Stream().data(message(11, 0, 1))[0]], [], T0)


def test_aggregator_stats_are_kept(state):
    state.add_stats(parse_monitor_message(
        [STATS, msgpack.packb({"counters": {"frames_in": 12, "junk": "x"}})]))
    state.add_stats(parse_monitor_message([STATS, msgpack.packb("not a map")]))
    assert state.snapshot(T0)["aggregator"] == {"frames_in": 12}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4),  # second the frame arrives in
                          st.integers(1, 12),  # io_channel
                          st.integers(0, 120),  # chip id
                          st.integers(0, 63),  # channel
                          st.integers(1, 30),  # packets
                          st.booleans()),  # sampled?
                min_size=1, max_size=25))
def test_counts_add_up_whatever_is_sampled(frames):
    state = MonitorState()
    state.reset(T0, run_number=7)
    s = Stream()
    seen_words = total_words = seen_packets = 0
    for sec, io_channel, chip, channel, n, sampled in sorted(frames, key=lambda f: f[0]):
        frame = s.data(message(chip, channel, n, io_channel=io_channel))
        total_words += n
        if sampled:
            feed(state, [frame], T0 + sec + 0.5)
            seen_words += n
            seen_packets += n
    snap = state.snapshot(T0 + 6.0)
    c = snap["counters"]
    assert c["data_packets_seen"] == seen_packets == sum(snap["adc"])
    assert sum(ch["hits"] for ch in snap["chips"]) == seen_packets
    assert sum(sum(t["hits"]) for t in snap["tiles"]) + c["off_tile_hits"] == seen_packets
    if seen_words:
        # Words after the last sampled frame are unknown to the monitor: the share seen is
        # measured up to the furthest frame it saw.
        furthest = snap["streams"][0]["words_total"]
        assert snap["fraction_seen"]["words"] == pytest.approx(seen_words / furthest)
        assert furthest <= total_words
        assert snap["packets_estimate"] == pytest.approx(furthest, abs=1)
    assert all(h[1] >= 0 for h in snap["history"])


# --- timing words, ADC per channel, the detector's tiles ------------------------------------

def timing_message(kind: str, times: list[int], *, trigger_type: int = 2,
                   with_data: int = 0) -> bytes:
    """SYNC (``kind`` "sync") or TRIG words at ``times``, after ``with_data`` data packets."""
    from larpixdaq.formats.pacman import concat_words, sync_words, trig_words

    words = sync_words(times) if kind == "sync" else trig_words(times, trigger_type)
    parts = [words]
    if with_data:
        packets = encode_packets(packet_type=0, chip_id=np.full(with_data, 11),
                                 channel_id=np.zeros(with_data, int), dataword=5,
                                 timestamp=np.arange(with_data))
        parts.insert(0, data_words(1, packets))
    return encode_data_message(1_700_000_000, concat_words(parts))


def test_trigger_words_give_a_trigger_rate_per_second_and_io_group(state):
    a, b = Stream("p1", 1), Stream("p2", 2)
    feed(state, [a.data(timing_message("trig", [100, 200, 300])),
                 b.data(timing_message("trig", [400], with_data=3))], T0 + 0.3)
    feed(state, [a.data(timing_message("trig", [500]))], T0 + 1.4)
    snap = state.snapshot(T0 + 2.1)
    assert snap["triggers"]["seen"] == 5
    assert snap["triggers"]["by_io_group"] == {"1": 4, "2": 1}
    assert [h[3] for h in snap["history"]] == [4.0, 1.0]
    assert snap["triggers"]["last_second"] == 1.0
    assert snap["counters"]["trigger_words"] == 5


def test_an_io_group_without_sync_raises_missing_sync_and_one_with_it_does_not(state):
    a, b = Stream("p1", 1), Stream("p2", 2)
    for sec in range(6):
        now = T0 + sec + 0.5
        feed(state, [a.data(message(11, 0, 5)),
                     b.data(timing_message("sync", [10_000_000], with_data=5))], now)
        alarms = {(x["kind"], x["key"]) for x in state.snapshot(now + 0.1)["alarms"]}
        assert ("missing_sync", "2") not in alarms
        # io_group 1 never sends a SYNC: after 3 s of data seen in full the alarm is up
        assert (("missing_sync", "1") in alarms) == (sec >= 3), (sec, alarms)
    # once io_group 1 sends a SYNC the alarm clears
    feed(state, [a.data(timing_message("sync", [10_000_000], with_data=5))], T0 + 6.5)
    kinds = {(x["kind"], x["key"]) for x in state.snapshot(T0 + 6.6)["alarms"]}
    assert ("missing_sync", "1") not in kinds


def test_missing_sync_waits_longer_when_the_monitor_sees_a_sample(state):
    """Seeing a quarter of the words, 3 s without a SYNC is not yet suspicious: 12 s is."""
    a = Stream("p1", 1)
    for sec in range(14):
        now = T0 + sec + 0.5
        h, payload = a.data(message(11, 0, 5))
        a.offset += 3 * 5  # three frames of the same size went by unseen
        feed(state, [(h, payload)], now)
        on = any(x["kind"] == "missing_sync" for x in state.snapshot(now + 0.1)["alarms"])
        assert on == (sec >= 12), sec


def test_adc_mean_and_width_per_pixel(state):
    s = Stream()
    # chip 11 channel 0: ADC 10 x 3 and 20 x 1 -> mean 12.5, width sqrt(18.75)
    feed(state, [s.data(message(11, 0, 3, adc=10)), s.data(message(11, 0, 1, adc=20)),
                 s.data(message(12, 1, 4, adc=7))], T0 + 0.5)
    tm = tile_map(state.snapshot(T0 + 1.2))
    assert tm["adc_mean"][PIXEL_11_0] == 12.5
    assert tm["adc_width"][PIXEL_11_0] == round(18.75 ** 0.5, 2)
    assert tm["adc_mean"][PIXEL_12_1] == 7 and tm["adc_width"][PIXEL_12_1] == 0
    # a pixel without data has no pedestal (null), not a zero one
    assert tm["adc_mean"][PIXEL_110_63] is None and tm["adc_width"][PIXEL_110_63] is None
    json.dumps(tm)


@given(st.lists(st.tuples(st.sampled_from([(11, 0), (12, 1), (110, 63)]),
                          st.integers(0, 255)), min_size=1, max_size=60))
@settings(max_examples=40, deadline=None)
def test_adc_per_pixel_matches_a_direct_mean_and_std(hits):
    state = MonitorState()
    state.reset(T0, run_number=7)
    s = Stream()
    feed(state, [s.data(message(c, ch, 1, adc=adc)) for (c, ch), adc in hits], T0 + 0.5)
    tm = tile_map(state.snapshot(T0 + 1.5))
    for (chip, channel), pixel in (((11, 0), PIXEL_11_0), ((12, 1), PIXEL_12_1),
                                   ((110, 63), PIXEL_110_63)):
        values = [adc for key, adc in hits if key == (chip, channel)]
        if not values:
            assert tm["adc_mean"][pixel] is None
            continue
        assert tm["adc_mean"][pixel] == pytest.approx(float(np.mean(values)), abs=0.006)
        assert tm["adc_width"][pixel] == pytest.approx(float(np.std(values)), abs=0.01)


def test_only_the_tiles_asked_for_carry_pixel_maps(state):
    s = Stream()
    feed(state, [s.data(message(11, 0, 2, io_channel=1)),
                 s.data(message(11, 0, 3, io_channel=5))], T0 + 0.5)
    snap = state.snapshot(T0 + 1.1, pixels=["1/2"])
    one, two = tile_map(snap, 1, 1), tile_map(snap, 1, 2)
    assert "rate" not in one and one["hits_total"] == 2 and one["rate_total"] == 2
    assert two["hits"][PIXEL_11_0] == 3 and len(two["adc_mean"]) == 4900


def test_with_the_2x2_a_uart_feeds_the_tile_the_layout_says():
    from larpixdaq.geometry import load_detector
    from larpixdaq.pipeline.tilemap import TileMap

    det = load_detector("2x2")
    tiles = TileMap(det)
    state = MonitorState(tiles=tiles)
    state.reset(T0, run_number=7)
    # a UART of io_group 3 and the layout's tile behind it (found from the detector itself)
    key = int(det.keys[np.flatnonzero((det.keys >> 16) == 3)[40]])
    io_channel, chip = (key >> 8) & 0xFF, key & 0xFF
    where = det.locate(3, io_channel, chip, np.arange(64))
    tile = int(where.tile[where.tile >= 0][0])
    channel = int(np.flatnonzero(where.tile >= 0)[0])
    feed(state, [Stream("p3", 3).data(message(chip, channel, 4, io_channel=io_channel))],
         T0 + 0.5)
    snap = state.snapshot(T0 + 1.2)
    assert [(t["io_group"], t["tile"]) for t in snap["tiles"]] == [(3, tile)]
    entry = snap["tiles"][0]
    assert entry["module"] == 2 and entry["anode"] == int(where.anode[channel])
    assert sum(entry["hits"]) == 4
    # the tile's place: its pixel centre lies within the tile around the centre given
    x, y = float(where.x[channel]), float(where.y[channel])
    assert abs(x - entry["x_mm"]) < 160 and abs(y - entry["y_mm"]) < 160
    table = snap["detector"]["tiles"]
    assert snap["detector"]["name"] == "2x2" and len(table) == 64
    assert {t["io_group"] for t in table} == set(range(1, 9))


def test_without_a_choice_only_the_first_eight_tiles_carry_pixel_maps(state):
    s = Stream()
    # io_channels 1, 5, ..., 37: ten standard tiles of io_group 1
    feed(state, [s.data(message(11, 0, 1, io_channel=4 * k + 1)) for k in range(10)], T0 + 0.5)
    snap = state.snapshot(T0 + 1.1)
    with_maps = [t["tile"] for t in snap["tiles"] if "rate" in t]
    assert with_maps == list(range(1, 9))
    assert [t["hits_total"] for t in snap["tiles"]] == [1] * 10
