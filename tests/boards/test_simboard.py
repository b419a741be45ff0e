"""The simulated PACMAN board: registers, power and receiver gating, bring-up, output words."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from larpixdaq.boards import simboard as sb
from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.formats import packets as pk
from larpixdaq.formats import pacman as P
from larpixdaq.formats.network import load_network
from larpixdaq.formats.registers import DEFAULT_REGISTERS

D, S = ord("D"), ord("S")


def to_mv(x: int) -> int:  # the reference client's conversions
    return ((x >> 16) >> 3) * 4


def to_ma(x: int) -> float:
    return ((x >> 16) - (x >> 31) * 65535) * 500 * 0.01


def reference_bring_up(board: SimulatedBoard, io_channel: int) -> np.ndarray:
    """What the reference client sends: chip-id writes to chip 1 with the new id's parity."""
    net = load_network(board.network_config())
    out = []
    for step in net.bring_up_order(board.io_group, io_channel):
        for w in step.writes:
            word = int(pk.encode_packets(packet_type=pk.CONFIG_WRITE, chip_id=w.parity_chip_id,
                                         register_address=w.register, register_data=w.value))
            out.append((word & ~(0xFF << 2)) | (w.chip_id << 2))
    return np.asarray(out, dtype=np.uint64)


def reads(chip_ids: list[int], register: int) -> np.ndarray:
    return pk.encode_packets(packet_type=pk.CONFIG_READ, chip_id=np.array(chip_ids),
                             register_address=register)


def data(words: np.ndarray) -> np.ndarray:
    return words[words["type"] == D]


def test_words_use_the_pacman_dtype_and_network_matches() -> None:
    b = SimulatedBoard(io_group=3, tiles=2, seed=1)
    net = load_network(b.network_config())
    assert sorted(net.trees) == [(3, ch) for ch in range(1, 9)]
    assert len(net.chip_keys()) == 200 == len(b.chips)
    assert b.generate(0.01).dtype == P.WORD_DTYPE


def test_unpowered_board_is_silent_until_tiles_enabled() -> None:
    b = SimulatedBoard(seed=1)
    b.transmit(1, reference_bring_up(b, 1))
    assert (b.chips.chip_ids == 1).all()  # no power, nothing heard
    assert b.generate(0.1).size == 0
    b.pacman_write(0x10, 1)
    b.transmit(1, reference_bring_up(b, 1))
    assert (b.chips.chip_ids[b.chips.io_channel == 1] != 1).all()


def test_full_tile_bring_up_over_the_wire() -> None:
    b = SimulatedBoard(seed=2)
    b.pacman_write(0x10, 1)
    for ch in range(1, 5):
        b.transmit(ch, reference_bring_up(b, ch))
    for ch in range(1, 5):
        ids = [cid for (c, cid) in b.chips.addresses() if c == ch]
        b.transmit(ch, reads(ids, 122))
    words = b.generate(0.001)
    assert (words["type"] == D).all()
    f = pk.decode_fields(words["packet"])
    assert f["valid_parity"].all() and (f["packet_type"] == pk.CONFIG_READ).all()
    got = sorted(zip(words["io_channel"].tolist(), f["chip_id"].tolist(),
                     f["register_data"].tolist(), strict=True))
    assert got == sorted((c, cid, cid) for (c, cid) in b.chips.addresses())
    assert b.all_counters()["parity_errors"] > 0  # tolerated, counted


def test_replies_arrive_after_the_link_latency() -> None:
    b = SimulatedBoard(seed=2).bring_up_all(threshold=255)
    b.transmit(1, reads([int(b.chips.design_id[0])], 64))
    assert data(b.generate(0.0)).size == 0
    w = data(b.generate(0.0001))
    assert w.size == 1
    assert int(w["receipt_timestamp"][0]) == b.now - 1000 + sb.LATENCY


def test_data_valid_parity_existing_chips_unmasked_channels() -> None:
    b = SimulatedBoard(tiles=2, seed=4).bring_up_all()
    mask = np.zeros(64, int)
    mask[10:20] = 1
    b.chips.write_field("channel_mask", mask)
    words = data(b.generate(2.0))
    assert words.size > 10_000
    f = pk.decode_fields(words["packet"])
    assert f["valid_parity"].all()
    assert (f["downstream_marker"] == 1).all() and (f["packet_type"] == pk.DATA).all()
    have = set(zip(words["io_channel"].tolist(), f["chip_id"].tolist(), strict=True))
    assert have <= set(b.chips.addresses())
    assert not ((f["channel_id"] >= 10) & (f["channel_id"] < 20)).any()
    assert set(words["io_channel"].tolist()) == set(range(1, 9))


def test_rate_follows_threshold_on_the_wire() -> None:
    b = SimulatedBoard(seed=5).bring_up_all()
    chip_id = int(b.chips.design_id[0])
    ch = int(b.chips.io_channel[0])

    def rate(threshold: int) -> int:
        b.transmit(ch, pk.encode_packets(packet_type=pk.CONFIG_WRITE, chip_id=chip_id,
                                         register_address=64, register_data=threshold))
        b.generate(0.001)
        w = data(b.generate(0.2))
        return int(((w["io_channel"] == ch)
                    & (pk.get_field(w["packet"], "chip_id") == chip_id)).sum())

    low, high = rate(0), rate(120)
    # flooded, the chip takes most of its network's ~37.9 k packets/s UART
    assert high == 0 and low > 5_000


