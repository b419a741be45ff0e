"""The routines every producer offers: start-up, pedestals, threshold and test-pulse scans, trims.

Each measures through the board's own data (``ctx.read_data``), as it would on a real tile:
nothing here looks inside the simulation. Routines that change registers for a measurement
put the software copy (and the chips) back as they were unless ``restore`` is False.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable, Iterator
from typing import Any

import numpy as np

from larpixdaq.formats.chipkey import parse_chip_key
from larpixdaq.formats.registers import field
from larpixdaq.geometry import standard_tile
from larpixdaq.routines.context import RoutineContext
from larpixdaq.routines.params import CHIP_KEYS, Param, params

CHANNELS = 64
Progress = Generator[dict[str, Any], None, dict[str, Any]]


# ---- helpers --------------------------------------------------------------------------------
def _lookup(keys: list[str]) -> np.ndarray:
    """(io_channel, chip_id) -> index into ``keys`` (-1: not one of them)."""
    lut = np.full((256, 256), -1, np.int64)
    for i, k in enumerate(keys):
        _, ch, cid = parse_chip_key(k)
        lut[ch, cid] = i
    return lut


def _per_channel(rows: np.ndarray, keys: list[str], trigger_type: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts, ADC sums and sums of squares per (chip, channel) of the chips' data packets."""
    n = len(keys)
    sel = (rows["packet_type"] == 0) & (rows["valid_parity"] == 1)
    if trigger_type is not None:
        sel &= rows["trigger_type"] == trigger_type
    r = rows[sel]
    chip = _lookup(keys)[r["io_channel"], r["chip_id"]]
    ok = chip >= 0
    flat = chip[ok] * CHANNELS + r["channel_id"][ok].astype(np.int64)
    adc = r["dataword"][ok].astype(np.float64)
    size = n * CHANNELS
    count = np.bincount(flat, minlength=size).reshape(n, CHANNELS)
    s1 = np.bincount(flat, weights=adc, minlength=size).reshape(n, CHANNELS)
    s2 = np.bincount(flat, weights=adc * adc, minlength=size).reshape(n, CHANNELS)
    return count, s1, s2


def _listed(a: np.ndarray, digits: int = 3) -> list[Any]:
    """Rows of floats with NaN as None (JSON has no NaN)."""
    out = np.round(a.astype(np.float64), digits).astype(object)
    out[~np.isfinite(a.astype(np.float64))] = None
    return out.tolist()


@contextlib.contextmanager
def _restoring(ctx: RoutineContext, keys: list[str], restore: bool) -> Iterator[None]:
    saved = {k: ctx.configs[k].copy() for k in keys}
    try:
        yield
    finally:
        if restore:
            ctx.configs.update(saved)
            ctx.write(keys)


def _read_in_slices(ctx: RoutineContext, seconds: float, slices: int = 4
                    ) -> Generator[dict[str, Any], None, np.ndarray]:
    chunks = []
    for i in range(slices):
        ctx.check_stop()
        rows = ctx.read_data(seconds / slices)
        chunks.append(rows)
        yield {"stage": "reading", "slice": i + 1, "of": slices, "packets": int(len(rows))}
    return np.concatenate(chunks) if chunks else chunks


# What the parameters accept: register values within the register's own range.
def _register(name: str, **kw: Any) -> Param:
    f = field(name)
    return Param(int, minimum=max(f.minimum, kw.pop("minimum", f.minimum)),
                 maximum=f.maximum, **kw)


_SECONDS = Param(float, above=0, unit="s")


# ---- routines -------------------------------------------------------------------------------
def hello_world(ctx: RoutineContext, name: str = "world") -> dict[str, Any]:
    """Say hello into the data flow (the smallest routine there is)."""
    text = f"Hello, {name}!"
    sent = ctx.send_info(text)
    return {"greeting": text, "sent_to_data_flow": sent}


@params(threshold_global=_register("threshold_global", unit="DAC"),
        unmask=Param(str, choices=("routed", "all", "none")))
