"""Closing a run that the whole DAQ stopped in without ending it (a crash, a power cut, a
SIGKILL of every process).

When the core alone restarts, the components that live on still hold the run, and the core
carries it on (see docs/runcontrol.md, "Core restart"). When the whole DAQ starts again,
nothing holds the run any more: its producers are new processes with a new stream each, and
taking data into it again would silently join two unrelated pieces under one run number. So
`larpix-daq up`, before it starts any component, closes such a run here, once:

* the run's files are repaired and closed (:func:`close_unfinished_run`: the last committed
  part cut back to its commit and sealed; a final part with the run's totals);
* the run record gets what storage had written (files and counters, under storage's name),
  an incident saying what happened, and the end reason :data:`CRASH_REASON`; its exit status
  is ``failed`` (the incident is not resolved: the run was not carried through);
* the core's saved state becomes STOP, so the core starts in STOP.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from larpixdaq.pipeline.runfile import RunWriter
from larpixdaq.pipeline.runjournal import unfinished_runs
from larpixdaq.runcontrol.rundb import STORAGE_ROLE, RunDatabase
from larpixdaq.runcontrol.statemachine import State, run_exit_status, run_losses

CRASH_REASON = "ended by a crash: the DAQ stopped without ending the run"
"""The end reason of a run closed here (kept in the run record and in its last file part)."""


@dataclass
class ClosedRun:
    """What :func:`close_interrupted_run` did."""

    run_number: int
    state: str  # the state the run was left in
    exit_status: str
    files: list[str] = field(default_factory=list)
    packets_written: int = 0
    packets_lost: int = 0

    def describe(self) -> str:
        files = ", ".join(Path(f).name for f in self.files) or "no files"
        return (f"run {self.run_number} was left open in state {self.state} by a DAQ that "
                f"stopped without ending it: closed as {self.exit_status} ({CRASH_REASON}); "
                f"{self.packets_written} packets written, {self.packets_lost} lost ({files})")


def close_unfinished_run(data_dir: str | Path, run_number: int,
                         extra: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Repair and close the files of a run storage left open, without resuming it: the last
    committed part is cut back to its commit and sealed (as a resume does), the run ends in
    a part of its own with the run's totals and ``extra`` as attributes, and the journal says
    closed. Returns the run's summary (files, counters), or None if the run has no open
    journal here (nothing was written, or storage already closed it)."""
    if run_number not in unfinished_runs(data_dir):
        return None
    return RunWriter(data_dir, run_number).close(clean=True, extra=extra)


def close_interrupted_run(db_path: str | Path, data_dir: str | Path) -> ClosedRun | None:
    """Close the run left open in the run database at ``db_path`` (see the module
    docstring); None if no run is open. Takes the database's lock like a core does, so it
    refuses (:class:`~larpixdaq.runcontrol.rundb.RunDatabaseError`) while a core uses it."""
    db = RunDatabase(db_path, exclusive=True)
    try:
        record = db.open_run()
        if record is None:
            return None
        n, left_in = record.run_number, record.state
        db.add_incident(n, f"the DAQ stopped during run {n} (state {record.state}) without "
                           "ending it; closed when the DAQ was started again")
        summary = close_unfinished_run(data_dir, n, extra={"end_reason": CRASH_REASON,
                                                           "end_time": time.time()})
        if summary is not None:
            storage = next((name for name, role in record.participants.items()
                            if role == STORAGE_ROLE), STORAGE_ROLE)
            db.record_component(n, storage, STORAGE_ROLE, summary["counters"], summary["files"])
        record = db.get_run(n)
        status = run_exit_status(
            State.RUN, went_through_error=left_in == State.ERROR.value,
            transition_failures=0, incidents=len(record.incidents),
            unresolved_incidents=len(record.unresolved_incidents),
            storage_reported=record.storage_reported,
            losses=run_losses(record.counters, record.roles))
        record = db.finish_run(n, status, end_reason=CRASH_REASON)
        db.save_core_state(str(State.STOP), None)
        return ClosedRun(n, left_in, status, list(record.files), record.packets_written,
                         record.packets_lost)
    finally:
        db.close()