def test_sync_every_1e7_ticks_and_timestamps_reset() -> None:
    b = SimulatedBoard(seed=6).bring_up_all()
    parts = [b.generate(0.25) for _ in range(14)]
    words = np.concatenate(parts)
    syncs = np.flatnonzero(words["type"] == S)
    assert syncs.size == 3  # at 1 s, 2 s, 3 s
    assert (words["sub"][syncs] == S).all() and (words["time"][syncs] == 10_000_000).all()
    d = data(words)
    assert (d["receipt_timestamp"] < 10_000_000).all()
    ts = pk.get_field(d["packet"], "timestamp")
    assert (ts < 10_000_000).all()
    # unrolled as analysis does: receipt time never goes backwards between SYNCs
    seg = np.cumsum(words["type"] == S)[words["type"] == D]
    unrolled = seg.astype(np.int64) * 10_000_000 + d["receipt_timestamp"]
    assert (np.diff(unrolled) >= 0).all()
    # a packet digitised just before a SYNC arrives after it: receipt < timestamp
    crossed = d["receipt_timestamp"] < ts
    assert (d["receipt_timestamp"][crossed] < sb.LATENCY).all()


def test_receiver_and_tile_enables_gate_output() -> None:
    b = SimulatedBoard(seed=7).bring_up_all()
    b.pacman_write(0x18, 0b1101)  # receiver of UART 2 off
    w = data(b.generate(0.5))
    assert w.size > 0 and 2 not in set(w["io_channel"].tolist())
    b.pacman_write(0x10, 0)  # tile off: chips lose power
    assert data(b.generate(0.5)).size == 0
    assert (b.chips.registers == DEFAULT_REGISTERS).all()
    b.pacman_write(0x10, 1)  # powered again but unconfigured: still silent
    assert data(b.generate(0.5)).size == 0


def test_reset_through_clock_control() -> None:
    b = SimulatedBoard(seed=8).bring_up_all()
    b.pacman_write(0x1014, 256)
    b.pacman_write(0x1010, 0b100)
    assert (b.chips.chip_ids != 1).all()  # nothing until the bit is cleared
    b.pacman_write(0x1010, 0)
    assert (b.chips.registers == DEFAULT_REGISTERS).all()
    assert b.pacman_read(0x1014) == 256 and b.pacman_read(0x1010) == 0
    assert data(b.generate(0.2)).size == 0


