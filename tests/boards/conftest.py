"""Fixtures for the board tests: boards, emulators on free ports, and clean shutdown."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from loopback import port_of
from standin import StandInBoard

from larpixdaq.boards.pacman_client import PacmanClient
from larpixdaq.boards.pacman_emulator import PacmanEmulator
from larpixdaq.boards.pacman_link import PacmanLink


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


@pytest.fixture
def connect() -> Iterator[Callable[..., PacmanLink]]:
    """Clients (``cls``, a PacmanClient unless told) to emulators or to nothing; every one
    is closed after the test."""
    made: list[PacmanLink] = []

    def make(emu: PacmanEmulator | None = None, io_group: int = 1, *,
             cls: type[PacmanLink] = PacmanClient, **kw: object) -> PacmanLink:
        if emu is not None:
            kw.setdefault("cmd_port", port_of(emu.cmd_endpoint))
            kw.setdefault("data_port", port_of(emu.data_endpoint))
        kw.setdefault("timeout", 1.0)
        client = cls(io_group, "127.0.0.1", **kw)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()
