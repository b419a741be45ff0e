"""The field's client library (larpix-control 3.7) drives the emulator unchanged.

``PACMAN_IO`` connects to fixed ports named by class attributes and to the hosts of an io
config file; the tests give it loopback and the emulator's free ports through a subclass
that sets only those two attributes, and a generous socket time-out so a fault fails the
test instead of hanging it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from larpixdaq.boards.pacman_emulator import PacmanEmulator
from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.formats import pacman as P

try:
    import larpix
    from larpix.io import PACMAN_IO
except ImportError:  # every test here is marked reference: the conftest fails it, saying why
    larpix = PACMAN_IO = None

pytestmark = pytest.mark.reference


VERIFY_ROUNDS = 10
"""Reads of the registers that did not reply, the library's own remedy (``n``). Its read
window is a fixed time counted from before it formats and sends the requests (23,700 for
100 chips, formatted one Python object at a time), and it collects the replies once, at the
end. On a loaded machine the formatting alone can outlast the window, so the replies come
after the collection; another round collects them (and re-asks only what is missing). A
register whose value differs is not re-read: a wrong value still fails at once."""


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def make_board(io_group: int = 1) -> SimulatedBoard:
    return SimulatedBoard(io_group=io_group, tiles=1, seed=11)


@pytest.fixture
def system(start_emulator, tmp_path: Path) -> Iterator[tuple[object, PacmanEmulator, Path]]:
    """(controller, emulator, network file) with the controller's IO on the emulator."""
    board = make_board()
    emu = start_emulator(board)
    network_file = tmp_path / "network.json"
    network_file.write_text(json.dumps(board.network_config(), indent=4))
    io_file = tmp_path / "io.json"
    io_file.write_text(json.dumps({"_config_type": "io", "io_class": "PACMAN_IO",
                                   "io_group": [[board.io_group, "127.0.0.1"]]}))
    io_class = type("LoopbackPACMAN_IO", (PACMAN_IO,), {
        "cmdserver_port": str(port_of(emu.cmd_endpoint)),
        "dataserver_port": str(port_of(emu.data_endpoint)),
    })
    io = io_class(config_filepath=str(io_file), timeout=5000, raw_directory=str(tmp_path))
    controller = larpix.Controller()
    controller.io = io
    try:
        yield controller, emu, network_file
    finally:
        io.cleanup()
        io.join()


def bring_up(controller, network_file: Path) -> list:
    controller.load(str(network_file))
    controller.io.set_reg(0x10, 0b1, io_group=1)  # tile 0
    controller.io.set_reg(0x18, 0b1111, io_group=1)  # the tile's 4 UARTs
    controller.io.reset_larpix(length=64, io_group=1)
    for io_group, channels in controller.network.items():
        for io_channel in channels:
            controller.init_network(io_group, io_channel)
    return list(controller.chips)


def test_ping_and_registers(system):
    controller, emu, _ = system
    io = controller.io
    assert io.ping(io_group=1) is True
    io.set_reg(0x2010, 4, io_group=1)
    assert io.get_reg(0x2010, io_group=1) == 4
    assert io.set_uart_clock_ratio(2, 8, io_group=1) == 8
    assert io.enable_tile(0, io_group=1) == 1
    assert io.disable_tile(0, io_group=1) == 0
    assert emu.counters["errors"] == 0


def test_bring_up_write_and_verify_configuration(system):
    controller, emu, network_file = system
    keys = bring_up(controller, network_file)
    assert len(keys) == 100
    ok, diff = controller.verify_network(timeout=0.25)
    assert ok, diff
    for key in keys:
        controller[key].config.threshold_global = 60
        controller[key].config.channel_mask = [0] * 16 + [1] * 48
        controller.write_configuration(key)
    ok, diff = controller.verify_configuration(n=VERIFY_ROUNDS)
    assert ok, diff
    board = emu.board
    drifting = keys[37]
    registers = board.chips[(drifting.io_channel, drifting.chip_id)]
    assert int(registers[64]) == 60
    # a chip that drifted is caught by the reference verification
    registers[64] = 61
    ok, diff = controller.verify_configuration(keys[30:40], timeout=0.5, n=VERIFY_ROUNDS)
    assert not ok
    (key,) = (k for k, registers in diff.items() if registers)  # re-read chips leave {}
    assert key == drifting and diff[key][64] == (60, 61)


def test_read_data(system):
    controller, emu, network_file = system
    keys = bring_up(controller, network_file)
    for key in keys:
        controller[key].config.threshold_global = 40
        controller[key].config.channel_mask = [1] * 60 + [0] * 4
        controller.write_configuration(key)
    controller.run(0.5, "data")
    packets = [p for p in controller.reads[-1] if getattr(p, "packet_type", None) == 0]
    assert len(packets) > 20
    assert {str(p.chip_key) for p in packets} <= {str(k) for k in keys}
    assert all(p.channel_id >= 60 for p in packets)
    assert all(p.downstream_marker == 1 for p in packets)
    assert all(p.has_valid_parity() for p in packets)
    # the bytes the library kept are whole messages; ours decode them to the same packets
    stream = controller.reads[-1].bytestream
    messages, at = [], 0
    while at < len(stream):
        n = P.HEADER.unpack_from(stream, at)[2]
        messages.append(stream[at:at + P.HEADER_BYTES + n * P.WORD_BYTES])
        at += P.HEADER_BYTES + n * P.WORD_BYTES
    result = P.decode_data_messages(messages, 1)
    assert result.n_errors == 0
    rows = result.rows[result.rows["packet_type"] == 0]
    theirs = np.array([int.from_bytes(p.bytes(), "little") for p in packets], dtype=np.uint64)
    words = np.concatenate([P.message_words(m) for m in messages])
    ours = words["packet"][(words["type"] == P.WORD_DATA) & ((words["packet"] & np.uint64(3)) == 0)]
    assert np.array_equal(ours, theirs)
    assert np.array_equal(rows["channel_id"], [p.channel_id for p in packets])
