"""A neutrino beam as the simulated detector sees it: spills, their trigger, their activity.

A beam delivers its protons in short spills at a fixed cycle (NuMI: one ~10 us spill every
1.2 s). The detector's PACMAN boards get an external trigger with each spill; the board whose
trigger input is wired writes a TRIG word (a type-7 row) with the spill's time, which is what
trigger-based event builders key on. In coincidence with the spill the detector sees
neutrino-like activity: a few tracks leaving a common vertex and, often, an electromagnetic
shower (many short segments fanning out along one axis). Between spills there are cosmic rays
and noise only.

Pure: the schedule is computed from tick numbers, and the activity from a random generator
the caller owns, so a seed fixes everything. The segments are in a tile's own frame (mm from
its corner), the same frame :class:`~larpixdaq.boards.physics.Physics` draws cosmic rays in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

NUMI_PERIOD_S = 1.2
"""NuMI's beam cycle: one spill every 1.2 s."""
BEAM_TRIGGER_TYPE = 2
"""The TRIG word's trigger type (``sub`` byte) a spill writes unless told otherwise."""
SPILL_TICKS = 100
"""Spread of the activity's start times within the spill: 10 us at 10 MHz."""
TRACKS_MEAN = 2.0
"""Tracks from a vertex: 2 plus a Poisson number of this mean."""
TRACK_MM = (30.0, 300.0)
SHOWER_PROBABILITY = 0.5
SHOWER_SEGMENTS = 16
SHOWER_MM = (10.0, 50.0)
SHOWER_LENGTH_MM = 150.0
SHOWER_SPREAD_RAD = 0.35


@dataclass(frozen=True)
class Beam:
    """When spills come and what each brings to one board's tiles.

    ``period_s``: beam cycle; ``interactions``: mean neutrino interactions per spill on the
    board's tiles (Poisson); ``trigger``: this board's trigger input is wired (it writes a
    TRIG word per spill); ``trigger_type``: the TRIG word's type byte.
    """

    period_s: float = NUMI_PERIOD_S
    interactions: float = 1.0
    trigger: bool = True
    trigger_type: int = BEAM_TRIGGER_TYPE

    def __post_init__(self) -> None:
        if not (math.isfinite(self.period_s) and self.period_s >= 1e-3):
            raise ValueError(f"the beam period must be at least 1 ms, got {self.period_s!r}")
        if not (math.isfinite(self.interactions) and self.interactions >= 0):
            raise ValueError(f"interactions per spill must be >= 0, got {self.interactions!r}")
        if not 0 <= int(self.trigger_type) <= 255:
            raise ValueError(f"trigger_type must be 0..255, got {self.trigger_type!r}")

    def period_ticks(self, ticks_per_second: int) -> int:
        return max(1, int(round(self.period_s * ticks_per_second)))

    def spills(self, t0: int, t1: int, ticks_per_second: int) -> np.ndarray:
        """Ticks of the spills in [t0, t1): one every period, the first one period in."""
        p = self.period_ticks(ticks_per_second)
        first = max(1, -(-int(t0) // p)) * p
        return np.arange(first, int(t1), p, dtype=np.int64)


class Segments(NamedTuple):
    """Straight pieces of charge in a tile's frame (mm) and the interaction each belongs to."""

    interaction: np.ndarray
    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    z0: np.ndarray
    z1: np.ndarray


def interactions(rng: np.random.Generator, n: int, width: float, height: float,
                 drift_mm: float) -> Segments:
    """``n`` neutrino-like interactions on a ``width`` x ``height`` tile: per interaction 2+
    tracks from one vertex and, half the time, a shower; segments end at the tile's edge."""
    vx, vy = rng.random(n) * width, rng.random(n) * height
    vz = rng.random(n) * drift_mm
    n_tracks = 2 + rng.poisson(TRACKS_MEAN, n)
    shower = rng.random(n) < SHOWER_PROBABILITY
    n_seg = n_tracks + np.where(shower, SHOWER_SEGMENTS, 0)
    owner = np.repeat(np.arange(n), n_seg)
    k = np.arange(owner.size) - (np.cumsum(n_seg) - n_seg)[owner]  # index within interaction
    is_track = k < n_tracks[owner]
    m = owner.size
    # tracks: from the vertex in any direction; shower pieces: start along the shower axis
    axis = rng.random(n) * 2 * math.pi
    angle = np.where(is_track, rng.random(m) * 2 * math.pi,
                     axis[owner] + rng.normal(0.0, SHOWER_SPREAD_RAD, m))
    length = np.where(is_track, rng.uniform(*TRACK_MM, m), rng.uniform(*SHOWER_MM, m))
    along = np.where(is_track, 0.0, rng.random(m) * SHOWER_LENGTH_MM)
    x0 = vx[owner] + along * np.cos(axis[owner])
    y0 = vy[owner] + along * np.sin(axis[owner])
    inside = (x0 >= 0) & (x0 < width) & (y0 >= 0) & (y0 < height)
    dx, dy = np.cos(angle), np.sin(angle)
    length = np.minimum(length, _to_edge(x0, dx, width))
    length = np.minimum(length, _to_edge(y0, dy, height))
    z0 = vz[owner] + along * 0.3
    dz = rng.normal(0.0, 0.5, m)
    keep = inside & (length > 0)
    # (rounding can put an end a hair outside the edge it was cut at)
    x1 = np.clip(x0 + dx * length, 0.0, np.nextafter(width, 0.0))
    y1 = np.clip(y0 + dy * length, 0.0, np.nextafter(height, 0.0))
    z1 = np.clip(z0 + dz * length, 0.0, drift_mm)
    z0 = np.clip(z0, 0.0, drift_mm)
    return Segments(owner[keep], x0[keep], y0[keep], x1[keep], y1[keep], z0[keep], z1[keep])


def _to_edge(start: np.ndarray, direction: np.ndarray, size: float) -> np.ndarray:
    """Distance from ``start`` along ``direction`` to just inside [0, size)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(direction > 0, (size - 1e-6 - start) / direction,
                       np.where(direction < 0, -start / direction, np.inf))
    return np.maximum(out, 0.0)
