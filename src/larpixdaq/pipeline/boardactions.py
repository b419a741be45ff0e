"""The producer's configuration and routine actions (a part of ``ProducerComponent``).

The producer is the one component that owns its board, so everything that touches the
board - the network, the chips' configuration, routines - runs there, as actions the
operator invokes through the core. :class:`BoardActions` holds the board session of the
producer's source and the routines; the component offers its actions as its own.

Actions run in the component's action thread, one at a time, except ``stop_routine``, an
immediate action that answers at once even while a routine occupies the action thread. The
producer's data loop keeps reading meanwhile, and the board is shared through the source's
lock, taken for one short step at a time on a simulated board and for one operation on a
PACMAN (whose data arriving meanwhile waits in the client, not lost).

Chip selections (``chip_keys``) take one key (``"1-1-11"``), a list, or None for all.

Every configuration write that succeeds (an action's or a routine's) is, during a run, put
into the run's stream: a ``configs`` frame with the registers of the chips written and a
message row (``configuration written: ...``), so a scan's data can be matched to its
settings. It also updates the producer's configuration of record
(:mod:`larpixdaq.pipeline.configrecord`), which a restarted producer re-applies and verifies
(:meth:`BoardActions.restore_configuration`) before it takes part in a run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from larpixdaq.boards.session import BoardSession
from larpixdaq.errors import LarpixDaqError
from larpixdaq.formats.chipconfig import ChipConfig
from larpixdaq.pipeline.configrecord import (
    ConfigRecordError,
    load_record,
    record_path,
    save_record,
)
from larpixdaq.pipeline.counters import Counters
from larpixdaq.pipeline.sources import Source
from larpixdaq.routines.context import RoutineContext
from larpixdaq.routines.registry import RoutineError, RoutineRegistry, RoutineResult, execute
from larpixdaq.routines.results import ResultStore
from larpixdaq.runcontrol.actions import action


class RoutineFailed(LarpixDaqError):
    """A routine ended failed or aborted (the message says which, and why)."""


class _Running:
    """The routine in the action thread now: its name, its stop flag and why it was set.

    Set from the immediate lane (``stop_routine``) and the time-limit timer while the action
    thread runs the routine; the reason is written once, before the Event is set.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.stop = threading.Event()
        self.reason = ""
        self._lock = threading.Lock()

    def request_stop(self, reason: str) -> bool:
        """Set the stop flag with ``reason`` (the first reason wins); False if already set."""
        with self._lock:
            if self.stop.is_set():
                return False
            self.reason = reason
            self.stop.set()
            return True


class RunStream(Protocol):
    """What board actions use of the producer (:class:`~.producer.Producer`): its source,
    whether data flows, and the stream a routine adds to or reads a copy of."""

    source: Source
    flowing: bool
    reading: bool
    config_rows: Any

    def tap_refusal(self) -> str | None: ...
    def read_run_data(self, seconds: float,
                      stop: threading.Event | None = None) -> list[bytes]: ...
    def send_info(self, text: str) -> bool: ...
    def send_configs(self, rows: Any) -> bool: ...
    def send_data(self, messages: list[bytes]) -> bool: ...


@dataclass
class RoutineCounters(Counters):
    """Routines run on this board, and those that did not end in success."""

    routines_run: int = 0
    routines_failed: int = 0
    routines_refused: int = 0  # parameters that make no sense: refused before running
    routine_results_unsaved: int = 0  # outcomes that could not be kept on disk


@dataclass
class ConfigRecordCounters(Counters):
    """The configuration of record and the run's record of configuration writes."""

    config_writes_in_run: int = 0  # writes put into the run's stream (configs + message)
    config_restored_chips: int = 0  # chips given the record again when this process started
    config_restore_mismatches: int = 0  # ... and that did not read back as written
    config_record_unapplied: int = 0  # chips of the record this board does not know (yet)
    config_record_errors: int = 0  # the record could not be read or written


