"""The hydra network of a standard LArPix-v2 tile, as the tile is wired.

A v2 tile is a 10 x 10 grid of chips (ids 11..110) split over up to four PACMAN UARTs; each
UART's chips form one tree rooted at the chip wired to the PACMAN connector and spanning the
set over grid neighbours, every chip at its fewest hops from the PACMAN. The result is a
network file's dict, read by :func:`larpixdaq.formats.network.load_network` like any other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from larpixdaq.errors import ConfigError
from larpixdaq.formats.chipkey import chip_key
from larpixdaq.formats.hydra import (
    DEFAULT_MISO_UART_MAP,
    DEFAULT_MOSI_UART_MAP,
    DEFAULT_USDS_LINK_MAP,
)

TILE_SIZE = 10
TILE_FIRST_CHIP_ID = 11
TILE_ROOT_CHIPS = (11, 41, 71, 101)
"""The chips of a v2 tile wired to the PACMAN connector, one per io_channel (in order): the
first column's chips of rows 0, 3, 6 and 9."""
_STEP = {0: 1, 1: -TILE_SIZE, 2: -1, 3: TILE_SIZE}
"""Neighbour of a tile chip at each UART position: 0 = +x, 1 = -y, 2 = -x, 3 = +y."""


def tile_chip_id(x: int, y: int) -> int:
    """Chip id at column x, row y (0..9) of a standard 10 x 10 tile: 11 + x + 10 y."""
    return TILE_FIRST_CHIP_ID + x + TILE_SIZE * y


def _grid_neighbour(chip: int, pos: int) -> int | None:
    col = (chip - TILE_FIRST_CHIP_ID) % TILE_SIZE
    if (pos == 0 and col == TILE_SIZE - 1) or (pos == 2 and col == 0):
        return None  # no wrap from one row's end to the next row
    return chip + _STEP[pos]


def tile_tree_links(chips: Iterable[int], root: int) -> dict[int, list[int | None]]:
    """Upstream links (``miso_us`` by position) of a breadth-first spanning tree of ``chips``
    over grid neighbours, from ``root``: every chip at its fewest hops from the PACMAN.

    Raises ConfigError if some chips cannot be reached through neighbours in the set.
    """
    members = set(chips)
    if root not in members:
        raise ConfigError(f"root chip {root} is not among the io_channel's chips")
    links: dict[int, list[int | None]] = {root: [None] * 4}
    level = [root]
    while level:
        nxt: list[int] = []
        for cid in level:
            for pos in range(4):
                nb = _grid_neighbour(cid, pos)
                if nb in members and nb not in links:
                    links[cid][pos] = nb
                    links[nb] = [None] * 4
                    nxt.append(nb)
        level = nxt
    missing = sorted(members - set(links))
    if missing:
        raise ConfigError(f"chips {missing} are not connected to root {root} through "
                          "neighbouring chips of the same io_channel")
    return links


def _root_of(chips: Iterable[int], k: int) -> int:
    members = set(chips)
    for r in (TILE_ROOT_CHIPS[k % 4], *TILE_ROOT_CHIPS):
        if r in members:
            return r
    return min(members, key=lambda c: ((c - TILE_FIRST_CHIP_ID) % TILE_SIZE, c))


def make_tile_network(
    io_group: int,
    tile_index: int = 0,
    io_channels: Iterable[int] | None = None,
    name: str | None = None,
    chips: Iterable[Iterable[int]] | None = None,
) -> dict[str, Any]:
    """The network file of one LArPix-v2 tile (chip ids 11..110), as it is wired.

    ``chips`` lists the chips on each of the tile's io_channels; by default the standard tile's
    four sets from the packaged layout file (:func:`larpixdaq.geometry.standard_tile_chips`:
    24, 26, 26 and 24 chips). Each set is one hydra tree rooted at its chip wired to the PACMAN
    (:data:`TILE_ROOT_CHIPS`), spanning the set breadth first over grid neighbours; the PACMAN
    sees its root at position 0. Maps are the reference defaults. ``io_channels`` defaults to
    tile ``tile_index``'s UARTs, ``4 * tile_index + 1 ..``; a tile wired with fewer
    io_channels (as some tiles of the 2x2 are) gives one chip set per io_channel it uses, and
    the k-th UART of a tile (``(io_channel - 1) % 4``) prefers the k-th root chip.
    """
    if isinstance(tile_index, bool) or not isinstance(tile_index, int) or not 0 <= tile_index <= 7:
        raise ConfigError(f"tile_index {tile_index!r} is out of range 0..7")
    if chips is None:
        from larpixdaq.geometry import standard_tile_chips

        chips = standard_tile_chips()
    sets = [sorted(int(c) for c in s) for s in chips]
    if io_channels is None:
        chans = tuple(4 * tile_index + k for k in range(1, 5))
    else:
        chans = tuple(io_channels)
    if not 1 <= len(sets) <= 4 or any(not s for s in sets):
        raise ConfigError(f"a tile has 1..4 non-empty chip sets (one per io_channel), "
                          f"got {len(sets)}")
    if len(chans) != len(sets) or len(set(chans)) != len(chans):
        raise ConfigError(f"a tile needs {len(sets)} distinct io_channels, one per chip set, "
                          f"got {chans!r}")
    chip_key(io_group, chans[0], TILE_FIRST_CHIP_ID)  # range checks
    for ch in chans:
        chip_key(io_group, ch, TILE_FIRST_CHIP_ID)
    group: dict[str, Any] = {}
    for ch, members in zip(chans, sets, strict=True):
        root = _root_of(members, (ch - 1) % 4)
        links = tile_tree_links(members, root)
        nodes: list[dict[str, Any]] = [{"chip_id": "ext", "root": True,
                                        "miso_us": [root, None, None, None]}]
        for cid, us in links.items():  # breadth first: file order is bring-up order
            node: dict[str, Any] = {"chip_id": cid}
            if any(u is not None for u in us):
                node["miso_us"] = us
            nodes.append(node)
        group[str(ch)] = {"nodes": nodes}
    return {
        "_config_type": "controller",
        "name": name if name is not None else f"tile-{io_group}-{tile_index}",
        "asic_version": 2,
        "layout": "2.4.0",
        "network": {
            str(io_group): group,
            "miso_uart_map": list(DEFAULT_MISO_UART_MAP),
            "mosi_uart_map": list(DEFAULT_MOSI_UART_MAP),
            "usds_link_map": list(DEFAULT_USDS_LINK_MAP),
        },
    }
