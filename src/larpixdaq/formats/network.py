"""Hydra network files: the reference library's "controller" JSON, read into hydra trees.

A network file describes, per io_group and io_channel, a tree of chips linked through their
four UARTs (:mod:`larpixdaq.formats.hydra`). Each node lists its neighbours by relative
position (``miso_us``: upstream, away from the PACMAN; ``miso_ds``/``mosi``: usually omitted
and inferred) and UART maps, given at any level and inherited network -> io_group ->
io_channel -> node, translate positions into UART numbers. This module checks such a file,
turns it into explicit links with UART numbers, and writes it back; the writes that bring a
network up are planned by :mod:`larpixdaq.formats.bringup`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from larpixdaq.errors import ConfigError
from larpixdaq.formats.bringup import BringUpStep, plan_bring_up
from larpixdaq.formats.chipconfig import PathLike, load_config_json
from larpixdaq.formats.chipkey import chip_key
from larpixdaq.formats.hydra import (
    ALL_MAP_KEYS,
    NEW_STYLE_MAPS,
    OLD_STYLE_MAPS,
    RESERVED_CHIP_IDS,
    HydraTree,
    Node,
    NodeId,
)

# The tile generator's home is :mod:`larpixdaq.formats.tilenetwork`; the name is also offered
# here because the simulated board imports it together with ``load_network``.
from larpixdaq.formats.tilenetwork import make_tile_network as make_tile_network

_NODE_KEYS = frozenset({"chip_id", "root", "miso_us", "miso_ds", "mosi"}) | ALL_MAP_KEYS


@dataclass
class Network:
    """A whole hydra network description: one HydraTree per (io_group, io_channel)."""

    name: str | None
    asic_version: int
    layout: Any
    style: str
    network_maps: dict[str, tuple[int, ...]]
    group_maps: dict[int, dict[str, tuple[int, ...]]]
    trees: dict[tuple[int, int], HydraTree]

    def io_channels(self) -> list[tuple[int, int]]:
        return list(self.trees)

    def tree(self, io_group: int, io_channel: int) -> HydraTree:
        try:
            return self.trees[(io_group, io_channel)]
        except KeyError:
            known = ", ".join(f"{g}-{c}" for g, c in self.trees) or "none"
            raise ConfigError(
                f"the network has no io_group {io_group} io_channel {io_channel} (it has: {known})"
            ) from None

    def chip_keys(self) -> list[str]:
        """Keys of every chip, in file order."""
        return [chip_key(g, c, cid) for (g, c), t in self.trees.items() for cid in t.chip_ids()]

    def bring_up_order(
        self, io_group: int, io_channel: int, differential: bool = True, modify_mosi: bool = True
    ) -> list[BringUpStep]:
        """The writes that bring up one io_channel's chips, root outward (see
        :func:`larpixdaq.formats.bringup.plan_bring_up`)."""
        return plan_bring_up(self.tree(io_group, io_channel), differential, modify_mosi)

    def to_dict(self) -> dict[str, Any]:
        net: dict[str, Any] = {}
        for (g, c), t in self.trees.items():
            group = net.setdefault(str(g), {})
            if not group and g in self.group_maps:
                group.update({k: list(v) for k, v in self.group_maps[g].items()})
            chan: dict[str, Any] = {"nodes": [n.to_dict() for n in t.nodes.values()]}
            chan.update({k: list(v) for k, v in t.channel_maps.items()})
            group[str(c)] = chan
        net.update({k: list(v) for k, v in self.network_maps.items()})
        return {
            "_config_type": "controller",
            "name": self.name,
            "asic_version": self.asic_version,
            "layout": self.layout,
            "network": net,
        }

    def to_json(self, indent: int | None = 4) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: PathLike) -> None:
        Path(path).write_text(self.to_json())


# ---- parsing ------------------------------------------------------------------------------
def _maps_at(spec: Mapping[str, Any], where: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for key in spec:
        if key in ALL_MAP_KEYS:
            value = spec[key]
            if (
                not isinstance(value, list)
                or len(value) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                or not all(0 <= v <= 3 for v in value)
            ):
                raise ConfigError(
                    f"{where}: {key} must be a list of 4 UART numbers 0..3, got {value!r}"
                )
            out[key] = tuple(value)
    return out


def _number_key(key: str, what: str, where: str) -> int:
    if not (isinstance(key, str) and key.isdigit() and 0 <= int(key) <= 255):
        raise ConfigError(
            f"{where}: key {key!r} is neither a UART map ({', '.join(sorted(ALL_MAP_KEYS))}) "
            f"nor an {what} number 0..255"
        )
    return int(key)


def _node_id(value: Any, where: str) -> NodeId:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(
            f"{where}: chip_id must be an integer 2..254 or a name such as 'ext', got {value!r}"
        )
    if isinstance(value, int):
        if not 0 <= value <= 255:
            raise ConfigError(f"{where}: chip_id {value} is out of range 0..255")
        if value in RESERVED_CHIP_IDS:
            raise ConfigError(
                f"{where}: chip_id {value} is reserved (0, 1 = power-on id, 255); use 2..254"
            )
    elif value == "" or value.isdigit():
        raise ConfigError(
            f"{where}: chip_id {value!r} must be a JSON number for a chip, or a non-numeric "
            "name such as 'ext' for the PACMAN"
        )
    return value


def _neighbours(spec: Mapping[str, Any], key: str, where: str) -> list[NodeId | None]:
    value = spec[key]
    if not isinstance(value, list) or len(value) != 4:
        raise ConfigError(
            f"{where}: {key} must list 4 neighbours by position (null where none), got {value!r}"
        )
    out: list[NodeId | None] = []
    for v in value:
        if v is None:
            out.append(None)
        elif isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ConfigError(f"{where}: {key} entry {v!r} is not a chip id or node name")
        else:
            out.append(v)
    return out


def _style(network: Mapping[str, Any]) -> str:
    found: set[str] = set()

    def walk(spec: Any) -> None:
        if isinstance(spec, Mapping):
            found.update(k for k in spec if k in ALL_MAP_KEYS)
            for k, v in spec.items():
                if k == "nodes" and isinstance(v, list):
                    for n in v:
                        walk(n)
                elif k not in ALL_MAP_KEYS:
                    walk(v)

    walk(network)
    new = bool(found & {"miso_uart_map", "usds_link_map"})
    old = bool(found & {"miso_us_uart_map", "miso_ds_uart_map"})
    if new and old:
        raise ConfigError(
            "network mixes UART map styles: use either miso_uart_map/mosi_uart_map/"
            "usds_link_map or miso_us_uart_map/miso_ds_uart_map/mosi_uart_map"
        )
    if not (new or old):
        raise ConfigError(
            "network has no UART maps: give miso_uart_map, mosi_uart_map and usds_link_map "
            "(e.g. [3,0,1,2], [0,1,2,3], [2,3,0,1]) in 'network'"
        )
    return "new" if new else "old"


def _read(source: PathLike | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), "<network>"
    return load_config_json(source, "controller"), str(source)


def load_network(source: PathLike | Mapping[str, Any]) -> Network:
    """Parse a hydra network ("controller") JSON file or already-parsed dict.

    Files may ``_include`` other network files (paths relative to the including file).
    """
    data, src = _read(source)
    kind = data.get("_config_type")
    if kind != "controller":
        raise ConfigError(
            f"{src}: not a network file: '_config_type' is {kind!r}, expected 'controller'"
        )
    version = data.get("asic_version")
    if version not in (2, "2"):
        raise ConfigError(
            f"{src}: asic_version {version!r} is not supported; only LArPix v2 (2) networks"
        )
    spec = data.get("network")
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"{src}: 'network' must be an object of io_group -> io_channel -> nodes")
    style = _style(spec)
    needed = NEW_STYLE_MAPS if style == "new" else OLD_STYLE_MAPS
    net_maps = _maps_at(spec, f"{src} network")
    group_maps: dict[int, dict[str, tuple[int, ...]]] = {}
    trees: dict[tuple[int, int], HydraTree] = {}
    for gkey, gspec in spec.items():
        if gkey in ALL_MAP_KEYS:
            continue
        g = _number_key(gkey, "io_group", f"{src} network")
        if not isinstance(gspec, Mapping):
            raise ConfigError(f"{src}: io_group {g} must be an object of io_channel -> nodes")
        gmaps = _maps_at(gspec, f"{src} io_group {g}")
        if gmaps:
            group_maps[g] = gmaps
        for ckey, cspec in gspec.items():
            if ckey in ALL_MAP_KEYS:
                continue
            c = _number_key(ckey, "io_channel", f"{src} io_group {g}")
            where = f"{src} io_group {g} io_channel {c}"
            if not isinstance(cspec, Mapping) or not isinstance(cspec.get("nodes"), list):
                raise ConfigError(f"{where}: must be an object with a 'nodes' list")
            extra = [k for k in cspec if k != "nodes" and k not in ALL_MAP_KEYS]
            if extra:
                raise ConfigError(f"{where}: unknown key(s) {extra}; expected 'nodes' and maps")
            cmaps = _maps_at(cspec, where)
            inherited = {**net_maps, **gmaps, **cmaps}
            trees[(g, c)] = _build_tree(
                g, c, style, needed, inherited, cmaps, cspec["nodes"], where
            )
    if not trees:
        raise ConfigError(f"{src}: the network lists no io_group/io_channel")
    return Network(
        name=data.get("name"),
        asic_version=2,
        layout=data.get("layout"),
        style=style,
        network_maps=net_maps,
        group_maps=group_maps,
        trees=trees,
    )


def _build_tree(
    g: int,
    c: int,
    style: str,
    needed: tuple[str, ...],
    inherited: dict[str, tuple[int, ...]],
    channel_maps: dict[str, tuple[int, ...]],
    node_specs: list[Any],
    where: str,
) -> HydraTree:
    if not node_specs:
        raise ConfigError(f"{where}: 'nodes' is empty")
    nodes: dict[NodeId, Node] = {}
    for i, spec in enumerate(node_specs):
        if not isinstance(spec, Mapping) or "chip_id" not in spec:
            raise ConfigError(f"{where}: node #{i} must be an object with a chip_id")
        nid = _node_id(spec["chip_id"], f"{where} node #{i}")
        nwhere = f"{where} node {nid!r}"
        if nid in nodes:
            raise ConfigError(f"{where}: chip_id {nid!r} appears twice")
        unknown = sorted(set(spec) - _NODE_KEYS)
        if unknown:
            raise ConfigError(
                f"{nwhere}: unknown key(s) {unknown}; a node may have "
                f"{', '.join(sorted(_NODE_KEYS))}"
            )
        root = spec.get("root", False)
        if not isinstance(root, bool):
            raise ConfigError(f"{nwhere}: root must be true or false, got {root!r}")
        own = _maps_at(spec, nwhere)
        maps = {**inherited, **own}
        missing = [k for k in needed if k not in maps]
        if missing:
            raise ConfigError(f"{nwhere}: no {', '.join(missing)} given at any level")
        node = Node(chip_id=nid, root=root, maps=maps, own_maps=own)
        for key in ("miso_us", "miso_ds", "mosi"):
            if key in spec:
                setattr(node, key, _neighbours(spec, key, nwhere))
                setattr(node, f"explicit_{key}", True)
        nodes[nid] = node
    for node in nodes.values():
        for key in ("miso_us", "miso_ds", "mosi"):
            for nb in getattr(node, key):
                if nb is not None and nb not in nodes:
                    raise ConfigError(
                        f"{where} node {node.chip_id!r}: {key} names {nb!r}, which is not a node "
                        "of this io_channel"
                    )
    tree = HydraTree(g, c, style, nodes, channel_maps)
    if not tree.roots():
        raise ConfigError(f'{where}: no root node (mark the PACMAN node with "root": true)')
    _link(tree, where)
    return tree


def _link(tree: HydraTree, where: str) -> None:
    """Resolve positions to UARTs and infer omitted miso_ds/mosi, as the reference does."""
    new = tree.style == "new"
    us_key = "miso_uart_map" if new else "miso_us_uart_map"
    ds_key = "miso_uart_map" if new else "miso_ds_uart_map"
    nodes = tree.nodes

    def view_pos(other: Node, listed: list[NodeId | None], me: NodeId) -> int:
        # where ``other`` lists ``me``, turned into a position in my own maps
        idx = listed.index(me)
        return other.maps["usds_link_map"][idx] if new else idx

    for n in nodes.values():
        for pos, nb in enumerate(n.miso_us):
            if nb is not None:
                n.miso_us_uarts[nb] = n.maps[us_key][pos]

    parents: dict[NodeId, list[Node]] = {k: [] for k in nodes}
    for n in nodes.values():
        for nb in n.miso_us_uarts:
            parents[nb].append(n)

    for n in nodes.values():
        if n.explicit_miso_ds:
            for pos, nb in enumerate(n.miso_ds):
                if nb is not None:
                    n.miso_ds_uarts[nb] = n.maps[ds_key][pos]
        else:
            for p in parents[n.chip_id]:
                pos = view_pos(p, p.miso_us, n.chip_id)
                n.miso_ds_uarts[p.chip_id] = n.maps[ds_key][pos]
                n.miso_ds[pos] = p.chip_id

    senders_ds: dict[NodeId, list[Node]] = {k: [] for k in nodes}
    for n in nodes.values():
        for nb in n.miso_ds_uarts:
            senders_ds[nb].append(n)

    for n in nodes.values():
        mosi_map = n.maps["mosi_uart_map"]
        if n.explicit_mosi:
            for pos, nb in enumerate(n.mosi):
                if nb is not None:
                    n.mosi_uarts[nb] = mosi_map[pos]
            continue

        def place(nb: NodeId, pos: int, n: Node = n, mosi_map: tuple[int, ...] = mosi_map) -> None:
            n.mosi = [None if x == nb else x for x in n.mosi]
            n.mosi[pos] = nb
            n.mosi_uarts[nb] = mosi_map[pos]

        for p in parents[n.chip_id]:
            place(p.chip_id, view_pos(p, p.miso_us, n.chip_id))
        for o in senders_ds[n.chip_id]:
            if o.explicit_miso_ds:
                pos = view_pos(o, o.miso_ds, n.chip_id)
            else:
                ds_uart = o.miso_ds_uarts[n.chip_id]
                own = n.maps[us_key]
                if ds_uart not in own:
                    raise ConfigError(
                        f"{where} node {n.chip_id!r}: cannot infer mosi from {o.chip_id!r}: "
                        f"its downstream UART {ds_uart} is not in {us_key} {list(own)}"
                    )
                idx = own.index(ds_uart)
                pos = o.maps["usds_link_map"][idx] if new else idx
            place(o.chip_id, pos)
