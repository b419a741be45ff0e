"""Run a routine with no DAQ running: a simulated board in this process, the real runner.

    from larpixdaq.routines.testing import run_routine_offline
    out = run_routine_offline("pedestal", seconds=1.0)
    assert out.ok, out.message
    out.result["chips"]["1-1-11"]["mean"]

``name_or_fn`` is a built-in's name, a routine function, or the path of a routine file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from larpixdaq.boards.session import BoardSession
from larpixdaq.routines.context import RoutineContext
from larpixdaq.routines.registry import (
    FAILED,
    RoutineError,
    RoutineRegistry,
    RoutineResult,
    execute,
    run_to_end,
)


def run_routine_offline(name_or_fn: str | Path | Callable[..., Any], board: Any = None, *,
                        session: BoardSession | None = None,
                        on_progress: Callable[[dict[str, Any]], None] | None = None,
                        **params: Any) -> RoutineResult:
    """Run one routine to its end against ``board`` (default: a one-tile simulated board set
    up as after a bring-up and threshold scan) and return its :class:`RoutineResult`, with
    the progress steps in ``.progress`` and the INFO texts in ``.result`` untouched."""
    registry = RoutineRegistry()
    try:
        if callable(name_or_fn):
            spec = registry.register(name_or_fn, origin="offline")
        elif str(name_or_fn).endswith(".py") or Path(str(name_or_fn)).is_file():
            spec = registry.load_file(name_or_fn)
        else:
            spec = registry.get(str(name_or_fn))
    except RoutineError as exc:
        return RoutineResult(str(getattr(name_or_fn, "__name__", name_or_fn)), FAILED, str(exc),
                             params=params)
    if session is None:
        if board is None:
            from larpixdaq.boards.simboard import SimulatedBoard

            board = SimulatedBoard(1, seed=0).bring_up_all()
        session = BoardSession.for_sim(board)
    ctx = RoutineContext(session, log=logging.getLogger(f"larpixdaq.routine.{spec.name}"))
    result = run_to_end(execute(spec, ctx, params), on_progress)
    result.infos = ctx.infos  # type: ignore[attr-defined]
    return result
