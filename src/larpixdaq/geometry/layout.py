"""Where each (io_group, io_channel, chip_id, channel_id) sits: the detector's pixel geometry.

Pure: built from already-parsed layout dicts (:mod:`larpixdaq.geometry.files` reads the YAML),
so tests and sites can hand in any layout. Two layers, as in the field's own files:

* :class:`TileLayout`: the pixel plane of one tile design, from a multi-tile layout file's
  ``chip_channel_to_position`` (chip * 1000 + channel -> pixel column, row on a 70 x 70 grid at
  ``pixel_pitch``). Every v2 tile of a detector shares it. Local coordinates are those the
  field's analysis uses: ``x = column * pitch + pitch / 2 - width / 2`` (same for y), so the
  tile's centre is the origin.
* :class:`Detector`: tiles placed in modules. Per tile the file gives its chips' io_group and
  io_channel (``tile_chip_to_io``, module-local io_group * 1000 + io_channel), its anode
  (``tile_indeces``), orientation (``tile_orientations``: drift direction, y sign, x sign) and
  centre (``tile_positions``: z, y, x in mm); a detector description adds where each module is
  and which real io_groups its module-local io_groups are.

:meth:`Detector.locate` answers the lookup every consumer needs, over whole numpy arrays:
one ``searchsorted`` over the sorted (io_group, io_channel, chip) keys and a gather by channel,
no per-packet Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

CHANNELS = 64
CHIP_IDS = 256
IO_KEY_BASE = 1000
"""``tile_chip_to_io`` values are module-local io_group * 1000 + io_channel."""


class LayoutError(ValueError):
    """A layout file or detector description that cannot be used, with the reason."""


class Pixels(NamedTuple):
    """Result of :meth:`Detector.locate`: one entry per packet.

    x, y: pixel centre (mm, detector frame), NaN off any pixel; tile: the layout file's tile id
    (1..16 in a module of the 2x2), anode: 1 or 2 within the module, module: 1..; -1 for all
    three off any pixel.
    """

    x: np.ndarray
    y: np.ndarray
    tile: np.ndarray
    anode: np.ndarray
    module: np.ndarray


@dataclass(frozen=True)
class TileLayout:
    """The pixel plane of one tile design (see module doc)."""

    pitch_mm: float
    chip: np.ndarray
    channel: np.ndarray
    column: np.ndarray
    row: np.ndarray
    columns: int
    rows: int
    pixel_of: np.ndarray = field(repr=False)
    """(256, 64): pixel number of (chip, channel), -1 where no pixel is bonded."""
    pixel_chip: np.ndarray = field(repr=False)
    """Chip id of each pixel number (-1: no pixel there)."""
    pixel_channel: np.ndarray = field(repr=False)

    @property
    def pixels(self) -> int:
        return self.columns * self.rows

    @property
    def width_mm(self) -> float:
        return self.columns * self.pitch_mm

    @property
    def height_mm(self) -> float:
        return self.rows * self.pitch_mm

    @property
    def chips(self) -> np.ndarray:
        """Chip ids of the design, sorted."""
        return np.unique(self.chip)

    @property
    def routed(self) -> np.ndarray:
        """(64,) True for channels bonded to a pixel on every chip of the design."""
        return (self.pixel_of[self.chips] >= 0).all(axis=0)

    def pixel_number(self, column: np.ndarray, row: np.ndarray) -> np.ndarray:
        """Pixel number of grid cells: counted from the top row down, left to right, so a
        hit map drawn row by row shows the tile as the layout draws it (chip 11 top left)."""
        return (self.rows - 1 - np.asarray(row)) * self.columns + np.asarray(column)

    def local_xy(self, column: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres in the tile's own frame (mm, origin at the tile centre)."""
        p = self.pitch_mm
        x = np.asarray(column) * p + p / 2 - self.width_mm / 2
        y = np.asarray(row) * p + p / 2 - self.height_mm / 2
        return x, y

    def chip_xy(self, chip: np.ndarray, channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local pixel centre of (chip, channel); NaN where no pixel is bonded."""
        pix = self.pixel_of[np.asarray(chip) & 0xFF, np.asarray(channel) & 63]
        ok = pix >= 0
        col = np.where(ok, pix % self.columns, 0)
        row = np.where(ok, self.rows - 1 - pix // self.columns, 0)
        x, y = self.local_xy(col, row)
        return np.where(ok, x, np.nan), np.where(ok, y, np.nan)

    def on_pixel(self, chip: np.ndarray, channel: np.ndarray) -> np.ndarray:
        """True where (chip, channel) is a bonded pixel of this design."""
        c = np.asarray(chip, dtype=np.int64)
        ch = np.asarray(channel, dtype=np.int64)
        ok = (c >= 0) & (c < CHIP_IDS) & (ch >= 0) & (ch < CHANNELS)
        return ok & (self.pixel_of[np.where(ok, c, 0), np.where(ok, ch, 0)] >= 0)


def tile_layout_from_positions(positions: Mapping[Any, Sequence[Any]], pitch_mm: float
                               ) -> TileLayout:
    """A :class:`TileLayout` from ``chip_channel_to_position`` and ``pixel_pitch``."""
    if not positions:
        raise LayoutError("chip_channel_to_position is empty")
    try:
        keys = np.array([int(k) for k in positions], dtype=np.int64)
        cr = np.array([[int(v[0]), int(v[1])] for v in positions.values()], dtype=np.int64)
        pitch = float(pitch_mm)
    except (TypeError, ValueError, IndexError) as exc:
        raise LayoutError(f"chip_channel_to_position must map chip*1000+channel to "
                          f"[column, row]: {exc}") from None
    chip, channel = keys // IO_KEY_BASE, keys % IO_KEY_BASE
    if np.any((chip < 0) | (chip >= CHIP_IDS) | (channel >= CHANNELS)):
        raise LayoutError("chip_channel_to_position has a chip outside 0..255 or a channel "
                          "outside 0..63")
    if not pitch > 0:
        raise LayoutError(f"pixel_pitch must be > 0, got {pitch_mm!r}")
    column, row = cr[:, 0] - cr[:, 0].min(), cr[:, 1] - cr[:, 1].min()
    columns, rows = int(column.max()) + 1, int(row.max()) + 1
    number = (rows - 1 - row) * columns + column
    if len(np.unique(number)) != len(number):
        raise LayoutError("chip_channel_to_position puts two channels on one pixel")
    pixel_of = np.full((CHIP_IDS, CHANNELS), -1, dtype=np.int64)
    pixel_of[chip, channel] = number
    pixel_chip = np.full(columns * rows, -1, dtype=np.int64)
    pixel_channel = np.full(columns * rows, -1, dtype=np.int64)
    pixel_chip[number], pixel_channel[number] = chip, channel
    for a in (pixel_of, pixel_chip, pixel_channel, chip, channel, column, row):
        a.flags.writeable = False
    return TileLayout(pitch, chip, channel, column, row, columns, rows, pixel_of, pixel_chip,
                      pixel_channel)


@dataclass(frozen=True)
class ModuleSpec:
    """Where one module of identical multi-tile layouts sits and which io_groups it uses."""

    io_groups: tuple[int, ...]
    offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tiles: tuple[int, ...] | None = None
    """Only these tiles of the layout (None: all)."""


@dataclass(frozen=True)
class Detector:
    """Tiles of one :class:`TileLayout` placed in modules (see module doc)."""

    name: str
    tile_layout: TileLayout
    keys: np.ndarray
    """Sorted io_group << 16 | io_channel << 8 | chip_id of every chip."""
    slot_module: np.ndarray
    slot_tile: np.ndarray
    slot_anode: np.ndarray
    slot_x: np.ndarray = field(repr=False)
    """(n_chips, 64) pixel centre x (mm), NaN for channels without a pixel."""
    slot_y: np.ndarray = field(repr=False)

    @property
    def io_groups(self) -> list[int]:
        return sorted({int(k) >> 16 for k in self.keys})

    def _slots(self, io_group: Any, io_channel: Any, chip_id: Any) -> tuple[np.ndarray, ...]:
        g = np.asarray(io_group, dtype=np.int64)
        c = np.asarray(io_channel, dtype=np.int64)
        chip = np.asarray(chip_id, dtype=np.int64)
        key = (g << 16) | ((c & 0xFF) << 8) | (chip & 0xFF)
        in_range = (g >= 0) & (g < 1 << 16) & (c >= 0) & (c < 256) & (chip >= 0) & (chip < 256)
        idx = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        return idx, in_range & (self.keys[idx] == key)

    def locate(self, io_group: Any, io_channel: Any, chip_id: Any, channel_id: Any) -> Pixels:
        """Pixel of every packet, arrays broadcast together; off-pixel entries NaN / -1."""
        g, c, chip, ch = np.broadcast_arrays(*(np.asarray(a, dtype=np.int64) for a in (
            io_group, io_channel, chip_id, channel_id)))
        slot, found = self._slots(g, c, chip)
        ch_ok = (ch >= 0) & (ch < CHANNELS)
        chx = np.where(ch_ok, ch, 0)
        x = self.slot_x[slot, chx]
        y = self.slot_y[slot, chx]
        hit = found & ch_ok & ~np.isnan(x)
        nan = np.float64(np.nan)
        return Pixels(np.where(hit, x, nan), np.where(hit, y, nan),
                      np.where(hit, self.slot_tile[slot], -1),
                      np.where(hit, self.slot_anode[slot], -1),
                      np.where(hit, self.slot_module[slot], -1))

    def on_pixel(self, io_group: Any, io_channel: Any, chip_id: Any, channel_id: Any
                 ) -> np.ndarray:
        """True where the packet's channel is a pixel of this detector."""
        return self.locate(io_group, io_channel, chip_id, channel_id).tile >= 0

    def board_chips(self, io_group: int) -> dict[int, np.ndarray]:
        """The chips on each io_channel of one io_group (one PACMAN board), sorted."""
        sel = (self.keys >> 16) == int(io_group)
        keys = self.keys[sel]
        out: dict[int, np.ndarray] = {}
        for ch in np.unique((keys >> 8) & 0xFF).tolist():
            out[int(ch)] = np.sort(keys[((keys >> 8) & 0xFF) == ch] & 0xFF)
        return out


def _spec_of(module: Any, spec: Any) -> ModuleSpec:
    where = f"module {module}"
    if not isinstance(spec, Mapping) or "io_groups" not in spec:
        raise LayoutError(f"{where}: needs io_groups (the real io_group of each module-local one)")
    try:
        groups = tuple(int(g) for g in spec["io_groups"])
        off = spec.get("offset_mm") or {}
        offset = (float(off.get("x", 0.0)), float(off.get("y", 0.0)), float(off.get("z", 0.0)))
        tiles = None if spec.get("tiles") is None else tuple(int(t) for t in spec["tiles"])
    except (TypeError, ValueError, AttributeError) as exc:
        raise LayoutError(f"{where}: {exc}") from None
    if not groups or any(not 1 <= g <= 255 for g in groups):
        raise LayoutError(f"{where}: io_groups must be a list of integers 1..255, got "
                          f"{spec['io_groups']!r}")
    return ModuleSpec(groups, offset, tiles)


def build_detector(layout: Mapping[str, Any], modules: Mapping[Any, Any] | None = None,
                   name: str = "detector") -> Detector:
    """A :class:`Detector` from a parsed multi-tile layout and its modules.

    ``modules``: ``{module: {"io_groups": [...], "offset_mm": {x, y, z}, "tiles": [...]}}``;
    None means one module at the origin whose io_groups are the file's own.
    """
    for key in ("chip_channel_to_position", "pixel_pitch", "tile_chip_to_io",
                "tile_positions", "tile_orientations", "tile_indeces"):
        if key not in layout:
            raise LayoutError(f"the multi-tile layout has no {key!r}")
    tile_layout = tile_layout_from_positions(layout["chip_channel_to_position"],
                                             layout["pixel_pitch"])
    io_map = layout["tile_chip_to_io"]
    if modules is None:
        local = sorted({int(v) // IO_KEY_BASE for m in io_map.values() for v in m.values()})
        modules = {1: {"io_groups": list(range(1, max(local) + 1))}}
    specs = {int(m): _spec_of(m, s) for m, s in modules.items()}
    keys, mods, tiles, anodes, xs, ys = [], [], [], [], [], []
    for mod, spec in specs.items():
        chosen = spec.tiles if spec.tiles is not None else tuple(int(t) for t in io_map)
        for tile in chosen:
            if tile not in io_map:
                raise LayoutError(f"module {mod}: the layout has no tile {tile}")
            try:
                z_dir, y_sign, x_sign = (float(v) for v in layout["tile_orientations"][tile])
                _, y0, x0 = (float(v) for v in layout["tile_positions"][tile])
                anode = int(layout["tile_indeces"][tile][0])
                chips = np.array([int(c) for c in io_map[tile]], dtype=np.int64)
                io = np.array([int(v) for v in io_map[tile].values()], dtype=np.int64)
            except (KeyError, TypeError, ValueError) as exc:
                raise LayoutError(f"tile {tile}: incomplete or malformed entry ({exc})") from None
            local_g = io // IO_KEY_BASE
            if np.any((local_g < 1) | (local_g > len(spec.io_groups))):
                raise LayoutError(f"module {mod} tile {tile}: module-local io_group "
                                  f"{int(local_g.max())} but the module lists only "
                                  f"{len(spec.io_groups)} io_groups")
            g = np.asarray(spec.io_groups, dtype=np.int64)[local_g - 1]
            keys.append((g << 16) | ((io % IO_KEY_BASE) << 8) | chips)
            n = len(chips)
            mods.append(np.full(n, mod))
            tiles.append(np.full(n, tile))
            anodes.append(np.full(n, anode))
            lx, ly = tile_layout.chip_xy(chips[:, None], np.arange(CHANNELS)[None, :])
            xs.append(lx * x_sign + x0 + spec.offset_mm[0])
            ys.append(ly * y_sign + y0 + spec.offset_mm[1])
    if not keys:
        raise LayoutError("the detector has no tiles")
    key = np.concatenate(keys)
    order = np.argsort(key, kind="stable")
    key = key[order]
    dup = np.flatnonzero(key[1:] == key[:-1])
    if dup.size:
        k = int(key[dup[0]])
        raise LayoutError(f"io_group {k >> 16} io_channel {(k >> 8) & 0xFF} chip {k & 0xFF} "
                          "appears on two tiles")
    arrays = [np.concatenate(a)[order] for a in (mods, tiles, anodes, xs, ys)]
    for a in (key, *arrays):
        a.flags.writeable = False
    return Detector(name, tile_layout, key, *arrays)
