"""Where each channel of a standard LArPix-v2 pixel tile sits on the anode plane.

A standard tile carries 10 x 10 chips (ids 11..110, ``id = 11 + column + 10 * row``, the
numbering of :func:`larpixdaq.formats.network.tile_chip_id`) and 70 x 70 = 4900 pixels at
4.434 mm pitch. A chip has 64 channels but only 49 pixels of its own (a 7 x 7 patch), so 15
channels are not bonded to any pixel: the same 15 the field's tile scripts treat as
"non-routed" (:data:`UNROUTED_CHANNELS`). The 49 routed channels, in increasing channel
number, fill the chip's 7 x 7 patch row by row (local x fastest). This is a simple,
documented mapping, not the as-built routing of a particular tile revision; every consumer
(simulation, monitor, tests) gets it from here, so they always agree.

Coordinates are millimetres in the tile's frame, origin at the tile centre, x along chip
columns and y along chip rows. A board with several tiles places tile ``t`` at x offset
``t * TILE_WIDTH_MM`` so pixels never overlap.
"""

from __future__ import annotations

import numpy as np

CHIPS_PER_SIDE = 10
FIRST_CHIP_ID = 11
LAST_CHIP_ID = FIRST_CHIP_ID + CHIPS_PER_SIDE * CHIPS_PER_SIDE - 1  # 110
CHANNELS = 64
PIXELS_PER_CHIP_SIDE = 7
PIXEL_PITCH_MM = 4.434
PIXELS_PER_SIDE = CHIPS_PER_SIDE * PIXELS_PER_CHIP_SIDE  # 70
PIXELS_PER_TILE = PIXELS_PER_SIDE * PIXELS_PER_SIDE  # 4900
TILE_WIDTH_MM = PIXELS_PER_SIDE * PIXEL_PITCH_MM  # 310.38

UNROUTED_CHANNELS: tuple[int, ...] = (6, 7, 8, 9, 22, 23, 24, 25, 38, 39, 40, 54, 55, 56, 57)
"""Channels with no pixel bonded to them; 64 - 15 = 49 = 7 x 7 routed channels."""

ROUTED: np.ndarray = np.ones(CHANNELS, dtype=bool)
ROUTED[list(UNROUTED_CHANNELS)] = False
ROUTED.flags.writeable = False
ROUTED_CHANNELS: tuple[int, ...] = tuple(int(c) for c in np.flatnonzero(ROUTED))

# channel -> index 0..48 in the chip's patch, -1 for unrouted channels
_PATCH_INDEX = np.full(CHANNELS, -1, dtype=np.int64)
_PATCH_INDEX[ROUTED] = np.arange(PIXELS_PER_CHIP_SIDE**2)
# patch index -> channel
_PATCH_CHANNEL = np.asarray(ROUTED_CHANNELS, dtype=np.int64)


def is_tile_chip(chip_id: np.ndarray | int) -> np.ndarray:
    """True for the ids a standard tile uses (11..110)."""
    c = np.asarray(chip_id)
    return (c >= FIRST_CHIP_ID) & (c <= LAST_CHIP_ID)


def chip_column_row(chip_id: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """(column, row) 0..9 of tile chip ids; raises ValueError for ids not on a tile."""
    c = np.asarray(chip_id, dtype=np.int64)
    if not np.all(is_tile_chip(c)):
        bad = c[~is_tile_chip(c)].ravel()[0]
        raise ValueError(f"chip id {int(bad)} is not on a standard tile (ids 11..110)")
    k = c - FIRST_CHIP_ID
    return k % CHIPS_PER_SIDE, k // CHIPS_PER_SIDE


def pixel_index(chip_id: np.ndarray | int, channel: np.ndarray | int) -> np.ndarray:
    """Pixel number 0..4899 on the tile (``row * 70 + column``), -1 for unrouted channels."""
    col, row = chip_column_row(chip_id)
    ch = np.asarray(channel, dtype=np.int64)
    if np.any((ch < 0) | (ch >= CHANNELS)):
        raise ValueError("channel must be 0..63")
    patch = _PATCH_INDEX[ch]
    px = col * PIXELS_PER_CHIP_SIDE + patch % PIXELS_PER_CHIP_SIDE
    py = row * PIXELS_PER_CHIP_SIDE + patch // PIXELS_PER_CHIP_SIDE
    return np.where(patch >= 0, py * PIXELS_PER_SIDE + px, -1)


def pixel_xy(
    chip_id: np.ndarray | int, channel: np.ndarray | int, tile: np.ndarray | int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centre (x, y) in mm; NaN for unrouted channels."""
    pix = pixel_index(chip_id, channel)
    px = (pix % PIXELS_PER_SIDE).astype(np.float64)
    py = (pix // PIXELS_PER_SIDE).astype(np.float64)
    x = (px - (PIXELS_PER_SIDE - 1) / 2) * PIXEL_PITCH_MM + np.asarray(tile) * TILE_WIDTH_MM
    y = (py - (PIXELS_PER_SIDE - 1) / 2) * PIXEL_PITCH_MM
    routed = pix >= 0
    return np.where(routed, x, np.nan), np.where(routed, y, np.nan)


def pixel_chip_channel(pixel: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pixel_index`: (chip id, channel) of pixels 0..4899."""
    p = np.asarray(pixel, dtype=np.int64)
    if np.any((p < 0) | (p >= PIXELS_PER_TILE)):
        raise ValueError(f"pixel must be 0..{PIXELS_PER_TILE - 1}")
    px, py = p % PIXELS_PER_SIDE, p // PIXELS_PER_SIDE
    col, lx = px // PIXELS_PER_CHIP_SIDE, px % PIXELS_PER_CHIP_SIDE
    row, ly = py // PIXELS_PER_CHIP_SIDE, py % PIXELS_PER_CHIP_SIDE
    chip = FIRST_CHIP_ID + col + CHIPS_PER_SIDE * row
    channel = _PATCH_CHANNEL[ly * PIXELS_PER_CHIP_SIDE + lx]
    return chip, channel


def tile_layout() -> dict[str, np.ndarray]:
    """Every routed channel of one tile: chip_id, channel, pixel, x, y (4900 entries each)."""
    pixel = np.arange(PIXELS_PER_TILE)
    chip, channel = pixel_chip_channel(pixel)
    x, y = pixel_xy(chip, channel)
    return {"chip_id": chip, "channel": channel, "pixel": pixel, "x": x, "y": y}
