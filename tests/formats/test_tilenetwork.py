"""The network of a standard v2 tile: every chip, wired as the field's layout says."""

from __future__ import annotations

import json

import pytest

from larpixdaq.errors import ConfigError
from larpixdaq.formats.chipkey import parse_chip_key
from larpixdaq.formats.network import load_network
from larpixdaq.formats.tilenetwork import make_tile_network, tile_chip_id


def _field_tile_chips(tile: int = 1) -> dict[int, set[int]]:
    """Chips per io_channel of one tile, read straight from the field's multi-tile layout."""
    import yaml

    from larpixdaq.geometry.files import DATA_DIR, DEFAULT_MULTI_TILE

    doc = yaml.safe_load((DATA_DIR / DEFAULT_MULTI_TILE).read_text())
    out: dict[int, set[int]] = {}
    for chip, io_key in doc["tile_chip_to_io"][tile].items():
        out.setdefault(io_key % 1000, set()).add(chip)
    return out


def test_tile_network_covers_the_tile() -> None:
    d = make_tile_network(1, 0)
    net = load_network(json.loads(json.dumps(d)))
    keys = net.chip_keys()
    assert len(keys) == 100 and len(set(keys)) == 100
    parsed = [parse_chip_key(k) for k in keys]
    assert {c for _, c, _ in parsed} == {1, 2, 3, 4} and {g for g, _, _ in parsed} == {1}
    assert sorted(i for _, _, i in parsed) == list(range(11, 111))
    field = _field_tile_chips(1)
    assert sorted(len(v) for v in field.values()) == [24, 24, 26, 26]
    for c in (1, 2, 3, 4):
        tree = net.tree(1, c)
        assert set(tree.chip_ids()) == field[c]  # the chips the field's layout puts there
        assert tree.unreachable() == []
        steps = net.bring_up_order(1, c)
        assert [s.chip_id for s in steps] == tree.chip_ids()  # file order is bring-up order


def test_tile_links_join_grid_neighbours() -> None:
    net = load_network(make_tile_network(2, 0))
    step = {0: 1, 1: -10, 2: -1, 3: 10}
    for (_, c), tree in net.trees.items():
        for n in tree.nodes.values():
            for pos, nb in enumerate(n.miso_us):
                if nb is None or not n.is_chip:
                    continue
                assert nb - n.chip_id == step[pos]
                assert abs((nb - 11) % 10 - (n.chip_id - 11) % 10) <= 1  # no row wrap
        # the chips wired to the PACMAN connector: first column, rows 0, 3, 6, 9
        assert tree.order()[1] == {1: 11, 2: 41, 3: 71, 4: 101}[c]


def test_tile_with_fewer_io_channels_as_built() -> None:
    # tile 4 of the 2x2 module layout uses three io_channels (13, 14, 15)
    field = _field_tile_chips(4)
    chans = sorted(field)
    d = make_tile_network(1, 3, io_channels=chans, chips=[sorted(field[c]) for c in chans])
    net = load_network(d)
    assert sorted(c for _, c in net.io_channels()) == [13, 14, 15]
    for c in chans:
        tree = net.tree(1, c)
        assert set(tree.chip_ids()) == field[c] and tree.unreachable() == []
    with pytest.raises(ConfigError, match="not connected"):
        make_tile_network(1, 0, io_channels=[1], chips=[[11, 13]])


def test_tile_bring_up_directions() -> None:
    net = load_network(make_tile_network(1, 0))
    tree = net.tree(1, 1)
    for s in net.bring_up_order(1, 1):
        node = tree.node(s.chip_id)
        assert set(node.miso_ds_uarts) == {s.parent}
        ds_uart = node.miso_ds_uarts[s.parent]
        assert s.downstream == 0xF0 | (1 << ds_uart)
        w = s.chip_id_write
        assert w is not None and (w.chip_id, w.parity_chip_id) == (1, s.chip_id)
    assert tile_chip_id(0, 0) == 11 and tile_chip_id(9, 9) == 110


def test_tile_channels_and_names() -> None:
    d = make_tile_network(3, 2)
    assert d["name"] == "tile-3-2"
    assert sorted(load_network(d).io_channels()) == [(3, 9), (3, 10), (3, 11), (3, 12)]
    d = make_tile_network(1, 0, io_channels=(5, 6, 7, 8), name="x")
    assert d["name"] == "x" and list(d["network"]["1"]) == ["5", "6", "7", "8"]


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((1, 8), {}, r"tile_index 8 is out of range 0\.\.7"),
        ((1, -1), {}, "tile_index -1"),
        ((1, True), {}, "tile_index True"),
        ((1, 0), {"io_channels": (1, 2, 3)}, "4 distinct io_channels"),
        ((1, 0), {"io_channels": (1, 1, 2, 3)}, "4 distinct io_channels"),
        ((256, 0), {}, r"io_group 256 is out of range"),
        ((1, 0), {"io_channels": (1, 2, 3, 300)}, r"io_channel 300 is out of range"),
    ],
)
def test_tile_errors(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_tile_network(*args, **kwargs)
