"""The producer's configuration and routine actions (a mixin of ``ProducerComponent``).

The producer is the one component that owns its board, so everything that touches the
board - the network, the chips' configuration, routines - runs there, as actions the
operator invokes through the core. Actions run in the component's action thread, one at a
time, except ``stop_routine``, an immediate action that answers at once even while a
routine occupies the action thread. The producer's data loop keeps reading meanwhile, and
the board is shared through the source's lock, taken for one short step at a time on a
simulated board and for one operation on a PACMAN (whose data arriving meanwhile waits in
the client, not lost).

Chip selections (``chip_keys``) take one key (``"1-1-11"``), a list, or None for all.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from typing import Any

from larpixdaq.boards.session import BoardSession
from larpixdaq.errors import LarpixDaqError
from larpixdaq.routines.context import RoutineContext
from larpixdaq.routines.registry import RoutineError, RoutineRegistry, execute
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


def session_for(source: Any) -> BoardSession:
    """The board session of a producer's source: the simulated board, the PACMAN client,
    or none (a replayed file has no board)."""
    board = getattr(source, "board", None)
    lock = getattr(source, "lock", None)
    if board is not None and hasattr(board, "generate"):
        return BoardSession.for_sim(board, lock,
                                    on_message=getattr(source, "board_output", None))
    client = getattr(source, "client", None)
    if client is not None:
        return BoardSession(client, source.io_group, kind="pacman", lock=lock)
    return BoardSession(None, source.io_group, kind="replay")


class BoardActions:
    """Mixin: configuration and routine actions of a producer (see module doc)."""

    board_session: BoardSession
    routine_registry: RoutineRegistry

    def init_board_actions(self, producer: Any) -> None:
        self.board_session = session_for(producer.source)
        if self.board_session.client is not None:
            producer.config_rows = self.board_session.config_rows
        self.routine_registry = RoutineRegistry()
        self._routine: _Running | None = None
        self._routine_counts = {"routines_run": 0, "routines_failed": 0}

    def board_counters(self) -> dict[str, int]:
        # The board client's own counts (time-outs, retries, bad and error replies) too.
        client = getattr(self.board_session.client, "counters", None) or {}
        return {**{f"board_{k}": v for k, v in self.board_session.counters.items()},
                **{f"pacman_{k}": v for k, v in client.items()},
                **self._routine_counts}

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
        being read out for it); outside a run, None: the routine reads the board itself."""
        producer = getattr(self, "producer", None)
        if producer is None or not producer.flowing:
            return None
        refusal = producer.tap_refusal()
        if refusal:
            raise RuntimeError(refusal)
        return producer.read_run_data(seconds, stop)

    # ---- board -----------------------------------------------------------------------------
    @action
    def get_boards(self) -> dict[str, Any]:
        """This producer's board: io_group, kind (sim, pacman, replay), chips known."""
        producer = getattr(self, "producer", None)
        return {"name": getattr(self, "name", ""), **self.board_session.info(),
                "reading_out": bool(producer is not None and producer.flowing)}

    @action
    def load_board(self, network_file: str | None = None) -> dict[str, Any]:
        """Load a hydra network JSON (default for a simulated board: its own network)."""
        return self.board_session.load_board(network_file)

    @action
    def bring_up(self, reset: bool = True) -> Generator[dict[str, Any], None, dict[str, Any]]:
        """Bring the network up, verifying every chip; progress after each io_channel."""
        return (yield from self.board_session.bring_up(reset=reset))

    # ---- configuration ---------------------------------------------------------------------
    @action
    def write_configuration(self, chip_keys: Any = None) -> dict[str, Any]:
        """Write the software copy to the chips (one key, a list, or all)."""
        return self.board_session.write(chip_keys)

    @action
    def read_configuration(self, chip_keys: Any = None) -> dict[str, Any]:
        """Read the chips' registers back, by name."""
        return self.board_session.read(chip_keys)

    @action
    def validate_configuration(self, chip_keys: Any = None) -> dict[str, Any]:
        """Compare the chips with the software copy: match, and the registers that differ."""
        return self.board_session.validate(chip_keys)

    @action
    def retrieve_configuration(self, chip_keys: Any = None) -> dict[str, Any]:
        """The software copy, as register values by name."""
        return self.board_session.retrieve(chip_keys)

    @action
    def send_configuration(self, updates: dict) -> dict[str, Any]:
        """Change the software copy: {chip_key: {register_name: value}}; all or nothing."""
        return self.board_session.update(updates)

    @action
    def load_configuration(self, path: str, chip_keys: Any = None) -> dict[str, Any]:
        """Chip configuration JSON file(s) into the software copy (a file or a directory)."""
        return self.board_session.load_configuration(path, chip_keys)

    # ---- routines --------------------------------------------------------------------------
    @action
    def list_routines(self) -> dict[str, Any]:
        """The routines this producer can run, with their parameters."""
        return {"routines": self.routine_registry.describe()}

    @action
    def load_routines(self, directory: str) -> dict[str, Any]:
        """Load routine files (NAME.py defining routine(ctx, ...)) from a directory."""
        report = self.routine_registry.load_directory(directory)
        if report.errors:
            raise RoutineError(
                "; ".join(f"{f}: {e}" for f, e in report.errors.items())
                + (f" (loaded: {', '.join(report.loaded)})" if report.loaded else ""))
        return report.to_dict()

    @action
    def run_routine(self, name: str, params: dict | None = None,
                    timeout: float | None = None
                    ) -> Generator[dict[str, Any], None, dict[str, Any]]:
        """Run a routine with its parameters; progress as it goes, then its result.

        ``timeout`` (seconds) stops it at its next step once passed (status aborted).
        """
        spec = self.routine_registry.get(name)
        running = _Running(name)
        self._routine = running
        timer = (threading.Timer(timeout, running.request_stop,
                                 (f"its time limit of {timeout:g} s passed",))
                 if timeout else None)
        producer = getattr(self, "producer", None)
        ctx = RoutineContext(
            self.board_session, stop=running.stop,
            log=getattr(self, "log", None) and self.log.getChild(f"routine.{name}"),
            info=producer.send_info if producer is not None else None,
            data=producer.send_data if producer is not None else None,
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
        self._routine_counts["routines_run"] += 1
        if not outcome.ok:
            self._routine_counts["routines_failed"] += 1
            detail = f"\n{outcome.traceback}" if outcome.traceback else ""
            message = outcome.message
            if outcome.status == "aborted" and running.reason:
                message = f"routine {name} aborted: {running.reason}"
            raise RoutineFailed(f"{message}{detail}")
        return outcome.to_dict()
