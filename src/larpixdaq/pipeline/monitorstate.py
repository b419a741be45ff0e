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
so any chip id on any UART is counted; the pixel hit map of a tile (io_channels
``4t+1..4t+4``) is derived from those arrays through the v2 tile's real pixel layout
(:func:`larpixdaq.geometry.standard_tile`: pixel number = row from the top * 70 + column, as
the field's layout file places each chip's channels). A packet whose (chip, channel) is no
pixel of that layout counts as ``off_tile_hits``.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from larpixdaq.formats import rows as R
from larpixdaq.formats.pacman import HEADER_BYTES, WORD_BYTES, decode_data_messages
from larpixdaq.geometry import CHANNELS, standard_tile
from larpixdaq.pipeline.counters import Counters
from larpixdaq.pipeline.protocol import KIND_DATA, KIND_INFO, FrameHeader, Stats

CHIP_IDS = 256
ADC_BINS = 256
UARTS_PER_TILE = 4

_FIFO_FULL = 0b10  # bit 1 of the 2-bit local/shared FIFO fields: the FIFO is full


def tile_of(io_channel: int) -> int:
    """Tile index of a UART: io_channels 1..4 are tile 0, 5..8 tile 1, ..."""
    return max(0, (int(io_channel) - 1) // UARTS_PER_TILE)


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
                 silent_after: float = 5.0, fifo_full_fraction: float = 0.01) -> None:
        self.history_len = int(history)
        self.recent_len = int(recent)
        self.messages_len = int(messages)
        self.hot_factor = float(hot_factor)
        self.hot_min_rate = float(hot_min_rate)
        self.silent_after = float(silent_after)
        self.fifo_full_fraction = float(fifo_full_fraction)
        self.reset(0.0)

    # --- life cycle -----------------------------------------------------------------------

    def reset(self, now: float, run_number: int | None = None) -> None:
        """Forget everything: a new run starts being prepared at ``now``."""
        self.run_number = run_number
        self.t0 = float(now)
        self.sec = 0  # index of the second being filled
        self.cur = _Second()
        self.streams: dict[tuple[str, int], _Stream] = {}
        self.history: collections.deque[tuple[int, float, int, float]] = collections.deque(
            maxlen=self.history_len)  # (second, rate estimate, packets seen, scale)
        self.last: dict[tuple[int, int], np.ndarray] = {}  # rates of the last full second
        self.max: dict[tuple[int, int], np.ndarray] = {}  # per-second maximum rate
        self.total: dict[tuple[int, int], np.ndarray] = {}  # packets seen this run
        self.chip_last_active: dict[tuple[int, int], np.ndarray] = {}  # second, -1 never
        self.group_last_data: dict[int, float] = {}
        self.adc = np.zeros(ADC_BINS, dtype=np.int64)
        self.recent = np.zeros(0, dtype=R.PACKETS_DTYPE)
        self.messages: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=self.messages_len)
        self.decode_errors: dict[str, int] = {}
        self.counters = MonitorCounters()
        self.packets_estimate = 0.0
        self.last_second: dict[str, float] = {"rate": 0.0, "packets": 0, "scale": 1.0,
                                              "parity": 0, "fifo_full": 0, "data": 0,
                                              "decode_errors": 0}
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
            if self.run_number is not None and h.run not in (self.run_number, -1):
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
            self.cur.words_advanced += max(0, end - stream.end_words)
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
        on_tile = standard_tile().on_pixel(data["chip_id"], data["channel_id"])
        c.off_tile_hits += int(len(data) - np.count_nonzero(on_tile))

    # --- time -----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Close every whole second that ended before ``now``."""
        target = int(math.floor(now - self.t0))
        if target <= self.sec:
            return
        self._close_second()
        gap = target - self.sec - 1
        for s in range(self.sec + 1, self.sec + 1 + min(gap, self.history_len)):
            self.history.append((s, 0.0, 0, 1.0))
        if gap > 0:
            self.last = {}
            self.last_second = {"rate": 0.0, "packets": 0, "scale": 1.0, "parity": 0,
                                "fifo_full": 0, "data": 0, "decode_errors": 0}
        self.sec = target

    def _close_second(self) -> None:
        cur = self.cur
        scale = cur.words_advanced / cur.words_seen if cur.words_seen else 1.0
        rate = cur.packets * scale
        self.packets_estimate += rate
        self.history.append((self.sec, rate, cur.packets, scale))
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
                            "data": cur.data, "decode_errors": cur.decode_errors}
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

    def tiles(self) -> list[dict[str, Any]]:
        """Hit map of every tile with data: last-second rate and per-second maximum."""
        by_tile: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for g, ch in self.max:
            by_tile.setdefault((g, tile_of(ch)), []).append((g, ch))
        out = []
        layout = standard_tile()
        # every pixel of a tile and the (chip id, channel) behind it (none: chip 0 channel 0,
        # then zeroed)
        has = layout.pixel_chip >= 0
        pc, pch = np.where(has, layout.pixel_chip, 0), np.where(has, layout.pixel_channel, 0)
        for (g, t), uarts in sorted(by_tile.items()):
            rate = np.zeros(layout.pixels)
            peak = np.zeros(layout.pixels)
            total = np.zeros(layout.pixels, dtype=np.int64)
            for k in uarts:
                if k in self.last:
                    rate += np.where(has, self.last[k][pc, pch], 0.0)
                peak = np.maximum(peak, np.where(has, self.max[k][pc, pch], 0.0))
                total += np.where(has, self.total[k][pc, pch], 0)
            out.append({"io_group": g, "tile": t, "io_channels": sorted(ch for _, ch in uarts),
                        "rate": _rounded(rate), "max": _rounded(peak),
                        "hits": total.tolist()})
        return out

    def chips(self) -> list[dict[str, Any]]:
        """Rate, maximum and hits of every chip seen this run, by chip key."""
        out = []
        for (g, ch), peak in sorted(self.max.items()):
            last = self.last.get((g, ch))
            totals = self.total[(g, ch)].sum(axis=1)
            chip_peak = peak.sum(axis=1)
            rates = last.sum(axis=1) if last is not None else np.zeros(CHIP_IDS)
            for chip in np.flatnonzero(totals):
                out.append({"key": f"{g}-{ch}-{int(chip)}", "io_group": g, "io_channel": ch,
                            "chip_id": int(chip), "rate": round(float(rates[chip]), 2),
                            "max": round(float(chip_peak[chip]), 2),
                            "hits": int(totals[chip])})
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

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything the web page shows, as plain JSON-able values."""
        self.tick(now)
        hist = list(self.history)
        rates = [h[1] for h in hist]
        elapsed = max(self.sec, 1)  # whole seconds closed since the reset
        recent = self.recent
        return {
            "run_number": self.run_number,
            "time": now,
            "since_reset_s": round(now - self.t0, 3),
            "fraction_seen": self.fraction_seen(),
            "rate": {"last_second": round(self.last_second["rate"], 2),
                     "average": round(sum(rates) / len(rates), 2) if rates else 0.0,
                     "since_start": round(self.packets_estimate / elapsed, 2),
                     "scale": round(self.last_second["scale"], 4)},
            "history": [[s, round(r, 2), n] for s, r, n, _ in hist],
            "packets_estimate": round(self.packets_estimate),
            "counters": self.counters.as_dict(),
            "decode_errors": dict(self.decode_errors),
            "adc": self.adc.tolist(),
            "tiles": self.tiles(),
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
