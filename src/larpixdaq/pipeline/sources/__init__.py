"""Where a producer's PACMAN messages come from: a board, or a recorded file.

Every source gives whole PACMAN ``D`` messages, bytes unchanged, between :meth:`Source.start`
and :meth:`Source.stop` (a run's beginning and end: nothing is read out while a run is only
prepared). What a producer may ask of a source beyond that is part of the
:class:`Source` interface, so nothing sniffs a source's type or attributes:

* :meth:`Source.session` - the board operations (configuration, routines) on its board;
  a source without a board gives a session that says so;
* :meth:`Source.configs` - the chips' registers as ``configs`` rows, if the source knows them
  (the producer prefers the board session's software copy when it has one);
* :meth:`Source.ignores_configuration` - why its data in a run does not follow the chips'
  configuration (a fixed-rate simulation, a replay), so a routine cannot analyse it;
* :meth:`Source.counters` - what the source itself counted.

The sources: :class:`~.sim.SimSource` (the simulated board in this process),
:class:`~.pacman.PacmanSource` (a PACMAN board or its emulator) and
:class:`~.replay.ReplaySource` (a raw message file or a LArPix+HDF5 v2.4 file).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from larpixdaq.boards.session import BoardSession


class Source(ABC):
    """A producer's source of PACMAN messages (see the package docstring)."""

    io_group: int
    lock: threading.RLock
    """Taken around every use of the board: board actions run in another thread."""
    runs_on_its_own: bool = False
    """The board sends whether or not it is read (a PACMAN, whose PUB socket drops what is
    not taken; a simulated board at a set rate): the producer reads it even when it cannot
    send, and keeps what it read. A source that waits for its reader (a file, a simulated
    board as fast as it goes) is read only when the producer can send."""

    @abstractmethod
    def start(self) -> None:
        """Readout starts: data flows from now (the beginning of a run)."""

    @abstractmethod
    def stop(self) -> None:
        """Readout stops (the end of a run)."""

    def prepare(self) -> None:
        """A run is prepared (readout starts only at its beginning): what the board sends
        meanwhile (during a configuration action) is kept for :meth:`pending`."""
        return None

    def pending(self) -> list[bytes]:
        """What the board sent while readout was not running and a run was prepared, taken
        once; the producer keeps it in the run, flagged as before the beginning."""
        return []

    @abstractmethod
    def read(self, wait: float) -> list[bytes]:
        """The messages available now, waiting at most about ``wait`` seconds for some."""

    def close(self) -> None:
        """Let go of the board or file (the producer is shutting down)."""
        return None

    @abstractmethod
    def session(self) -> BoardSession:
        """A board session on this source's board (called once, by the producer's board
        actions); it shares :attr:`lock` with the data loop."""

    def configs(self) -> np.ndarray | None:
        """The chips' registers now as ``configs`` rows, or None if the source cannot say."""
        return None

    def ignores_configuration(self, run_number: int) -> str | None:
        """Why the data this source gives in run ``run_number`` does not follow the chips'
        configuration, or None when it does (a routine may then analyse it)."""
        return None

    def counters(self) -> dict[str, int]:
        """The source's own counts, by the names heartbeats and the run record show."""
        return {}
