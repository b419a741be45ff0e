"""The Operator: the Python face of run control (the command line and web UI use it too).

Every call sends one request with a fresh id and returns a :class:`Reply`, an iterator of
typed responses to *that* request: :class:`Ack`, any number of :class:`Progress`, then exactly
one final :class:`Result` (success or failure, with a message) or :class:`Timeout`. Nothing is
ever ``None``. Replies are matched by request id: a reply to an earlier request that already
timed out is dropped and counted (``late_replies``), never taken for the answer to another.

    op = Operator()                       # $LARPIX_DAQ_CORE, else the default address
    for response in op.prepare_run(comment="cosmics"):
        print(response)
    final = op.call("begin_run")          # blocking: just the final response
    op.wait(op.end_run()).success

Events the core sends on its own (a component lost, a state change) are collected in
:attr:`Operator.events` while replies are awaited.

The response types live in :mod:`larpixdaq.runcontrol.replies` (re-exported here), the board
conveniences in :mod:`larpixdaq.runcontrol.operator_boards`. This module talks to the core only
through the wire messages; it imports nothing of the core itself.
"""

from __future__ import annotations

import collections
import contextlib
import os
import secrets
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import zmq

from larpixdaq.runcontrol import messages as m
from larpixdaq.runcontrol.addresses import default_core_address
from larpixdaq.runcontrol.credentials import Credential, find_credential
from larpixdaq.runcontrol.operator_boards import BoardCommands
from larpixdaq.runcontrol.replies import Ack, Progress, Reply, Response, Result, Timeout
from larpixdaq.runcontrol.security import ClientKeys, client_keys


class Operator(BoardCommands):
    """A connection to the core; use from one thread. The board methods (configuration,
    routines) come from :class:`~larpixdaq.runcontrol.operator_boards.BoardCommands`."""

    def __init__(self, address: str | None = None, *, timeout: float = 10.0,
                 keys: str | Path | ClientKeys | None = None,
                 credential: Credential | None | bool = None,
                 kind: str = "op",
                 context: zmq.Context | None = None) -> None:
        """``credential``: who to act as. None (the default) finds one as
        :func:`.credentials.find_credential` says ($LARPIX_DAQ_USER/$LARPIX_DAQ_TOKEN, then
        the local token file of this core); False: anonymous."""
        self.address = address or default_core_address()
        self.timeout = timeout
        if credential is None:
            credential = find_credential(self.address)
        self.credential: Credential | None = credential or None
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        #: How the core's audit trail names this connection: kind, host, pid, a random part.
        self.client_id = (f"{kind}@{socket.gethostname()}:{os.getpid()}-"
                          f"{secrets.token_hex(4)}")[:64]
        self._sock.setsockopt(zmq.ROUTING_ID, self.client_id.encode())
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
                timeout: float | None = None,
                credential: Credential | bool | None = None) -> Reply:
        """Send ``command`` to the core; the returned :class:`Reply` yields its responses.

        ``credential``: act as this user for this request (the web server, for the logged-in
        user), False: anonymously; None: as this operator's own credential."""
        timeout = self.timeout if timeout is None else timeout
        request_id = uuid.uuid4().hex
        self._pending[request_id] = collections.deque()
        cred = self.credential if credential is None else (credential or None)
        msg = m.Command(id=request_id, command=command, params=params or {}, timeout=timeout,
                        user=cred.user if cred else None, token=cred.token if cred else None)
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
             timeout: float | None = None,
             credential: Credential | bool | None = None) -> Result | Timeout:
        """Send ``command`` and return only the final response."""
        return self.request(command, params, timeout=timeout, credential=credential).wait()

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


__all__ = ["Ack", "Operator", "Progress", "Reply", "Response", "Result", "Timeout"]
