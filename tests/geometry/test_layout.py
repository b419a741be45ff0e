"""The detector geometry against the field's own files and tools (never against our own rule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.geometry import (
    LayoutError,
    build_detector,
    load_detector,
    standard_tile,
)
from larpixdaq.geometry.files import DATA_DIR as PACKAGE_DATA
from larpixdaq.geometry.files import DEFAULT_MULTI_TILE, PIXEL_LAYOUT

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
FIELD = np.load(DATA_DIR / "field" / "larpixparser-0.0.8-multi_tile_layout-2.3.16-positions.npz")
MODULE_OFFSET_MM = {1: (335.0, 420.0), 2: (-335.0, 420.0), 3: (335.0, 420.0),
                    4: (-335.0, 420.0)}
"""x, y of each 2x2 module: LarpixParser's 2x2.yaml tpc_offsets (cm, z y x) * 10."""


@pytest.fixture(scope="module")
def multi_tile() -> dict:
    return yaml.safe_load((PACKAGE_DATA / DEFAULT_MULTI_TILE).read_text())


def test_tile_pixels_are_larpix_geometry_layout_2_4_0() -> None:
    # larpix-geometry's own file: pixel id -> (x, y), chip -> pixel id of each channel
    doc = yaml.safe_load((PACKAGE_DATA / PIXEL_LAYOUT).read_text())
    where = {p[0]: (p[1], p[2]) for p in doc["pixels"]}
    tile = standard_tile()
    n = 0
    for chip, pixel_ids in doc["chips"]:
        x, y = tile.chip_xy(np.full(64, chip), np.arange(64))
        for ch, pid in enumerate(pixel_ids):
            if pid is None:
                assert np.isnan(x[ch]) and np.isnan(y[ch])
            else:
                assert (x[ch], y[ch]) == pytest.approx(where[pid], abs=1e-6)
                n += 1
    assert n == 4900 == int(tile.routed.sum()) * 100
    assert np.flatnonzero(~tile.routed).tolist() == [6, 7, 8, 9, 22, 23, 24, 25, 38, 39, 40,
                                                     54, 55, 56, 57]


@pytest.mark.parametrize("module", [1, 2, 3, 4])
def test_2x2_matches_larpixparser_for_every_pixel(module: int) -> None:
    det = load_detector("2x2")
    key = FIELD["key"].astype(np.int64)
    io_group = key[:, 0] + 2 * (module - 1)
    got = det.locate(io_group, key[:, 1], key[:, 2], key[:, 3])
    dx, dy = MODULE_OFFSET_MM[module]
    assert np.allclose(got.x, FIELD["x"] + dx, atol=1e-6)
    assert np.allclose(got.y, FIELD["y"] + dy, atol=1e-6)
    assert (got.module == module).all()
    assert set(np.unique(got.anode)) == {1, 2}
    # anode 1 (io_group 1 of the module) drifts one way, anode 2 the other
    assert ((got.anode == 1) == (FIELD["direction"] == 1)).all()


def test_io_keys_and_tiles_follow_the_files_dicts(multi_tile: dict) -> None:
    det = load_detector("2x2")
    # every chip of tile_chip_to_io, on module 3 (io_groups 5, 6), lands on its tile
    for tile, chips in multi_tile["tile_chip_to_io"].items():
        ids = np.array(list(chips), dtype=np.int64)
        io = np.array(list(chips.values()), dtype=np.int64)
        got = det.locate(io // 1000 + 4, io % 1000, ids, np.zeros_like(ids))
        assert (got.tile == tile).all() and (got.module == 3).all()
        assert (got.anode == multi_tile["tile_indeces"][tile][0]).all()
    assert len(det.keys) == sum(len(c) for c in multi_tile["tile_chip_to_io"].values()) * 4


def test_off_pixel_and_unknown_keys_are_nan_and_minus_one() -> None:
    det = load_detector("2x2")
    got = det.locate([1, 1, 9, 1, 1, 1, -1], [1, 1, 1, 1, 99, 1, 1],
                     [11, 11, 11, 300, 11, 11, 11], [6, 64, 0, 0, 0, -1, 0])
    assert np.isnan(got.x).all() and np.isnan(got.y).all()
    assert (got.tile == -1).all() and (got.anode == -1).all() and (got.module == -1).all()
    assert not det.on_pixel(1, 1, 11, 6) and det.on_pixel(1, 1, 11, 0)


def test_single_tile_detector_is_tile_1_of_the_layout(multi_tile: dict) -> None:
    det = load_detector("tile")
    assert det.io_groups == [1]
    chans = det.board_chips(1)
    field = {}
    for chip, io in multi_tile["tile_chip_to_io"][1].items():
        field.setdefault(io % 1000, []).append(chip)
    assert {c: v.tolist() for c, v in chans.items()} == {c: sorted(v) for c, v in field.items()}
    assert det.locate(2, 1, 11, 0).tile == -1  # only io_group 1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 40), st.integers(0, 120),
                          st.integers(-2, 70)), min_size=1, max_size=40))
