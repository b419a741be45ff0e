"""The detector's pixel geometry, from the field's layout files (see docs/geometry.md).

``load_detector("2x2").locate(io_group, io_channel, chip_id, channel_id)`` gives every
packet's pixel centre, tile, anode and module over numpy arrays; :func:`standard_tile` is the
pixel plane every v2 tile shares (which channels are bonded, where each pixel is).
"""

from larpixdaq.geometry.files import (
    DETECTORS,
    load_detector,
    read_yaml,
    standard_tile,
    standard_tile_chips,
)
from larpixdaq.geometry.layout import (
    CHANNELS,
    Detector,
    LayoutError,
    Pixels,
    TileLayout,
    build_detector,
    tile_layout_from_positions,
)

__all__ = ["CHANNELS", "DETECTORS", "Detector", "LayoutError", "Pixels", "TileLayout",
           "build_detector", "load_detector", "read_yaml", "standard_tile",
           "standard_tile_chips", "tile_layout_from_positions"]
