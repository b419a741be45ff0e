"""Register-driven physics: thresholds, masks, FIFOs, cosmic tracks, test pulses, triggers."""

from __future__ import annotations

import numpy as np
import pytest

from larpixdaq.boards import physics as ph
from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.formats import packets as pk
from larpixdaq.geometry import standard_tile

ROUTED = standard_tile().routed
PITCH_MM = 4.434  # the v2 tile's pixel pitch (layout 2.4.0)


@pytest.fixture(scope="module")
def board() -> SimulatedBoard:
    return SimulatedBoard(tiles=1, seed=3).bring_up_all()


def fresh(seed: int = 3, **kw: object) -> SimulatedBoard:
    return SimulatedBoard(tiles=1, seed=seed, **kw).bring_up_all()


def data_fields(words: np.ndarray) -> dict[str, np.ndarray]:
    return pk.decode_fields(words[words["type"] == ord("D")]["packet"])


def test_rate_follows_threshold() -> None:
    b = fresh()
    totals = []
    for thr in (0, 20, 30, 40, 60, 255):
        b.set_threshold(thr)
        totals.append(b.physics.channel_rates(b._active()).sum())
    assert all(a >= c * (1 - 1e-9) for a, c in zip(totals, totals[1:], strict=False))
    # flooded: each of the 4 hydra networks delivers what its UART to the PACMAN carries
    assert totals[0] == pytest.approx(4 * ph.link_capacity(ph.DEFAULT_UART_RATIO))
    assert totals[-1] == 0.0
    assert totals[0] > 1000 * max(totals[4], 1.0)


def test_sensible_configuration_is_a_few_hz(board: SimulatedBoard) -> None:
    rates = board.physics.channel_rates(board._active())
    live = rates[:, np.flatnonzero(ROUTED)]
    live = live[live > 0]
    assert 0.5 < np.median(live) < 10.0
    # unrouted channels are masked by the set-up
    assert (rates[:, np.flatnonzero(~ROUTED)] == 0).all()


def test_hot_and_dead_channels(board: SimulatedBoard) -> None:
    p = board.physics
    assert p.hot.sum() > 0 and p.dead.sum() > 0
    rates = p.channel_rates(board._active())
    routed = np.broadcast_to(ROUTED, rates.shape)
    assert (rates[p.dead] == 0).all()
    hot = p.hot & routed
    assert np.median(rates[hot]) > 100 * np.median(rates[routed & ~p.hot & ~p.dead])


def test_masks_csa_and_trim_are_respected() -> None:
    b = fresh()
    b.set_threshold(0)
    chips = b.chips
    chips.write_field("channel_mask", np.r_[np.zeros(32), np.ones(32)].astype(int), [0])
    chips.write_field("csa_enable", np.r_[np.zeros(16), np.ones(48)].astype(int), [0])
    rates = b.physics.channel_rates(b._active())
    assert (rates[0, 32:] == 0).all() and (rates[0, :16] == 0).all()
    alive = ~b.physics.dead[0, 16:32]
    assert (rates[0, 16:32][alive] > 0).all()
    # a higher trim moves one channel's threshold up and its rate down
    c = fresh()
    c.set_threshold(int(np.round(c.physics.pedestal_dac[1, 0] + 3)))
    before = c.physics.channel_rates(c._active())[1, 0]
    trims = np.full(64, 16)
    trims[0] = 31
    c.chips.write_field("pixel_trim_dac", trims, [1])
    after = c.physics.channel_rates(c._active())[1, 0]
    assert after < before / 5


def test_fifo_flags_when_overloaded() -> None:
    b = fresh()
    quiet = data_fields(b.generate(0.2))
    assert (quiet["shared_fifo"] == 0).all()
    b.set_threshold(0)
    f = data_fields(b.generate(0.002))
    assert f["packet_type"].size > 0
    assert (f["shared_fifo"] == 3).all()
    assert (f["local_fifo"] == 3).mean() > 0.9
    # a flooded chip is limited to its capacity
    per_chip = np.bincount(f["chip_id"].astype(int), minlength=111)[11:]
    assert per_chip.max() <= ph.CHIP_CAPACITY * 0.002 * 1.2


def test_uart_clock_ratio_sets_the_link_capacity() -> None:
    b = fresh()
    b.set_threshold(0)
    per_ratio = {}
    for ratio in (4, 2, 8):
        for ch in range(1, 5):
            b.pacman_write(0x2000 + 0x1000 * ch + 0x10, ratio)
        b.generate(0.001)
        words = data_fields(b.generate(0.05))
        per_ratio[ratio] = words["packet_type"].size / 0.05
    for ratio, rate in per_ratio.items():
        assert rate == pytest.approx(4 * 1e7 / ratio / 66, rel=0.05)
    b.set_threshold(255)
    b.chips.write_field("channel_mask", 1)
    quiet = data_fields(b.generate(0.05))
    assert quiet["packet_type"].size < 100


