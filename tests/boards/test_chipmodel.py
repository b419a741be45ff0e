"""The chip network: power-on state, link-gated command delivery, bring-up, read-back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.boards.chipmodel import ChipNetwork, field_values
from larpixdaq.formats import packets as pk
from larpixdaq.formats.network import Network, load_network
from larpixdaq.formats.registers import DEFAULT_REGISTERS, NUM_REGISTERS
from larpixdaq.formats.tilenetwork import make_tile_network


def tile_network() -> Network:
    return load_network(make_tile_network(1, 0))


def reference_bring_up(net: Network, io_channel: int) -> np.ndarray:
    """The packets the reference client sends: chip-id writes addressed to chip 1 but with
    the parity bit computed for the new id."""
    out = []
    for step in net.bring_up_order(1, io_channel):
        for w in step.writes:
            word = int(pk.encode_packets(packet_type=pk.CONFIG_WRITE, chip_id=w.parity_chip_id,
                                         register_address=w.register, register_data=w.value))
            out.append((word & ~(0xFF << 2)) | (w.chip_id << 2))
    return np.asarray(out, dtype=np.uint64)


def read(chip_id: int | np.ndarray, register: int) -> np.ndarray:
    return pk.encode_packets(packet_type=pk.CONFIG_READ, chip_id=chip_id,
                             register_address=register)


def write(chip_id: int, register: int, value: int) -> np.ndarray:
    return pk.encode_packets(packet_type=pk.CONFIG_WRITE, chip_id=chip_id,
                             register_address=register, register_data=value)


@pytest.fixture
def net() -> Network:
    return tile_network()


def brought_up(net: Network) -> ChipNetwork:
    cn = ChipNetwork(net, 1)
    for ch in range(1, 5):
        cn.receive(ch, reference_bring_up(net, ch))
    return cn


def test_power_on_defaults_and_id_1(net: Network) -> None:
    cn = ChipNetwork(net, 1)
    assert cn.n == 100
    assert (cn.registers == DEFAULT_REGISTERS).all()
    assert (cn.chip_ids == 1).all()
    # only the root hears the PACMAN; its downstream link is closed, so no reply comes back
    assert cn.receive(1, read(1, 122)).size == 0
    assert cn.counters["replies_lost"] == 1
    cn.receive(1, write(1, 64, 7))
    changed = np.flatnonzero(cn.registers[:, 64] == 7)
    root = cn.order[1][0]
    assert changed.tolist() == [root]


def test_bring_up_over_links_every_chip_answers(net: Network) -> None:
    cn = brought_up(net)
    assert (cn.chip_ids == cn.design_id).all()
    assert cn.downstream_ok.all()
    bad = sum(int((~pk.valid_parity(reference_bring_up(net, ch))).sum()) for ch in range(1, 5))
    assert bad > 0 and cn.counters["parity_errors"] == bad
    assert cn.counters["undelivered"] == 0
    for ch in range(1, 5):
        ids = sorted(c for (c_ch, c) in cn.addresses() if c_ch == ch)
        replies = cn.receive(ch, read(np.array(ids), 122))
        f = pk.decode_fields(replies)
        assert sorted(f["chip_id"].tolist()) == ids
        assert (f["register_data"] == f["chip_id"]).all()
        assert (f["packet_type"] == pk.CONFIG_READ).all()
        assert (f["downstream_marker"] == 1).all()
        assert f["valid_parity"].all()


def test_direct_configuration_matches_wire_bring_up(net: Network) -> None:
    wire = brought_up(net)
    direct = ChipNetwork(net, 1)
    direct.configure_links()
    assert np.array_equal(wire.registers, direct.registers)


def test_commands_over_disabled_links_are_not_delivered(net: Network) -> None:
    cn = brought_up(net)
    root = cn.order[1][0]
    root_id = int(cn.design_id[root])
    child = cn.order[1][1]
    child_id = int(cn.design_id[child])
    assert cn.receive(1, read(child_id, 122)).size == 1
    cn.receive(1, write(root_id, 124, 0))  # close the root's upstream UARTs
    before = cn.counters["undelivered"]
    assert cn.receive(1, read(child_id, 122)).size == 0
    assert cn.counters["undelivered"] == before + 1
    cn.receive(1, write(child_id, 64, 3))
    assert cn.registers[child, 64] == 255
    # the root itself still hears and answers
    assert cn.receive(1, read(root_id, 124)).size == 1
    # another UART's network is unaffected, and commands do not cross UARTs
    other = int(cn.design_id[cn.order[2][1]])
    assert cn.receive(2, read(other, 122)).size == 1
    assert cn.receive(1, read(other, 122)).size == 0


def test_closed_downstream_loses_replies(net: Network) -> None:
    cn = brought_up(net)
    child = int(cn.design_id[cn.order[1][1]])
    cn.receive(1, write(child, 125, 0))
    assert cn.receive(1, read(child, 122)).size == 0
    assert cn.counters["replies_lost"] == 1


def test_strict_parity_drops_bad_chip_id_writes(net: Network) -> None:
    cn = ChipNetwork(net, 1, strict_parity=True)
    packets = reference_bring_up(net, 1)
    cn.receive(1, packets)
    n_bad = int((~pk.valid_parity(packets)).sum())
    assert cn.counters["dropped_bad_parity"] == n_bad > 0
    assert not (cn.chip_ids[cn.io_channel == 1] == cn.design_id[cn.io_channel == 1]).all()


def test_bad_inputs_are_counted(net: Network) -> None:
    cn = brought_up(net)
    for bad in (0, 33):
        with pytest.raises(ValueError, match="io_channel"):
            cn.receive(bad, read(13, 122))
    assert cn.counters["bad_io_channel"] == 2
    data = pk.encode_packets(packet_type=pk.DATA, chip_id=13, channel_id=1)
    assert cn.receive(1, data).size == 0
    assert cn.counters["not_config_packets"] == 1
    root_id = int(cn.design_id[cn.order[1][0]])
    assert cn.receive(1, read(root_id, 240)).size == 0
    assert cn.counters["bad_register"] == 1
    assert cn.receive(1, read(99, 122)).size == 0  # no such chip on UART 1
    assert cn.counters["undelivered"] >= 1


def test_load_config_defaults_and_reset(net: Network) -> None:
    cn = brought_up(net)
    leaf = cn.order[1][-1]
    leaf_id = int(cn.design_id[leaf])
    cn.receive(1, write(leaf_id, 64, 40))
    cn.receive(1, write(leaf_id, 123, 0b10))
    assert np.array_equal(cn.registers[leaf], DEFAULT_REGISTERS)
    cn.reset()
    assert (cn.registers == DEFAULT_REGISTERS).all()


def test_write_field_and_field_values(net: Network) -> None:
    cn = ChipNetwork(net, 1)
    cn.write_field("pixel_trim_dac", np.arange(64) % 32)
    cn.write_field("periodic_trigger_cycles", 0x11223344, chips=np.array([0, 5]))
    assert (field_values(cn.registers, "pixel_trim_dac")[3] == np.arange(64) % 32).all()
    cycles = cn.read_field("periodic_trigger_cycles")
    assert cycles[0] == cycles[5] == 0x11223344 and cycles[1] == 0
    assert cn[(1, int(cn.design_id[0]))][166] == 0x44


SAFE_REGISTERS = [r for r in range(NUM_REGISTERS) if r not in (122, 123, 124, 125, 126)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 99), st.sampled_from(SAFE_REGISTERS),
                          st.integers(0, 255)), min_size=1, max_size=40))
def test_random_writes_then_reads(writes: list[tuple[int, int, int]]) -> None:
    net = _NET
    cn = ChipNetwork(net, 1)
    cn.configure_links()
    expect = cn.registers.copy()
    for row, reg, value in writes:
        ch, cid = int(cn.io_channel[row]), int(cn.design_id[row])
        cn.receive(ch, write(cid, reg, value))
        expect[row, reg] = value
    assert np.array_equal(cn.registers, expect)
    for row, reg, _ in writes:
        ch, cid = int(cn.io_channel[row]), int(cn.design_id[row])
        reply = cn.receive(ch, read(cid, reg))
        f = pk.decode_fields(reply)
        assert reply.size == 1 and int(f["register_data"][0]) == expect[row, reg]
        assert int(f["register_address"][0]) == reg and int(f["chip_id"][0]) == cid


_NET = tile_network()


def _oracle(net: Network, regs_of: dict[int, np.ndarray], io_channel: int, cid: int
            ) -> tuple[bool, bool]:
    """(command reaches chip, reply reaches PACMAN), walked on the network file's tree."""
    tree = net.tree(1, io_channel)

    def bit(c: int, reg: int, uart: int) -> bool:
        return bool((int(regs_of[c][reg]) >> uart) & 1)

    def hears(c: int) -> bool:
        parent, uart = tree.parents(c)[0]
        rx = bit(c, 126, tree.nodes[c].mosi_uarts[parent])
        if not isinstance(parent, int):
            return rx
        return rx and bit(parent, 124, uart) and hears(parent)

    def speaks(c: int) -> bool:
        parent, _ = tree.parents(c)[0]
        tx = bit(c, 125, tree.nodes[c].miso_ds_uarts[parent])
        if not isinstance(parent, int):
            return tx
        return tx and bit(parent, 126, tree.nodes[parent].mosi_uarts[c]) and speaks(parent)

    return hears(cid), speaks(cid)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 0xFFF), min_size=100, max_size=100),
       st.integers(1, 4))
def test_link_gating_matches_a_walk_of_the_tree(links: list[int], io_channel: int) -> None:
    net = _NET
    cn = ChipNetwork(net, 1)
    cn.configure_links()
    cn.registers[:, 124] = [v & 0xF for v in links]
    cn.registers[:, 125] = [(v >> 4) & 0xF for v in links]
    cn.registers[:, 126] = [(v >> 8) & 0xF for v in links]
    cn.write_field("chip_id", cn.design_id)  # marks the routes as changed
    regs_of = {int(cn.design_id[i]): cn.registers[i] for i in range(cn.n)}
    for row in cn.order[io_channel]:
        cid = int(cn.design_id[row])
        hears, speaks = _oracle(net, regs_of, io_channel, cid)
        cn.receive(io_channel, write(cid, 64, 77))  # does the write land?
        assert (cn.registers[row, 64] == 77) == hears
        replies = cn.receive(io_channel, read(cid, 64))
        assert replies.size == int(hears and speaks)
