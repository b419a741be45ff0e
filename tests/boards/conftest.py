"""Fixtures for the board tests: boards, emulators on free ports, and clean shutdown."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from standin import StandInBoard

from larpixdaq.boards.pacman_emulator import PacmanEmulator


@pytest.fixture
def start_emulator() -> Iterator[Callable[..., PacmanEmulator]]:
    """Start emulators on free loopback ports; every one is stopped after the test."""
    started: list[PacmanEmulator] = []

    def start(board: object | None = None, **kwargs: object) -> PacmanEmulator:
        board = board if board is not None else StandInBoard()
        kwargs = {"cmd_port": 0, "data_port": 0, "echo_port": 0, **kwargs}
        emu = PacmanEmulator(board, **kwargs)
        started.append(emu)
        return emu.start()

    yield start
    for emu in started:
        emu.stop()
    for emu in started:
        assert emu.failure is None, f"emulator thread failed: {emu.failure!r}"


@pytest.fixture
def emulator(start_emulator: Callable[..., PacmanEmulator]) -> PacmanEmulator:
    return start_emulator()
