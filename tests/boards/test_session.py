"""The board session: network, software copy, and configuration through the PACMAN
client's code - in process on a simulated board and over sockets to an emulated PACMAN."""

from __future__ import annotations

import json

import numpy as np
import pytest

from larpixdaq.boards.pacman_client import PacmanClient
from larpixdaq.boards.session import BoardActionError, BoardSession
from larpixdaq.boards.simboard import SimulatedBoard
from larpixdaq.boards.simclient import SimBoardClient, collect_messages
from larpixdaq.formats.chipconfig import ChipConfig
from larpixdaq.formats.pacman import decode_data_messages


@pytest.fixture
def session():
    return BoardSession.for_sim(SimulatedBoard(1, seed=2).bring_up_all())


def port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def test_sim_session_adopts_the_chips_and_verifies(session):
    assert session.info()["n_chips"] == 100 and session.info()["kind"] == "sim"
    assert session.validate()["match"] is True
    read = session.read("1-1-11")
    assert read["registers"] == session.retrieve("1-1-11")["registers"]


def test_update_is_all_or_nothing_and_counted(session):
    before = session.retrieve()["chips"]
    with pytest.raises(BoardActionError, match="threshold_global = 300 is out of range"):
        session.update({"1-1-11": {"threshold_global": 7},
                        "1-1-12": {"threshold_global": 300}})
    with pytest.raises(BoardActionError, match=r"pixel_trim_dac index 64 is out of range"):
        session.update({"1-1-11": {"pixel_trim_dac[64]": 1}})
    with pytest.raises(BoardActionError, match="updates must be"):
        session.update({"1-1-11": 5})
    assert session.retrieve()["chips"] == before
    assert session.counters["bad_values"] == 2 and session.counters["bad_updates"] == 1


def test_write_only_named_registers(session):
    session.update({"1-1-11": {"threshold_global": 200, "csa_enable": [0] * 64}})
    out = session.write("1-1-11", registers=["threshold_global"])
    assert out["packets"] == 1
    diff = session.validate("1-1-11")["differences"]
    assert set(diff) == {"csa_enable"}
    with pytest.raises(BoardActionError, match="register address 999"):
        session.write("1-1-11", registers=[999])


def test_load_board_errors(session, tmp_path):
    with pytest.raises(BoardActionError, match="cannot load network"):
        session.load_board(str(tmp_path / "missing.json"))
    other = SimulatedBoard(3).network_config()
    (tmp_path / "net3.json").write_text(json.dumps(other))
    with pytest.raises(BoardActionError, match="no chips on io_group 1 .* io_group\\(s\\) \\[3\\]"):
        session.load_board(str(tmp_path / "net3.json"))
    assert session.counters["bad_network"] == 2
    assert session.load_board(None)["n_chips"] == 100


def test_load_configuration_file_and_directory(session, tmp_path):
    cfg = ChipConfig()
    cfg["threshold_global"] = 42
    cfg.save(tmp_path / "all.json")
    out = session.load_configuration(tmp_path / "all.json", ["1-1-11", "1-1-12"])
    assert sorted(out["loaded"]) == ["1-1-11", "1-1-12"]
    soft = session.retrieve(["1-1-11", "1-1-12", "1-1-13"])["chips"]
    assert soft["1-1-11"]["threshold_global"] == 42 and soft["1-1-11"]["chip_id"] == 11
    assert soft["1-1-13"]["threshold_global"] != 42
    d = tmp_path / "dir"
    d.mkdir()
    cfg["threshold_global"] = 43
    cfg.save(d / "config-1-2-41-2024.json")
    assert session.load_configuration(d)["loaded"] == {"1-2-41": "config-1-2-41-2024.json"}
    assert session.retrieve("1-2-41")["registers"]["threshold_global"] == 43
    (d / "config-1-9-9.json").write_text(cfg.to_json())
    with pytest.raises(BoardActionError, match="unknown chip"):
        session.load_configuration(d)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BoardActionError, match="not valid JSON"):
        session.load_configuration(tmp_path / "bad.json")
    with pytest.raises(BoardActionError, match="no such file"):
        session.load_configuration(tmp_path / "nope.json")


def test_a_replay_has_no_board():
    s = BoardSession(None, 1, kind="replay")
    with pytest.raises(BoardActionError, match="no board"):
        s.write()
    with pytest.raises(BoardActionError, match="needs a network file"):
        s.load_board(None)


def test_config_rows_hold_the_software_copy(session):
    session.update({"1-1-11": {"threshold_global": 12}})
    rows = session.config_rows()
    assert len(rows) == 100
    row = rows[(rows["io_channel"] == 1) & (rows["chip_id"] == 11)][0]
    assert row["registers"][64] == 12 and row["io_group"] == 1


def test_same_session_code_drives_an_emulated_pacman(start_emulator):
    board = SimulatedBoard(1, seed=4)
    emu = start_emulator(board)
    client = PacmanClient(1, "127.0.0.1", port(emu.cmd_endpoint), port(emu.data_endpoint))
    try:
        s = BoardSession(client, 1, kind="pacman")
        s.load_board(board.network_config())
        steps = list(s.bring_up())
        assert [p["io_channel"] for p in steps] == [1, 2, 3, 4]
        s.update({k: {"threshold_global": 40, "channel_mask": [0] * 64} for k in s.keys(None)})
        s.write()
        assert s.validate()["match"] is True
        rows = decode_data_messages(collect_messages(client, 0.3), 1).rows
        assert ((rows["packet_type"] == 0) & (rows["chip_id"] > 10)).any()
    finally:
        client.close()


def test_sim_client_collects_simulated_time_without_waiting():
    board = SimulatedBoard(1, seed=5).bring_up_all()
    client = SimBoardClient(board)
    msgs = client.collect(1.5)
    rows = decode_data_messages(msgs, 1).rows
    assert np.count_nonzero(rows["packet_type"] == 6) == 1  # one SYNC per simulated second
    assert abs(board.time - 1.5) < 1e-6
