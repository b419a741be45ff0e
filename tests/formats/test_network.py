"""Hydra network files and their bring-up: golden files, link inference, bring-up writes,
errors, and the reference library's own writes for the same networks."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.errors import ConfigError
from larpixdaq.formats.bringup import bring_up_registers
from larpixdaq.formats.hydra import HydraTree
from larpixdaq.formats.network import Network, load_network
from larpixdaq.formats.tilenetwork import make_tile_network

V2_EXAMPLE = "network-v2-example.json"
TILE_3X3 = "network-3x3-tile-channel1.json"

# (addressed chip id, register, value, chip id the parity is computed for), as the reference
# client's init_network sends them for the two golden networks.
V2_EXAMPLE_WRITES = [
    (1, 122, 2, 2), (2, 125, 241, 2), (2, 126, 11, 2),
    (2, 124, 8, 2), (1, 122, 3, 3), (3, 125, 242, 3), (3, 126, 4, 3),
    (2, 124, 12, 2), (1, 122, 4, 4), (4, 125, 241, 4), (4, 126, 3, 4),
    (4, 124, 8, 4), (1, 122, 5, 5), (5, 125, 242, 5), (5, 126, 4, 5),
]  # fmt: skip
TILE_3X3_WRITES = [
    (1, 122, 13, 13), (13, 125, 241, 13), (13, 126, 15, 13),
    (13, 124, 8, 13), (1, 122, 14, 14), (14, 125, 242, 14), (14, 126, 4, 14),
    (13, 124, 10, 13), (1, 122, 12, 12), (12, 125, 248, 12), (12, 126, 1, 12),
    (13, 124, 14, 13), (1, 122, 23, 23), (23, 125, 241, 23), (23, 126, 15, 23),
    (23, 124, 8, 23), (1, 122, 24, 24), (24, 125, 242, 24), (24, 126, 4, 24),
    (23, 124, 10, 23), (1, 122, 22, 22), (22, 125, 248, 22), (22, 126, 1, 22),
    (23, 124, 14, 23), (1, 122, 33, 33), (33, 125, 241, 33), (33, 126, 7, 33),
    (33, 124, 8, 33), (1, 122, 34, 34), (34, 125, 242, 34), (34, 126, 4, 34),
    (33, 124, 10, 33), (1, 122, 32, 32), (32, 125, 248, 32), (32, 126, 1, 32),
]  # fmt: skip


def _writes(net: Network, g: int = 1, c: int = 1, **kw: Any) -> list[tuple[int, int, int, int]]:
    return [
        (w.chip_id, w.register, w.value, w.parity_chip_id)
        for step in net.bring_up_order(g, c, **kw)
        for w in step.writes
    ]


def _links(tree: HydraTree) -> dict[str, set[tuple[str, str, int]]]:
    """Directed edges (tail, head, uart) in the reference library's three graphs."""
    out: dict[str, set[tuple[str, str, int]]] = {"miso_us": set(), "miso_ds": set(), "mosi": set()}
    for n in tree.nodes.values():
        me = str(n.chip_id)
        out["miso_us"] |= {(me, str(nb), u) for nb, u in n.miso_us_uarts.items()}
        out["miso_ds"] |= {(me, str(nb), u) for nb, u in n.miso_ds_uarts.items()}
        out["mosi"] |= {(str(nb), me, u) for nb, u in n.mosi_uarts.items()}
    return out


# ---- golden files ------------------------------------------------------------------------------
def test_v2_example_structure(golden_dir: Path) -> None:
    net = load_network(golden_dir / V2_EXAMPLE)
    assert net.name == "v2_example" and net.style == "new"
    assert net.chip_keys() == ["1-1-2", "1-1-3", "1-1-4", "1-1-5"]
    assert net.io_channels() == [(1, 1)]
    tree = net.tree(1, 1)
    assert tree.roots() == ["ext"] and tree.order() == ["ext", 2, 3, 4, 5]
    assert tree.parent(2) == "ext" and tree.parent(5) == 4 and tree.parent("ext") is None
    assert tree.children(2) == [3, 4] and tree.unreachable() == []
    assert tree.depth() == {"ext": 0, 2: 1, 3: 2, 4: 2, 5: 3}
    assert _links(tree) == {
        "miso_us": {("2", "3", 3), ("2", "4", 2), ("4", "5", 3), ("ext", "2", 2)},
        "miso_ds": {("2", "ext", 0), ("3", "2", 1), ("4", "2", 0), ("5", "4", 1)},
        "mosi": {
            ("2", "3", 2), ("2", "4", 1), ("2", "ext", 3), ("3", "2", 0),
            ("4", "2", 3), ("4", "5", 2), ("5", "4", 0), ("ext", "2", 1),
        },
    }  # fmt: skip
    # inferred neighbour lists by position in each node's own maps
    assert tree.node(3).miso_ds == [None, None, 2, None]
    assert tree.node(2).mosi == [3, "ext", None, 4]
    assert not tree.node(3).explicit_miso_ds and not tree.node(3).explicit_mosi


