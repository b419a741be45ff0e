"""A simulated PACMAN board with up to 8 LArPix-v2 tiles behind it, wired as the real ones.

Each tile's chips sit on its io_channels as the field's layout file says and form the hydra
trees :func:`~larpixdaq.formats.network.make_tile_network` derives from it; each channel's
pixel is the real one (:mod:`larpixdaq.geometry`), so a simulated track is a straight line in
the field's own reconstruction. By default every tile is the standard v2 tile; given a
:class:`~larpixdaq.geometry.Detector` (:meth:`SimulatedBoard.for_detector`), the board is that
detector's io_group, tile by tile as built (some 2x2 tiles use 2 or 3 io_channels).

Pure and deterministic: no sockets, threads or wall clock; simulated time moves only through
:meth:`SimulatedBoard.generate` (and :meth:`~SimulatedBoard.generate_packets`), and a seed
fixes every random choice. The PACMAN emulator puts this on the network; tests use it
directly.

Like a real board at power-up, the tiles are unpowered (register 0x10 = 0): chips neither
hear commands nor send data until the host enables their tile, and they come up at power-on
defaults (chip id 1, links closed), so the host must bring the network up over the wire -
or, in tests and demos, call :meth:`SimulatedBoard.bring_up_all`, which sets every chip as a
finished bring-up and threshold scan would. The UART receivers (0x18) start enabled; the
``tile_enable`` and ``rx_enable`` arguments choose other start values. The UART clock ratios
start at 4 (2.5 MHz UARTs) and set how many packets/s each hydra network can deliver.

With a :class:`~larpixdaq.boards.beam.Beam` (``beam=``), spills bring neutrino-like activity
to the tiles and, if the board's trigger input is wired (``beam.trigger``), a TRIG word per
spill (time = the spill's tick on the PACMAN clock), merged in time order with the data and
the once-a-second SYNC words.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from larpixdaq.boards.beam import Beam
from larpixdaq.boards.chipmodel import N_UARTS, ChipNetwork
from larpixdaq.boards.physics import (
    DEFAULT_UART_RATIO,
    LATENCY,
    SYNC_PERIOD,
    TICKS_PER_SECOND,
    Physics,
    link_capacity,
)
from larpixdaq.formats.network import load_network, make_tile_network
from larpixdaq.formats.pacman import CLOCK_CTRL_REG as REG_CLOCK_CTRL
from larpixdaq.formats.pacman import (
    CLOCK_CTRL_RESET_BIT,
    WORD_DATA,
    WORD_DTYPE,
    WORD_SYNC,
    WORD_TRIG,
)
from larpixdaq.formats.pacman import RX_ENABLE_REG as REG_RX_ENABLE
from larpixdaq.formats.pacman import TILE_ENABLE_REG as REG_TILE_ENABLE
from larpixdaq.geometry import CHANNELS, Detector, standard_tile

MAX_TILES = 8
UARTS_PER_TILE = 4

REG_VDDD_DAC = 0x24001
REG_VDDA_DAC = 0x24011
REG_VDDD_ADC, REG_IDDD_ADC = 0x24032, 0x24031
REG_VDDA_ADC, REG_IDDA_ADC = 0x24042, 0x24041
REG_VPLUS_ADC, REG_IPLUS_ADC = 0x24022, 0x24021
DAC_DEFAULT = 0xD5A3
DAC_DEFAULT_MV = 1800.0
"""The PACMAN's supply DACs give 1.8 V at their default code; the output is linear in the code."""
VPLUS_MV = 5000.0
IPLUS_IDLE_MA = 300.0
IDDD_PER_TILE_MA = 60.0
IDDA_PER_TILE_MA = 110.0
IPLUS_PER_TILE_MA = 90.0

_U64 = np.uint64


def uart_clock_ratio_register(io_channel: int) -> int:
    """PACMAN register holding the UART clock ratio of channel ``io_channel``."""
    return 0x2000 + 0x1000 * int(io_channel) + 0x10


