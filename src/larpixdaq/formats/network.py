"""Hydra networks: which LArPix chips hang off which PACMAN UART, and how to bring them up.

A network file (the reference library's "controller" JSON) describes, per io_group and
io_channel, a tree of chips linked through their four UARTs. Each node lists its neighbours
by relative position (``miso_us``: upstream, away from the PACMAN; ``miso_ds``/``mosi``:
usually omitted and inferred) and UART maps translate positions into UART numbers. This
module turns such a file into explicit links with UART numbers, and derives the exact
register writes that bring a powered-up network (every chip answering as chip 1) into its
configured shape, root outward: the same writes, in the same order and with the same values,
as the reference client's ``init_network``, so real boards behave identically under either.

Positions always index the node's own UART maps: ``miso_us[p]`` uses ``miso_uart_map[p]``
(``miso_us_uart_map`` in the older map style), ``miso_ds[p]`` the same map (old style:
``miso_ds_uart_map``), ``mosi[p]`` uses ``mosi_uart_map[p]``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from larpixdaq.errors import ConfigError
from larpixdaq.formats.chipconfig import ChipConfig, load_config_json
from larpixdaq.formats.chipkey import chip_key
from larpixdaq.formats.registers import (
    CHIP_ID_REG,
    DOWNSTREAM_REG,
    MOSI_REG,
    UPSTREAM_REG,
)
from larpixdaq.formats.registers import field as register_field

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

_NODE_KEYS = frozenset({"chip_id", "root", "miso_us", "miso_ds", "mosi"}) | ALL_MAP_KEYS

PathLike = Union[str, "os.PathLike[str]"]


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


@dataclass(frozen=True)
class ConfigWrite:
    """One configuration-write packet of the bring-up.

    ``chip_id`` is the id the packet is addressed to; ``parity_chip_id`` the id the
    reference client computed the parity bit for. They differ only for the chip-id write
    (addressed to the power-on id 1, parity computed for the new id), so a faithful sender
    reproduces the reference's parity and a faithful chip must tolerate it.
    """

    chip_id: int
    register: int
    value: int
    parity_chip_id: int


@dataclass(frozen=True)
class BringUpStep:
    """Everything written to give one chip its id and links, in sending order."""

    chip_id: NodeId
    """The chip configured; a pseudo node (e.g. a PACMAN seen upstream of a chip) gets only
    its parent's upstream enable."""
    parent: NodeId | None
    parent_uart: int | None
    """The parent's UART whose upstream enable (register 124) is set; None for a root chip."""
    upstream_enable: int | None
    """Register 124 value written to the parent (all its upstream UARTs enabled so far)."""
    parent_mosi: int | None
    """Register 126 value written to the parent if a command input had to be re-enabled."""
    downstream: int | None
    """Register 125 value of the chip: downstream UART enables, bits 4-7 differential."""
    mosi: int | None
    """Register 126 value of the chip (its command inputs), or None if left at power-on."""
    writes: tuple[ConfigWrite, ...]

    @property
    def chip_id_write(self) -> ConfigWrite | None:
        return next((w for w in self.writes if w.register == CHIP_ID_REG), None)


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
        return bring_up_order(self, io_group, io_channel, differential, modify_mosi)

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


# ---- bring-up -------------------------------------------------------------------------------
def _nibble(cfg: ChipConfig, name: str) -> int:
    return int(cfg.to_registers()[register_field(name).first_register])


def bring_up_order(
    network: Network,
    io_group: int,
    io_channel: int,
    differential: bool = True,
    modify_mosi: bool = True,
) -> list[BringUpStep]:
    """The configuration writes that bring up one io_channel's chips, root outward.

    Starts from every chip at power-on (id 1, all upstream disabled, all command inputs
    enabled). For each chip in breadth-first order: enable its parent's upstream UART
    (register 124, bits accumulate over siblings) and re-enable any of the parent's command
    inputs that were turned off; write the chip id (register 122) addressed to chip 1; set
    the downstream UARTs toward its parents (register 125, with bits 4-7 all set when
    ``differential``); and enable only the command inputs it has links on (register 126)
    when ``modify_mosi``.
    """
    tree = network.tree(io_group, io_channel)
    configs: dict[NodeId, ChipConfig] = {}

    def cfg_of(cid: NodeId) -> ChipConfig:
        if cid not in configs:
            configs[cid] = ChipConfig()
        return configs[cid]

    steps: list[BringUpStep] = []
    for cid in tree.order():
        writes: list[ConfigWrite] = []
        first_parent: NodeId | None = None
        first_uart: int | None = None
        upstream: int | None = None
        parent_mosi: int | None = None
        for parent, uart in tree.parents(cid):
            if first_parent is None:
                first_parent = parent
            if not isinstance(parent, int):
                continue
            pc = cfg_of(parent)
            pc.set_value("enable_miso_upstream", 1, index=uart)
            value = _nibble(pc, "enable_miso_upstream")
            writes.append(ConfigWrite(parent, UPSTREAM_REG, value, parent))
            if first_uart is None:
                first_uart, upstream = uart, value
            for muart in tree.nodes[parent].mosi_uarts.values():
                if not pc.get_value("enable_mosi", index=muart):
                    pc.set_value("enable_mosi", 1, index=muart)
                    parent_mosi = _nibble(pc, "enable_mosi")
                    writes.append(ConfigWrite(parent, MOSI_REG, parent_mosi, parent))
        downstream: int | None = None
        mosi: int | None = None
        if isinstance(cid, int):
            cc = cfg_of(cid)
            cc["chip_id"] = cid
            writes.append(ConfigWrite(POWER_ON_CHIP_ID, CHIP_ID_REG, cid, cid))
            if differential:
                cc["enable_miso_differential"] = [1] * 4
            ds = [0] * 4
            for uart in tree.nodes[cid].miso_ds_uarts.values():
                ds[uart] = 1
            cc["enable_miso_downstream"] = ds
            downstream = _nibble(cc, "enable_miso_downstream")
            writes.append(ConfigWrite(cid, DOWNSTREAM_REG, downstream, cid))
            if modify_mosi:
                en = [0] * 4
                for uart in tree.nodes[cid].mosi_uarts.values():
                    en[uart] = 1
                cc["enable_mosi"] = en
                mosi = _nibble(cc, "enable_mosi")
                writes.append(ConfigWrite(cid, MOSI_REG, mosi, cid))
        if not writes:
            continue  # a pseudo node fed by nothing configurable (the PACMAN itself)
        steps.append(
            BringUpStep(
                chip_id=cid,
                parent=first_parent,
                parent_uart=first_uart,
                upstream_enable=upstream,
                parent_mosi=parent_mosi,
                downstream=downstream,
                mosi=mosi,
                writes=tuple(writes),
            )
        )
    return steps


def network_registers(
    network: Network,
    io_group: int,
    io_channel: int,
    differential: bool = True,
    modify_mosi: bool = True,
) -> dict[int, dict[int, int]]:
    """Each chip's final ``{register: value}`` for the registers the bring-up writes."""
    out: dict[int, dict[int, int]] = {}
    for step in bring_up_order(network, io_group, io_channel, differential, modify_mosi):
        for w in step.writes:
            target = w.parity_chip_id  # the chip the write configures
            out.setdefault(target, {})[w.register] = w.value
    return out


# ---- a standard tile ----------------------------------------------------------------------
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
