"""The Operator: the Python face of run control (the command line and web UI use it too).

Every call sends one request with a fresh id and returns a :class:`Reply`, an iterator of
typed responses to *that* request: :class:`Ack`, any number of :class:`Progress`, then exactly
one final :class:`Result` (success or failure, with a message) or :class:`Timeout`. Nothing is
ever ``None``. Replies are matched by request id: a reply to an earlier request that already
timed out is dropped and counted (``late_replies``), never taken for the answer to another.

    op = Operator("tcp://127.0.0.1:5550")
    for response in op.prepare_run(comment="cosmics"):
        print(response)
    final = op.call("begin_run")          # blocking: just the final response
    op.wait(op.end_run()).success

Events the core sends on its own (a component lost, a state change) are collected in
:attr:`Operator.events` while replies are awaited.
"""

from __future__ import annotations

import collections
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from larpixdaq.runcontrol import messages as m
from larpixdaq.runcontrol.addresses import default_core_address
from larpixdaq.runcontrol.security import ClientKeys, client_keys


@dataclass(frozen=True)
class Ack:
    """The core received the request."""

    request_id: str
    final: bool = field(default=False, init=False)


@dataclass(frozen=True)
class Progress:
    """An intermediate step (a transition group done, a routine's progress)."""

    request_id: str
    data: dict[str, Any]
    final: bool = field(default=False, init=False)


@dataclass(frozen=True)
class Result:
    """The final answer: success or failure, a message for people, data for programs."""

    request_id: str
    success: bool
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    final: bool = field(default=True, init=False)


@dataclass(frozen=True)
class Timeout:
    """No final answer arrived in time; the request may still complete at the core."""

    request_id: str
    message: str
    after_s: float
    success: bool = field(default=False, init=False)
    final: bool = field(default=True, init=False)
    data: dict[str, Any] = field(default_factory=dict, init=False)


Response = Ack | Progress | Result | Timeout


class Reply:
    """The responses to one request, as an iterator; ends after the final one."""

    def __init__(self, operator: Operator, request_id: str, timeout: float) -> None:
        self.operator = operator
        self.id = request_id
        self.timeout = timeout
        self.final: Result | Timeout | None = None
        self._deadline = time.monotonic() + timeout

    def __iter__(self) -> Iterator[Response]:
        return self

    def __next__(self) -> Response:
        if self.final is not None:
            raise StopIteration
        response = self.operator._next_for(self.id, self._deadline)
        if response is None:
            response = Timeout(self.id, f"no answer from the core at {self.operator.address} "
                                        f"within {self.timeout:g} s", self.timeout)
            self.operator._abandon(self.id)
        if response.final:
            self.final = response
        return response

    def wait(self) -> Result | Timeout:
        for _ in self:
            pass
        return self.final


