"""Routines: plug-in functions (calibrations, scans, start-up sequences) run on a producer.

See docs/routines.md. ``RoutineRegistry`` holds them (built-ins plus files loaded from a
directory), ``execute`` runs one to a typed ``RoutineResult``, ``RoutineContext`` is what a
routine receives, and ``larpixdaq.routines.testing.run_routine_offline`` runs one with no DAQ.
"""

from larpixdaq.routines.registry import (
    ABORTED,
    FAILED,
    SUCCESS,
    LoadReport,
    RoutineAborted,
    RoutineError,
    RoutineRegistry,
    RoutineResult,
    RoutineSpec,
    execute,
    run_to_end,
)

__all__ = ["ABORTED", "FAILED", "SUCCESS", "LoadReport", "RoutineAborted", "RoutineError",
           "RoutineRegistry", "RoutineResult", "RoutineSpec", "execute", "run_to_end"]