def test_v2_example_bring_up_matches_reference_writes(golden_dir: Path) -> None:
    net = load_network(golden_dir / V2_EXAMPLE)
    assert _writes(net) == V2_EXAMPLE_WRITES
    steps = net.bring_up_order(1, 1)
    assert [s.chip_id for s in steps] == [2, 3, 4, 5]
    first, second = steps[0], steps[1]
    assert (first.parent, first.parent_uart, first.upstream_enable) == ("ext", None, None)
    assert (second.parent, second.parent_uart, second.upstream_enable) == (2, 3, 0x08)
    assert steps[2].upstream_enable == 0x0C  # siblings accumulate on the parent
    assert second.downstream == 0xF2 and second.mosi == 0x04 and second.parent_mosi is None
    w = second.chip_id_write
    assert w is not None and (w.chip_id, w.register, w.value, w.parity_chip_id) == (1, 122, 3, 3)


def test_3x3_tile_old_style_maps(golden_dir: Path) -> None:
    net = load_network(golden_dir / TILE_3X3)
    assert net.style == "old" and net.layout == "2.2.0"
    tree = net.tree(1, 1)
    assert tree.order() == ["ext", 13, 14, 12, 23, 24, 22, 33, 34, 32]
    assert sorted(net.chip_keys()) == sorted(
        f"1-1-{i}" for i in (12, 13, 14, 22, 23, 24, 32, 33, 34)
    )
    assert tree.node(13).miso_ds_uarts == {"ext": 0}
    assert tree.node(12).miso_ds_uarts == {13: 3}
    assert tree.node(13).mosi_uarts == {"ext": 1, 14: 0, 12: 2, 23: 3}
    assert _writes(net) == TILE_3X3_WRITES


def test_bring_up_options(golden_dir: Path) -> None:
    net = load_network(golden_dir / V2_EXAMPLE)
    no_diff = net.bring_up_order(1, 1, differential=False, modify_mosi=False)
    assert [s.downstream for s in no_diff] == [0x01, 0x02, 0x01, 0x02]
    assert all(s.mosi is None for s in no_diff)
    assert all(w.register != 126 for s in no_diff for w in s.writes)


def test_network_registers(golden_dir: Path) -> None:
    regs = bring_up_registers(load_network(golden_dir / V2_EXAMPLE).tree(1, 1))
    assert regs[2] == {122: 2, 125: 241, 126: 11, 124: 12}
    assert regs[5] == {122: 5, 125: 242, 126: 4}


def test_parent_mosi_reenabled_when_missing() -> None:
    # chip 2 only listens to the PACMAN (explicit mosi); linking chip 3 upstream of it does
    # not change that, but a parent whose command input toward a child was cut gets it back.
    d = _spec(
        [
            {"chip_id": "ext", "root": True, "miso_us": [None, None, None, 2]},
            {"chip_id": 2, "miso_us": [3, None, None, None], "mosi": [None, None, None, "ext"]},
            {"chip_id": 3, "mosi": [None, None, 2, None]},
        ]
    )
    net = load_network(d)
    steps = net.bring_up_order(1, 1)
    assert steps[0].mosi == 0b1000  # only the PACMAN side
    # enabling 3 leaves chip 2's command inputs alone: its only mosi link is already on
    assert steps[1].parent_mosi is None
    assert net.tree(1, 1).node(3).mosi_uarts == {2: 2}