class BoardActions:
    """Configuration and routine actions on a producer's board (see module doc).

    ``name`` and ``log`` are the component's (the board is named after it, a routine logs
    under it).
    """

    def __init__(self, producer: RunStream, *, name: str = "",
                 log: logging.Logger | None = None,
                 routine_dirs: Iterable[str | Path] = ()) -> None:
        self.producer = producer
        self.name = name
        self.log = log or logging.getLogger(f"larpixdaq.boardactions.{name}")
        self.session: BoardSession = producer.source.session()
        # Routine files are Python run in this process: they are loaded only from the
        # directories named when the producer was started, never from a path in a request.
        self.routine_dirs = [Path(d).resolve() for d in routine_dirs]
        if self.session.client is not None:
            # A board's run snapshot is the software copy the operator edits and writes.
            producer.config_rows = self.session.config_rows
        self.routine_registry = RoutineRegistry()
        self._routine: _Running | None = None
        self.routine_counters = RoutineCounters()
        self._results_store: ResultStore | None = None
        self.config_counters = ConfigRecordCounters()
        self._record_path: Path | None = None
        #: Why this producer must not take part in a run: its configuration of record could
        #: not be re-applied as recorded (cleared by the next configuration write).
        self.restore_problem: str | None = None
        self.session.on_write = self._written
        self.session.on_reset = self._reset

    def keep_routine_results_in(self, directory: str | Path) -> None:
        """Write every routine's outcome (summary JSON + arrays) into ``directory``."""
        self._results_store = ResultStore(directory)

    def _keep(self, outcome: RoutineResult) -> dict[str, Any] | None:
        """The outcome kept on disk (its record), or None: not kept, counted and logged."""
        if self._results_store is None:
            return None
        try:
            return self._results_store.save(
                outcome.to_dict(), finished=time.time(),
                extra={"board": self.name, "io_group": self.session.io_group,
                       "in_run": bool(self.producer.flowing)})
        except (OSError, TypeError, ValueError) as exc:
            self.routine_counters.routine_results_unsaved += 1
            self.log.warning("routine %s: result not kept in %s: %s", outcome.name,
                             self._results_store.directory, exc)
            return None

    def counters(self) -> dict[str, int]:
        """The session's counts (``board_``), its client's (``pacman_``: time-outs,
        retries, bad and error replies), the routines' and the configuration record's."""
        client = self.session.client.counters if self.session.client is not None else {}
        return {**{f"board_{k}": v for k, v in self.session.counters.items()},
                **{f"pacman_{k}": v for k, v in client.items()},
                **self.routine_counters.as_dict(), **self.config_counters.as_dict()}

    # ---- the configuration of record, and configuration written during a run -----------------
    def keep_configuration_record_in(self, directory: str | Path) -> None:
        """Keep the configuration of record in ``directory`` (one file for this producer)."""
        self._record_path = record_path(directory, self.name or "producer")

    def _written(self, keys: list[str], addresses: list[int] | None) -> None:
        """After a configuration write: into the run (if one is open) and into the record."""
        self.restore_problem = None  # the operator has set the chips anew
        if self.producer.flowing:
            rows = self.session.config_rows(keys)
            what = keys[0] if len(keys) == 1 else f"{len(keys)} chips"
            if self.producer.send_configs(rows):
                self.producer.send_info(f"configuration written: {what}")
                self.config_counters.config_writes_in_run += 1
        if self._record_path is None:
            return
        try:
            chips = load_record(self._record_path)
            for key in keys:
                now = self.session.configs[key].to_registers()
                if addresses is None or key not in chips:
                    chips[key] = now
                else:
                    chips[key][addresses] = now[addresses]
            save_record(self._record_path, self.session.io_group, chips)
        except ConfigRecordError as exc:
            self.config_counters.config_record_errors += 1
            self.log.error("%s", exc)

    def _reset(self, keys: list[str]) -> None:
        """A bring-up reset these chips: the record no longer says what they hold."""
        if self._record_path is None:
            return
        try:
            chips = load_record(self._record_path)
            if any(k in chips for k in keys):
                save_record(self._record_path, self.session.io_group,
                            {k: v for k, v in chips.items() if k not in keys})
        except ConfigRecordError as exc:
            self.config_counters.config_record_errors += 1
            self.log.error("%s", exc)

    def restore_configuration(self) -> dict[str, Any] | None:
        """Re-apply the configuration of record to the chips and verify it (a producer that
        starts again does this before it registers); None if there is no record.

        A write that fails or chips that do not read back as recorded set
        :attr:`restore_problem`: the producer then refuses to take part in a run, so the run
        records an incident instead of data taken with unknown settings."""
        if self._record_path is None:
            return None
        try:
            chips = load_record(self._record_path)
        except ConfigRecordError as exc:
            self.config_counters.config_record_errors += 1
            self.restore_problem = str(exc)
            return {"ok": False, "message": str(exc)}
        if not chips:
            return None
        known = sorted(k for k in chips if k in self.session.configs)
        unknown = sorted(set(chips) - set(known))
        self.config_counters.config_record_unapplied += len(unknown)
        out: dict[str, Any] = {"ok": True, "chips": len(known), "unknown": unknown,
                               "record": str(self._record_path)}
        if unknown:
            self.log.warning("the configuration of record %s names %d chip(s) this board "
                             "does not know yet (%s); load the network and write them",
                             self._record_path, len(unknown), ", ".join(unknown[:4]))
        if not known:
            return out
        for key in known:
            self.session.configs[key] = ChipConfig.from_registers(chips[key], strict=False)
        try:
            self.session.write(known)
            check = self.session.validate(known)
        except Exception as exc:  # the board refused or did not answer
            check = {"match": False, "summary": f"{type(exc).__name__}: {exc}"}
        self.config_counters.config_restored_chips += len(known)
        out.update(ok=bool(check["match"]), message=check["summary"])
        if not check["match"]:
            self.config_counters.config_restore_mismatches += 1
            self.restore_problem = (f"the configuration of record ({self._record_path}) "
                                    f"could not be re-applied: {check['summary']}")
        return out

    @action(immediate=True)
    def stop_routine(self) -> dict[str, Any]:
        """Stop the running routine: it ends aborted at its next step (answers at once)."""
        return self.abort_routine("stopped by the operator")

    def abort_routine(self, reason: str) -> dict[str, Any]:
        """Ask the running routine, if any, to end aborted with ``reason``."""
        running = self._routine
        if running is None:
            return {"stopped": False, "routine": None, "message": "no routine is running"}
        first = running.request_stop(reason)
        return {"stopped": True, "routine": running.name,
                "message": f"routine {running.name} asked to stop; it ends aborted at its "
                           "next step" if first else
                           f"routine {running.name} was already asked to stop"}

    def _run_data(self, seconds: float, stop: threading.Event | None) -> list[bytes] | None:
        """During a run, a routine's data is a copy of what the run records (the board is
        being read out for it); otherwise (no run, or one only prepared), None: the routine
        reads the board itself."""
        producer = self.producer
        if not producer.reading:
            return None
        refusal = producer.tap_refusal()
        if refusal:
            raise RuntimeError(refusal)
        return producer.read_run_data(seconds, stop)

    # ---- board -----------------------------------------------------------------------------
    @action
    def get_boards(self) -> dict[str, Any]:
        """This producer's board: io_group, kind (sim, pacman, replay), chips known."""
        return {"name": self.name, **self.session.info(),
                "reading_out": bool(self.producer.reading)}

    @action
    def load_board(self, network_file: str | None = None) -> dict[str, Any]:
        """Load a hydra network JSON (default for a simulated board: its own network)."""
        return self.session.load_board(network_file)

    @action
    def bring_up(self, reset: bool = True) -> Generator[dict[str, Any], None, dict[str, Any]]:
        """Bring the network up, verifying every chip; progress after each io_channel."""
        return (yield from self.session.bring_up(reset=reset))

    # ---- configuration ---------------------------------------------------------------------
    @action
    def write_configuration(self, chip_keys: Any = None) -> dict[str, Any]:
        """Write the software copy to the chips (one key, a list, or all)."""
        return self.session.write(chip_keys)

    @action
    def read_configuration(self, chip_keys: Any = None) -> dict[str, Any]:
        """Read the chips' registers back, by name."""
        return self.session.read(chip_keys)

    @action
    def validate_configuration(self, chip_keys: Any = None) -> dict[str, Any]:
        """Compare the chips with the software copy: match, and the registers that differ."""
        return self.session.validate(chip_keys)

    @action
    def retrieve_configuration(self, chip_keys: Any = None) -> dict[str, Any]:
        """The software copy, as register values by name."""
        return self.session.retrieve(chip_keys)

    @action
    def send_configuration(self, updates: dict) -> dict[str, Any]:
        """Change the software copy: {chip_key: {register_name: value}}; all or nothing."""
        return self.session.update(updates)

    @action
    def load_configuration(self, path: str, chip_keys: Any = None) -> dict[str, Any]:
        """Chip configuration JSON file(s) into the software copy (a file or a directory)."""
        return self.session.load_configuration(path, chip_keys)

    # ---- routines --------------------------------------------------------------------------
    @action
    def list_routines(self) -> dict[str, Any]:
        """The routines this producer can run, with their parameters."""
        return {"routines": self.routine_registry.describe()}

    @action
    def load_routines(self, directory: str | None = None) -> dict[str, Any]:
        """Load routine files (NAME.py defining routine(ctx, ...)) from the routine
        directories named at start-up (--routines): all of them, or the one named (its
        path or its last part)."""
        loaded: list[str] = []
        errors: dict[str, str] = {}
        for d in self._routine_dirs_for(directory):
            report = self.routine_registry.load_directory(d)
            loaded += report.loaded
            errors.update({str(d / f): e for f, e in report.errors.items()})
        if errors:
            raise RoutineError(
                "; ".join(f"{f}: {e}" for f, e in errors.items())
                + (f" (loaded: {', '.join(loaded)})" if loaded else ""))
        return {"loaded": loaded, "errors": errors,
                "directories": [str(d) for d in self._routine_dirs_for(directory)]}

    def _routine_dirs_for(self, directory: str | None) -> list[Path]:
        if not self.routine_dirs:
            raise RoutineError("this producer has no routine directories; name them when "
                               "starting it (larpix-daq producer/up --routines DIR)")
        if directory is None:
            return list(self.routine_dirs)
        wanted = str(directory)
        for d in self.routine_dirs:
            if wanted in (str(d), d.name) or Path(wanted).resolve() == d:
                return [d]
        raise RoutineError(f"routines are loaded only from the directories named at start-up "
                           f"({', '.join(map(str, self.routine_dirs))}); {wanted} is not one "
                           "of them")

    @action
    def run_routine(self, name: str, params: dict | None = None,
                    timeout: float | None = None
                    ) -> Generator[dict[str, Any], None, dict[str, Any]]:
        """Run a routine with its parameters; progress as it goes, then its result.

        ``timeout`` (seconds) stops it at its next step once passed (status aborted).
        """
        spec = self.routine_registry.get(name)
        try:
            spec.check(params or {})  # refused before anything touches the board
        except RoutineError:
            self.routine_counters.routines_refused += 1
            raise
        running = _Running(name)
        self._routine = running
        timer = (threading.Timer(timeout, running.request_stop,
                                 (f"its time limit of {timeout:g} s passed",))
                 if timeout else None)
        ctx = RoutineContext(
            self.session, stop=running.stop, log=self.log.getChild(f"routine.{name}"),
            info=self.producer.send_info, data=self.producer.send_data,
            run_data=self._run_data)
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            outcome = yield from execute(spec, ctx, params or {})
        finally:
            if timer is not None:
                timer.cancel()
            self._routine = None
        self.routine_counters.routines_run += 1
        if outcome.status == "aborted" and running.reason:
            outcome.message = f"routine {name} aborted: {running.reason}"
        kept = self._keep(outcome)
        where = f" (kept in {kept['summary_file']})" if kept else ""
        if not outcome.ok:
            self.routine_counters.routines_failed += 1
            detail = f"\n{outcome.traceback}" if outcome.traceback else ""
            raise RoutineFailed(f"{outcome.message}{where}{detail}")
        out = outcome.to_dict()
        if kept is not None:
            out["kept"] = {"summary_file": kept["summary_file"],
                           "arrays_file": kept["arrays_file"], "summary": kept["summary"]}
        return out

    @action
    def routine_results(self, limit: int = 20, routine: str | None = None) -> dict[str, Any]:
        """The routine results this producer kept, newest first (``limit`` of them, only
        ``routine``'s if given): time, routine, status, parameters, files."""
        store = self._results_store
        if store is None:
            return {"directory": None, "results": [],
                    "message": "this producer keeps no routine results (no data directory)"}
        return {"directory": str(store.directory),
                "results": store.list(int(limit) if limit else None, routine)}
