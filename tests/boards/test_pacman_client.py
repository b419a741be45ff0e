"""The DAQ-side PACMAN client against emulated boards over real loopback sockets."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zmq
from standin import StandInBoard

from larpixdaq.boards.pacman_client import (
    BoardError,
    Boards,
    BoardTimeout,
    BringUpError,
    PacmanClient,
    with_network_registers,
)
from larpixdaq.boards.pacman_emulator import PacmanEmulator
from larpixdaq.formats import pacman as P
from larpixdaq.formats.chipconfig import ChipConfig
from larpixdaq.formats.network import load_network


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


@pytest.fixture
def connect() -> Iterator[Callable[..., PacmanClient]]:
    """Clients to emulators (or to nothing); every one is closed after the test."""
    made: list[PacmanClient] = []

    def make(emu: PacmanEmulator | None = None, io_group: int = 1, **kw) -> PacmanClient:
        if emu is not None:
            kw.setdefault("cmd_port", port_of(emu.cmd_endpoint))
            kw.setdefault("data_port", port_of(emu.data_endpoint))
        kw.setdefault("timeout", 1.0)
        client = PacmanClient(io_group, "127.0.0.1", **kw)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()


def free_port() -> int:
    """A port nobody listens on: bound by the OS for us, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ping_and_register_batches(emulator, connect):
    client = connect(emulator)
    assert client.ping() > 0
    before = emulator.counters["requests"]
    client.write_registers({0x2010: 4, 0x3010: 5, 0x1014: 64})
    assert client.read_registers([0x2010, 0x3010, 0x1014, 0x99]) == [4, 5, 64, 0]
    assert emulator.counters["requests"] - before == 2  # one message each way
    assert client.read_register(0x3010) == 5


def test_transmit_bulk_reaches_the_uarts_in_few_messages(emulator, connect):
    client = connect(emulator)
    pk = np.arange(1, 70001, dtype=np.uint64)
    ch = np.where(pk % 2 == 0, 1, 2)
    before = emulator.counters["requests"]
    client.transmit(ch, pk)
    assert emulator.counters["requests"] - before == 2  # 65535 + the rest
    got = {c: np.concatenate([p for cc, p in emulator.board.transmitted if cc == c])
           for c in (1, 2)}
    assert np.array_equal(got[1], pk[ch == 1]) and np.array_equal(got[2], pk[ch == 2])


def test_an_err_reply_is_a_clear_error_naming_the_board(emulator, connect):
    client = connect(emulator)
    with pytest.raises(BoardError, match=r"PACMAN io_group 1 at tcp://127\.0\.0\.1:\d+ refused"):
        client.write_registers([(0x10, 1), (0xDEAD, 1)])
    assert client.counters["err_replies"] == 1
    assert client.ping() > 0


def test_a_board_that_is_not_there_times_out_naming_it(connect):
    port = free_port()
    client = connect(cmd_port=port, data_port=free_port(), timeout=0.1, retries=3)
    with pytest.raises(BoardTimeout) as err:
        client.ping()
    assert str(err.value) == (
        f"PACMAN io_group 1 at tcp://127.0.0.1:{port} did not answer PING within 0.1 s (3 tries)"
    )
    assert client.counters["timeouts"] == 3 and client.counters["retries"] == 2


def test_a_stopped_board_times_out_and_a_restarted_one_answers_again(start_emulator, connect):
    emu = start_emulator()
    port = port_of(emu.cmd_endpoint)
    client = connect(emu, timeout=0.1, retries=2)
    assert client.ping() > 0
    emu.stop()
    with pytest.raises(BoardTimeout, match="did not answer READ of 1 register"):
        client.read_register(0x10)
    start_emulator(cmd_port=port)
    assert client.ping() > 0  # the fresh REQ socket reconnects


def test_a_board_that_swallows_requests_times_out(connect):
    ctx = zmq.Context()
    try:
        sink = ctx.socket(zmq.ROUTER)
        sink.setsockopt(zmq.LINGER, 0)
        port = sink.bind_to_random_port("tcp://127.0.0.1")
        client = connect(cmd_port=port, data_port=free_port(), timeout=0.05, retries=2)
        with pytest.raises(BoardTimeout, match=f"127.0.0.1:{port} did not answer WRITE"):
            client.write_register(0x10, 1)
        sink.close()
    finally:
        ctx.destroy(linger=0)


@pytest.fixture
def small_system(start_emulator, connect):
    board = StandInBoard(io_group=1, channels=2, chips_per_channel=3)
    emu = start_emulator(board)
    client = connect(emu)
    network = load_network(board.network_config())
    return board, emu, client, network


def test_bring_up_gives_every_chip_its_id_root_outward(small_system):
    board, emu, client, network = small_system
    keys = client.bring_up(network)
    assert sorted(keys) == sorted(network.chip_keys())
    assert [int(r[122]) for r in board.chips[1]] == [11, 12, 13]
    assert [int(r[122]) for r in board.chips[2]] == [21, 22, 23]
    assert client.read_registers([0x10, 0x18]) == [1, 0b11]
    # every answer is there: a second read of all ids comes back without resends
    ids = client.read_configs(keys, registers=[122])
    assert {k: int(v[0]) for k, v in ids.items()} == {k: int(k.split("-")[2]) for k in keys}


def test_bring_up_names_the_chip_that_does_not_answer(small_system):
    board, emu, client, _ = small_system
    spec = board.network_config()
    nodes = spec["network"]["1"]["1"]["nodes"]
    nodes[-1]["miso_us"] = [None, None, None, 14]
    nodes.append({"chip_id": 14})  # listed, but there is no such chip on the board
    with pytest.raises(BringUpError, match=r"chip 1-1-14 did not answer .*chip 1-1-13 UART 2"):
        client.bring_up(load_network(spec), timeout=0.3)


