"""What the simulated chips see and send: noise, cosmic rays, test pulses, periodic triggers.

Everything is driven by the chips' registers, so configuration matters as on a real tile.

**Noise and thresholds.** Every channel has a hidden pedestal ``P`` (in units of the
global threshold DAC) and noise ``sigma``; the discriminator sits at
``T = threshold_global + 0.5 * (pixel_trim_dac - 16)``. Its self-trigger rate follows the
Rice formula for noise up-crossings, ``R_MAX * exp(-(T - P)^2 / 2 sigma^2)`` above the
pedestal and ``R_MAX`` (a flooded channel) at or below it. With the power-on threshold (255)
a channel is silent; a threshold near the pedestal floods. A channel triggers itself only if
``csa_enable`` is 1 and ``channel_mask`` is 0; a few channels are hot (1.5 x the noise) and
a few dead (never send anything).

**FIFOs.** A channel can digitise at most ``R_MAX`` hits/s (its local FIFO fills) and a chip
at most ``CHIP_CAPACITY`` packets/s (its shared FIFO fills, the excess is lost). All chips of
one hydra network share the root's UART to the PACMAN, which carries one 66-bit frame per
packet at 10 MHz / (the PACMAN's UART clock ratio): ~37.9 k packets/s at the usual ratio 4.
When that link saturates, every chip behind it backs up and loses the excess in proportion.
A channel, chip or link loaded to half its capacity sets bit 0 of ``local_fifo`` /
``shared_fifo`` in the packets, a full one bits 0 and 1.

**Signals.** Cosmic muons cross each tile at ~16 Hz (1 /cm^2/min on 31 x 31 cm): each is a
straight segment across the tile's pixel plane (the real layout, :mod:`larpixdaq.geometry`:
the pixels it crosses are looked up on the 70 x 70 grid and mapped to their chip and channel
as wired) with a drift coordinate varying along it, giving a
cluster of hits on neighbouring pixels whose ADC grows with the path length in the pixel and
whose timestamps follow the drift time. A falling step of ``csa_testpulse_dac`` injects a
charge proportional to the step into channels with ``csa_testpulse_enable`` 0. A signal is
recorded only if it crosses the channel's threshold on an unmasked channel. With
``enable_periodic_trigger`` set and ``periodic_trigger_cycles`` > 0 a chip digitises every
channel whose ``periodic_trigger_mask`` bit is 0 every that many clock ticks (trigger type 3).
With a :class:`~larpixdaq.boards.beam.Beam` set (``physics.beam``), each spill brings
neutrino-like interactions (tracks from a vertex, showers) on the tiles at the spill's time,
drawn on the pixel plane like cosmic rays.

**Time.** One tick is one cycle of the 10 MHz chip clock. The PACMAN's SYNC resets the
chips' timestamp counters every 1e7 ticks (once per second), so a packet's 31-bit timestamp is
``tick % 1e7``; every packet reaches the PACMAN a fixed ``LATENCY`` ticks after it was
digitised, and its receipt timestamp is taken on the PACMAN clock, reset by the same SYNC.

Everything random comes from one seeded generator, so a seed gives the same data. The noise
stream, which dominates, is sampled with an alias table over all live channels and packed
into 64-bit packets with whole-array operations.
"""

from __future__ import annotations

import numpy as np

from larpixdaq.boards import beam as B
from larpixdaq.boards.chipmodel import ChipNetwork, field_values
from larpixdaq.formats.registers import CHIP_ID_REG
from larpixdaq.geometry import CHANNELS, TileLayout, standard_tile

TICKS_PER_SECOND = 10_000_000
SYNC_PERIOD = TICKS_PER_SECOND
LATENCY = 264
"""Ticks from digitisation to arrival at the PACMAN (one 66-bit UART frame at 2.5 MHz)."""