def test_pseudo_node_upstream_of_a_chip_gets_parent_enable() -> None:
    d = _spec(
        [
            {"chip_id": "ext_ds", "root": True, "miso_us": [None, None, 2, None]},
            {"chip_id": 2, "miso_us": [None, None, "ext_us", None]},
            {"chip_id": "ext_us"},
        ],
        maps={
            "miso_us_uart_map": [0, 1, 2, 3],
            "miso_ds_uart_map": [2, 3, 0, 1],
            "mosi_uart_map": [2, 3, 0, 1],
        },
    )
    net = load_network(d)
    assert net.chip_keys() == ["1-1-2"]
    steps = net.bring_up_order(1, 1)
    assert [s.chip_id for s in steps] == [2, "ext_us"]
    assert steps[1].chip_id_write is None and steps[1].downstream is None
    assert [(w.chip_id, w.register, w.value) for w in steps[1].writes] == [(2, 124, 0b0100)]


# ---- maps and inference ------------------------------------------------------------------------
NEW_MAPS = {
    "miso_uart_map": [3, 0, 1, 2],
    "mosi_uart_map": [0, 1, 2, 3],
    "usds_link_map": [2, 3, 0, 1],
}


def _spec(
    nodes: list[dict[str, Any]],
    maps: dict[str, Any] | None = None,
    group_maps: dict[str, Any] | None = None,
    channel_maps: dict[str, Any] | None = None,
) -> dict[str, Any]:
    chan: dict[str, Any] = {"nodes": nodes, **(channel_maps or {})}
    group: dict[str, Any] = {"1": chan, **(group_maps or {})}
    return {
        "_config_type": "controller",
        "name": "t",
        "asic_version": 2,
        "layout": None,
        "network": {"1": group, **(NEW_MAPS if maps is None else maps)},
    }


CHAIN = [
    {"chip_id": "ext", "root": True, "miso_us": [None, None, None, 2]},
    {"chip_id": 2, "miso_us": [3, None, None, None]},
    {"chip_id": 3},
]


def test_maps_inherit_network_group_channel_node() -> None:
    base = load_network(_spec(copy.deepcopy(CHAIN))).tree(1, 1)
    assert base.node(2).miso_us_uarts == {3: 3}
    grp = load_network(_spec(copy.deepcopy(CHAIN), group_maps={"miso_uart_map": [1, 0, 3, 2]}))
    assert grp.tree(1, 1).node(2).miso_us_uarts == {3: 1}
    chan = load_network(
        _spec(
            copy.deepcopy(CHAIN),
            group_maps={"miso_uart_map": [1, 0, 3, 2]},
            channel_maps={"miso_uart_map": [2, 0, 3, 1]},
        )
    )
    assert chan.tree(1, 1).node(2).miso_us_uarts == {3: 2}
    nodes = copy.deepcopy(CHAIN)
    nodes[1]["miso_uart_map"] = [0, 1, 2, 3]
    own = load_network(_spec(nodes, channel_maps={"miso_uart_map": [2, 0, 3, 1]}))
    t = own.tree(1, 1)
    assert t.node(2).miso_us_uarts == {3: 0}
    assert t.node(3).miso_ds_uarts == {2: 3}  # chip 3 still uses the channel map
    # the maps survive a round trip at the levels they were given
    again = load_network(own.to_dict())
    assert _links(again.tree(1, 1)) == _links(t)
    assert again.to_dict() == own.to_dict()


def test_explicit_miso_ds_and_mosi_are_used() -> None:
    nodes = copy.deepcopy(CHAIN)
    nodes[2]["miso_ds"] = [None, 2, None, None]
    nodes[2]["mosi"] = [None, None, None, 2]
    t = load_network(_spec(nodes)).tree(1, 1)
    assert t.node(3).miso_ds_uarts == {2: 0}
    assert t.node(3).mosi_uarts == {2: 3}
    # chip 2's mosi from 3 follows 3's explicit miso_ds position through the usds map
    assert t.node(2).mosi_uarts == {"ext": 1, 3: 3}