def quickstart(ctx: RoutineContext, threshold_global: int = 45, unmask: str = "routed",
               bring_up: bool = True, verify: bool = True) -> Progress:
    """Bring the network up, write a working configuration to every chip, verify it.

    The configuration: ``threshold_global`` on every chip, trims at mid-range (16), the
    bonded channels (``unmask="routed"``; ``"all"`` or ``"none"``) unmasked, CSAs on.
    """
    if bring_up:
        up = yield from ctx.bring_up()
        yield {"stage": "bring-up done", "chips": up["chips_up"]}
    mask = {"routed": (~standard_tile().routed).astype(int).tolist(), "all": [0] * CHANNELS,
            "none": [1] * CHANNELS}[unmask]
    ctx.set_all({"threshold_global": int(threshold_global), "pixel_trim_dac": [16] * CHANNELS,
                 "channel_mask": mask, "csa_enable": [1] * CHANNELS})
    written = ctx.write()
    yield {"stage": "written", "packets": written["packets"]}
    out: dict[str, Any] = {"chips": len(ctx.chip_keys), "threshold_global": threshold_global,
                           "unmask": unmask}
    if verify:
        check = ctx.validate()
        yield {"stage": "verified", "match": check["match"]}
        if not check["match"]:
            raise RuntimeError(f"verification failed: {check['summary']}")
        out["match"] = True
    ctx.send_info(f"quickstart: {out['chips']} chips configured")
    return out


@params(seconds=_SECONDS, cycles=_register("periodic_trigger_cycles", minimum=1,
                                           unit="clock cycles"),
        chip_keys=CHIP_KEYS)
def pedestal(ctx: RoutineContext, seconds: float = 2.0, cycles: int = 1_000_000,
             chip_keys: list[str] | None = None, restore: bool = True) -> Progress:
    """Per-channel pedestal: mean and standard deviation of the ADC under periodic triggers.

    Thresholds go to the maximum (no self-triggers) and every channel is digitised every
    ``cycles`` clock ticks for ``seconds``; only periodic-trigger packets are used.
    """
    keys = ctx.board.keys(chip_keys)
    with _restoring(ctx, keys, restore):
        ctx.set_all({"threshold_global": 255, "enable_periodic_trigger": 1,
                     "periodic_trigger_cycles": int(cycles),
                     "periodic_trigger_mask": [0] * CHANNELS, "channel_mask": [0] * CHANNELS},
                    keys)
        ctx.write(keys)
        yield {"stage": "configured", "chips": len(keys)}
        rows = yield from _read_in_slices(ctx, seconds)
        count, s1, s2 = _per_channel(rows, keys, trigger_type=3)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / count
        std = np.sqrt(np.maximum(s2 / count - mean * mean, 0.0))
    return {"chips": {k: {"mean": _listed(mean[i]), "std": _listed(std[i]),
                          "n": count[i].tolist()} for i, k in enumerate(keys)},
            "packets": int(count.sum()), "channels_seen": int((count > 0).sum()),
            "mean_adc": float(np.nanmean(mean)) if (count > 0).any() else None}


@params((lambda p: p["start"] <= p["stop"], "start must not be above stop"),
        start=_register("threshold_global", unit="DAC"),
        stop=_register("threshold_global", unit="DAC"),
        step=Param(int, minimum=1, unit="DAC"), dwell=_SECONDS, chip_keys=CHIP_KEYS)
def threshold_scan(ctx: RoutineContext, start: int = 20, stop: int = 60, step: int = 5,
                   dwell: float = 0.2, chip_keys: list[str] | None = None,
                   restore: bool = True) -> Progress:
    """Self-trigger rate of every channel versus ``threshold_global`` (start..stop by step)."""
    keys = ctx.board.keys(chip_keys)
    thresholds = list(range(int(start), int(stop) + 1, int(step)))
    per_chip = np.zeros((len(thresholds), len(keys), CHANNELS))
    totals = []
    with _restoring(ctx, keys, restore):
        for i, t in enumerate(thresholds):
            ctx.check_stop()
            ctx.set_all({"threshold_global": t}, keys)
            ctx.write(keys, registers=["threshold_global"])
            ctx.read_data(0.01)  # let the change settle; drop what came meanwhile
            rows = ctx.read_data(dwell)
            count, _, _ = _per_channel(rows, keys, trigger_type=0)
            per_chip[i] = count / dwell
            totals.append(float(count.sum() / dwell))
            yield {"threshold": t, "rate": totals[-1], "done": i + 1, "of": len(thresholds)}
    return {"thresholds": thresholds, "total_rate": totals,
            "chips": {k: _listed(per_chip[:, j, :], 2) for j, k in enumerate(keys)}}


@params((lambda p: len(list(p["amplitudes"])) > 0, "amplitudes must not be empty"),
        amplitudes=Param(list, item=_register("csa_testpulse_dac", minimum=1)),
        pulses=Param(int, minimum=1), spacing=_SECONDS, chip_keys=CHIP_KEYS)
