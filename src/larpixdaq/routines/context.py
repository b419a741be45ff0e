"""What a routine gets as ``ctx``: the board, its chips' configurations, and the DAQ.

The same context serves a routine on a producer and in an offline test; only the callbacks
behind ``send_info``/``send_data`` and the "is the board being read out" check differ.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any

import numpy as np

from larpixdaq.boards.session import BoardSession
from larpixdaq.errors import LarpixDaqError
from larpixdaq.formats.chipconfig import ChipConfig


class RoutineAborted(LarpixDaqError):  # noqa: N818 - a stop request, not an error
    """Raised inside a routine (by ``ctx.check_stop()``) when it was asked to stop.

    Defined with the context that raises it; the registry, which turns it into an ``aborted``
    outcome, imports it from here, so the two modules do not import each other."""


class RoutineContext:
    """The routine's handle on the DAQ (see docs/routines.md for the full API).

    ``board`` is the :class:`~larpixdaq.boards.session.BoardSession`: write, read, verify,
    bring-up, the software copy. ``stop`` is set when the routine should stop (the
    producer is shutting down, or the routine's time limit passed).
    """

    def __init__(self, board: BoardSession, *, log: logging.Logger | None = None,
                 stop: threading.Event | None = None,
                 info: Callable[[str], bool] | None = None,
                 data: Callable[[list[bytes]], bool] | None = None,
                 run_data: Callable[[float, threading.Event], list[bytes] | None]
                 | None = None) -> None:
        self.board = board
        self.log = log or logging.getLogger("larpixdaq.routine")
        self.stop = stop or threading.Event()
        self.infos: list[str] = []
        self._info = info
        self._data = data
        self._run_data = run_data

    # ---- the DAQ -----------------------------------------------------------------------
    @property
    def io_group(self) -> int:
        return self.board.io_group

    @property
    def configs(self) -> dict[str, ChipConfig]:
        """The software copy, ``{chip_key: ChipConfig}`` (edit it, then ``write``)."""
        return self.board.configs

    @property
    def chip_keys(self) -> list[str]:
        return self.board.keys(None)

    def send_info(self, text: str) -> bool:
        """An INFO message into the data flow (stored with the run's data); outside a run it
        is only logged. True if it went into the data flow."""
        self.infos.append(str(text))
        self.log.info("%s", text)
        return bool(self._info(str(text))) if self._info is not None else False

    def send_data(self, messages: list[bytes]) -> bool:
        """PACMAN data messages into the data flow (only during a run); True if sent."""
        return bool(self._data(list(messages))) if self._data is not None else False

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def check_stop(self) -> None:
        """Raise :class:`RoutineAborted` if the routine was asked to stop."""
        if self.stop.is_set():
            raise RoutineAborted("stop requested")

    # ---- the board ---------------------------------------------------------------------
    def bring_up(self) -> Generator[dict[str, Any], None, dict[str, Any]]:
        return self.board.bring_up()

    def update(self, updates: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        return self.board.update(updates)

    def set_all(self, values: Mapping[str, Any], chip_keys: Iterable[str] | None = None
                ) -> None:
        """The same register values on every chip (or ``chip_keys``) of the software copy."""
        keys = self.board.keys(chip_keys)
        self.board.update({k: dict(values) for k in keys})

    def write(self, chip_keys: str | Iterable[str] | None = None,
              registers: Iterable[str | int] | None = None) -> dict[str, Any]:
        return self.board.write(chip_keys, registers)

    def read(self, chip_keys: str | Iterable[str] | None = None) -> dict[str, Any]:
        return self.board.read(chip_keys)

    def validate(self, chip_keys: str | Iterable[str] | None = None) -> dict[str, Any]:
        return self.board.validate(chip_keys)

    def read_messages(self, seconds: float) -> list[bytes]:
        """The board's data messages over ``seconds`` (simulated seconds on a simulated
        board). During a run: a copy of what the run records over ``seconds`` of wall time,
        so a calibration taken as a run is also in the run's file."""
        self.check_stop()
        if self._run_data is not None:
            try:
                msgs = self._run_data(seconds, self.stop)
            except RuntimeError as exc:
                raise RuntimeError(f"cannot read the board's data now: {exc}") from None
            if msgs is not None:
                return msgs
        return self.board.collect(seconds, self.stop)

    def read_data(self, seconds: float) -> np.ndarray:
        """The board's data over ``seconds`` decoded into ``packets`` rows (v2.4 layout)."""
        from larpixdaq.formats.pacman import decode_data_messages

        msgs = self.read_messages(seconds)
        if not msgs:
            from larpixdaq.formats.rows import PACKETS_DTYPE

            return np.zeros(0, PACKETS_DTYPE)
        return decode_data_messages(msgs, self.io_group).rows