class Operator:
    """A connection to the core; use from one thread."""

    def __init__(self, address: str | None = None, *, timeout: float = 10.0,
                 keys: str | Path | ClientKeys | None = None,
                 context: zmq.Context | None = None) -> None:
        self.address = address or default_core_address()
        self.timeout = timeout
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        client = client_keys(keys)  # default: $LARPIX_DAQ_KEYS, if set
        if client is not None:
            client.apply(self._sock)
        self._sock.connect(self.address)
        self._pending: dict[str, collections.deque[Response]] = {}
        self.events: collections.deque[m.Event] = collections.deque(maxlen=1000)
        self.late_replies = 0
        self.malformed_replies = 0
        #: Events pushed out of ``events`` (full: nobody polled) before anyone saw them.
        self.events_dropped = 0

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> Operator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------

    def request(self, command: str, params: dict[str, Any] | None = None, *,
                timeout: float | None = None) -> Reply:
        """Send ``command`` to the core; the returned :class:`Reply` yields its responses."""
        timeout = self.timeout if timeout is None else timeout
        request_id = uuid.uuid4().hex
        self._pending[request_id] = collections.deque()
        msg = m.Command(id=request_id, command=command, params=params or {}, timeout=timeout)
        # Not even queued (no route to the core): the reply will time out and say so.
        with contextlib.suppress(zmq.Again):
            self._sock.send(m.encode(msg), zmq.NOBLOCK)
        return Reply(self, request_id, timeout)

    def _abandon(self, request_id: str) -> None:
        self._pending.pop(request_id, None)

    def _next_for(self, request_id: str, deadline: float) -> Response | None:
        queue = self._pending.get(request_id)
        if queue is None:
            return None
        while not queue:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self._sock.poll(remaining * 1000):
                self._receive()
        response = queue.popleft()
        if response.final:
            self._pending.pop(request_id, None)
        return response

    def _receive(self) -> None:
        while True:
            try:
                payload = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = m.decode(payload)
            except m.MessageError:
                self.malformed_replies += 1
                continue
            if isinstance(msg, m.Event):
                if len(self.events) == self.events.maxlen:
                    self.events_dropped += 1  # the oldest goes
                self.events.append(msg)
                continue
            rid = getattr(msg, "id", None)
            queue = self._pending.get(rid) if rid is not None else None
            if queue is None:
                self.late_replies += 1
                continue
            if isinstance(msg, m.Ack):
                queue.append(Ack(rid))
            elif isinstance(msg, m.Progress):
                queue.append(Progress(rid, msg.data))
            elif isinstance(msg, m.Result):
                queue.append(Result(rid, msg.success, msg.message, msg.data))
            else:
                self.malformed_replies += 1

    def wait(self, reply: Reply) -> Result | Timeout:
        """Block until ``reply`` ends and return its final response."""
        return reply.wait()

    def call(self, command: str, params: dict[str, Any] | None = None, *,
             timeout: float | None = None) -> Result | Timeout:
        """Send ``command`` and return only the final response."""
        return self.request(command, params, timeout=timeout).wait()

    def poll_events(self, timeout: float = 0.0) -> list[m.Event]:
        """Read whatever has arrived (waiting up to ``timeout``) and return the events so far."""
        if self._sock.poll(timeout * 1000):
            self._receive()
        events = list(self.events)
        self.events.clear()
        return events

    # --- the API ------------------------------------------------------------------------

    def prepare_run(self, comment: str = "", run_type: str = "physics", *,
                    data_dir: str | None = None, config_hash: str | None = None,
                    config_snapshot: str | None = None, timeout: float | None = None) -> Reply:
        params: dict[str, Any] = {"comment": comment, "run_type": run_type}
        for key, value in (("data_dir", data_dir), ("config_hash", config_hash),
                           ("config_snapshot", config_snapshot)):
            if value is not None:
                params[key] = value
        return self.request("prepare_run", params, timeout=timeout)

    def begin_run(self, *, timeout: float | None = None) -> Reply:
        return self.request("begin_run", timeout=timeout)

    def end_run(self, *, reason: str | None = None, timeout: float | None = None) -> Reply:
        """End the run; ``reason`` (why, e.g. "interrupted by the operator") is kept with it
        in the run database."""
        return self.request("end_run", {"reason": reason} if reason else None,
                            timeout=timeout)

    def reset(self, *, timeout: float | None = None) -> Reply:
        """Leave ERROR for STOP; any open run is closed as failed."""
        return self.request("reset", timeout=timeout)

    def prepare_physics_run(self, comment: str = "", **kw: Any) -> Reply:
        return self.prepare_run(comment, "physics", **kw)

    def begin_physics_run(self, **kw: Any) -> Reply:
        return self.begin_run(**kw)

    def end_physics_run(self, **kw: Any) -> Reply:
        return self.end_run(**kw)

    def status(self, *, timeout: float | None = None) -> Reply:
        return self.request("status", timeout=timeout)

    def clients(self, *, timeout: float | None = None) -> Reply:
        return self.request("clients", timeout=timeout)

    def actions(self, *, timeout: float | None = None) -> Reply:
        return self.request("actions", timeout=timeout)

    def runs(self, limit: int | None = None, *, timeout: float | None = None) -> Reply:
        return self.request("runs", {"limit": limit} if limit else {}, timeout=timeout)

    def invoke(self, component: str, action: str, *, timeout: float | None = None,
               **params: Any) -> Reply:
        """Run ``action`` on ``component`` with ``params``; progress arrives as it happens."""
        return self.request("invoke", {"component": component, "action": action,
                                       "params": params}, timeout=timeout)

    # --- boards: configuration and routines (actions of the producers) ------------------

    def _local_reply(self, success: bool, message: str, data: dict[str, Any] | None = None,
                     *, final: Result | Timeout | None = None) -> Reply:
        """A reply answered here without asking the core again (e.g. no such board)."""
        request_id = uuid.uuid4().hex
        if final is None:
            final = Result(request_id, success, message, data or {})
        elif isinstance(final, Timeout):
            final = Timeout(request_id, final.message, final.after_s)
        else:
            final = Result(request_id, final.success, final.message, final.data)
        self._pending[request_id] = collections.deque([final])
        return Reply(self, request_id, self.timeout)

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

    def load_routines(self, directory: str | Path, *, board: str | None = None,
                      timeout: float | None = None) -> Reply:
        return self.board_action("load_routines", board, timeout=timeout,
                                 directory=str(directory))

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