def testpulse(ctx: RoutineContext, amplitudes: Iterable[int] = (20, 50, 80, 110, 140, 170),
              pulses: int = 5, spacing: float = 0.01, chip_keys: list[str] | None = None,
              restore: bool = True) -> Progress:
    """ADC response of every channel to test pulses of increasing ``csa_testpulse_dac`` steps.

    Each pulse is a falling step of the test-pulse DAC from 255 by the amplitude; channels
    get their test-pulse input enabled, thresholds and masks stay as configured.
    """
    amps = [int(a) for a in amplitudes]
    keys = ctx.board.keys(chip_keys)
    means = np.full((len(amps), len(keys), CHANNELS), np.nan)
    overall, hits = [], []
    with _restoring(ctx, keys, restore):
        ctx.set_all({"csa_testpulse_enable": [0] * CHANNELS, "csa_testpulse_dac": 255}, keys)
        ctx.write(keys)
        ctx.read_data(0.01)
        for i, a in enumerate(amps):
            chunks = []
            for _ in range(int(pulses)):
                ctx.check_stop()
                ctx.set_all({"csa_testpulse_dac": 255}, keys)
                ctx.write(keys, registers=["csa_testpulse_dac"])
                ctx.set_all({"csa_testpulse_dac": 255 - a}, keys)
                ctx.write(keys, registers=["csa_testpulse_dac"])
                chunks.append(ctx.read_data(spacing))
            count, s1, _ = _per_channel(np.concatenate(chunks), keys, trigger_type=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                means[i] = s1 / count
            overall.append(float(s1.sum() / count.sum()) if count.sum() else None)
            hits.append(int(count.sum()))
            yield {"amplitude": a, "mean_adc": overall[-1], "hits": hits[-1],
                   "done": i + 1, "of": len(amps)}
        ctx.set_all({"csa_testpulse_enable": [1] * CHANNELS}, keys)
    return {"amplitudes": amps, "mean_adc": overall, "hits": hits,
            "chips": {k: _listed(means[:, j, :], 2) for j, k in enumerate(keys)}}


@params(target_rate=Param(float, above=0, unit="Hz"), dwell=_SECONDS,
        threshold_global=Param(int, minimum=0, maximum=field("threshold_global").maximum,
                               optional=True, unit="DAC"),
        max_iterations=Param(int, minimum=1), chip_keys=CHIP_KEYS)
def trim(ctx: RoutineContext, target_rate: float = 5.0, dwell: float = 0.5,
         threshold_global: int | None = None, max_iterations: int = 32,
         chip_keys: list[str] | None = None) -> Progress:
    """Per-channel ``pixel_trim_dac`` so each channel's noise rate is just under ``target_rate``.

    Trims start at the top (31, quietest); each pass lowers the trim of every channel still
    below the target by one and freezes a channel one step back up as soon as it goes over.
    Only unmasked channels with their CSA on are trimmed; the result stays in the software
    copy and on the chips.
    """
    keys = ctx.board.keys(chip_keys)
    if threshold_global is not None:
        ctx.set_all({"threshold_global": int(threshold_global)}, keys)
    live = np.array([[m == 0 and c == 1 for m, c in zip(
        ctx.configs[k]["channel_mask"], ctx.configs[k]["csa_enable"], strict=True)]
        for k in keys], dtype=bool).reshape(len(keys), CHANNELS)
    trims = np.where(live, 31, np.array([list(ctx.configs[k]["pixel_trim_dac"]) for k in keys]
                                        ).reshape(len(keys), CHANNELS))
    frozen = ~live
    it = 0
    for it in range(1, int(max_iterations) + 1):
        ctx.check_stop()
        ctx.update({k: {"pixel_trim_dac": trims[i].tolist()} for i, k in enumerate(keys)})
        ctx.write(keys, registers=["pixel_trim_dac", "threshold_global"])
        ctx.read_data(0.01)
        count, _, _ = _per_channel(ctx.read_data(dwell), keys, trigger_type=0)
        rate = count / dwell
        over = ~frozen & (rate > target_rate)
        trims[over] = np.minimum(trims[over] + 1, 31)
        frozen |= over
        at_floor = ~frozen & (trims == 0)
        frozen |= at_floor
        lower = ~frozen
        trims[lower] -= 1
        yield {"iteration": it, "still_lowering": int(lower.sum()),
               "rate": float(rate[live].sum())}
        if not lower.any():
            break
    ctx.update({k: {"pixel_trim_dac": trims[i].tolist()} for i, k in enumerate(keys)})
    ctx.write(keys, registers=["pixel_trim_dac"])
    return {"target_rate": target_rate, "iterations": it, "channels": int(live.sum()),
            "converged": int((frozen & live).sum()),
            "chips": {k: trims[i].tolist() for i, k in enumerate(keys)}}


BUILTINS = {f.__name__: f for f in (hello_world, quickstart, pedestal, threshold_scan,
                                    testpulse, trim)}
