"""A simulated board is the real tile: every packet on a real pixel, tracks straight.

The expected pixels come straight from the field's layout file (its own dicts, read here),
never from :mod:`larpixdaq.geometry`.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from larpixdaq.boards import physics as ph
from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.formats import packets as pk
from larpixdaq.geometry import load_detector
from larpixdaq.geometry.files import DATA_DIR, DEFAULT_MULTI_TILE


@pytest.fixture(scope="module")
def field() -> dict[tuple[int, int, int, int], tuple[int, int, int]]:
    """(module-local io_group, io_channel, chip, channel) -> (tile, column, row), from the
    2x2 module layout's own dicts; a 2x2 io_group g is module-local io_group (g - 1) % 2 + 1
    (LarpixParser's 2x2.yaml: module_to_io_groups 1: [1, 2], 2: [3, 4], ...)."""
    doc = yaml.safe_load((DATA_DIR / DEFAULT_MULTI_TILE).read_text())
    pos = doc["chip_channel_to_position"]
    out = {}
    for tile, chips in doc["tile_chip_to_io"].items():
        for chip, io in chips.items():
            for ch in range(64):
                if chip * 1000 + ch in pos:
                    col, row = pos[chip * 1000 + ch]
                    out[(io // 1000, io % 1000, chip, ch)] = (tile, col, row)
    return out


def data_packets(board: SimulatedBoard, seconds: float) -> dict[str, np.ndarray]:
    words = board.generate(seconds)
    d = words[words["type"] == ord("D")]
    f = pk.decode_fields(d["packet"])
    data = f["packet_type"] == 0
    return {"io_group": np.full(int(data.sum()), board.io_group),
            "io_channel": d["io_channel"][data].astype(int),
            "chip_id": f["chip_id"][data].astype(int),
            "channel_id": f["channel_id"][data].astype(int),
            "timestamp": f["timestamp"][data].astype(int)}


def on_field_pixel(p: dict[str, np.ndarray], field: dict) -> np.ndarray:
    local = (p["io_group"] - 1) % 2 + 1
    return np.array([(int(g), int(c), int(chip), int(ch)) in field for g, c, chip, ch in zip(
        local, p["io_channel"], p["chip_id"], p["channel_id"], strict=True)])


def test_every_packet_of_a_one_tile_run_is_on_a_real_pixel(field: dict) -> None:
    board = SimulatedBoard(1, tiles=1, seed=5).bring_up_all()
    p = data_packets(board, 0.5)
    assert p["chip_id"].size > 3000
    assert on_field_pixel(p, field).all()
    # all four io_channels and their chips as wired in the field's layout
    assert set(p["io_channel"].tolist()) == {1, 2, 3, 4}


def test_every_packet_of_a_2x2_run_is_on_a_real_pixel(field: dict) -> None:
    det = load_detector("2x2")
    seen_tiles = set()
    for g in range(1, 9):
        board = SimulatedBoard.for_detector(det, g, seed=g).bring_up_all()
        assert board.tiles == 8
        p = data_packets(board, 0.05)
        assert p["chip_id"].size > 1000
        assert on_field_pixel(p, field).all(), f"io_group {g}"
        local = (g - 1) % 2 + 1
        seen_tiles |= {(g, field[(local, int(c), int(chip), int(ch))][0]) for c, chip, ch in zip(
            p["io_channel"], p["chip_id"], p["channel_id"], strict=True)}
    assert len(seen_tiles) == 64  # 8 boards x 8 tiles, every tile sending


@pytest.mark.parametrize(("io_group", "detector"), [(1, None), (2, "2x2"), (7, "2x2")])
def test_simulated_tracks_are_straight_lines_of_real_pixels(
        field: dict, io_group: int, detector: str | None) -> None:
    # a quarter of the cosmic rate (4 Hz a tile): two tracks on one tile within the 0.4 ms a
    # cluster can span are then rare, so each cluster is one track
    if detector is None:
        board = SimulatedBoard(io_group, tiles=1, seed=21, rate_scale=0.25)
    else:
        board = SimulatedBoard.for_detector(load_detector(detector), io_group, seed=21,
                                            rate_scale=0.25)
    # ~30 threshold units above the pedestals (> 10 noise sigmas): only cosmic rays cross it
    board.bring_up_all(threshold=60)
    p = data_packets(board, 10.0)
    local = (io_group - 1) % 2 + 1
    where = np.array([field[(local, int(c), int(chip), int(ch))] for c, chip, ch in zip(
        p["io_channel"], p["chip_id"], p["channel_id"], strict=True)])
    # packets arrive in digitisation order; consecutive hits of one track are at most a drift
    # time (1875 ticks) apart, tracks on a tile ~250 ms (the timestamp wraps each second: the
    # jump back splits too)
    fitted = 0
    for tile in np.unique(where[:, 0]):
        on = where[:, 0] == tile
        t, xy_tile = p["timestamp"][on], where[on, 1:].astype(float)
        for idx in np.split(np.arange(t.size), np.flatnonzero(np.abs(np.diff(t)) > 2000) + 1):
            fitted += _straight(xy_tile[idx])
    assert fitted >= 10
    assert ph.COSMIC_RATE_PER_TILE * 0.25 * 10.0 * board.tiles > fitted


def _straight(xy: np.ndarray) -> int:
    """1 if the hits of a long cluster lie on a straight line of pixels (0: short cluster)."""
    if len(xy) < 12:
        return 0
    # distance of each hit pixel from the best straight line (principal axis), in pixels
    centred = xy - xy.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    off_line = np.abs(centred @ vt[1])
    assert np.ptp(centred @ vt[0]) > 8, "a long track"
    assert off_line.max() < 1.5, f"hits {xy[:40].tolist()} are not on a line"
    return 1
