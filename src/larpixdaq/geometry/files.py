"""Reading layout files: the packaged defaults and a site's own (the I/O edge of the geometry).

Two kinds of YAML are read:

* a **multi-tile layout** as the field's tools write it (``chip_channel_to_position``,
  ``tile_chip_to_io``, ``tile_positions``, ...); alone it is one module whose io_groups are
  the file's own;
* a **detector description** (ours, a few lines): ``name``, ``multi_tile_layout`` (a file name
  next to the description, or one of the packaged files) and ``modules``: for each module its
  real ``io_groups``, its ``offset_mm`` and optionally the ``tiles`` it uses.

Packaged (``larpixdaq/geometry/data``): ``multi_tile_layout-2.3.16.yaml`` (the 2x2 module
layout that LarpixParser ships), ``layout-2.4.0.yaml`` (larpix-geometry's single-tile pixel
layout, for reference and cross-checks), ``2x2.yaml`` and ``tile.yaml`` (descriptions).
:func:`load_detector` takes ``"2x2"``, ``"tile"`` or a path. Parsed files are cached per path.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml

from larpixdaq.geometry.layout import Detector, LayoutError, TileLayout, build_detector

DATA_DIR = Path(__file__).resolve().parent / "data"
DETECTORS = ("tile", "2x2")
"""Detector descriptions shipped in the package, by name."""
DEFAULT_MULTI_TILE = "multi_tile_layout-2.3.16.yaml"
PIXEL_LAYOUT = "layout-2.4.0.yaml"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """A YAML file parsed with the safe loader; LayoutError with the reason if unreadable."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            return yaml.load(f, Loader=_Loader)  # noqa: S506 - a safe loader
    except OSError as exc:
        raise LayoutError(f"cannot read layout file {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise LayoutError(f"{p} is not valid YAML: {exc}") from None


@functools.lru_cache(maxsize=8)
def _cached(path: str) -> Any:
    return read_yaml(path)


def _resolve(name: str, base: Path) -> Path:
    here = base / name
    return here if here.is_file() else DATA_DIR / name


def load_detector(source: str | os.PathLike[str] = "tile") -> Detector:
    """A packaged detector (``"tile"``, ``"2x2"``) or a site's description / multi-tile file."""
    if isinstance(source, str) and source in DETECTORS:
        path = DATA_DIR / f"{source}.yaml"
    else:
        path = Path(source)
        if not path.is_file():
            raise LayoutError(f"no detector {str(source)!r}: use one of "
                              f"{', '.join(DETECTORS)} or the path of a layout file")
    return _detector(str(path.resolve()))


@functools.lru_cache(maxsize=8)
def _detector(path: str) -> Detector:
    doc = _cached(path)
    if not isinstance(doc, dict):
        raise LayoutError(f"{path}: expected a mapping at the top level")
    if "chip_channel_to_position" in doc:
        return build_detector(doc, None, name=Path(path).stem)
    if "multi_tile_layout" not in doc or "modules" not in doc:
        raise LayoutError(f"{path}: neither a multi-tile layout (chip_channel_to_position, "
                          "tile_chip_to_io, ...) nor a detector description "
                          "(multi_tile_layout, modules)")
    layout_path = _resolve(str(doc["multi_tile_layout"]), Path(path).parent)
    layout = _cached(str(layout_path))
    if not isinstance(doc["modules"], dict) or not isinstance(layout, dict):
        raise LayoutError(f"{path}: modules must be a mapping and {layout_path} a layout")
    return build_detector(layout, doc["modules"], name=str(doc.get("name", Path(path).stem)))


def standard_tile() -> TileLayout:
    """The pixel plane of a LArPix-v2 tile (layout 2.4.0) from the packaged layout file."""
    return load_detector("tile").tile_layout


@functools.lru_cache(maxsize=1)
def standard_tile_chips() -> tuple[tuple[int, ...], ...]:
    """Chips on each of a standard tile's four io_channels, in io_channel order."""
    chips = load_detector("tile").board_chips(1)
    return tuple(tuple(int(c) for c in chips[ch]) for ch in sorted(chips))