def configs_for(keys: list[str], thresholds: dict[str, int]) -> dict[str, ChipConfig]:
    out = {}
    for k in keys:
        cfg = ChipConfig()
        cfg["chip_id"] = int(k.split("-")[2])
        cfg["threshold_global"] = thresholds[k]
        cfg["channel_mask"] = [0] * 32 + [1] * 32
        out[k] = cfg
    return out


def test_write_read_and_verify_configurations(small_system):
    board, emu, client, network = small_system
    keys = client.bring_up(network)
    configs = configs_for(keys, {k: 40 + i for i, k in enumerate(keys)})
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
    board.chips[1][0][64] = 200  # the chip drifts
    result = client.verify_configs(configs)
    assert not result.ok
    assert result.differences == {"1-1-11": {"threshold_global": (40, 200)}}
    assert "1-1-11: threshold_global" in result.summary()


def test_reading_a_chip_that_is_not_there_times_out_naming_it(small_system):
    _, _, client, network = small_system
    client.bring_up(network)
    with pytest.raises(BoardTimeout, match=r"from 1 chip\(s\): 1-2-99 \(2 of 2 registers\)"):
        client.read_configs(["1-1-11", "1-2-99"], registers=[64, 65], timeout=0.3)
    with pytest.raises(BoardError, match="serves io_group 1, not chip 2-1-11"):
        client.read_configs(["2-1-11"])
    result = client.verify_configs({"1-2-99": ChipConfig()}, timeout=0.2)
    assert not result.ok and len(result.missing["1-2-99"]) == 237


def test_data_follow_the_configuration(small_system):
    board, emu, client, network = small_system
    keys = client.bring_up(network)
    # low threshold on channel 1's chips, high on channel 2's: rates must follow
    thresholds = {k: (20 if k.startswith("1-1-") else 200) for k in keys}
    configs = configs_for(keys, thresholds)
    client.write_configs(configs, registers=[64, *range(131, 139)])
    client.start_data()
    messages: list[bytes] = []
    while len(messages) < 30:
        messages += client.recv_messages(timeout=1.0)
    client.stop_data()
    result = P.decode_data_messages(messages, client.io_group)
    assert result.n_errors == 0
    rows = result.rows[result.rows["packet_type"] == 0]
    assert rows["valid_parity"].all()
    chips = {f"1-{c}-{i}" for c, i in zip(rows["io_channel"], rows["chip_id"], strict=True)}
    assert chips <= set(keys)
    assert rows["channel_id"].max() < 32  # masked channels are silent
    low = np.count_nonzero(rows["io_channel"] == 1)
    high = np.count_nonzero(rows["io_channel"] == 2)
    assert low > 10 * max(high, 1)


def test_two_boards_at_once(start_emulator, connect):
    boards_ = [StandInBoard(io_group=g, channels=1, chips_per_channel=2, seed=g) for g in (1, 2)]
    emus = [start_emulator(b) for b in boards_]
    boards = Boards(connect(e, io_group=b.io_group) for e, b in zip(emus, boards_, strict=True))
    assert set(boards.ping()) == {1, 2}
    spec = boards_[0].network_config()
    spec["network"]["2"] = boards_[1].network_config()["network"]["2"]
    keys = boards.bring_up(load_network(spec))
    assert sorted(keys) == ["1-1-11", "1-1-12", "2-1-11", "2-1-12"]
    configs = configs_for(keys, dict.fromkeys(keys, 30))
    for cfg in configs.values():
        cfg["enable_miso_downstream"] = [1, 0, 0, 0]
    boards.write_configs(configs)
    assert int(boards_[1].chips[1][1][64]) == 30
    read = boards.read_configs(keys, registers=[64])
    assert {k: int(v[0]) for k, v in read.items()} == dict.fromkeys(keys, 30)
    boards.start_data()
    seen: set[int] = set()
    for _ in range(50):
        seen |= {g for g, _ in boards.recv_messages(timeout=0.5)}
        if seen == {1, 2}:
            break
    boards.stop_data()
    assert seen == {1, 2}
    with pytest.raises(BoardError, match="two boards claim io_group 1"):
        Boards([boards[1], boards[1]])


@pytest.fixture
def rogue_board() -> Iterator[tuple[int, list[bytes]]]:
    """A REP socket answering every request with the next canned reply."""
    import threading

    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    replies: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if rep.poll(20):
                rep.recv()
                rep.send(replies.pop(0) if replies else b"")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port, replies
    stop.set()
    t.join()
    rep.close()
    ctx.destroy(linger=0)


def test_malformed_or_short_replies_are_clear_errors(rogue_board, connect):
    port, replies = rogue_board
    client = connect(cmd_port=port, data_port=free_port(), timeout=2.0)
    replies += [b"junk", P.encode_reply([P.Ping(), P.Ping()]), P.encode_reply([P.Read(1, 2)])]
    with pytest.raises(BoardError, match="malformed reply to PING"):
        client.ping()
    with pytest.raises(BoardError, match=r"answered READ of 1 register\(s\) with 2 word"):
        client.read_register(1)
    with pytest.raises(BoardError, match="answered PING with"):
        client.ping()
    assert client.counters["bad_replies"] == 2


@pytest.fixture
def tile(start_emulator, connect):
    """One simulated standard tile (100 chips on 4 UARTs) behind an emulated PACMAN."""
    from larpixdaq.boards.simboard import SimulatedBoard

    board = SimulatedBoard(io_group=1, tiles=1, seed=3)
    emu = start_emulator(board)
    client = connect(emu, timeout=2.0)
    return board, emu, client, load_network(board.network_config())


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