def test_locate_on_arrays_equals_one_by_one(rows: list[tuple[int, int, int, int]]) -> None:
    det = load_detector("2x2")
    g, c, chip, ch = (np.array(v) for v in zip(*rows, strict=True))
    whole = det.locate(g, c, chip, ch)
    for i, row in enumerate(rows):
        one = det.locate(*row)
        assert np.array_equal(one.x, whole.x[i], equal_nan=True)
        assert int(one.tile) == whole.tile[i] and int(one.module) == whole.module[i]


def test_a_site_supplies_its_own_description(tmp_path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(f"name: my-module\nmulti_tile_layout: {DEFAULT_MULTI_TILE}\nmodules:\n"
                    "  7: {io_groups: [21, 22], offset_mm: {x: 1000.0}}\n")
    det = load_detector(site)
    assert det.name == "my-module" and det.io_groups == [21, 22]
    got = det.locate(21, 1, 11, 0)
    assert got.module == 7 and got.x == pytest.approx(-294.861 + 1000.0)


def test_a_bare_multi_tile_file_is_one_module(tmp_path, multi_tile: dict) -> None:
    layout = dict(multi_tile)
    layout["tile_chip_to_io"] = {1: multi_tile["tile_chip_to_io"][1]}
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(layout))
    det = load_detector(path)
    assert det.io_groups == [1] and len(det.keys) == 100
    assert det.locate(1, 1, 11, 0).x == pytest.approx(-294.861)


def _bad(multi_tile: dict, change) -> dict:
    layout = {k: (dict(v) if isinstance(v, dict) else v) for k, v in multi_tile.items()}
    change(layout)
    return layout


def test_bad_layouts_are_refused_with_the_reason(tmp_path, multi_tile: dict) -> None:
    with pytest.raises(LayoutError, match="no 'tile_chip_to_io'"):
        build_detector(_bad(multi_tile, lambda d: d.pop("tile_chip_to_io")))

    def clash(d: dict) -> None:
        d["chip_channel_to_position"][11001] = d["chip_channel_to_position"][11000]
    with pytest.raises(LayoutError, match="two channels on one pixel"):
        build_detector(_bad(multi_tile, clash))

    def same_io(d: dict) -> None:
        d["tile_chip_to_io"][2] = d["tile_chip_to_io"][1]
    with pytest.raises(LayoutError, match="appears on two tiles"):
        build_detector(_bad(multi_tile, same_io))
    with pytest.raises(LayoutError, match="lists only 1 io_groups"):
        build_detector(multi_tile, {1: {"io_groups": [1]}})
    with pytest.raises(LayoutError, match="no tile 99"):
        build_detector(multi_tile, {1: {"io_groups": [1, 2], "tiles": [99]}})
    with pytest.raises(LayoutError, match="no detector"):
        load_detector(tmp_path / "missing.yaml")
    (tmp_path / "junk.yaml").write_text("a: [1\n")
    with pytest.raises(LayoutError, match="not valid YAML"):
        load_detector(tmp_path / "junk.yaml")
    (tmp_path / "other.yaml").write_text("something: 1\n")
    with pytest.raises(LayoutError, match="neither a multi-tile layout"):
        load_detector(tmp_path / "other.yaml")
