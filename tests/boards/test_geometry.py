"""The tile geometry: 100 chips x 49 routed channels = 4900 pixels at 4.434 mm pitch."""

from __future__ import annotations

import numpy as np
import pytest

from larpixdaq.boards import geometry as geo
from larpixdaq.formats.network import tile_chip_id


def test_chip_ids_and_routed_channels() -> None:
    assert geo.FIRST_CHIP_ID == 11 and geo.LAST_CHIP_ID == 110
    assert len(geo.ROUTED_CHANNELS) == 49
    assert len(geo.UNROUTED_CHANNELS) == 15
    assert set(geo.ROUTED_CHANNELS).isdisjoint(geo.UNROUTED_CHANNELS)
    # same numbering as the network generator
    col, row = geo.chip_column_row(tile_chip_id(3, 7))
    assert (int(col), int(row)) == (3, 7)


def test_every_pixel_exactly_once() -> None:
    chips = np.repeat(np.arange(11, 111), 64)
    chans = np.tile(np.arange(64), 100)
    pix = geo.pixel_index(chips, chans)
    routed = pix >= 0
    assert routed.sum() == geo.PIXELS_PER_TILE == 4900
    assert np.array_equal(np.sort(pix[routed]), np.arange(4900))
    back_chip, back_chan = geo.pixel_chip_channel(pix[routed])
    assert np.array_equal(back_chip, chips[routed])
    assert np.array_equal(back_chan, chans[routed])


def test_pitch_and_extent() -> None:
    layout = geo.tile_layout()
    xs, ys = np.unique(layout["x"]), np.unique(layout["y"])
    assert len(xs) == len(ys) == 70
    assert np.allclose(np.diff(xs), 4.434)
    assert np.isclose(xs.mean(), 0.0) and np.isclose(ys.mean(), 0.0)
    assert np.isclose(xs.max() - xs.min() + 4.434, geo.TILE_WIDTH_MM)
    # a chip's 49 pixels form one 7 x 7 patch
    sel = layout["chip_id"] == 55
    assert np.isclose(np.ptp(layout["x"][sel]), 6 * 4.434)
    assert np.isclose(np.ptp(layout["y"][sel]), 6 * 4.434)


def test_unrouted_channels_have_no_position() -> None:
    x, y = geo.pixel_xy(11, list(geo.UNROUTED_CHANNELS))
    assert np.isnan(x).all() and np.isnan(y).all()
    x2, _ = geo.pixel_xy(11, 0, tile=2)
    x0, _ = geo.pixel_xy(11, 0, tile=0)
    assert np.isclose(x2 - x0, 2 * geo.TILE_WIDTH_MM)


@pytest.mark.parametrize("chip", [0, 1, 10, 111, 255])
def test_bad_chip_id_raises(chip: int) -> None:
    with pytest.raises(ValueError, match="not on a standard tile"):
        geo.pixel_index(chip, 0)


def test_bad_channel_and_pixel_raise() -> None:
    with pytest.raises(ValueError, match="channel"):
        geo.pixel_index(11, 64)
    with pytest.raises(ValueError, match="pixel"):
        geo.pixel_chip_channel(4900)