R_MAX = 50_000.0
"""Highest self-trigger rate of one channel (Hz): a flooded channel."""
CHIP_CAPACITY = 200_000.0
"""Packets/s one chip can digitise; beyond this its shared FIFO overflows and hits are lost."""
BITS_PER_FRAME = 66
"""A packet on a chip UART: 64 bits plus start and stop bits."""
DEFAULT_UART_RATIO = 4
"""PACMAN UART clock = 10 MHz / ratio; 4 (2.5 MHz) unless the host sets another."""
N_LINKS = 33  # io_channel 1..32 (index 0 unused)
TRIM_STEP = 0.5
"""Threshold shift of one pixel_trim_dac step, in global threshold DAC units."""
ADC_PER_DAC = 0.5
"""ADC counts per global threshold DAC unit (the discriminator and ADC share the CSA output)."""
TESTPULSE_ADC_PER_STEP = 0.6
"""ADC counts injected per step of a falling csa_testpulse_dac."""
COSMIC_RATE_PER_TILE = 16.0
"""Muons/s crossing one tile: 1 /cm^2/min over 31 x 31 cm."""
DRIFT_MM = 300.0
TICKS_PER_MM = 6.25  # 1.6 mm/us drift at 10 ticks/us
ADC_PER_MM = 4.5  # mean signal per mm of track projected on one pixel
STEP_MM = 0.5
NOISE_TARGET_SIGMA = 4.5
"""Distance of a "sensible" threshold above the pedestal, in noise sigmas (~2.5 Hz/channel)."""

HOT_FRACTION = 0.002
HOT_NOISE_FACTOR = 1.5
DEAD_FRACTION = 0.004

_TYPE_SELF, _TYPE_PERIODIC = 0, 3
CHUNK = 1 << 16


