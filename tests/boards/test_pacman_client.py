"""The DAQ-side PACMAN client (chip configuration, bring-up, several boards) against
emulated boards over real loopback sockets."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from larpixdaq.boards.pacman_client import (
    Boards,
    BringUpError,
    with_network_registers,
)
from larpixdaq.boards.pacman_link import BoardError, BoardTimeout
from larpixdaq.formats import packets as K
from larpixdaq.formats import pacman as P
from larpixdaq.formats.chipconfig import ChipConfig
from larpixdaq.formats.network import load_network
from larpixdaq.runcontrol.testing import wait_for


@pytest.fixture
def tile(start_emulator, connect):
    """One simulated standard tile (100 chips on 4 UARTs) behind an emulated PACMAN."""
    from larpixdaq.boards.simboard import SimulatedBoard

    board = SimulatedBoard(io_group=1, tiles=1, seed=3)
    emu = start_emulator(board)
    client = connect(emu, timeout=2.0)
    return board, emu, client, load_network(board.network_config())


def test_bring_up_gives_every_chip_its_id_root_outward(tile):
    board, emu, client, network = tile
    keys = client.bring_up(network)
    assert sorted(keys) == sorted(network.chip_keys())
    for key in keys:  # the chips answer to their new ids
        _, ch, cid = (int(x) for x in key.split("-"))
        assert int(board.chips[(ch, cid)][122]) == cid
    tiles, rx = client.read_registers([0x10, 0x18])
    assert tiles & 1 and rx & 0xF == 0xF
    ids = client.read_configs(keys, registers=[122])
    assert {k: int(v[0]) for k, v in ids.items()} == {k: int(k.split("-")[2]) for k in keys}
    # a second bring-up starts from a chip reset and gets there again
    assert sorted(client.bring_up(network)) == sorted(keys)


def test_bring_up_names_the_chip_that_does_not_answer(tile):
    board, emu, client, _ = tile
    spec = board.network_config()
    nodes = spec["network"]["1"]["2"]["nodes"]
    leaf = nodes[-1]
    leaf["miso_us"] = [None, None, None, 200]
    nodes.append({"chip_id": 200})  # listed, but there is no such chip on the tile
    with pytest.raises(
        BringUpError, match=rf"chip 1-2-200 did not answer .*chip 1-2-{leaf['chip_id']} UART 2"
    ):
        client.bring_up(load_network(spec), timeout=0.3)


def configs_for(keys: list[str], thresholds: dict[str, int]) -> dict[str, ChipConfig]:
    out = {}
    for k in keys:
        cfg = ChipConfig()
        cfg["threshold_global"] = thresholds[k]
        cfg["channel_mask"] = [0] * 32 + [1] * 32
        out[k] = cfg
    return out


def test_write_read_and_verify_configurations(tile):
    board, emu, client, network = tile
    keys = client.bring_up(network)
    configs = configs_for(keys, {k: 100 + i for i, k in enumerate(keys)})
    configs = with_network_registers(configs, network)  # keep the links the bring-up set
    links = client.read_configs(keys, registers=[122, 124, 125, 126])
    for k in keys:
        assert np.array_equal(configs[k].to_registers()[[122, 124, 125, 126]], links[k])
    assert client.write_configs(configs) == 237 * len(keys)
    read = client.read_configs(keys)
    for k in keys:
        assert np.array_equal(read[k], configs[k].to_registers())
    result = client.verify_configs(configs)
    assert result.ok, result.summary()
    drifting = keys[42]
    _, ch, cid = (int(x) for x in drifting.split("-"))
    expected = configs[drifting]["threshold_global"]
    board.chips[(ch, cid)][64] = 7  # the chip drifts
    result = client.verify_configs(configs)
    assert not result.ok and not result.missing
    assert result.differences == {drifting: {"threshold_global": (expected, 7)}}
    assert f"{drifting}: threshold_global" in result.summary()
    # only some registers, in the order asked
    part = client.read_configs([drifting], registers=[64, 122])[drifting]
    assert part.tolist() == [7, cid]


def test_reading_a_chip_that_is_not_there_times_out_naming_it(tile):
    _, _, client, network = tile
    keys = client.bring_up(network)
    with pytest.raises(BoardTimeout, match=r"from 1 chip\(s\): 1-1-200 \(2 of 2 registers\)"):
        client.read_configs([keys[0], "1-1-200"], registers=[64, 65], timeout=0.3)
    with pytest.raises(BoardError, match="serves io_group 1, not chip 2-1-11"):
        client.read_configs(["2-1-11"])
    result = client.verify_configs({"1-1-200": ChipConfig()}, timeout=0.2)
    assert not result.ok and len(result.missing["1-1-200"]) == 237


def test_two_boards_at_once(start_emulator, connect):
    from larpixdaq.boards.simboard import SimulatedBoard

    sims = [SimulatedBoard(io_group=g, tiles=1, seed=g) for g in (1, 2)]
    emus = [start_emulator(b) for b in sims]
    boards = Boards(connect(e, io_group=b.io_group) for e, b in zip(emus, sims, strict=True))
    assert set(boards.ping()) == {1, 2}
    spec = sims[0].network_config()
    spec["network"]["2"] = sims[1].network_config()["network"]["2"]
    network = load_network(spec)
    keys = boards.bring_up(network)
    assert len(keys) == 200 and {k.split("-")[0] for k in keys} == {"1", "2"}
    configs = with_network_registers(configs_for(keys, dict.fromkeys(keys, 40)), network)
    assert boards.write_configs(configs) == 200 * 237
    assert boards.verify_configs(configs).ok
    read = boards.read_configs(keys, registers=[64])
    assert {k: int(v[0]) for k, v in read.items()} == dict.fromkeys(keys, 40)
    boards.start_data()
    got: dict[int, list[bytes]] = {1: [], 2: []}
    for _ in range(100):
        for g, m in boards.recv_messages(timeout=0.5):
            got[g].append(m)
        if all(len(v) >= 3 for v in got.values()):
            break
    boards.stop_data()
    for g, messages in got.items():
        rows = P.decode_data_messages(messages, g).rows
        chip = rows[rows["packet_type"] == 0]
        assert len(chip) and (chip["io_group"] == g).all() and chip["valid_parity"].all()
    with pytest.raises(BoardError, match="two boards claim io_group 1"):
        Boards([boards[1], boards[1]])
    with pytest.raises(BoardError, match=r"no board for io_group 3 \(boards: \[1, 2\]\)"):
        boards[3]


def test_full_tile_bring_up_configure_verify_and_take_data(tile):
    board, emu, client, network = tile
    keys = client.bring_up(network)
    assert len(keys) == 100 and set(keys) == set(network.chip_keys())
    # UARTs 1-2: low threshold; UARTs 3-4: high. Channels 48-63 masked everywhere.
    thresholds = {k: (36 if int(k.split("-")[1]) <= 2 else 120) for k in keys}
    configs = with_network_registers(configs_for(keys, thresholds), network)
    for cfg in configs.values():
        cfg["channel_mask"] = [0] * 48 + [1] * 16
    assert client.write_configs(configs) == 23700
    result = client.verify_configs(configs)
    assert result.ok, result.summary()

    client.start_data()
    messages: list[bytes] = []
    while sum(len(m) for m in messages) < 16 * 20000:
        messages += client.recv_messages(timeout=2.0)
    client.stop_data()
    decoded = P.decode_data_messages(messages, client.io_group)
    assert decoded.n_errors == 0
    rows = decoded.rows[decoded.rows["packet_type"] == 0]
    assert rows["valid_parity"].all()
    assert (rows["downstream_marker"] == 1).all()
    seen = {f"1-{c}-{i}" for c, i in np.unique(rows[["io_channel", "chip_id"]])}
    assert seen <= set(keys)
    assert rows["channel_id"].max() < 48
    low = np.count_nonzero(rows["io_channel"] <= 2)
    high = np.count_nonzero(rows["io_channel"] > 2)
    assert low > 5 * max(high, 1)
    # the chips still answer with what was written
    assert client.verify_configs({k: configs[k] for k in keys[:5]}).ok


def test_data_come_only_from_enabled_receivers_and_tiles(tile):
    board, emu, client, network = tile
    keys = client.bring_up(network)
    client.write_configs(with_network_registers(configs_for(keys, dict.fromkeys(keys, 36)),
                                                network))

    def chip_rows(seconds: float) -> np.ndarray:
        client.start_data()
        client.recv_messages(timeout=0.05)  # what was in flight before
        messages: list[bytes] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            messages += client.recv_messages(timeout=0.05)
        client.stop_data()
        rows = P.decode_data_messages(messages, 1).rows
        return rows[rows["packet_type"] == 0]

    client.write_register(0x18, 0b0101)  # receivers of UARTs 1 and 3 only
    assert set(np.unique(chip_rows(0.3)["io_channel"])) == {1, 3}
    client.write_register(0x10, 0)  # tile off: its chips lose power and fall silent
    assert len(chip_rows(0.2)) == 0


def test_a_flooding_board_is_configured_over_the_wire_then_floods(start_emulator, connect):
    from larpixdaq.boards.simboard import SimulatedBoard

    board = SimulatedBoard(io_group=1, tiles=1, seed=4)
    emu = start_emulator(board, flood=True, message_words=2048)
    client = connect(emu)
    network = load_network(board.network_config())
    keys = client.bring_up(network)  # idle until chips are configured
    assert emu.counters["flood_idle"] > 0
    client.write_configs(with_network_registers(configs_for(keys, dict.fromkeys(keys, 40)),
                                                network))
    client.start_data()
    messages: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(messages) < 20:
        assert time.monotonic() < deadline, f"only {len(messages)} data messages"
        messages += client.recv_messages(timeout=2.0)
    client.stop_data()
    counts = [P.HEADER.unpack_from(m)[2] for m in messages]
    assert max(counts) == 2048
    rows = P.decode_data_messages(messages, 1).rows
    chip = rows[rows["packet_type"] == 0]
    assert chip["valid_parity"].all() and chip["channel_id"].max() < 32


def test_late_replies_of_an_earlier_read_are_not_taken_for_new_ones(tile):
    board, emu, client, network = tile
    keys = client.bring_up(network)
    key = keys[7]
    _, ch, cid = (int(x) for x in key.split("-"))
    client.start_data()
    # A second subscriber sees what the board publishes: the stale reply is waiting in the
    # client's queue once it has been published (one PUB send reaches both).
    watcher = zmq.Context.instance().socket(zmq.SUB)
    watcher.setsockopt(zmq.LINGER, 0)
    watcher.setsockopt(zmq.SUBSCRIBE, b"")
    watcher.connect(emu.data_endpoint)
    try:
        wait_for(lambda: watcher.poll(100))  # subscribed: the board's stream reaches it
        # replies to a read nobody collects yet: value 255 (power-on threshold)
        client.transmit(ch, K.encode_packets(packet_type=3, chip_id=cid, register_address=64))
        seen: list[bytes] = []

        def stale_reply_published() -> bool:
            while watcher.poll(0):
                seen.append(watcher.recv())
            rows = P.decode_data_messages(seen, 1).rows
            return bool(((rows["packet_type"] == 3) & (rows["register_address"] == 64)).any())

        wait_for(stale_reply_published)
    finally:
        watcher.close()
    board.chips[(ch, cid)][64] = 99
    assert client.read_configs([key], registers=[64])[key].tolist() == [99]
    # the data stream still hands over everything received meanwhile, in order
    rows = P.decode_data_messages(client.recv_messages(), 1).rows
    reads = rows[rows["packet_type"] == 3]
    assert reads["register_data"].tolist()[:1] == [255]
    client.stop_data()
