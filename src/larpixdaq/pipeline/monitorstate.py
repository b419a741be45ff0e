"""What the online monitor knows about the data flowing now: pure accumulators, no sockets.

The monitor is allowed to sample: the aggregator sends it only some frames of each stream.
Every frame carries its stream's ``seq`` and word ``offset``, so for every stream the monitor
knows exactly how many frames and words went by and how many of them it saw. Rates are
therefore *estimates* scaled by what was missed, second by second:

    rate(second) = chip packets decoded in that second * words advanced / words seen

where "words advanced" is how far the streams' word offsets moved in that second (known
exactly from the sampled frames' headers) and "words seen" is the words of the frames the
monitor decoded. Everything shown says how much was seen (``fraction_seen``).

Time is binned in whole seconds since the last :meth:`MonitorState.reset` (a prepare), using
the time the caller passes in, so tests choose the clock.

Channel counts are kept per (io_group, io_channel) as a 256 x 64 array (chip id x channel),
so any chip id on any UART is counted; the pixel hit map of a tile is derived from those
arrays through the v2 tile's real pixel layout (:func:`larpixdaq.geometry.standard_tile`:
pixel number = row from the top * 70 + column, as the field's layout file places each chip's
channels). Which tile a UART feeds is the detector's (:class:`~.tilemap.TileMap`; without a
detector, io_channels ``4t-3..4t`` are tile ``t``). A packet whose (chip, channel) is no pixel
of that layout counts as ``off_tile_hits``. The ADC (dataword) of each channel is summed with
its square (``np.bincount`` with weights), giving each channel's pedestal mean and width.

The PACMAN's timing words are watched too: TRIG words (external triggers, e.g. a beam spill)
give a trigger rate, and an io_group whose SYNC words stop arriving raises ``missing_sync``.
Because the monitor sees a sample, "stopped" is judged by what it saw: an io_group is missing
its SYNC when the monitor, since the last SYNC it saw there, saw enough of that io_group's
words to expect ``sync_missing`` SYNCs (one a second) among them.
"""

from __future__ import annotations

import collections
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from larpixdaq.formats import rows as R
from larpixdaq.formats.pacman import HEADER_BYTES, WORD_BYTES, decode_data_messages
from larpixdaq.geometry import CHANNELS, standard_tile
from larpixdaq.pipeline.counters import Counters
from larpixdaq.pipeline.protocol import KIND_DATA, KIND_INFO, FrameHeader, Stats
from larpixdaq.pipeline.tilemap import TileMap

CHIP_IDS = 256
ADC_BINS = 256
DEFAULT_PIXEL_TILES = 8
"""Tiles whose pixel maps a snapshot carries unless told which (one anode of the 2x2): all
64 tiles' maps are 1.5 million numbers, too many to send every second."""
UARTS_PER_TILE = 4

_FIFO_FULL = 0b10  # bit 1 of the 2-bit local/shared FIFO fields: the FIFO is full


def tile_of(io_channel: int) -> int:
    """Tile of a UART on standard tiles: io_channels 1..4 are tile 1, 5..8 tile 2, ..."""
    return max(0, (int(io_channel) - 1) // UARTS_PER_TILE) + 1


@dataclass
class _Stream:
    """What the monitor knows of one (source, epoch) stream."""

    source: str
    epoch: int
    io_group: int
    last_seq: int = -1
    end_words: int = 0  # offset + words of the furthest frame seen
    frames_seen: int = 0
    words_seen: int = 0
    last_seen: float = 0.0

    def frames_total(self) -> int:
        return self.last_seq + 1

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "epoch": self.epoch, "io_group": self.io_group,
                "frames_seen": self.frames_seen, "frames_total": self.frames_total(),
                "words_seen": self.words_seen, "words_total": self.end_words}


@dataclass
class _Second:
    """Accumulators of the second being filled."""

    packets: int = 0  # chip packets decoded
    data: int = 0  # of which data packets
    words_seen: int = 0
    words_advanced: int = 0
    parity: int = 0
    fifo_full: int = 0
    decode_errors: int = 0
    triggers: int = 0
    counts: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)