class Physics:
    """Per-channel truth of a board's chips and the sampling of what they send."""

    def __init__(
        self,
        chips: ChipNetwork,
        tile_of_chip: np.ndarray,
        n_tiles: int,
        seed: int = 0,
        rate_scale: float = 1.0,
        tile_layout: TileLayout | None = None,
    ) -> None:
        if rate_scale < 0:
            raise ValueError(f"rate_scale must be >= 0, got {rate_scale}")
        self.chips = chips
        self.tile = np.asarray(tile_of_chip, dtype=np.int64)
        self.n_tiles = int(n_tiles)
        self.rate_scale = float(rate_scale)
        self.layout = standard_tile() if tile_layout is None else tile_layout
        truth = np.random.default_rng([int(seed), 0x5EED])
        n = chips.n
        shape = (n, CHANNELS)
        chip_offset = truth.normal(0.0, 3.0, size=(n, 1))
        self.pedestal_dac = 28.0 + chip_offset + truth.normal(0.0, 2.5, size=shape)
        self.typical_sigma_dac = 1.6 * np.exp(truth.normal(0.0, 0.15, size=shape))
        u = truth.random(shape)
        self.hot = u < HOT_FRACTION
        self.dead = (u >= HOT_FRACTION) & (u < HOT_FRACTION + DEAD_FRACTION)
        self.sigma_dac = np.where(self.hot, HOT_NOISE_FACTOR, 1.0) * self.typical_sigma_dac
        self.pedestal_adc = np.clip(truth.normal(75.0, 8.0, size=shape), 20.0, 140.0)
        self.routed = self.layout.pixel_of[chips.design_id & 0xFF] >= 0
        # (tile, chip id on the tile) -> chip row, for mapping pixels hit by tracks
        self._chip_at = np.full((max(self.n_tiles, 1) + 1, 256), -1, dtype=np.int64)
        ok = (self.tile >= 0) & (self.tile < self.n_tiles) & (chips.design_id < 256)
        self._chip_at[self.tile[ok], chips.design_id[ok]] = np.flatnonzero(ok)
        self.rng = np.random.default_rng([int(seed), 0xDA7A])
        self.link_capacity = np.full(N_LINKS, link_capacity(DEFAULT_UART_RATIO))
        """Packets/s each PACMAN UART (index = io_channel) can receive; set by the board."""
        self._cache_key: tuple[int, bytes] | None = None
        self.beam: B.Beam | None = None
        """Spills and their activity (None: no beam)."""

    # ---- helpers for set-up ----------------------------------------------------------------
    def sensible_thresholds(self, target_sigma: float = NOISE_TARGET_SIGMA
                            ) -> tuple[np.ndarray, np.ndarray]:
        """(threshold_global per chip, pixel_trim_dac per channel) giving ~2.5 Hz per channel.

        What a pedestal and trim scan would find on a real tile, taken from the hidden truth;
        like such a scan, it does not know a hot channel's extra noise, so hot channels stay hot.
        """
        want = self.pedestal_dac + target_sigma * self.typical_sigma_dac
        glob = np.clip(np.round(np.median(want, axis=1)), 0, 255)
        trim = np.clip(np.round(16 + (want - glob[:, None]) / TRIM_STEP), 0, 31)
        return glob.astype(np.int64), trim.astype(np.int64)

    # ---- rates -----------------------------------------------------------------------------
    def _state(self, active: np.ndarray) -> dict[str, np.ndarray]:
        """Rates, flags and packet templates, recomputed only when registers or gates change."""
        key = (self.chips.version, active.tobytes() + self.link_capacity.tobytes())
        if self._cache_key == key:
            return self._cached
        regs = self.chips.registers
        thr = regs[:, 64].astype(np.float64)[:, None]
        trim = (regs[:, 0:64] & 0x1F).astype(np.float64)
        distance = thr + TRIM_STEP * (trim - 16.0) - self.pedestal_dac  # DAC units
        csa = field_values(regs, "csa_enable").astype(bool)
        unmasked = ~field_values(regs, "channel_mask").astype(bool)
        alive = ~self.dead & active[:, None]
        selftrig = csa & unmasked & alive
        z = np.maximum(distance, 0.0) / self.sigma_dac
        rate = np.where(selftrig, R_MAX * np.exp(-0.5 * z * z), 0.0) * self.rate_scale
        rate = np.minimum(rate, R_MAX)
        # periodic triggers
        periodic_on = field_values(regs, "enable_periodic_trigger").astype(bool) & active
        cycles = field_values(regs, "periodic_trigger_cycles")
        periodic_ch = ~field_values(regs, "periodic_trigger_mask").astype(bool) & ~self.dead
        periodic_ch &= (periodic_on & (cycles > 0))[:, None]
        n_periodic = periodic_ch.sum(axis=1)
        # a chip cannot send more than its capacity: stretch the period, thin the noise
        min_period = np.ceil(n_periodic * TICKS_PER_SECOND / CHIP_CAPACITY)
        period = np.maximum(cycles, np.maximum(min_period, 1)).astype(np.int64)
        periodic_rate = np.where(n_periodic > 0, n_periodic * TICKS_PER_SECOND / period, 0.0)
        load = rate.sum(axis=1) + periodic_rate
        noise_room = np.maximum(CHIP_CAPACITY - periodic_rate, 0.0)
        scale = np.where(rate.sum(axis=1) > noise_room,
                         noise_room / np.maximum(rate.sum(axis=1), 1e-300), 1.0)
        rate_out = rate * scale[:, None]
        chip_util = load / CHIP_CAPACITY
        # the chips of one hydra network share its root's UART to the PACMAN: when that is
        # saturated, every chip's FIFO backs up and the excess is lost
        io_ch = self.chips.io_channel
        sent = rate_out.sum(axis=1) + periodic_rate
        link_load = np.bincount(io_ch, weights=sent, minlength=len(self.link_capacity))
        link_util = link_load / self.link_capacity
        squeeze = np.where(link_util > 1.0, 1.0 / np.maximum(link_util, 1e-300), 1.0)[io_ch]
        rate_out *= squeeze[:, None]
        period = np.where(squeeze < 1.0, np.ceil(period / squeeze), period).astype(np.int64)
        chip_util = np.maximum(chip_util, link_util[io_ch])
        local = np.where(rate >= 0.999 * R_MAX, 3, np.where(rate >= 0.5 * R_MAX, 1, 0))
        shared = np.where(chip_util >= 0.999, 3, np.where(chip_util >= 0.5, 1, 0))
        ids = regs[:, CHIP_ID_REG].astype(np.uint64)
        template = (
            (ids[:, None] << np.uint64(2))
            | (np.arange(64, dtype=np.uint64)[None, :] << np.uint64(10))
            | (local.astype(np.uint64) << np.uint64(58))
            | (shared.astype(np.uint64)[:, None] << np.uint64(60))
            | np.uint64(1 << 62)
        )
        flat_rate = rate_out.ravel()
        live = np.flatnonzero(flat_rate > 0)
        prob, alias = _alias_table(flat_rate[live])
        jitter_base = np.clip(
            np.round(self.pedestal_adc + ADC_PER_DAC * np.maximum(distance, 0.0)), 0, 248
        )
        self._cached = {
            "distance": distance,
            "selftrig": selftrig,
            "csa_alive": csa & ~self.dead,
            "template": template,
            "total_rate": float(flat_rate[live].sum()),
            "live": live,
            "live_template": template.ravel()[live],
            "live_adc": jitter_base.ravel()[live].astype(np.uint64),
            "alias_prob": prob,
            "alias": alias,
            "periodic_ch": periodic_ch,
            "periodic_chips": np.flatnonzero(n_periodic > 0),
            "periodic_rate": float(periodic_rate.sum()),
            "eligible_fraction": float((selftrig & self.routed).mean()) if selftrig.size else 0.0,
            "period": period,
            "testpulse_on": ~field_values(regs, "csa_testpulse_enable").astype(bool),
            "active": active.copy(),
        }
        self._cache_key = key
        return self._cached

    def total_rate(self, active: np.ndarray) -> float:
        """Expected noise packets/s from the active chips at their current configuration."""
        return self._state(active)["total_rate"]

    def expected_rate(self, active: np.ndarray) -> float:
        """Expected packets/s from noise, periodic triggers and cosmic rays (roughly)."""
        s = self._state(active)
        cosmic = COSMIC_RATE_PER_TILE * self.n_tiles * self.rate_scale * 30.0
        return s["total_rate"] + s["periodic_rate"] + cosmic * s["eligible_fraction"]

    def channel_rates(self, active: np.ndarray) -> np.ndarray:
        """Self-trigger rate of every channel (Hz), ``(n_chips, 64)``, after FIFO losses."""
        s = self._state(active)
        out = np.zeros(self.chips.n * CHANNELS)
        if len(s["live"]):
            w = _alias_weights(s["alias_prob"], s["alias"])
            out[s["live"]] = w * s["total_rate"]
        return out.reshape(self.chips.n, CHANNELS)

    # ---- sampling --------------------------------------------------------------------------
    def window(self, t0: int, t1: int, active: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Packets digitised in ticks [t0, t1): (ticks sorted, packets, chip rows)."""
        s = self._state(active)
        parts = [
            self._cosmics(s, t0, t1),
            self._spills(s, t0, t1),
            self._periodic(s, t0, t1),
            self._pulses(s, t0, t1),
        ]
        ticks = np.concatenate([p[0] for p in parts])
        flat = np.concatenate([p[1] for p in parts])  # chip * 64 + channel
        adc = np.concatenate([p[2] for p in parts])
        ttype = np.concatenate([p[3] for p in parts])
        order = np.argsort(ticks, kind="stable")
        rare_ticks = ticks[order]
        rare = (s["template"].ravel()[flat[order]]
                | (rare_ticks % SYNC_PERIOD).astype(np.uint64) << np.uint64(16)
                | adc[order].astype(np.uint64) << np.uint64(48)
                | ttype[order].astype(np.uint64) << np.uint64(56))
        rare_chip = flat[order] // CHANNELS
        noise_ticks, noise_packets, noise_chip = self.noise(s, t0, t1)
        return _merge(noise_ticks, noise_packets, noise_chip, rare_ticks, rare, rare_chip)

    def noise(self, s: dict[str, np.ndarray], t0: int, t1: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Self-triggers on noise in [t0, t1): a Poisson process over all live channels.

        Packets come with their parity bit set. Work is done in cache-sized chunks written
        into the output arrays, which keeps this the fastest part of the data path.
        """
        rng = self.rng
        span = t1 - t0
        lam = s["total_rate"] * span / TICKS_PER_SECOND
        n = int(rng.poisson(lam)) if lam > 0 else 0
        ticks = np.empty(n, np.int64)
        words = np.empty(n, np.uint64)
        chip = np.empty(n, np.int64)
        if n == 0:
            return ticks, words, chip
        # sorted uniform times: normalised partial sums of exponential gaps
        cum = rng.standard_exponential(n + 1)
        np.cumsum(cum, out=cum)
        scale = span / cum[n]
        k = np.uint64(len(s["live"]))
        prob, alias = s["alias_prob"], s["alias"]
        template, base_adc, live = s["live_template"], s["live_adc"], s["live"]
        u32, u24, u7 = np.uint64(32), np.uint64(0xFFFFFF), np.uint64(7)
        for a in range(0, n, CHUNK):
            b = min(n, a + CHUNK)
            t = ticks[a:b]
            np.multiply(cum[a:b], scale, out=cum[a:b])
            t[:] = cum[a:b]
            t += t0
            raw = rng.bit_generator.random_raw(b - a)
            j = ((raw >> u32) * k >> u32).astype(np.int64)
            pick = np.where((raw & u24) >= prob[j], alias[j], j)
            jitter = np.minimum((raw >> np.uint64(24)) & u7, (raw >> np.uint64(27)) & u7)
            w = words[a:b]
            np.take(template, pick, out=w)
            w |= (t % SYNC_PERIOD).astype(np.uint64) << np.uint64(16)
            w |= (base_adc[pick] + jitter) << np.uint64(48)
            with_parity(w)
            np.floor_divide(live[pick], CHANNELS, out=chip[a:b])
        return ticks, words, chip

    def _cosmics(self, s: dict[str, np.ndarray], t0: int, t1: int) -> tuple[np.ndarray, ...]:
        rng = self.rng
        lam = COSMIC_RATE_PER_TILE * self.n_tiles * self.rate_scale * (t1 - t0) / TICKS_PER_SECOND
        m = int(rng.poisson(lam)) if lam > 0 else 0
        if m == 0:
            return _empty()
        lay = self.layout
        w, h = lay.width_mm, lay.height_mm
        tile = rng.integers(0, self.n_tiles, m)
        start = rng.integers(t0, t1, m)
        x0, x1 = rng.random(m) * w, rng.random(m) * w
        y0, y1 = rng.random(m) * h, rng.random(m) * h
        z0, z1 = rng.random(m) * DRIFT_MM, rng.random(m) * DRIFT_MM
        return self._segments(s, tile, start, x0, y0, x1, y1, z0, z1, t1)

    def spill_ticks(self, t0: int, t1: int) -> np.ndarray:
        """Ticks of the beam's spills in [t0, t1) (none without a beam)."""
        if self.beam is None:
            return np.zeros(0, np.int64)
        return self.beam.spills(t0, t1, TICKS_PER_SECOND)

    def _spills(self, s: dict[str, np.ndarray], t0: int, t1: int) -> tuple[np.ndarray, ...]:
        """Neutrino-like interactions in coincidence with each spill in [t0, t1)."""
        spills = self.spill_ticks(t0, t1)
        if spills.size == 0 or self.beam.interactions <= 0 or self.n_tiles < 1:
            return _empty()
        rng = self.rng
        per_spill = rng.poisson(self.beam.interactions * self.rate_scale, spills.size)
        n = int(per_spill.sum())
        if n == 0:
            return _empty()
        lay = self.layout
        seg = B.interactions(rng, n, lay.width_mm, lay.height_mm, DRIFT_MM)
        when = np.repeat(spills, per_spill) + rng.integers(0, B.SPILL_TICKS, n)
        tile = rng.integers(0, self.n_tiles, n)
        return self._segments(s, tile[seg.interaction], when[seg.interaction], seg.x0, seg.y0,
                              seg.x1, seg.y1, seg.z0, seg.z1, t1)

    def _segments(self, s: dict[str, np.ndarray], tile: np.ndarray, start: np.ndarray,
                  x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray,
                  z0: np.ndarray, z1: np.ndarray, t1: int) -> tuple[np.ndarray, ...]:
        """Hits of straight charge segments (tile frame, mm from its corner) starting at tick
        ``start``: the pixels each crosses, with ADC from the path in the pixel."""
        rng = self.rng
        lay = self.layout
        m = len(x0)
        if m == 0:
            return _empty()
        length = np.hypot(x1 - x0, y1 - y0)
        steps = np.maximum(np.ceil(length / STEP_MM).astype(np.int64), 1)
        track = np.repeat(np.arange(m), steps)
        first = np.cumsum(steps) - steps
        frac = (np.arange(track.size) - first[track] + 0.5) / steps[track]
        x = x0[track] + frac * (x1 - x0)[track]
        y = y0[track] + frac * (y1 - y0)[track]
        z = z0[track] + frac * (z1 - z0)[track]
        # x, y measured from the tile's corner: grid column and row of the layout file
        col = np.clip((x / lay.pitch_mm).astype(np.int64), 0, lay.columns - 1)
        row = np.clip((y / lay.pitch_mm).astype(np.int64), 0, lay.rows - 1)
        key = track * lay.pixels + lay.pixel_number(col, row)
        # a straight line crosses each (convex) pixel once: runs of equal keys are the hits
        first_idx = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        counts = np.diff(np.append(first_idx, key.size))
        trk = key[first_idx] // lay.pixels
        pixel = key[first_idx] % lay.pixels
        step3d = (length / steps) * np.sqrt(1 + ((z1 - z0) / np.maximum(length, 1e-9)) ** 2)
        path = counts * step3d[trk]
        signal = ADC_PER_MM * path * np.exp(rng.normal(0.0, 0.25, trk.size))
        chip_id, channel = lay.pixel_chip[pixel], lay.pixel_channel[pixel]
        chip = np.where(chip_id >= 0, self._chip_at[tile[trk], chip_id], -1)
        tick = start[trk] + (z[first_idx] * TICKS_PER_MM).astype(np.int64)
        return self._signals(s, chip, channel, signal, tick, t1)

    def _pulses(self, s: dict[str, np.ndarray], t0: int, t1: int) -> tuple[np.ndarray, ...]:
        pulses = [p for p in self.chips.pulses if p.tick < t1]
        if not pulses:
            return _empty()
        self.chips.pulses = [p for p in self.chips.pulses if p.tick >= t1]
        chip = np.array([p.chip for p in pulses], dtype=np.int64)
        amp = np.array([p.amplitude for p in pulses], dtype=np.float64)
        tick = np.maximum(np.array([p.tick for p in pulses], dtype=np.int64), t0)
        on = s["testpulse_on"][chip]  # (n_pulses, 64)
        pi, ch = np.nonzero(on)
        signal = amp[pi] * TESTPULSE_ADC_PER_STEP
        return self._signals(s, chip[pi], ch, signal, tick[pi], t1)

    def _signals(self, s: dict[str, np.ndarray], chip: np.ndarray, channel: np.ndarray,
                 signal_adc: np.ndarray, tick: np.ndarray, t1: int) -> tuple[np.ndarray, ...]:
        """Keep signals that cross an unmasked live channel's threshold, as packets fields."""
        ok = chip >= 0
        chip, channel, signal_adc, tick = chip[ok], channel[ok], signal_adc[ok], tick[ok]
        crosses = signal_adc / ADC_PER_DAC > s["distance"][chip, channel]
        keep = s["selftrig"][chip, channel] & crosses & (tick < t1)
        chip, channel, signal_adc, tick = chip[keep], channel[keep], signal_adc[keep], tick[keep]
        adc = np.clip(np.round(self.pedestal_adc[chip, channel] + signal_adc), 0, 255)
        flat = chip * CHANNELS + channel
        return tick, flat, adc.astype(np.int64), np.full(tick.size, _TYPE_SELF, np.int64)

    def _periodic(self, s: dict[str, np.ndarray], t0: int, t1: int) -> tuple[np.ndarray, ...]:
        chips = s["periodic_chips"]
        if chips.size == 0:
            return _empty()
        ticks, flats = [], []
        for c in chips.tolist():
            p = int(s["period"][c])
            first = -(-t0 // p) * p
            t = np.arange(first, t1, p, dtype=np.int64)
            chans = np.flatnonzero(s["periodic_ch"][c])
            ticks.append(np.repeat(t, chans.size))
            flats.append(np.tile(c * CHANNELS + chans, t.size))
        tick = np.concatenate(ticks)
        flat = np.concatenate(flats)
        ped = self.pedestal_adc.ravel()[flat]
        noise = self.rng.normal(0.0, 1.0, flat.size) * (ADC_PER_DAC * self.sigma_dac.ravel()[flat])
        adc = np.clip(np.round(ped + noise), 0, 255).astype(np.int64)
        return tick, flat, adc, np.full(tick.size, _TYPE_PERIODIC, np.int64)


def link_capacity(ratio: int) -> float:
    """Packets/s one UART carries at PACMAN clock ratio ``ratio`` (0 counts as 1)."""
    return TICKS_PER_SECOND / max(int(ratio), 1) / BITS_PER_FRAME


def with_parity(words: np.ndarray) -> np.ndarray:
    """Set bit 63 so each word has odd parity (in place; words must not have it set yet)."""
    even = (np.bitwise_count(words) & np.uint8(1)) == 0
    words |= even.astype(np.uint64) << np.uint64(63)
    return words


def _empty() -> tuple[np.ndarray, ...]:
    z = np.zeros(0, np.int64)
    return z, z, z, z


def _alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias table: 24-bit acceptance thresholds and alias indices."""
    k = len(weights)
    if k == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    p = weights * (k / weights.sum())
    alias = np.arange(k, dtype=np.int64)
    small = list(np.flatnonzero(p < 1.0))
    large = list(np.flatnonzero(p >= 1.0))
    p = p.copy()
    while small and large:
        s, g = small.pop(), large.pop()
        alias[s] = g
        p[g] -= 1.0 - p[s]
        (small if p[g] < 1.0 else large).append(g)
    for rest in small + large:
        p[rest] = 1.0
    prob = np.minimum(np.round(p * (1 << 24)), 1 << 24).astype(np.uint64)
    return prob, alias


def _alias_weights(prob: np.ndarray, alias: np.ndarray) -> np.ndarray:
    """Probabilities an alias table draws each index with (for reporting rates)."""
    k = len(prob)
    acc = prob.astype(np.float64) / (1 << 24)
    w = acc.copy()
    np.add.at(w, alias, 1.0 - acc)
    return w / k


def _merge(a_ticks: np.ndarray, a_words: np.ndarray, a_chip: np.ndarray,
           b_ticks: np.ndarray, b_words: np.ndarray, b_chip: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge two tick-sorted streams in O(n) (the second is usually tiny); the second's
    packets get their parity bit here, the first's already have it."""
    b_words = with_parity(b_words)
    if b_ticks.size == 0:
        return a_ticks, a_words, a_chip
    if a_ticks.size == 0:
        return b_ticks, b_words, b_chip
    n = a_ticks.size + b_ticks.size
    at = np.searchsorted(a_ticks, b_ticks, side="right") + np.arange(b_ticks.size)
    is_b = np.zeros(n, dtype=bool)
    is_b[at] = True
    ticks = np.empty(n, np.int64)
    words = np.empty(n, np.uint64)
    chip = np.empty(n, np.int64)
    ticks[at], words[at], chip[at] = b_ticks, b_words, b_chip
    rest = ~is_b
    ticks[rest], words[rest], chip[rest] = a_ticks, a_words, a_chip
    return ticks, words, chip
