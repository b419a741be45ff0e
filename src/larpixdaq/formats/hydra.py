"""The hydra network model: LArPix chips linked through their UARTs into one tree per PACMAN UART.

A node lists its neighbours by position (``miso_us``: upstream, away from the PACMAN;
``miso_ds``/``mosi``: toward it and its command inputs), and UART maps translate positions
into the node's own UART numbers. Positions always index the node's own maps: ``miso_us[p]``
uses ``miso_uart_map[p]`` (``miso_us_uart_map`` in the older map style), ``miso_ds[p]`` the
same map (old style: ``miso_ds_uart_map``), ``mosi[p]`` uses ``mosi_uart_map[p]``.

This module is the shape only: :mod:`larpixdaq.formats.network` reads a network file into
it (resolving positions to UARTs), :mod:`larpixdaq.formats.bringup` plans the writes that
give a powered-up tree that shape, and :mod:`larpixdaq.formats.tilenetwork` describes a v2
tile's wiring with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from larpixdaq.errors import ConfigError

NodeId = int | str
"""A chip id (int), or a name (e.g. ``"ext"``) for a node that is not a chip (the PACMAN)."""

NEW_STYLE_MAPS = ("miso_uart_map", "mosi_uart_map", "usds_link_map")
OLD_STYLE_MAPS = ("miso_us_uart_map", "miso_ds_uart_map", "mosi_uart_map")
ALL_MAP_KEYS = frozenset(NEW_STYLE_MAPS + OLD_STYLE_MAPS)
RESERVED_CHIP_IDS = frozenset({0, 1, 255})
POWER_ON_CHIP_ID = 1

DEFAULT_MISO_UART_MAP = (3, 0, 1, 2)
DEFAULT_MOSI_UART_MAP = (0, 1, 2, 3)
DEFAULT_USDS_LINK_MAP = (2, 3, 0, 1)


@dataclass
class Node:
    """One node of a hydra network, with its links resolved to UART numbers.

    ``*_uarts`` map a neighbour to this node's UART used for the link: the UART sending
    upstream to it, sending downstream to it, or receiving commands from it.
    """

    chip_id: NodeId
    root: bool = False
    miso_us: list[NodeId | None] = field(default_factory=lambda: [None] * 4)
    miso_ds: list[NodeId | None] = field(default_factory=lambda: [None] * 4)
    mosi: list[NodeId | None] = field(default_factory=lambda: [None] * 4)
    maps: dict[str, tuple[int, ...]] = field(default_factory=dict)
    own_maps: dict[str, tuple[int, ...]] = field(default_factory=dict)
    explicit_miso_us: bool = False
    explicit_miso_ds: bool = False
    explicit_mosi: bool = False
    miso_us_uarts: dict[NodeId, int] = field(default_factory=dict)
    miso_ds_uarts: dict[NodeId, int] = field(default_factory=dict)
    mosi_uarts: dict[NodeId, int] = field(default_factory=dict)

    @property
    def is_chip(self) -> bool:
        return isinstance(self.chip_id, int)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"chip_id": self.chip_id}
        if self.root:
            d["root"] = True
        if self.explicit_miso_us:
            d["miso_us"] = list(self.miso_us)
        if self.explicit_miso_ds:
            d["miso_ds"] = list(self.miso_ds)
        if self.explicit_mosi:
            d["mosi"] = list(self.mosi)
        for k, v in self.own_maps.items():
            d[k] = list(v)
        return d


@dataclass
class HydraTree:
    """The network of one (io_group, io_channel): nodes in file order, links resolved."""

    io_group: int
    io_channel: int
    style: str
    nodes: dict[NodeId, Node]
    channel_maps: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def node(self, chip_id: NodeId) -> Node:
        try:
            return self.nodes[chip_id]
        except KeyError:
            known = ", ".join(str(n) for n in self.nodes)
            raise ConfigError(
                f"io_group {self.io_group} io_channel {self.io_channel} has no node "
                f"{chip_id!r} (nodes: {known})"
            ) from None

    def chip_ids(self) -> list[int]:
        """Chip ids (not PACMAN/other pseudo nodes), in file order."""
        return [n for n in self.nodes if isinstance(n, int)]

    def roots(self) -> list[NodeId]:
        return [n.chip_id for n in self.nodes.values() if n.root]

    def parents(self, chip_id: NodeId) -> list[tuple[NodeId, int]]:
        """``(parent, parent's UART)`` for every node sending upstream to ``chip_id``."""
        self.node(chip_id)
        return [
            (n.chip_id, n.miso_us_uarts[chip_id])
            for n in self.nodes.values()
            if chip_id in n.miso_us_uarts
        ]

    def parent(self, chip_id: NodeId) -> NodeId | None:
        ps = self.parents(chip_id)
        return ps[0][0] if ps else None

    def children(self, chip_id: NodeId) -> list[NodeId]:
        """Upstream neighbours, in link order."""
        return list(self.node(chip_id).miso_us_uarts)

    def order(self) -> list[NodeId]:
        """Nodes reachable from the roots through upstream links, breadth first.

        This is the order the network is brought up in (pseudo nodes included).
        """
        level = self.roots()
        seen = set(level)
        out: list[NodeId] = []
        while level:
            out.extend(level)
            nxt: list[NodeId] = []
            for n in level:
                for child in self.nodes[n].miso_us_uarts:
                    if child not in seen:
                        seen.add(child)
                        nxt.append(child)
            level = nxt
        return out

    def unreachable(self) -> list[int]:
        """Chips listed but not linked to any root: bring-up would never give them an id."""
        reach = set(self.order())
        return [c for c in self.chip_ids() if c not in reach]

    def depth(self) -> dict[NodeId, int]:
        """Hops from the nearest root, for every reachable node."""
        out: dict[NodeId, int] = {}
        level, d = self.roots(), 0
        while level:
            nxt = []
            for n in level:
                if n in out:
                    continue
                out[n] = d
                nxt.extend(c for c in self.nodes[n].miso_us_uarts if c not in out)
            level, d = nxt, d + 1
        return out