def test_dead_channels_never_send(board: SimulatedBoard) -> None:
    b = fresh()
    b.set_threshold(0)
    f = data_fields(b.generate(0.003))
    id_to_row = {int(b.chips.design_id[i]): i for i in range(b.chips.n)}
    dead = b.physics.dead
    rows = np.array([id_to_row[int(c)] for c in f["chip_id"]])
    assert not dead[rows, f["channel_id"].astype(int)].any()


def test_cosmic_tracks_give_clustered_hits() -> None:
    b = fresh(seed=11)
    p = b.physics
    state = p._state(b._active())
    tick, flat, adc, ttype = p._cosmics(state, 0, 20 * ph.TICKS_PER_SECOND)
    assert tick.size > 200 and (ttype == 0).all()
    chip_rows, chans = flat // 64, flat % 64
    assert ROUTED[chans].all()
    x, y = standard_tile().chip_xy(b.chips.design_id[chip_rows], chans)
    order = np.argsort(tick)
    tick, x, y, adc = tick[order], x[order], y[order], adc[order]
    split = np.flatnonzero(np.diff(tick) > 5000) + 1
    clustered = total = short = n_clusters = 0
    for idx in np.split(np.arange(tick.size), split):
        if idx.size < 3:
            continue
        dx = x[idx, None] - x[None, idx]
        dy = y[idx, None] - y[None, idx]
        d = np.hypot(dx, dy) + np.eye(idx.size) * 1e9
        clustered += int((d.min(axis=1) < 1.5 * PITCH_MM).sum())
        total += idx.size
        n_clusters += 1
        short += int(np.ptp(tick[idx]) <= ph.DRIFT_MM * ph.TICKS_PER_MM + 1)
    assert total > 100 and clustered / total > 0.9
    assert short / n_clusters > 0.9  # a track's hits span at most the drift time
    ped = p.pedestal_adc[chip_rows[order], chans[order]]
    assert (adc > ped).all()


def test_test_pulse_charge_sets_adc() -> None:
    b = fresh()
    c = int(np.flatnonzero(~b.physics.dead[0] & ROUTED)[0])
    only_c = np.ones(64, int)
    only_c[c] = 0
    b.chips.write_field("csa_testpulse_enable", only_c, [0])
    b.chips.write_field("channel_mask", only_c, [0])
    cid = int(b.chips.design_id[0])
    ch = int(b.chips.io_channel[0])

    def pulse(*values: int) -> np.ndarray:
        for v in values:
            b.transmit(ch, pk.encode_packets(packet_type=pk.CONFIG_WRITE, chip_id=cid,
                                             register_address=108, register_data=v))
        f = data_fields(b.generate(0.001))
        return f["dataword"][(f["chip_id"] == cid) & (f["channel_id"] == c)]

    small, large = pulse(255, 215), pulse(255, 55)
    assert small.size == 1 and large.size == 1
    assert int(large[0]) > int(small[0]) + 50
    assert pulse(55, 200).size == 0  # a rising step injects no charge
    assert pulse(200, 198).size == 0  # too small to cross the threshold


def test_periodic_triggers() -> None:
    b = SimulatedBoard(tiles=1, seed=5).bring_up_all(unmask="none")
    b.chips.write_field("enable_periodic_trigger", 1, [7])
    b.chips.write_field("periodic_trigger_cycles", 100_000, [7])
    mask = np.ones(64, int)
    mask[[2, 3, 4]] = 0
    b.chips.write_field("periodic_trigger_mask", mask, [7])
    words = b.generate(0.1)
    f = data_fields(words)
    periodic = f["trigger_type"] == 3
    n_expected = 10 * int((~b.physics.dead[7, [2, 3, 4]]).sum())
    assert periodic.sum() == n_expected
    assert (f["chip_id"][periodic] == b.chips.design_id[7]).all()
    ts = np.unique(f["timestamp"][periodic])
    assert (np.diff(ts) == 100_000).all()


def test_same_seed_same_data_other_seed_differs() -> None:
    a, b, c = fresh(seed=9), fresh(seed=9), fresh(seed=10)
    wa, wb, wc = a.generate(0.5), b.generate(0.5), c.generate(0.5)
    assert wa.tobytes() == wb.tobytes()
    assert wa.tobytes() != wc.tobytes()
    assert a.generate_packets(1000).tobytes() == b.generate_packets(1000).tobytes()


def test_alias_table_reproduces_weights() -> None:
    w = np.array([1.0, 0.0, 5.0, 2.5, 0.01, 7.0])
    prob, alias = ph._alias_table(w)
    assert np.allclose(ph._alias_weights(prob, alias), w / w.sum(), atol=1e-6)


def test_rate_scale_must_be_valid() -> None:
    with pytest.raises(ValueError, match="rate_scale"):
        SimulatedBoard(rate_scale=-1.0)