@dataclass
class MonitorCounters(Counters):
    """What the monitor counts (these names are what heartbeats and snapshots show)."""

    frames_seen: int = 0
    data_frames: int = 0
    info_frames: int = 0
    other_frames: int = 0
    duplicate_frames: int = 0
    frames_other_run: int = 0
    packets_seen: int = 0
    data_packets_seen: int = 0
    parity_errors: int = 0
    fifo_full_packets: int = 0
    off_tile_hits: int = 0
    bad_frames: int = 0
    sync_words: int = 0
    trigger_words: int = 0


@dataclass(frozen=True)
class Alarm:
    """Something an operator should look at; ``key`` names what it is about."""

    kind: str
    key: str
    message: str
    severity: str = "warning"

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "key": self.key, "message": self.message,
                "severity": self.severity}


class MonitorState:
    """Accumulators of the online monitor; see the module docstring.

    ``history`` seconds of rate are kept; ``recent`` decoded packets and ``messages`` INFO
    messages. Alarm thresholds: a channel is *hot* above ``hot_factor`` times the median
    rate of the active channels and above ``hot_min_rate`` packets/s; a chip or io_group
    that sent data this run is *silent* after ``silent_after`` seconds without any; a
    second with more than ``fifo_full_fraction`` of its data packets flagging a full FIFO
    raises a *loss* alarm (the chips are dropping hits).
    """

    def __init__(self, *, history: int = 100, recent: int = 100, messages: int = 50,
                 hot_factor: float = 20.0, hot_min_rate: float = 50.0,
                 silent_after: float = 5.0, fifo_full_fraction: float = 0.01,
                 sync_missing: float = 3.0, tiles: TileMap | None = None) -> None:
        self.history_len = int(history)
        self.recent_len = int(recent)
        self.messages_len = int(messages)
        self.hot_factor = float(hot_factor)
        self.hot_min_rate = float(hot_min_rate)
        self.silent_after = float(silent_after)
        self.fifo_full_fraction = float(fifo_full_fraction)
        self.sync_missing = float(sync_missing)
        self.tilemap = tiles or TileMap()
        self.reset(0.0)

    # --- life cycle -----------------------------------------------------------------------

    def reset(self, now: float, run_number: int | None = None,
              ended_run: int | None = None) -> None:
        """Forget everything: a new run starts being prepared at ``now`` (or, with
        ``ended_run``, that run ended: its frames still in flight are not counted)."""
        self.run_number = run_number
        self.ended_run = ended_run
        self.t0 = float(now)
        self.sec = 0  # index of the second being filled
        self.cur = _Second()
        self.streams: dict[tuple[str, int], _Stream] = {}
        self.history: collections.deque[tuple[int, float, int, float]] = collections.deque(
            maxlen=self.history_len)  # (second, rate, packets seen, scale, trigger rate)
        self.last: dict[tuple[int, int], np.ndarray] = {}  # rates of the last full second
        self.max: dict[tuple[int, int], np.ndarray] = {}  # per-second maximum rate
        self.total: dict[tuple[int, int], np.ndarray] = {}  # packets seen this run
        self.chip_last_active: dict[tuple[int, int], np.ndarray] = {}  # second, -1 never
        self.group_last_data: dict[int, float] = {}
        self.adc = np.zeros(ADC_BINS, dtype=np.int64)
        # per UART, (256, 64): data packets, sum of ADC, sum of ADC squared
        self.adc_n: dict[tuple[int, int], np.ndarray] = {}
        self.adc_sum: dict[tuple[int, int], np.ndarray] = {}
        self.adc_sq: dict[tuple[int, int], np.ndarray] = {}
        # per io_group: words seen / advanced since the last SYNC seen, seconds of data
        self.sync_seen: dict[int, dict[str, float]] = {}
        self.trigger_groups: dict[int, int] = {}
        self.recent = np.zeros(0, dtype=R.PACKETS_DTYPE)
        self.messages: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=self.messages_len)
        self.decode_errors: dict[str, int] = {}
        self.counters = MonitorCounters()
        self.packets_estimate = 0.0
        self.last_second: dict[str, float] = dict(_QUIET_SECOND)
        self.aggregator: dict[str, Any] = {}

    # --- input ----------------------------------------------------------------------------

    def add_bad(self, kind: str, n: int = 1) -> None:
        """A frame that could not even be read (bad header, wrong parts): counted by kind."""
        self.counters.bad_frames += n
        self.decode_errors[kind] = self.decode_errors.get(kind, 0) + n
        self.cur.decode_errors += n

    def add_stats(self, stats: Stats) -> None:
        """The aggregator's once-a-second statistics (its numeric counters kept for display;
        a message without counters leaves what was kept)."""
        if stats.counters is not None:
            self.aggregator = {str(k): v for k, v in stats.counters.items()
                               if isinstance(v, (int, float))}

    def add(self, headers: Sequence[FrameHeader], payloads: Sequence[bytes | memoryview],
            now: float) -> None:
        """A batch of frames received at ``now``: bookkeeping per frame, decoding per batch."""
        if len(headers) != len(payloads):
            raise ValueError("one payload per header")
        self.tick(now)
        data_msgs: list[bytes | memoryview] = []
        data_groups: list[int] = []
        c = self.counters
        for h, payload in zip(headers, payloads, strict=True):
            if (self.run_number is not None and h.run not in (self.run_number, -1)) or (
                    self.ended_run is not None and h.run == self.ended_run):
                c.frames_other_run += 1
                continue
            stream = self.streams.get(h.stream)
            if stream is None:
                stream = self.streams[h.stream] = _Stream(h.source, h.epoch, h.io_group)
            if h.seq <= stream.last_seq:
                c.duplicate_frames += 1
                continue
            words = 0
            if h.kind == KIND_DATA:
                words = max(0, (len(payload) - HEADER_BYTES) // WORD_BYTES)
            end = h.offset + words
            advanced = max(0, end - stream.end_words)
            self.cur.words_advanced += advanced
            if h.kind == KIND_DATA:
                sync = self.sync_seen.setdefault(h.io_group, {"seen": 0.0, "advanced": 0.0,
                                                               "since": now})
                sync["seen"] += words
                sync["advanced"] += advanced
            self.cur.words_seen += words
            stream.end_words = max(stream.end_words, end)
            stream.last_seq = h.seq
            stream.frames_seen += 1
            stream.words_seen += words
            stream.last_seen = now
            c.frames_seen += 1
            if h.kind == KIND_DATA:
                c.data_frames += 1
                data_msgs.append(payload)
                data_groups.append(h.io_group)
                self.group_last_data[h.io_group] = now
            elif h.kind == KIND_INFO:
                c.info_frames += 1
                text = bytes(payload).decode("utf-8", "replace")
                self.messages.append({"t": h.t_recv, "source": h.source,
                                      "io_group": h.io_group, "run": h.run, "text": text})
            else:
                c.other_frames += 1
        if data_msgs:
            self._add_rows(data_msgs, data_groups)

    def _add_rows(self, msgs: list[bytes | memoryview], groups: list[int]) -> None:
        result = decode_data_messages(msgs, np.asarray(groups, dtype=np.uint8))
        for kind, n in result.errors.items():
            self.decode_errors[kind] = self.decode_errors.get(kind, 0) + n
            self.cur.decode_errors += n
        rows = result.rows
        self._timing(rows[rows["packet_type"] >= R.SYNC])
        chip = rows[rows["packet_type"] <= R.CONFIG_READ]
        if len(chip):
            self.recent = np.concatenate((self.recent, chip[-self.recent_len:]))[
                -self.recent_len:]
        parity_bad = int(np.count_nonzero(chip["valid_parity"] == 0))
        data = chip[chip["packet_type"] == R.DATA]
        full = int(np.count_nonzero(((data["local_fifo"] | data["shared_fifo"]) & _FIFO_FULL)
                                    != 0))
        c = self.counters
        c.packets_seen += len(chip)
        c.data_packets_seen += len(data)
        c.parity_errors += parity_bad
        c.fifo_full_packets += full
        cur = self.cur
        cur.packets += len(chip)
        cur.data += len(data)
        cur.parity += parity_bad
        cur.fifo_full += full
        if not len(data):
            return
        self.adc += np.bincount(data["dataword"], minlength=ADC_BINS)[:ADC_BINS]
        # One bincount per (io_group, io_channel) present: a handful per batch.
        uart = data["io_group"].astype(np.int64) << 8 | data["io_channel"]
        cell = data["chip_id"].astype(np.int64) * CHANNELS + (data["channel_id"] & 63)
        order = np.argsort(uart, kind="stable")
        uart, cell = uart[order], cell[order]
        adc_all = data["dataword"][order].astype(np.float64)
        keys, starts = np.unique(uart, return_index=True)
        bounds = [*starts[1:], len(uart)]
        for key, lo, hi in zip(keys, starts, bounds, strict=True):
            k = (int(key) >> 8, int(key) & 0xFF)
            counts = np.bincount(cell[lo:hi], minlength=CHIP_IDS * CHANNELS).reshape(
                CHIP_IDS, CHANNELS)
            if k in cur.counts:
                cur.counts[k] += counts
            else:
                cur.counts[k] = counts
            adc = adc_all[lo:hi]
            total = np.bincount(cell[lo:hi], weights=adc, minlength=CHIP_IDS * CHANNELS)
            square = np.bincount(cell[lo:hi], weights=adc * adc, minlength=CHIP_IDS * CHANNELS)
            if k in self.adc_n:
                self.adc_n[k] += counts
                self.adc_sum[k] += total.reshape(CHIP_IDS, CHANNELS)
                self.adc_sq[k] += square.reshape(CHIP_IDS, CHANNELS)
            else:
                self.adc_n[k] = counts.copy()
                self.adc_sum[k] = total.reshape(CHIP_IDS, CHANNELS)
                self.adc_sq[k] = square.reshape(CHIP_IDS, CHANNELS)
        on_tile = standard_tile().on_pixel(data["chip_id"], data["channel_id"])
        c.off_tile_hits += int(len(data) - np.count_nonzero(on_tile))

    def _timing(self, rows: np.ndarray) -> None:
        """SYNC words reset their io_group's wait; TRIG words are counted per io_group."""
        if not len(rows):
            return
        sync = rows[rows["packet_type"] == R.SYNC]
        trig = rows[rows["packet_type"] == R.TRIGGER]
        self.counters.sync_words += len(sync)
        self.counters.trigger_words += len(trig)
        self.cur.triggers += len(trig)
        for g in np.unique(sync["io_group"]).tolist():
            self.sync_seen[int(g)] = {"seen": 0.0, "advanced": 0.0,
                                      "since": self.t0 + self.sec}
        groups, n = np.unique(trig["io_group"], return_counts=True)
        for g, k in zip(groups.tolist(), n.tolist(), strict=True):
            self.trigger_groups[int(g)] = self.trigger_groups.get(int(g), 0) + int(k)

    def _adc_maps(self, k: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, width) of every (chip, channel) of a UART; NaN where nothing was seen."""
        n = self.adc_n.get(k)
        if n is None:
            nan = np.full((CHIP_IDS, CHANNELS), np.nan)
            return nan, nan
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.adc_sum[k] / n
            var = np.maximum(self.adc_sq[k] / n - mean * mean, 0.0)
        return mean, np.sqrt(var)

    # --- time -----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Close every whole second that ended before ``now``."""
        target = int(math.floor(now - self.t0))
        if target <= self.sec:
            return
        self._close_second()
        gap = target - self.sec - 1
        for s in range(self.sec + 1, self.sec + 1 + min(gap, self.history_len)):
            self.history.append((s, 0.0, 0, 1.0, 0.0))
        if gap > 0:
            self.last = {}
            self.last_second = dict(_QUIET_SECOND)
        self.sec = target

    def _close_second(self) -> None:
        cur = self.cur
        scale = cur.words_advanced / cur.words_seen if cur.words_seen else 1.0
        rate = cur.packets * scale
        self.packets_estimate += rate
        self.history.append((self.sec, rate, cur.packets, scale, cur.triggers * scale))
        self.last = {}
        for k, counts in cur.counts.items():
            rates = counts * scale
            self.last[k] = rates
            if k in self.max:
                np.maximum(self.max[k], rates, out=self.max[k])
                self.total[k] += counts
            else:
                self.max[k] = rates.copy()
                self.total[k] = counts.copy()
            active = self.chip_last_active.setdefault(k, np.full(CHIP_IDS, -1, np.int64))
            active[counts.sum(axis=1) > 0] = self.sec
        self.last_second = {"rate": rate, "packets": cur.packets, "scale": scale,
                            "parity": cur.parity, "fifo_full": cur.fifo_full,
                            "data": cur.data, "decode_errors": cur.decode_errors,
                            "triggers": cur.triggers * scale}
        self.cur = _Second()

    # --- output ---------------------------------------------------------------------------

    def fraction_seen(self) -> dict[str, float | None]:
        """Share of the streams' frames and words the monitor saw (None: nothing yet)."""
        frames = sum(s.frames_total() for s in self.streams.values())
        words = sum(s.end_words for s in self.streams.values())
        seen_f = sum(s.frames_seen for s in self.streams.values())
        seen_w = sum(s.words_seen for s in self.streams.values())
        return {"frames": seen_f / frames if frames else None,
                "words": seen_w / words if words else None}

    def tiles(self, pixels: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every tile with data: where it is, its totals, and (for the tiles ``pixels`` names
        as ``"io_group/tile"``; if None, the first ``DEFAULT_PIXEL_TILES``) its 70 x 70 maps:
        last-second rate, per-second maximum, hits seen, ADC mean and width per pixel (None:
        no data)."""
        by_tile: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for g, ch in self.max:
            by_tile.setdefault(self.tilemap.tile_of(g, ch), []).append((g, ch))
        out = []
        layout = standard_tile()
        # every pixel of a tile and the (chip id, channel) behind it (none: chip 0 channel 0,
        # then zeroed)
        has = layout.pixel_chip >= 0
        pc, pch = np.where(has, layout.pixel_chip, 0), np.where(has, layout.pixel_channel, 0)
        if pixels is None:  # the first tiles; a detector's 300,000 pixels are asked for
            pixels = [f"{g}/{t}" for g, t in sorted(by_tile)[:DEFAULT_PIXEL_TILES]]
        wanted = {str(p) for p in pixels}
        for (g, t), uarts in sorted(by_tile.items()):
            entry: dict[str, Any] = {"io_group": g, "tile": t,
                                     "io_channels": sorted(ch for _, ch in uarts),
                                     **self.tilemap.info(g, t)}
            last = sum(float(self.last[k].sum()) for k in uarts if k in self.last)
            entry["rate_total"] = round(last, 2)
            entry["hits_total"] = int(sum(int(self.total[k].sum()) for k in uarts))
            if f"{g}/{t}" not in wanted:
                out.append(entry)
                continue
            rate = np.zeros(layout.pixels)
            peak = np.zeros(layout.pixels)
            total = np.zeros(layout.pixels, dtype=np.int64)
            n = np.zeros(layout.pixels)
            mean = np.zeros(layout.pixels)
            width = np.zeros(layout.pixels)
            for k in uarts:
                # a chip id sits on one UART of a tile: take each pixel from the UART that
                # has its chip (the others' arrays are zero there)
                if k in self.last:
                    rate += np.where(has, self.last[k][pc, pch], 0.0)
                peak = np.maximum(peak, np.where(has, self.max[k][pc, pch], 0.0))
                total += np.where(has, self.total[k][pc, pch], 0)
                if k in self.adc_n:
                    kn = np.where(has, self.adc_n[k][pc, pch], 0)
                    m, w = self._adc_maps(k)
                    mean += np.where(kn > 0, m[pc, pch], 0.0)
                    width += np.where(kn > 0, w[pc, pch], 0.0)
                    n += kn
            seen = n > 0
            entry.update({"rate": _rounded(rate), "max": _rounded(peak),
                          "hits": total.tolist(),
                          "adc_mean": _rounded_or_none(mean, seen),
                          "adc_width": _rounded_or_none(width, seen)})
            out.append(entry)
        return out

    def chips(self) -> list[dict[str, Any]]:
        """Rate, maximum and hits of every chip seen this run, by chip key."""
        out = []
        for (g, ch), peak in sorted(self.max.items()):
            last = self.last.get((g, ch))
            totals = self.total[(g, ch)].sum(axis=1)
            chip_peak = peak.sum(axis=1)
            rates = last.sum(axis=1) if last is not None else np.zeros(CHIP_IDS)
            mean, width = self._adc_maps((g, ch))
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a chip without data: NaN
                chip_mean, chip_width = np.nanmean(mean, axis=1), np.nanmean(width, axis=1)
            for chip in np.flatnonzero(totals):
                out.append({"key": f"{g}-{ch}-{int(chip)}", "io_group": g, "io_channel": ch,
                            "chip_id": int(chip), "rate": round(float(rates[chip]), 2),
                            "max": round(float(chip_peak[chip]), 2),
                            "hits": int(totals[chip]),
                            "adc_mean": _finite(chip_mean[chip]),
                            "adc_width": _finite(chip_width[chip])})
        return out

    def alarms(self, now: float) -> list[Alarm]:
        """Hot channels, silent chips and io_groups, FIFO loss, parity and decode errors."""
        out: list[Alarm] = []
        if self.last:
            keys = list(self.last)
            stacked = np.stack([self.last[k] for k in keys])
            active = stacked[stacked > 0]
            if len(active):
                limit = max(self.hot_min_rate, self.hot_factor * float(np.median(active)))
                hot = np.argwhere(stacked > limit)
                for i, chip, channel in hot[:20]:
                    g, ch = keys[i]
                    out.append(Alarm("hot_channel", f"{g}-{ch}-{chip}/{channel}",
                                     f"channel {channel} of chip {g}-{ch}-{chip} at "
                                     f"{stacked[i, chip, channel]:.0f} /s (limit "
                                     f"{limit:.0f} /s)"))
        if self.last:  # only while something is arriving: a stopped run is not an alarm
            for (g, ch), last_active in self.chip_last_active.items():
                quiet = np.flatnonzero((last_active >= 0) &
                                       (self.sec - 1 - last_active >= self.silent_after))
                for chip in quiet[:20]:
                    out.append(Alarm("silent_chip", f"{g}-{ch}-{chip}",
                                     f"chip {g}-{ch}-{chip} sent nothing for "
                                     f"{self.sec - 1 - last_active[chip]} s"))
        newest = max(self.group_last_data.values(), default=None)
        for g, t in sorted(self.group_last_data.items()):
            if newest - t >= self.silent_after:
                out.append(Alarm("silent_io_group", str(g),
                                 f"io_group {g} sent no data for {newest - t:.0f} s while "
                                 "others did"))
        for g, sync in sorted(self.sync_seen.items()):
            waited = now - sync["since"]
            share = sync["seen"] / sync["advanced"] if sync["advanced"] else 0.0
            recent = now - self.group_last_data.get(g, -math.inf) < self.silent_after
            if recent and waited * min(share, 1.0) >= self.sync_missing:
                out.append(Alarm("missing_sync", str(g),
                                 f"io_group {g}: no SYNC for {waited:.0f} s (the monitor saw "
                                 f"{100 * min(share, 1.0):.0f} % of its words; a SYNC comes "
                                 "once a second): its chips' timestamps are not being reset",
                                 "error"))
        ls = self.last_second
        if ls["data"] and ls["fifo_full"] > self.fifo_full_fraction * ls["data"]:
            out.append(Alarm("fifo_loss", "fifo",
                             f"{ls['fifo_full']} of {ls['data']} data packets in the last "
                             "second flag a full FIFO: chips are losing hits", "error"))
        if ls["parity"]:
            out.append(Alarm("parity", "parity", f"{ls['parity']} packets with bad parity "
                                                 "in the last second"))
        if ls["decode_errors"]:
            out.append(Alarm("decode_errors", "decode",
                             f"{ls['decode_errors']} malformed frames or words in the last "
                             "second", "error"))
        return out

    def snapshot(self, now: float, pixels: Sequence[str] | None = None) -> dict[str, Any]:
        """Everything the web page shows, as plain JSON-able values; the 70 x 70 maps only of
        the tiles ``pixels`` names (``"io_group/tile"``; the first 8 if None)."""
        self.tick(now)
        hist = list(self.history)
        rates = [h[1] for h in hist]
        trig = [h[4] for h in hist]
        elapsed = max(self.sec, 1)  # whole seconds closed since the reset
        recent = self.recent
        return {
            "run_number": self.run_number,
            "ended_run": self.ended_run,
            "time": now,
            "since_reset_s": round(now - self.t0, 3),
            "fraction_seen": self.fraction_seen(),
            "rate": {"last_second": round(self.last_second["rate"], 2),
                     "average": round(sum(rates) / len(rates), 2) if rates else 0.0,
                     "since_start": round(self.packets_estimate / elapsed, 2),
                     "scale": round(self.last_second["scale"], 4)},
            "history": [[s, round(r, 2), n, round(t, 3)] for s, r, n, _, t in hist],
            "triggers": {"last_second": round(self.last_second["triggers"], 3),
                         "average": round(sum(trig) / len(trig), 3) if trig else 0.0,
                         "seen": self.counters.trigger_words,
                         "by_io_group": {str(g): n for g, n in
                                         sorted(self.trigger_groups.items())}},
            "packets_estimate": round(self.packets_estimate),
            "counters": self.counters.as_dict(),
            "decode_errors": dict(self.decode_errors),
            "adc": self.adc.tolist(),
            "tiles": self.tiles(pixels),
            "detector": {"name": self.tilemap.name, "tiles": self.tilemap.table()},
            "chips": self.chips(),
            "recent": {name: recent[name].tolist() for name in (
                "io_group", "io_channel", "chip_id", "packet_type", "channel_id",
                "timestamp", "dataword", "valid_parity", "register_address",
                "register_data", "receipt_timestamp")},
            "messages": list(self.messages),
            "streams": [s.as_dict() for s in self.streams.values()],
            "alarms": [a.as_dict() for a in self.alarms(now)],
            "aggregator": dict(self.aggregator),
        }


def _rounded(values: np.ndarray) -> list[float]:
    return np.round(values, 2).tolist()


def _finite(value: float) -> float | None:
    """A number for JSON: rounded, None for NaN."""
    return round(float(value), 2) if math.isfinite(value) else None


def _rounded_or_none(values: np.ndarray, ok: np.ndarray) -> list[float | None]:
    """Values to 2 decimals, None where ``ok`` is False (JSON null: no data there)."""
    out = np.round(values, 2).astype(object)
    out[~ok] = None
    return out.tolist()


_QUIET_SECOND = {"rate": 0.0, "packets": 0, "scale": 1.0, "parity": 0, "fifo_full": 0,
                 "data": 0, "decode_errors": 0, "triggers": 0.0}
"""What the last second says when nothing came in it."""