def adc_mv(mv: float) -> int:
    """A voltage as the PACMAN ADC reports it: mV = ((x >> 16) >> 3) * 4."""
    code = max(0, min(int(mv) // 4, 0x1FFF))
    return (code << 3) << 16


def adc_ma(ma: float) -> int:
    """A current as the PACMAN ADC reports it: mA = ((x >> 16) - (x >> 31) * 65535) * 5."""
    code = int(round(ma / 5.0))
    return (code & 0xFFFF) << 16


class SimulatedBoard:
    """One PACMAN board (one io_group) with ``tiles`` standard tiles on UARTs 1..4*tiles."""

    def __init__(
        self,
        io_group: int = 1,
        tiles: int = 1,
        seed: int = 0,
        rate_scale: float = 1.0,
        *,
        strict_parity: bool = False,
        tile_enable: int = 0,
        rx_enable: int = 0xFFFFFFFF,
        detector: Detector | None = None,
        beam: Beam | None = None,
    ) -> None:
        if isinstance(io_group, bool) or not isinstance(io_group, int) or not 0 <= io_group <= 255:
            raise ValueError(f"io_group must be an integer 0..255, got {io_group!r}")
        if isinstance(tiles, bool) or not isinstance(tiles, int) or not 1 <= tiles <= MAX_TILES:
            raise ValueError(f"tiles must be an integer 1..{MAX_TILES}, got {tiles!r}")
        if not (isinstance(rate_scale, (int, float)) and math.isfinite(rate_scale)
                and rate_scale >= 0):
            raise ValueError(f"rate_scale must be a finite number >= 0, got {rate_scale!r}")
        self.io_group = io_group
        self.tiles = tiles
        self.seed = int(seed)
        self.detector = detector
        if detector is not None and not detector.board_chips(io_group):
            raise ValueError(f"detector {detector.name!r} has no chips on io_group {io_group} "
                             f"(it has io_groups {detector.io_groups})")
        self.chips = ChipNetwork(load_network(self.network_config()), io_group, strict_parity)
        self.tile_of_chip = (self.chips.io_channel - 1) // UARTS_PER_TILE
        layout = standard_tile() if detector is None else detector.tile_layout
        self.physics = Physics(self.chips, self.tile_of_chip, tiles, seed, rate_scale, layout)
        self.physics.beam = beam
        self.counters: dict[str, int] = {"bad_pacman_access": 0, "bad_transmit": 0,
                                         "replies_dropped": 0}
        self._regs: dict[int, int] = {
            REG_VDDD_DAC: DAC_DEFAULT,
            REG_VDDA_DAC: DAC_DEFAULT,
            REG_RX_ENABLE: 0,
            REG_TILE_ENABLE: 0,
        }
        for ch in range(1, N_UARTS + 1):
            self._regs[uart_clock_ratio_register(ch)] = DEFAULT_UART_RATIO
        self.now = 0  # PACMAN clock ticks since the board started (10 MHz, never wraps)
        self._digitised_until = 0  # chip data is generated up to here (now - LATENCY)
        self._elapsed = 0.0
        self._replies: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.pacman_write(REG_RX_ENABLE, rx_enable)
        self.pacman_write(REG_TILE_ENABLE, tile_enable)

    @classmethod
    def for_detector(cls, detector: Detector, io_group: int = 1, **kwargs: Any
                     ) -> SimulatedBoard:
        """The board serving ``io_group`` of ``detector``, with as many tiles as it has."""
        chans = detector.board_chips(io_group)
        tiles = max(chans) // UARTS_PER_TILE + (max(chans) % UARTS_PER_TILE > 0) if chans else 1
        return cls(io_group, tiles=min(max(tiles, 1), MAX_TILES), detector=detector, **kwargs)

    # ---- description ---------------------------------------------------------------------
    def network_config(self) -> dict[str, Any]:
        """The controller (hydra network) JSON dict of this board's tiles."""
        group: dict[str, Any] = {}
        first: dict[str, Any] | None = None
        board = None if self.detector is None else self.detector.board_chips(self.io_group)
        for t in range(self.tiles):
            if board is None:
                net = make_tile_network(self.io_group, t)
            else:
                chans = [c for c in range(UARTS_PER_TILE * t + 1, UARTS_PER_TILE * (t + 1) + 1)
                         if c in board]
                if not chans:
                    continue
                net = make_tile_network(self.io_group, t, io_channels=chans,
                                        chips=[board[c].tolist() for c in chans])
            group.update(net["network"][str(self.io_group)])
            first = first or net
        assert first is not None
        out = dict(first)
        out["name"] = f"simulated-io_group{self.io_group}-{self.tiles}tile"
        out["network"] = {k: v for k, v in first["network"].items() if k != str(self.io_group)}
        out["network"][str(self.io_group)] = group
        return out

    @property
    def time(self) -> float:
        """Simulated seconds since the board started."""
        return self.now / TICKS_PER_SECOND

    def all_counters(self) -> dict[str, int]:
        """Board and chip error/activity counters together."""
        return {**self.counters, **self.chips.counters}

    # ---- PACMAN registers ------------------------------------------------------------------
    def pacman_write(self, register: int, value: int) -> None:
        register, value = self._check_reg(register, value)
        old = self._regs.get(register, 0)
        self._regs[register] = value
        if register == REG_TILE_ENABLE:
            self.chips.set_powered(((value >> self.tile_of_chip) & 1).astype(bool))
        elif register in _RATIO_CHANNEL:
            self.physics.link_capacity[_RATIO_CHANNEL[register]] = link_capacity(value)
        elif register == REG_CLOCK_CTRL and old & CLOCK_CTRL_RESET_BIT and not (
            value & CLOCK_CTRL_RESET_BIT
        ):
            self.reset_chips()

    def pacman_read(self, register: int) -> int:
        register, _ = self._check_reg(register, 0)
        if register in _ADC_REGISTERS:
            return self._adc(register)
        return self._regs.get(register, 0)

    def _check_reg(self, register: int, value: int) -> tuple[int, int]:
        for name, v in (("register", register), ("value", value)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not (
                0 <= int(v) <= 0xFFFFFFFF
            ):
                self.counters["bad_pacman_access"] += 1
                raise ValueError(f"PACMAN {name} must be a 32-bit unsigned integer, got {v!r}")
        return int(register), int(value)

    def _tiles_on(self) -> int:
        mask = self._regs.get(REG_TILE_ENABLE, 0) & ((1 << self.tiles) - 1)
        return bin(mask).count("1")

    def _adc(self, register: int) -> int:
        on = self._tiles_on()
        vddd = self._regs[REG_VDDD_DAC] * DAC_DEFAULT_MV / DAC_DEFAULT if on else 0.0
        vdda = self._regs[REG_VDDA_DAC] * DAC_DEFAULT_MV / DAC_DEFAULT if on else 0.0
        if register == REG_VDDD_ADC:
            return adc_mv(vddd)
        if register == REG_VDDA_ADC:
            return adc_mv(vdda)
        if register == REG_IDDD_ADC:
            return adc_ma(on * IDDD_PER_TILE_MA * vddd / DAC_DEFAULT_MV)
        if register == REG_IDDA_ADC:
            return adc_ma(on * IDDA_PER_TILE_MA * vdda / DAC_DEFAULT_MV)
        if register == REG_VPLUS_ADC:
            return adc_mv(VPLUS_MV)
        return adc_ma(IPLUS_IDLE_MA + on * IPLUS_PER_TILE_MA)  # REG_IPLUS_ADC

    def reset_chips(self) -> None:
        """What a reset pulse on the chips' clock line does: every chip to power-on defaults."""
        self.chips.reset()

    def _uart_on(self, io_channel: np.ndarray) -> np.ndarray:
        rx = self._regs.get(REG_RX_ENABLE, 0)
        tiles = self._regs.get(REG_TILE_ENABLE, 0)
        ch = np.asarray(io_channel, dtype=np.int64)
        return (((rx >> (ch - 1)) & 1) & ((tiles >> ((ch - 1) // UARTS_PER_TILE)) & 1)).astype(
            bool
        )

    def _active(self) -> np.ndarray:
        """Chips whose data reaches an enabled receiver."""
        return self.chips.downstream_ok & self.chips.powered & self._uart_on(self.chips.io_channel)

    # ---- commands to the chips -----------------------------------------------------------------
    def transmit(self, io_channel: int, packets: np.ndarray | int) -> None:
        """LArPix packets the host sends on one UART (1..32); replies are queued as output."""
        if isinstance(io_channel, bool) or not isinstance(io_channel, (int, np.integer)) or not (
            1 <= int(io_channel) <= N_UARTS
        ):
            self.counters["bad_transmit"] += 1
            raise ValueError(f"io_channel must be an integer 1..{N_UARTS}, got {io_channel!r}")
        arr = np.asarray(packets)
        if arr.dtype.kind not in "ui" or (arr.dtype.kind == "i" and np.any(arr < 0)):
            self.counters["bad_transmit"] += 1
            raise ValueError(
                f"packets must be unsigned 64-bit integers, got dtype {arr.dtype} {packets!r:.60}"
            )
        replies = self.chips.receive(int(io_channel), arr.astype(np.uint64), tick=self.now)
        if replies.size:
            n = replies.size
            self._replies.append((np.full(n, self.now + LATENCY, np.int64), replies,
                                  np.full(n, int(io_channel), np.int64)))

    # ---- output ----------------------------------------------------------------------------
    def generate(self, seconds: float) -> np.ndarray:
        """Advance time by ``seconds``; every PACMAN word produced meanwhile, in time order."""
        if not isinstance(seconds, (int, float, np.floating, np.integer)) or not (
            math.isfinite(seconds) and seconds >= 0
        ):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self._elapsed += float(seconds)
        t1 = max(self.now, int(round(self._elapsed * TICKS_PER_SECOND)))
        t0 = self.now
        d0, d1 = self._digitised_until, max(self._digitised_until, t1 - LATENCY)
        active = self._active()
        ticks, words, chip = self.physics.window(d0, d1, active)
        arrival = ticks + LATENCY
        io_ch = self.chips.io_channel[chip]
        # replies and SYNCs, sorted, merged into the data stream
        r_t, r_w, r_c = self._due_replies(t1)
        m_t, m_w0 = self._markers(t0, t1)
        rare_key = np.concatenate([2 * r_t + 1, 2 * m_t])
        order = np.argsort(rare_key, kind="stable")
        rare_w0 = np.concatenate([_data_w0(r_c, r_t), m_w0])[order]
        rare_w1 = np.concatenate([r_w, np.zeros(m_t.size, _U64)])[order]
        self.now = t1
        self._digitised_until = d1
        return _merge_words(arrival, _data_w0(io_ch, arrival), words, rare_key[order],
                            rare_w0, rare_w1)

    def _markers(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
        """SYNC words and (with a wired beam trigger) TRIG words arriving in [t0, t1):
        arrival ticks, sorted, and the words' first 8 bytes (the rest is zero)."""
        first_sync = -(-max(t0, 1) // SYNC_PERIOD) * SYNC_PERIOD
        s_t = np.arange(first_sync, t1, SYNC_PERIOD, dtype=np.int64)
        sync_w0 = np.full(s_t.size, _SYNC_W0, dtype=_U64)
        beam = self.physics.beam
        if beam is None or not beam.trigger:
            return s_t, sync_w0
        spill = self.physics.spill_ticks(t0 - LATENCY, t1 - LATENCY)
        trig_w0 = (_U64(WORD_TRIG) | (_U64(beam.trigger_type) << _U64(8))
                   | ((spill % SYNC_PERIOD).astype(_U64) << _U64(32)))
        t = np.concatenate([s_t, spill + LATENCY])
        order = np.argsort(t, kind="stable")
        return t[order], np.concatenate([sync_w0, trig_w0])[order]

    def _due_replies(self, t1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._replies:
            z = np.zeros(0, np.int64)
            return z, np.zeros(0, _U64), z
        t = np.concatenate([r[0] for r in self._replies])
        w = np.concatenate([r[1] for r in self._replies])
        c = np.concatenate([r[2] for r in self._replies])
        due = t < t1
        self._replies = [(t[~due], w[~due], c[~due])] if (~due).any() else []
        t, w, c = t[due], w[due], c[due]
        on = self._uart_on(c)
        self.counters["replies_dropped"] += int((~on).sum())
        return t[on], w[on], c[on]

    def generate_packets(self, n: int, markers: bool = False) -> np.ndarray:
        """At least ``n`` DATA words of physics data from the chips (time advances to match).

        The fast path for throughput: no config replies (those stay queued for
        :meth:`generate`) and, unless ``markers``, no SYNC or TRIG words (with ``markers``
        they are merged in where they fall, as :meth:`generate` does). Raises RuntimeError if
        no chip can send anything.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be an integer >= 0, got {n!r}")
        if n == 0:
            return np.zeros(0, dtype=WORD_DTYPE)
        active = self._active()
        rate = self.physics.expected_rate(active) if active.any() else 0.0
        if rate <= 0:
            raise RuntimeError(
                "no chip is sending data: enable the tiles (0x10) and receivers (0x18), bring "
                "the network up and unmask channels with a threshold (see bring_up_all)"
            )
        chunks: list[np.ndarray] = []
        have = 0
        while have < n:
            want = n - have
            span = int(math.ceil(want * 1.02 / rate * TICKS_PER_SECOND)) + 1
            d0 = self._digitised_until
            ticks, words, chip = self.physics.window(d0, d0 + span, active)
            self._digitised_until = d0 + span
            before, self.now = self.now, self._digitised_until + LATENCY
            self._elapsed = self.now / TICKS_PER_SECOND
            arrival = ticks + LATENCY
            w0 = _data_w0(self.chips.io_channel[chip], arrival)
            if markers:
                m_t, m_w0 = self._markers(before, self.now)
                chunks.append(_merge_words(arrival, w0, words, 2 * m_t, m_w0,
                                           np.zeros(m_t.size, _U64)))
            else:
                out = np.empty((words.size, 2), dtype=_U64)
                out[:, 0] = w0
                out[:, 1] = words
                chunks.append(out.view(WORD_DTYPE).reshape(-1))
            have += words.size
        return np.concatenate(chunks, dtype=WORD_DTYPE)

    # ---- convenience ---------------------------------------------------------------------------
    def bring_up_all(
        self,
        threshold: int | None = None,
        unmask: str = "routed",
        differential: bool = True,
    ) -> SimulatedBoard:
        """Power every tile, open every receiver, and configure every chip directly.

        The result is what a host gets from bringing each network up over the wire and then
        writing a physics configuration: ids assigned, links enabled, channels unmasked
        (``"routed"``: the 49 bonded ones; ``"all"``: all 64; ``"none"``), and per chip a
        global threshold with per-channel trims putting each channel ~4.5 noise sigmas above
        its pedestal (a few Hz of noise per channel), or ``threshold`` for every chip with
        trims at 16. Returns the board.
        """
        if unmask not in ("routed", "all", "none"):
            raise ValueError(f"unmask must be 'routed', 'all' or 'none', got {unmask!r}")
        self.pacman_write(REG_TILE_ENABLE, (1 << self.tiles) - 1)
        rx = self._regs.get(REG_RX_ENABLE, 0) | ((1 << (UARTS_PER_TILE * self.tiles)) - 1)
        self.pacman_write(REG_RX_ENABLE, rx)
        self.chips.configure_links(differential=differential)
        if threshold is None:
            glob, trim = self.physics.sensible_thresholds()
        else:
            if not 0 <= int(threshold) <= 255:
                raise ValueError(f"threshold must be 0..255, got {threshold!r}")
            glob = np.full(self.chips.n, int(threshold))
            trim = np.full((self.chips.n, CHANNELS), 16)
        self.chips.write_field("threshold_global", glob[:, None])
        self.chips.write_field("pixel_trim_dac", trim)
        mask = {"routed": ~self.physics.routed, "all": np.zeros((self.chips.n, CHANNELS), bool),
                "none": np.ones((self.chips.n, CHANNELS), bool)}[unmask]
        self.chips.write_field("channel_mask", mask.astype(np.int64))
        return self

    def set_threshold(self, threshold: int, chips: np.ndarray | None = None) -> None:
        """Set threshold_global directly (no wire) on all or some chips."""
        self.chips.write_field("threshold_global", int(threshold), chips)


_SYNC_W0 = WORD_SYNC | (ord("S") << 8) | (SYNC_PERIOD << 32)
"""A SYNC word's first 8 bytes: type 'S', sync type 'S', clk_source 0, time = 1e7 ticks."""

_RATIO_CHANNEL = {uart_clock_ratio_register(ch): ch for ch in range(1, N_UARTS + 1)}

_ADC_REGISTERS = frozenset({REG_VDDD_ADC, REG_IDDD_ADC, REG_VDDA_ADC, REG_IDDA_ADC,
                            REG_VPLUS_ADC, REG_IPLUS_ADC})


def _merge_words(arrival: np.ndarray, data_w0: np.ndarray, data_w1: np.ndarray,
                 rare_key: np.ndarray, rare_w0: np.ndarray, rare_w1: np.ndarray) -> np.ndarray:
    """DATA words (arrival ticks sorted) and rare words (sorted by key = 2 * arrival, + 1 for
    a reply) merged in time order; a rare word goes before data arriving at the same tick."""
    out = np.empty((arrival.size + rare_key.size, 2), dtype=_U64)
    at = np.searchsorted(2 * arrival + 1, rare_key, side="right") + np.arange(rare_key.size)
    is_rare = np.zeros(len(out), dtype=bool)
    is_rare[at] = True
    out[at, 0] = rare_w0
    out[at, 1] = rare_w1
    out[~is_rare, 0] = data_w0
    out[~is_rare, 1] = data_w1
    return out.view(WORD_DTYPE).reshape(-1)


def _data_w0(io_channel: np.ndarray, arrival: np.ndarray) -> np.ndarray:
    """First 8 bytes of DATA words: type 'D', io_channel, receipt timestamp (PACMAN clock)."""
    receipt = (np.asarray(arrival, dtype=np.int64) % SYNC_PERIOD).astype(_U64)
    return (_U64(WORD_DATA) | (np.asarray(io_channel).astype(_U64) << _U64(8))
            | (receipt << _U64(16)))

