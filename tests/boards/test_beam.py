"""Beam spills on the simulated board: the schedule, the TRIG words, the activity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.boards.beam import Beam, interactions
from larpixdaq.boards.physics import TICKS_PER_SECOND
from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.formats import rows as R
from larpixdaq.formats.pacman import decode_data_messages, encode_data_message
from larpixdaq.pipeline.sources.sim import SimSource


def _rows(words: np.ndarray, io_group: int = 1) -> np.ndarray:
    msgs = [encode_data_message(0, words[i:i + 50_000]) for i in range(0, len(words), 50_000)]
    return decode_data_messages(msgs, io_group).rows


@given(st.floats(0.01, 5.0), st.integers(0, 10**8), st.integers(1, 3 * 10**7),
       st.integers(0, 3 * 10**7))
@settings(max_examples=60, deadline=None)
def test_spills_tile_time_without_gaps_or_repeats(period, t0, span, cut):
    beam = Beam(period_s=period)
    p = beam.period_ticks(TICKS_PER_SECOND)
    whole = beam.spills(t0, t0 + span, TICKS_PER_SECOND)
    mid = t0 + min(cut, span)
    parts = np.concatenate([beam.spills(t0, mid, TICKS_PER_SECOND),
                            beam.spills(mid, t0 + span, TICKS_PER_SECOND)])
    assert parts.tolist() == whole.tolist()
    assert np.all(whole % p == 0) and np.all(whole > 0)
    assert np.all((whole >= t0) & (whole < t0 + span))
    # every multiple of the period in the window is there
    expected = [k * p for k in range(max(1, -(-t0 // p)), (t0 + span - 1) // p + 1)]
    assert whole.tolist() == expected


@given(st.integers(0, 40), st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_interaction_segments_stay_on_the_tile(n, seed):
    seg = interactions(np.random.default_rng(seed), n, 310.0, 310.0, 300.0)
    for a in (seg.x0, seg.x1):
        assert np.all((a >= 0) & (a < 310.0))
    for a in (seg.y0, seg.y1):
        assert np.all((a >= 0) & (a < 310.0))
    assert np.all((seg.z0 >= 0) & (seg.z1 <= 300.0))
    assert np.all((seg.interaction >= 0) & (seg.interaction < max(n, 1)))
    if n:  # every interaction has at least two tracks from its vertex, which is on the tile
        assert set(seg.interaction.tolist()) == set(range(n))


def test_bad_beam_values_are_refused():
    for kw in ({"period_s": 0.0}, {"period_s": float("nan")}, {"interactions": -1.0},
               {"trigger_type": 256}):
        with pytest.raises(ValueError):
            Beam(**kw)


def test_trigger_words_at_the_spills_and_activity_in_coincidence():
    board = SimulatedBoard(3, tiles=2, seed=5, beam=Beam(period_s=1.2, interactions=3.0))
    rows = _rows(board.bring_up_all().generate(6.5), 3)
    trig = rows[rows["packet_type"] == R.TRIGGER]
    # spills at 1.2, 2.4, ... 6.0 s; the TRIG time is the spill's tick on the PACMAN clock
    want = [round(k * 1.2 * TICKS_PER_SECOND) % TICKS_PER_SECOND for k in range(1, 6)]
    assert trig["timestamp"].tolist() == want
    assert set(trig["trigger_type"].tolist()) == {2} and set(trig["io_group"].tolist()) == {3}
    assert np.count_nonzero(rows["packet_type"] == R.SYNC) == 6
    # hits within 250 us after each spill (drift + spill length) vs 250 us windows elsewhere
    data = rows[rows["packet_type"] == R.DATA]
    ts = data["timestamp"].astype(np.int64)
    near = [np.count_nonzero((ts >= t) & (ts < t + 2500)) for t in want]
    quiet = [np.count_nonzero((ts >= t) & (ts < t + 2500)) for t in
             (np.array(want) + TICKS_PER_SECOND // 3) % TICKS_PER_SECOND]
    # (timestamps restart each second, so each window collects the same 250 us of 6 seconds)
    assert min(near) > 3 * max(max(quiet), 5), (near, quiet)


def test_no_trigger_words_where_the_trigger_is_not_wired():
    beam = Beam(trigger=False, interactions=3.0)
    rows = _rows(SimulatedBoard(2, seed=1, beam=beam).bring_up_all().generate(3.0), 2)
    assert np.count_nonzero(rows["packet_type"] == R.TRIGGER) == 0
    plain = _rows(SimulatedBoard(2, seed=1).bring_up_all().generate(3.0), 2)
    assert np.count_nonzero(plain["packet_type"] == R.TRIGGER) == 0
    # the activity is there even without the trigger word: more hits than without a beam
    assert (np.count_nonzero(rows["packet_type"] == R.DATA) >
            np.count_nonzero(plain["packet_type"] == R.DATA))


def test_fast_path_carries_sync_and_trigger_words_in_time_order():
    board = SimulatedBoard(1, seed=2, beam=Beam(period_s=0.5)).bring_up_all()
    words = board.generate_packets(200_000, markers=True)
    rows = _rows(words)
    seconds = board.time
    syncs = np.count_nonzero(rows["packet_type"] == R.SYNC)
    trigs = np.count_nonzero(rows["packet_type"] == R.TRIGGER)
    assert syncs == int(seconds) and trigs == int(seconds / 0.5 + 1e-9)
    assert np.count_nonzero(rows["packet_type"] == R.DATA) >= 200_000
    # without markers: data only, as before
    plain = _rows(SimulatedBoard(1, seed=2).bring_up_all().generate_packets(50_000))
    assert set(plain["packet_type"].tolist()) <= {R.DATA, R.TIMESTAMP}


def test_sim_source_at_a_fixed_rate_sends_sync_words():
    src = SimSource(1, rate=0.0, seed=4, words_per_message=4096, beam=Beam(period_s=0.2))
    src.start()
    msgs = []
    while src.board.time < 2.5:
        msgs += src.read(0.1)
    rows = decode_data_messages(msgs, 1).rows
    assert np.count_nonzero(rows["packet_type"] == R.SYNC) == int(src.board.time)
    assert np.count_nonzero(rows["packet_type"] == R.TRIGGER) >= 10