def test_supply_dacs_and_adc_readbacks() -> None:
    b = SimulatedBoard(seed=0)
    assert b.pacman_read(0x24001) == 0xD5A3 == b.pacman_read(0x24011)
    assert to_mv(b.pacman_read(0x24032)) == 0  # tiles off
    b.pacman_write(0x10, 1)
    assert abs(to_mv(b.pacman_read(0x24032)) - 1800) <= 4
    assert abs(to_mv(b.pacman_read(0x24042)) - 1800) <= 4
    assert to_ma(b.pacman_read(0x24031)) > 0 and to_ma(b.pacman_read(0x24041)) > 0
    b.pacman_write(0x24001, 0xD5A3 // 2)
    assert abs(to_mv(b.pacman_read(0x24032)) - 900) <= 4
    assert abs(to_mv(b.pacman_read(0x24042)) - 1800) <= 4
    assert to_mv(b.pacman_read(0x24022)) == 5000 and to_ma(b.pacman_read(0x24021)) > 0
    ratio = sb.uart_clock_ratio_register(5)
    assert ratio == 0x2000 + 0x5000 + 0x10
    b.pacman_write(ratio, 4)
    assert b.pacman_read(ratio) == 4 and b.pacman_read(0x1234) == 0


def test_bad_inputs_raise_and_are_counted() -> None:
    b = SimulatedBoard()
    for reg, val in ((-1, 0), (1 << 32, 0), (0x10, -5), (0x10, 1 << 32)):
        with pytest.raises(ValueError, match="32-bit"):
            b.pacman_write(reg, val)
    with pytest.raises(ValueError, match="32-bit"):
        b.pacman_read(-3)
    assert b.counters["bad_pacman_access"] == 5
    for ch in (0, 33, True):
        with pytest.raises(ValueError, match="io_channel"):
            b.transmit(ch, np.uint64(0))
    with pytest.raises(ValueError, match="unsigned"):
        b.transmit(1, np.array([1.5]))
    with pytest.raises(ValueError, match="unsigned"):
        b.transmit(1, np.array([-1]))
    assert b.counters["bad_transmit"] == 5
    for s in (-1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="seconds"):
            b.generate(s)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="no chip is sending"):
        b.generate_packets(10)
    with pytest.raises(ValueError, match="n must be"):
        b.generate_packets(-1)
    for kw in ({"io_group": 256}, {"tiles": 0}, {"tiles": 9}):
        with pytest.raises(ValueError):
            SimulatedBoard(**kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unmask"):
        b.bring_up_all(unmask="some")


def test_receiver_off_drops_queued_replies() -> None:
    b = SimulatedBoard(seed=2).bring_up_all(threshold=255)
    b.transmit(1, reads([int(b.chips.design_id[0])], 64))
    b.pacman_write(0x18, 0)
    assert data(b.generate(0.01)).size == 0
    assert b.counters["replies_dropped"] == 1


def test_generate_packets_fast_path() -> None:
    b = SimulatedBoard(tiles=2, seed=9).bring_up_all()
    w = b.generate_packets(200_000)
    assert w.dtype == P.WORD_DTYPE and w.size >= 200_000
    assert (w["type"] == D).all()
    f = pk.decode_fields(w["packet"])
    assert f["valid_parity"].all() and (f["packet_type"] == 0).all()
    assert set(zip(w["io_channel"].tolist(), f["chip_id"].tolist(), strict=True)) <= set(
        b.chips.addresses())
    t0 = b.now
    assert b.generate(0.1).size > 0 and b.now > t0  # time continues afterwards
    assert b.generate_packets(0).size == 0


class BoardMachine(RuleBasedStateMachine):
    """Random power, receiver, reset, bring-up and threshold changes: whatever the order,
    output holds only valid packets from chips that are powered, brought up and heard."""

    def __init__(self) -> None:
        super().__init__()
        self.board = SimulatedBoard(tiles=2, seed=13)
        self.heard: set[tuple[int, int]] = set()  # replies in flight may predate a reset

    def note(self) -> None:
        b = self.board
        on = b.chips.downstream_ok & b.chips.powered
        self.heard |= {(int(b.chips.io_channel[i]), int(b.chips.chip_ids[i]))
                       for i in np.flatnonzero(on)}

    @rule(mask=st.integers(0, 3))
    def tiles(self, mask: int) -> None:
        self.note()
        self.board.pacman_write(0x10, mask)

    @rule(mask=st.integers(0, 0xFF))
    def receivers(self, mask: int) -> None:
        self.note()
        self.board.pacman_write(0x18, mask)

    @rule()
    def reset(self) -> None:
        self.note()
        self.board.pacman_write(0x1010, 4)
        self.board.pacman_write(0x1010, 0)

    @rule(ch=st.integers(1, 8))
    def bring_up(self, ch: int) -> None:
        self.note()
        self.board.transmit(ch, reference_bring_up(self.board, ch))

    @rule(ch=st.integers(1, 8), threshold=st.sampled_from([0, 35, 255]))
    def unmask(self, ch: int, threshold: int) -> None:
        self.note()
        rows = np.flatnonzero(self.board.chips.io_channel == ch)
        for row in rows:
            cid = int(self.board.chips.design_id[row])
            writes = [(64, threshold)] + [(131 + k, 0) for k in range(8)]
            self.board.transmit(ch, pk.encode_packets(
                packet_type=pk.CONFIG_WRITE, chip_id=cid,
                register_address=np.array([a for a, _ in writes]),
                register_data=np.array([v for _, v in writes])))

    @rule(ch=st.integers(1, 8))
    def read_ids(self, ch: int) -> None:
        self.note()
        ids = [cid for (c, cid) in self.board.chips.addresses() if c == ch]
        self.board.transmit(ch, reads(ids, 122))

    @rule()
    def generate(self) -> None:
        b = self.board
        self.note()
        expected, self.heard = self.heard, set()
        rx, tiles = b.pacman_read(0x18), b.pacman_read(0x10)
        words = b.generate(0.003)
        d = data(words)
        assert (words["type"] != D).sum() == (words["type"] == S).sum()
        assert pk.valid_parity(d["packet"]).all()
        chans = d["io_channel"].astype(int)
        assert ((rx >> (chans - 1)) & 1).all()
        assert ((tiles >> ((chans - 1) // 4)) & 1).all()
        got = set(zip(chans.tolist(), pk.get_field(d["packet"], "chip_id").tolist(),
                      strict=True))
        assert got <= expected


TestBoardMachine = BoardMachine.TestCase
TestBoardMachine.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)


def test_output_decodes_with_the_pacman_codec() -> None:
    b = SimulatedBoard(io_group=2, seed=14).bring_up_all()
    words = b.generate(1.2)
    msgs = [P.encode_data_message(1_700_000_000, words[i:i + 4096])
            for i in range(0, len(words), 4096)]
    result = P.decode_data_messages(msgs, io_groups=2)
    assert result.n_errors == 0
    rows = result.rows
    chip_rows = rows[rows["packet_type"] == 0]
    assert len(chip_rows) == (words["type"] == D).sum()
    assert chip_rows["valid_parity"].all() and (chip_rows["io_group"] == 2).all()
    sync = rows[rows["packet_type"] == 6]
    assert len(sync) == 1 and sync["trigger_type"][0] == 83
