"""Each built-in routine against a simulated board, with no DAQ running, checked by numbers
the board's data must give."""

from __future__ import annotations

import numpy as np
import pytest

from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.formats.chipkey import parse_chip_key
from larpixdaq.routines.testing import run_routine_offline

KEYS = ["1-1-11", "1-1-12", "1-2-41", "1-3-61", "1-4-96"]


@pytest.fixture
def board():
    return SimulatedBoard(1, seed=7).bring_up_all()


def rows_of(board, keys):
    return [board.chips.index_of(*parse_chip_key(k)[1:]) for k in keys]


def as_array(lists):
    return np.array([[np.nan if v is None else v for v in row] for row in lists], float)


def test_hello_world_greets_and_says_it_outside_a_run():
    out = run_routine_offline("hello_world", name="LArPix")
    assert out.ok, out.message
    assert out.result == {"greeting": "Hello, LArPix!", "sent_to_data_flow": False}
    assert out.infos == ["Hello, LArPix!"]


def test_quickstart_brings_up_writes_and_verifies(board):
    board.reset_chips()  # a board straight after power-up: nothing configured
    out = run_routine_offline("quickstart", board=board, threshold_global=50)
    assert out.ok, out.message + out.traceback
    assert out.result["chips"] == 100 and out.result["match"] is True
    per_channel = [p for p in out.progress if "io_channel" in p]
    assert [p["io_channel"] for p in per_channel] == [1, 2, 3, 4]
    # chips per io_channel of the v2 tile as wired (the field's layout: 24, 26, 26, 24)
    assert all(p["ok"] for p in per_channel)
    assert [p["chips"] for p in per_channel] == [24, 26, 26, 24]
    assert (board.chips.registers[:, 64] == 50).all()


def test_pedestal_means_match_the_boards_pedestals(board):
    out = run_routine_offline("pedestal", board=board, seconds=3.0, chip_keys=KEYS)
    assert out.ok, out.message + out.traceback
    means = as_array([out.result["chips"][k]["mean"] for k in KEYS])
    stds = as_array([out.result["chips"][k]["std"] for k in KEYS])
    truth = board.physics.pedestal_adc[rows_of(board, KEYS)]
    seen = ~np.isnan(means)
    assert seen.mean() > 0.98  # only dead channels stay silent
    assert np.abs(means[seen] - truth[seen]).max() < 1.5
    assert 0.3 < np.nanmedian(stds) < 2.0
    # restored: the chips are back to their configuration (self-triggering, no periodic)
    assert (board.chips.registers[rows_of(board, KEYS), 64] != 255).all()


def test_threshold_scan_rate_falls_with_threshold(board):
    out = run_routine_offline("threshold_scan", board=board, start=24, stop=48, step=4,
                              dwell=0.2, chip_keys=KEYS)
    assert out.ok, out.message + out.traceback
    rates = np.array(out.result["total_rate"])
    assert out.result["thresholds"] == [24, 28, 32, 36, 40, 44, 48]
    assert rates[0] > 1000 * max(rates[-1], 1.0)
    # never rises, within noise and the cosmic rays that cross these chips during a 0.2 s
    # dwell (one track leaves up to ~10 hits on a chip: 50 Hz)
    assert (np.diff(rates) <= 0.05 * rates[:-1] + 100).all()
    per_chan = np.array(out.result["chips"][KEYS[0]])
    assert per_chan.shape == (7, 64)
    assert len([p for p in out.progress if "threshold" in p]) == 7


def test_testpulse_adc_rises_with_dac(board):
    out = run_routine_offline("testpulse", board=board, amplitudes=[30, 60, 90, 120],
                              pulses=3, chip_keys=KEYS)
    assert out.ok, out.message + out.traceback
    mean = np.array(out.result["mean_adc"])
    assert (np.diff(mean) > 10).all()
    assert all(h > 0 for h in out.result["hits"])
    per_chan = as_array(out.result["chips"][KEYS[0]])
    rising = np.diff(per_chan, axis=0)
    assert np.nanmin(rising) > 0


def test_trim_brings_channels_near_the_target_rate(board):
    out = run_routine_offline("trim", board=board, target_rate=5.0, dwell=0.5,
                              threshold_global=35, chip_keys=KEYS)
    assert out.ok, out.message + out.traceback
    assert out.result["converged"] == out.result["channels"] > 0
    trims = np.array([out.result["chips"][k] for k in KEYS])
    assert len(np.unique(trims)) > 3  # channels got trims of their own
    rates = board.physics.channel_rates(np.ones(board.chips.n, bool))[rows_of(board, KEYS)]
    live = rates > 0
    assert np.median(rates[live]) < 20