def test_round_trip_preserves_every_link(golden_dir: Path, tmp_path: Path) -> None:
    for name in (V2_EXAMPLE, TILE_3X3):
        net = load_network(golden_dir / name)
        path = tmp_path / name
        net.save(path)
        back = load_network(path)
        assert back.to_dict() == net.to_dict()
        assert json.loads(net.to_json()) == net.to_dict()
        for key in net.trees:
            assert _links(back.trees[key]) == _links(net.trees[key])
        assert _writes(back) == _writes(net)


# ---- errors -----------------------------------------------------------------------------------
def _mutate(fn: Any) -> dict[str, Any]:
    d = _spec(copy.deepcopy(CHAIN))
    fn(d)
    return d


def _nodes(d: dict[str, Any]) -> list[dict[str, Any]]:
    return d["network"]["1"]["1"]["nodes"]


BAD_SPECS = [
    (lambda d: d.update(_config_type="chip"), "'_config_type' is 'chip', expected 'controller'"),
    (lambda d: d.update(asic_version="2b"), "asic_version '2b' is not supported"),
    (lambda d: d.pop("asic_version"), "asic_version None is not supported"),
    (lambda d: d.update(network=[]), "'network' must be an object"),
    (lambda d: d["network"].update(miso_us_uart_map=[0, 1, 2, 3]), "mixes UART map styles"),
    (
        lambda d: [d["network"].pop(k) for k in list(NEW_MAPS)],
        "network has no UART maps",
    ),
    (lambda d: d["network"].pop("usds_link_map"), r"node 'ext': no usds_link_map given"),
    (lambda d: d["network"].update(mosi_uart_map=[0, 1, 2]), "mosi_uart_map must be a list of 4"),
    (lambda d: d["network"].update(mosi_uart_map=[0, 1, 2, 4]), "UART numbers 0..3"),
    (lambda d: d["network"].update(x={}), "key 'x' is neither a UART map"),
    (lambda d: d["network"].update({"300": {}}), "nor an io_group number 0..255"),
    (lambda d: d["network"].update({"2": 5}), "io_group 2 must be an object"),
    (
        lambda d: d["network"]["1"].update({"x": {}}),
        r"io_group 1: key 'x' is neither .* nor an io_channel",
    ),
    (
        lambda d: d["network"]["1"].update({"2": {}}),
        "io_channel 2: must be an object with",
    ),
    (lambda d: d["network"]["1"]["1"].update(extra=1), r"unknown key\(s\) \['extra'\]"),
    (lambda d: d["network"]["1"]["1"].update(nodes=[]), "'nodes' is empty"),
    (lambda d: _nodes(d).append(5), "node #3 must be an object with a chip_id"),
    (lambda d: _nodes(d).append({"root": True}), "node #3 must be an object with a chip_id"),
    (lambda d: _nodes(d).append({"chip_id": 1}), r"chip_id 1 is reserved .* use 2\.\.254"),
    (lambda d: _nodes(d).append({"chip_id": 255}), "chip_id 255 is reserved"),
    (lambda d: _nodes(d).append({"chip_id": 300}), r"chip_id 300 is out of range 0\.\.255"),
    (lambda d: _nodes(d).append({"chip_id": True}), "chip_id must be an integer 2..254"),
    (lambda d: _nodes(d).append({"chip_id": "7"}), "must be a JSON number for a chip"),
    (lambda d: _nodes(d).append({"chip_id": 3}), "chip_id 3 appears twice"),
    (lambda d: _nodes(d)[2].update(misous=[None] * 4), r"node 3: unknown key\(s\) \['misous'\]"),
    (lambda d: _nodes(d)[0].update(root="yes"), "root must be true or false"),
    (lambda d: _nodes(d)[1].update(miso_us=[3]), "miso_us must list 4 neighbours"),
    (lambda d: _nodes(d)[1].update(miso_us=[3.5, None, None, None]), "entry 3.5 is not a chip id"),
    (lambda d: _nodes(d)[1].update(miso_us=[9, None, None, None]), "miso_us names 9, which is not"),
    (lambda d: _nodes(d)[0].update(root=False), "no root node"),
    (lambda d: d["network"].pop("1"), "the network lists no io_group/io_channel"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_SPECS)
def test_bad_network_specs(mutate: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_network(_mutate(mutate))


def test_unlinked_chip_is_reported_not_brought_up() -> None:
    net = load_network(_mutate(lambda d: _nodes(d).append({"chip_id": 9})))
    assert net.tree(1, 1).unreachable() == [9]
    assert [s.chip_id for s in net.bring_up_order(1, 1)] == [2, 3]


def test_mosi_inference_with_inconsistent_maps_is_an_error() -> None:
    nodes = copy.deepcopy(CHAIN)
    nodes[1]["miso_uart_map"] = [3, 3, 3, 3]  # chip 3 sends down on UART 1, not in 2's map
    with pytest.raises(ConfigError, match="cannot infer mosi from 3"):
        load_network(_spec(nodes))


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="network file not found"):
        load_network(tmp_path / "none.json")
    with pytest.raises(ConfigError, match="cannot read network file"):
        load_network(tmp_path)
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(ConfigError, match=r"not valid JSON \(line 1"):
        load_network(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        load_network(tmp_path / "list.json")


def test_lookup_errors(golden_dir: Path) -> None:
    net = load_network(golden_dir / V2_EXAMPLE)
    with pytest.raises(ConfigError, match=r"no io_group 1 io_channel 2 \(it has: 1-1\)"):
        net.tree(1, 2)
    with pytest.raises(ConfigError, match=r"has no node 9 \(nodes: ext, 2, 3, 4, 5\)"):
        net.tree(1, 1).node(9)
    with pytest.raises(ConfigError, match="no io_group 3"):
        net.bring_up_order(3, 1)


def test_load_does_not_modify_the_given_dict() -> None:
    d = _spec(copy.deepcopy(CHAIN))
    before = copy.deepcopy(d)
    load_network(d)
    assert d == before


# ---- the reference library ----------------------------------------------------------------
class _CapturingIO:
    """Stands in for the board: records the packets the reference controller sends."""

    def __init__(self) -> None:
        self.packets: list[Any] = []

    def send(self, packets: Any) -> None:
        self.packets.extend(packets)


def _reference_controller(path: Path) -> Any:
    import larpix
    ctrl = larpix.Controller()
    ctrl.io = _CapturingIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctrl.load(str(path))
    return ctrl


def _odd_parity(chip_id: int, register: int, value: int) -> int:
    word = 2 | (chip_id << 2) | (register << 10) | (value << 18)
    return 1 - bin(word).count("1") % 2


@pytest.mark.reference
@pytest.mark.parametrize("which", [V2_EXAMPLE, TILE_3X3, "tile"])
def test_matches_reference_library(which: str, golden_dir: Path, tmp_path: Path, capsys) -> None:
    if which == "tile":
        path = tmp_path / "tile.json"
        path.write_text(json.dumps(make_tile_network(1, 1)))
    else:
        path = golden_dir / which
    ctrl = _reference_controller(path)
    net = load_network(path)
    assert sorted(str(k) for k in ctrl.chips) == sorted(net.chip_keys())
    for (g, c), tree in net.trees.items():
        ref = ctrl.network[g][c]
        for name in ("miso_us", "miso_ds", "mosi"):
            edges = {(str(a), str(b), d["uart"]) for a, b, d in ref[name].edges(data=True)}
            assert edges == _links(tree)[name], name
        assert ctrl.get_network_ids(g, c) == tree.order()
        ctrl.io.packets.clear()
        ctrl.init_network(g, c)
        sent = [(p.chip_id, p.register_address, p.register_data, p.parity) for p in ctrl.io.packets]
        ours = [
            (w.chip_id, w.register, w.value, _odd_parity(w.parity_chip_id, w.register, w.value))
            for s in net.bring_up_order(g, c)
            for w in s.writes
        ]
        assert sent == ours
    capsys.readouterr()


def test_network_file_include(tmp_path: Path) -> None:
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "maps.json").write_text(
        json.dumps({"_config_type": "controller", "asic_version": 2, "network": NEW_MAPS})
    )
    top = tmp_path / "top.json"
    top.write_text(
        json.dumps(
            {
                "_config_type": "controller",
                "_include": ["maps/maps.json"],
                "name": "inc",
                "network": {"1": {"1": {"nodes": CHAIN}}},
            }
        )
    )
    net = load_network(top)
    assert net.name == "inc" and net.chip_keys() == ["1-1-2", "1-1-3"]
    assert net.network_maps["usds_link_map"] == (2, 3, 0, 1)
    (tmp_path / "loop.json").write_text(
        json.dumps({"_config_type": "controller", "_include": "loop.json"})
    )
    with pytest.raises(ConfigError, match="_include cycle"):
        load_network(tmp_path / "loop.json")
    (tmp_path / "chip.json").write_text(json.dumps({"_config_type": "chip"}))
    (tmp_path / "wrong.json").write_text(
        json.dumps({"_config_type": "controller", "_include": "chip.json"})
    )
    with pytest.raises(ConfigError, match=r"chip\.json: not a network file"):
        load_network(tmp_path / "wrong.json")


# ---- random trees --------------------------------------------------------------------------
@st.composite
def random_trees(draw: st.DrawFn) -> dict[str, Any]:
    """A random tree hanging off the PACMAN, with random maps and explicit lists left out."""
    n = draw(st.integers(1, 30))
    ids = draw(st.lists(st.integers(2, 254), min_size=n, max_size=n, unique=True))
    us: dict[Any, list[Any]] = {"ext": [None] * 4}
    order: list[Any] = ["ext"]
    for cid in ids:
        free = [(p, i) for p in order for i in range(4) if us[p][i] is None]
        p, i = draw(st.sampled_from(free))
        us[p][i] = cid
        us[cid] = [None] * 4
        order.append(cid)
    perm = st.permutations([0, 1, 2, 3])
    maps = {
        "miso_uart_map": draw(perm),
        "mosi_uart_map": draw(perm),
        "usds_link_map": draw(st.sampled_from([[2, 3, 0, 1], [0, 1, 2, 3], [1, 0, 3, 2]])),
    }
    shuffled = draw(st.permutations(order[1:]))
    nodes = [{"chip_id": "ext", "root": True, "miso_us": us["ext"]}]
    for cid in shuffled:
        node: dict[str, Any] = {"chip_id": cid}
        if any(x is not None for x in us[cid]):
            node["miso_us"] = us[cid]
        nodes.append(node)
    return {
        "_config_type": "controller",
        "name": "random",
        "asic_version": 2,
        "layout": None,
        "network": {"1": {"1": {"nodes": nodes}}, **maps},
    }


@settings(max_examples=150, deadline=None)
@given(random_trees())
def test_random_tree_bring_up_invariants(spec: dict[str, Any]) -> None:
    net = load_network(spec)
    tree = net.tree(1, 1)
    assert load_network(net.to_dict()).to_dict() == net.to_dict()
    assert tree.unreachable() == []
    named: set[int] = set()
    upstream: dict[int, int] = {}
    for step in net.bring_up_order(1, 1):
        for w in step.writes:
            if w.register == 122:
                assert w.chip_id == 1 and w.value == w.parity_chip_id == step.chip_id
                named.add(w.value)
            else:
                assert w.chip_id in named  # only ever address chips that already have an id
            if w.register == 124:
                upstream[w.chip_id] = w.value
        node = tree.node(step.chip_id)
        assert step.downstream == 0xF0 | sum(1 << u for u in set(node.miso_ds_uarts.values()))
    assert named == set(tree.chip_ids())
    for cid in tree.chip_ids():
        expected = sum(1 << u for u in set(tree.node(cid).miso_us_uarts.values()))
        assert upstream.get(cid, 0) == expected


@pytest.mark.reference
@settings(max_examples=60, deadline=None)
@given(random_trees())
def test_random_trees_match_reference_library(spec: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "net.json"
        path.write_text(json.dumps(spec))
        with contextlib.redirect_stdout(io.StringIO()):
            ctrl = _reference_controller(path)
            net = load_network(path)
            tree = net.tree(1, 1)
            for name in ("miso_us", "miso_ds", "mosi"):
                edges = {
                    (str(a), str(b), d["uart"])
                    for a, b, d in ctrl.network[1][1][name].edges(data=True)
                }
                assert edges == _links(tree)[name], name
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ctrl.init_network(1, 1)
        sent = [(p.chip_id, p.register_address, p.register_data) for p in ctrl.io.packets]
        assert sent == [(w.chip_id, w.register, w.value) for w in _flat_writes(net)]


def _flat_writes(net: Network) -> list[Any]:
    return [w for s in net.bring_up_order(1, 1) for w in s.writes]
