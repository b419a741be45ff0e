"""Board conveniences of the Operator: configuration and routines, as producer actions.

Each board is read out by one producer; these methods find the producer (by name, or the
only one) and invoke its actions, answering locally with a clear failure when there is no
such board. They are a mixin the :class:`~larpixdaq.runcontrol.operator.Operator` includes,
kept apart so the Operator itself is only the request/reply client of the core, and they
use nothing but its public requests (``call``, ``invoke``, ``request``) and ``_local_reply``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from larpixdaq.runcontrol.replies import Reply, Result, Timeout


class BoardCommands:
    """Board methods of the Operator (``get_boards``, ``write_configuration``,
    ``run_routine``, ...); see docs/runcontrol.md."""

    def _producer_names(self, timeout: float | None) -> list[str] | Result | Timeout:
        final = self.call("clients", timeout=timeout)
        if not final.success:
            return final
        return sorted(c["name"] for c in final.data.get("components", [])
                      if c.get("role") == "producer")

    def producers(self, *, timeout: float | None = None) -> list[str]:
        """Names of the registered producers (one per board); [] if the core did not answer."""
        names = self._producer_names(timeout)
        return names if isinstance(names, list) else []

    def _producer(self, board: str | None, timeout: float | None) -> str | Reply:
        names = self._producer_names(timeout)
        if not isinstance(names, list):
            return self._local_reply(False, names.message, final=names)
        if board is not None:
            if board in names:
                return board
            return self._local_reply(False, f"no producer {board!r}; producers: "
                                            f"{', '.join(names) or 'none registered'}",
                                     {"producers": names})
        if len(names) == 1:
            return names[0]
        if not names:
            return self._local_reply(False, "no producer (board) is registered with the core",
                                     {"producers": []})
        return self._local_reply(False, f"{len(names)} producers: choose one with board=NAME "
                                        f"({', '.join(names)})", {"producers": names})

    def board_action(self, action: str, board: str | None = None, *,
                     timeout: float | None = None, **params: Any) -> Reply:
        """Invoke ``action`` on the producer ``board`` (default: the only one)."""
        target = self._producer(board, timeout)
        if isinstance(target, Reply):
            return target
        return self.invoke(target, action, timeout=timeout, **params)

    def get_boards(self, board: str | None = None, *, timeout: float | None = None) -> Reply:
        """Every board (or one): io_group, kind, chips known; ``data["boards"]`` by producer."""
        found = self._producer_names(timeout)
        if not isinstance(found, list):
            return self._local_reply(False, found.message, final=found)
        names = [board] if board is not None else found
        boards: dict[str, Any] = {}
        errors: list[str] = []
        for name in names:
            final = self.invoke(name, "get_boards", timeout=timeout).wait()
            if final.success:
                boards[name] = final.data.get("result")
            else:
                errors.append(f"{name}: {final.message}")
        if errors:
            return self._local_reply(False, "; ".join(errors), {"boards": boards})
        return self._local_reply(True, f"{len(boards)} board(s)", {"boards": boards})

    def load_board(self, network_file: str | None = None, *, board: str | None = None,
                   timeout: float | None = None) -> Reply:
        params = {} if network_file is None else {"network_file": str(network_file)}
        return self.board_action("load_board", board, timeout=timeout, **params)

    def bring_up(self, *, board: str | None = None, reset: bool = True,
                 timeout: float | None = None) -> Reply:
        return self.board_action("bring_up", board, timeout=timeout, reset=reset)

    def write_configuration(self, chip_keys: str | list[str] | None = None, *,
                            board: str | None = None, timeout: float | None = None) -> Reply:
        return self.board_action("write_configuration", board, timeout=timeout,
                                 chip_keys=chip_keys)

    def read_configuration(self, chip_keys: str | list[str] | None = None, *,
                           board: str | None = None, timeout: float | None = None) -> Reply:
        return self.board_action("read_configuration", board, timeout=timeout,
                                 chip_keys=chip_keys)

    def validate_configuration(self, chip_keys: str | list[str] | None = None, *,
                               board: str | None = None, timeout: float | None = None
                               ) -> Reply:
        return self.board_action("validate_configuration", board, timeout=timeout,
                                 chip_keys=chip_keys)

    def retrieve_configuration(self, chip_keys: str | list[str] | None = None, *,
                               board: str | None = None, timeout: float | None = None
                               ) -> Reply:
        return self.board_action("retrieve_configuration", board, timeout=timeout,
                                 chip_keys=chip_keys)

    def send_configuration(self, updates: dict[str, dict[str, Any]], *,
                           board: str | None = None, timeout: float | None = None) -> Reply:
        return self.board_action("send_configuration", board, timeout=timeout, updates=updates)

    def load_configuration(self, path: str | Path, chip_keys: str | list[str] | None = None,
                           *, board: str | None = None, timeout: float | None = None) -> Reply:
        return self.board_action("load_configuration", board, timeout=timeout, path=str(path),
                                 chip_keys=chip_keys)

    def list_routines(self, *, board: str | None = None, timeout: float | None = None) -> Reply:
        return self.board_action("list_routines", board, timeout=timeout)

    def routine_results(self, limit: int = 20, routine: str | None = None, *,
                        board: str | None = None, timeout: float | None = None) -> Reply:
        """The routine results a board's producer kept, newest first (``data["result"]``:
        ``directory`` and ``results``, each with time, routine, status, params, files)."""
        return self.board_action("routine_results", board, timeout=timeout, limit=limit,
                                 routine=routine)

    def load_routines(self, directory: str | Path | None = None, *, board: str | None = None,
                      timeout: float | None = None) -> Reply:
        """Load routine files from the producer's routine directories (named when it was
        started): all of them, or ``directory``, which must be one of them."""
        params = {} if directory is None else {"directory": str(directory)}
        return self.board_action("load_routines", board, timeout=timeout, **params)

    def run_routine(self, name: str, /, *, board: str | None = None,
                    timeout: float | None = None, routine_timeout: float | None = None,
                    routine_params: dict[str, Any] | None = None, **params: Any) -> Reply:
        """Run routine ``name`` on a board with its ``params``; progress, then the result
        (``data["result"]``: status, message, result). ``routine_timeout`` stops it early;
        ``routine_params`` passes parameters whose names clash with these (e.g. ``board``)."""
        target = self._producer(board, timeout)
        if isinstance(target, Reply):
            return target
        action_params: dict[str, Any] = {"name": name,
                                         "params": {**(routine_params or {}), **params}}
        if routine_timeout is not None:
            action_params["timeout"] = routine_timeout
        return self.request("invoke", {"component": target, "action": "run_routine",
                                       "params": action_params}, timeout=timeout)

    def stop_routine(self, board: str | None = None, *, timeout: float | None = None) -> Reply:
        """Stop the routine running on ``board`` (default: the only one). Answers at once,
        even while the routine runs (an immediate action); the routine's own reply then
        ends with a failed ``Result``, ``routine NAME aborted: stopped by the operator``.
        ``data["result"]``: ``stopped`` (False when no routine ran), ``routine``, ``message``."""
        return self.board_action("stop_routine", board, timeout=timeout)
