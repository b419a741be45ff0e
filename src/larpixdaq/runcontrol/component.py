"""The base every DAQ component is built on: registration, heartbeats, run state, actions.

A component is a process (or a thread in tests) that registers with the core, heartbeats,
follows the run state through hooks, answers actions the operator invokes, and reports
counters. Subclasses write only the hooks and their actions::

    class Storage(Component):
        role = "storage"

        def on_prepare(self, run):          # open the file for run.run_number
            ...
        def on_end(self, run):              # close it; say what was written
            return {"files": [self.path]}
        def counters(self):
            return {"packets_written": self.n_written, "packets_lost": self.n_lost}

        @action
        def flush(self, force: bool = False):
            "Flush buffered rows to disk now."
            ...

    Storage("storage-0", core=DEFAULT_CORE).run_forever()

Threads, and why there are three:

* the *control* thread owns the one socket to the core: registration, heartbeats both ways,
  reconnection (a core that is silent for ``core_timeout`` is presumed restarted: the
  component opens a new socket and registers again, keeping its state and run, so a run in
  progress carries on);
* the *transition* worker runs ``on_prepare``/``on_begin``/``on_end``/``on_reset`` one at a
  time, so a slow hook never stops heartbeats;
* the *action* worker runs invoked actions, so a long action (a scan, a calibration) stalls
  neither heartbeats nor transitions nor the component's own data path, which the subclass
  runs in threads of its own (started in a hook, or in :meth:`Component.main`).

Actions run one at a time, in order, so a second long action waits for the first. That would
make "stop what you are doing" useless, so an action can be declared *immediate*
(``@action(immediate=True)``): it runs at once in a lane of its own, never queued behind a
long action. Immediate actions must be short and thread-safe (set a flag, read a status):
they run concurrently with whatever the action worker is doing.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import zmq

from larpixdaq.errors import LarpixDaqError
from larpixdaq.runcontrol import logforward
from larpixdaq.runcontrol import messages as m
from larpixdaq.runcontrol.actions import ActionSpec, marked_actions, plain, spec_of
from larpixdaq.runcontrol.addresses import DEFAULT_CORE
from larpixdaq.runcontrol.messages import RunInfo
from larpixdaq.runcontrol.security import ClientKeys, client_keys
from larpixdaq.runcontrol.statemachine import COMPONENT_STATE_AFTER, State, component_hooks

log = logging.getLogger("larpixdaq.component")


class ComponentError(RuntimeError):
    """The component cannot go on (its name is taken, the core refused it)."""


class Component:
    """Base class of every component; see the module docstring for an example.

    Parameters: ``name`` (unique in the DAQ), ``core`` (the core's address), ``role``
    (overrides the class attribute: ``producer``, ``aggregator``, ``storage``, ``monitor``,
    ``log`` or anything else), ``heartbeat_interval`` (seconds between heartbeats until the
    core says otherwise), ``core_timeout`` (silence after which the core is presumed gone and
    the component re-registers), ``endpoints`` (addresses this component serves, advertised to
    the others through the core, e.g. ``{"logs": "tcp://host:5551"}``), ``forward_logs``
    (send this process's ``larpixdaq`` log records to the log collector the core advertises),
    ``keys`` (a CURVE key directory, see :mod:`larpixdaq.runcontrol.security`; default
    ``$LARPIX_DAQ_KEYS``, none if unset).
    """

    role: ClassVar[str] = "component"
    #: The board a producer reads (said at registration, so the core admits its frames).
    io_group: int | None = None

    def __init__(
        self,
        name: str,
        core: str = DEFAULT_CORE,
        *,
        role: str | None = None,
        heartbeat_interval: float = 0.2,
        core_timeout: float = 1.0,
        endpoints: dict[str, str] | None = None,
        forward_logs: bool = True,
        keys: str | Path | ClientKeys | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.name = name
        self._keys = client_keys(keys)
        self.core_address = core
        if role is not None:
            self.role = role  # type: ignore[misc]
        self.heartbeat_interval = heartbeat_interval
        self.core_timeout = core_timeout
        self.endpoints = dict(endpoints or {})
        self.forward_logs = forward_logs
        self._log_address: str | None = None
        #: Log through this: with a log collector running, records reach it (and its file).
        self.log = logging.getLogger(f"larpixdaq.component.{name}")
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._ctx = context or zmq.Context.instance()
        #: This component's own state (STOP, READY or RUN): what the core's table expects.
        self.state: State = State.STOP
        self.run: RunInfo | None = None
        self.core_state = "UNKNOWN"
        self.services: dict[str, Any] = {}
        self.registrations = 0
        self.control_counters = {"malformed_messages": 0, "actions_run": 0,
                                 "actions_failed": 0, "reconnects": 0, "control_messages_unsent": 0,
                                 "counters_failed": 0}
        self.error: str | None = None
        self._actions: dict[str, ActionSpec] = marked_actions(self)
        self._outbox: queue.SimpleQueue[m.Message] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a full pipe already means "wake up"
        self._wake_lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._registered = threading.Event()
        self._threads: list[threading.Thread] = []
        self._transitions = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-transition")
        self._action_pool = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-action")
        self._immediate_pool = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-immediate")
        self._count_lock = threading.Lock()  # two lanes count actions
        self._state_lock = threading.Lock()
        self._seen_error = False

    # --- for subclasses -----------------------------------------------------------------

    def counters(self) -> dict[str, int | float]:
        """This component's counters now (override). Sent in heartbeats and the end ack."""
        return {}

    def on_prepare(self, run: RunInfo) -> dict | None:
        """Get ready for ``run`` (open files, reset counters). Raise to refuse."""
        return None

    def on_begin(self, run: RunInfo) -> dict | None:
        """Data taking starts (producers start reading the board)."""
        return None

    def on_end(self, run: RunInfo) -> dict | None:
        """The run ends: stop and flush. Return ``{"files": [...], "counters": {...}}``;
        counters default to :meth:`counters` after this hook."""
        return None

    def on_reset(self, run: RunInfo | None) -> dict | None:
        """Leave any run after an error; by default the same as :meth:`on_end` if in a run."""
        if run is not None and self.state != State.STOP:
            return self.on_end(run)
        return None

    def on_error(self, reason: str) -> None:
        """The core entered ERROR (a component was lost, a transition failed)."""

    def main(self, stop: threading.Event) -> None:
        """Optional long-running body (e.g. a data loop) run in its own thread until ``stop``."""

    def notice(self, message: str, **data: Any) -> None:
        """Tell the core something the run's data must be read with that does not stop the
        run (a hole in a board's data): operators get an ``incident`` event and the run an
        incident, recorded as resolved. Safe from any thread."""
        self.log.warning("incident: %s", message)
        self._post(m.Notice(name=self.name, message=message, data=plain(data)))

    def alarm(self, message: str, **data: Any) -> None:
        """Tell the core at once that the run cannot carry on as it is (from any thread):
        operators get an ``alarm`` event, the run an incident, and an open run fails."""
        self.log.error("alarm: %s", message)
        self._post(m.Alarm(name=self.name, message=message, data=plain(data)))

    # --- actions --------------------------------------------------------------------------

    @property
    def actions(self) -> dict[str, ActionSpec]:
        return dict(self._actions)

    def register_action(self, name: str, func: Callable[..., Any], doc: str | None = None,
                        *, immediate: bool = False) -> None:
        """Offer ``func`` as action ``name`` (call before :meth:`start`); ``immediate`` as
        for :func:`action`."""
        self._actions[name] = spec_of(name, func, doc, immediate)

    def register_actions_of(self, obj: object) -> None:
        """Offer every method of ``obj`` marked with :func:`action` (call before
        :meth:`start`): how a component offers the actions of a part it is composed of."""
        self._actions.update(marked_actions(obj))

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> Component:
        """Start the control thread (and :meth:`main` in its own); returns at once."""
        t = threading.Thread(target=self._control_loop, name=f"{self.name}-control",
                             daemon=True)
        t.start()
        self._threads.append(t)
        if type(self).main is not Component.main:
            d = threading.Thread(target=self.main, args=(self._stop,), name=f"{self.name}-main",
                                 daemon=True)
            d.start()
            self._threads.append(d)
        return self

    def wait_service(self, key: str, timeout: float = 5.0) -> str | None:
        """The address another component advertised as ``key`` (in its ``endpoints``), once
        the core has told us about it; ``None`` after ``timeout``. This is how components find
        each other (e.g. storage finds ``"aggregator.out"``) without hard-wired addresses."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.services.get(key)
            if value is not None or time.monotonic() >= deadline:
                return value
            time.sleep(0.01)

    def wait_registered(self, timeout: float = 5.0) -> bool:
        """Block until the core has welcomed this component (True) or ``timeout`` passes."""
        return self._registered.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Say goodbye to the core, stop every thread, close the socket."""
        self._stop.set()
        self._wake()
        for t in self._threads:
            t.join(timeout)
        self._transitions.shutdown(wait=True, cancel_futures=True)
        if self._log_address is not None:
            logforward.uninstall_forwarding(self._log_address)
            self._log_address = None
        self._action_pool.shutdown(wait=False, cancel_futures=True)
        self._immediate_pool.shutdown(wait=False, cancel_futures=True)
        with self._wake_lock:  # an action still running must not write to a reused fd
            if not self._closed:
                self._closed = True
                for fd in (self._wake_r, self._wake_w):
                    with contextlib.suppress(OSError):
                        os.close(fd)

    def run_forever(self) -> None:
        """Run until SIGINT/SIGTERM (in the main thread) or :meth:`stop` from another thread."""
        import signal

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self._stop.set())
        self.start()
        while not self._stop.wait(0.2):
            pass
        self.stop()
        if self.error:
            raise ComponentError(self.error)

    # --- the control thread -----------------------------------------------------------------

    def _wake(self) -> None:
        with self._wake_lock, contextlib.suppress(OSError):
            if not self._closed:
                os.write(self._wake_w, b"x")

    def _post(self, msg: m.Message) -> None:
        """Queue a message for the core from any thread."""
        self._outbox.put(msg)
        self._wake()

    def _register_msg(self) -> m.Register:
        with self._state_lock:
            state, run_number = self.state, self.run.run_number if self.run else None
        return m.Register(
            name=self.name, role=self.role, host=self.host, pid=self.pid,
            actions={n: s.describe() for n, s in self._actions.items()},
            counters=sorted(self._safe_counters()), state=str(state), run_number=run_number,
            endpoints=self.endpoints, io_group=self.io_group,
        )

    def _safe_counters(self) -> dict[str, Any]:
        """The subclass's counters with the base's own (rejected messages, failed actions):
        what every component rejects reaches heartbeats and the run record."""
        try:
            own = plain(dict(self.counters()))
        except Exception:  # a broken counters() must not stop heartbeats
            self.control_counters["counters_failed"] += 1
            log.exception("%s: counters() failed", self.name)
            own = {}
        # The component's own first (what a display shows before it cuts the list short),
        # then the base's; an own counter of the same name wins.
        return {**own, **{k: v for k, v in self._control_counts().items() if k not in own}}

    def _control_counts(self) -> dict[str, int]:
        with self._count_lock:
            out = dict(self.control_counters)
        handler = getattr(self, "_log_handler", None)
        if handler is not None:  # records the collector never got (per process)
            out["log_records_dropped"] = handler.dropped
        return out

    def _connect(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self._keys is not None:
            self._keys.apply(sock)
        sock.connect(self.core_address)
        sock.send(m.encode(self._register_msg()))
        return sock

    def _control_loop(self) -> None:
        sock = self._connect()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        last_heard = time.monotonic()
        next_beat = time.monotonic() + self.heartbeat_interval
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                timeout = max(0.0, min(next_beat - now, 0.1))
                events = dict(poller.poll(timeout * 1000))
                if self._wake_r in events:
                    os.read(self._wake_r, 4096)
                if sock in events:
                    while True:
                        try:
                            payload = sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        last_heard = time.monotonic()
                        self._on_payload(sock, payload)
                while True:
                    try:
                        msg = self._outbox.get_nowait()
                    except queue.Empty:
                        break
                    self._send(sock, msg)
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.heartbeat_interval
                    with self._state_lock:
                        hb = m.Heartbeat(name=self.name, state=str(self.state),
                                         run_number=self.run.run_number if self.run else None,
                                         counters=self._safe_counters())
                    self._send(sock, hb)
                if now - last_heard > self.core_timeout:
                    # The core is gone or restarted: a fresh socket and a fresh registration.
                    if self._registered.is_set():
                        self.log.warning("no word from the core for %.1f s; reconnecting "
                                         "(state %s carries on)", now - last_heard, self.state)
                    self._registered.clear()
                    self.control_counters["reconnects"] += 1
                    poller.unregister(sock)
                    sock.close(0)
                    sock = self._connect()
                    poller.register(sock, zmq.POLLIN)
                    last_heard = now
            if self._registered.is_set():
                self._send(sock, m.Bye(name=self.name))
                time.sleep(0.01)
        finally:
            sock.close(0)

    def _send(self, sock: zmq.Socket, msg: m.Message) -> None:
        try:
            sock.send(m.encode(msg), zmq.NOBLOCK)
        except zmq.Again:  # the core is not connected; heartbeats resume when it is
            self.control_counters["control_messages_unsent"] += 1
        except m.MessageError as exc:
            log.error("%s: cannot send %s: %s", self.name, msg.TYPE, exc)
            if isinstance(msg, (m.Result, m.Ack)):
                self._send(sock, type(msg)(msg.id, False, f"reply not encodable: {exc}"))

    def _on_payload(self, sock: zmq.Socket, payload: bytes) -> None:
        try:
            msg = m.decode(payload)
        except m.MessageError as exc:
            self.control_counters["malformed_messages"] += 1
            log.warning("%s: ignored a malformed message from the core: %s", self.name, exc)
            return
        if isinstance(msg, m.Welcome):
            self.registrations += 1
            self._apply_services(msg.services)
            self.core_state = msg.state
            self.heartbeat_interval = msg.heartbeat_interval
            # Never give up on a core between two of its own heartbeats.
            self.core_timeout = max(self.core_timeout, 2.5 * msg.heartbeat_interval)
            self._registered.set()
        elif isinstance(msg, m.Heartbeat):
            self.core_state = msg.state
            if msg.services != self.services:
                self._apply_services(msg.services)
            if msg.state == State.ERROR and not self._seen_error:
                self._seen_error = True
                self._transitions.submit(self._call_on_error, "the core entered ERROR")
            elif msg.state != State.ERROR:
                self._seen_error = False
        elif isinstance(msg, m.Reject):
            if msg.code == "not-registered":
                self._registered.clear()
                self._send(sock, self._register_msg())
            else:
                self.error = f"the core refused {self.name}: {msg.message}"
                log.error("%s", self.error)
                self._stop.set()
        elif isinstance(msg, m.Transition):
            self._transitions.submit(self._do_transition, msg)
        elif isinstance(msg, m.Invoke):
            self._on_invoke(msg)
        else:
            self.control_counters["malformed_messages"] += 1

    def _apply_services(self, services: dict[str, Any]) -> None:
        self.services = services
        address = services.get("logs")
        if not self.forward_logs or address == self._log_address:
            return
        if self._log_address is not None:
            logforward.uninstall_forwarding(self._log_address)
            self._log_address = None
        if isinstance(address, str):
            self._log_handler = logforward.install_forwarding(address, self.name,
                                                              keys=self._keys)
            self._log_address = address

    def _call_on_error(self, reason: str) -> None:
        try:
            self.on_error(reason)
        except Exception:
            log.exception("%s: on_error failed", self.name)

    # --- transitions ------------------------------------------------------------------------

    def _do_transition(self, msg: m.Transition) -> None:
        try:
            run = RunInfo.from_dict(msg.run) if msg.run else self.run
            data = self._apply(msg.transition, run)
        except Exception as exc:
            self.log.exception("%s failed", msg.transition)
            self._post(m.Ack(id=msg.id, ok=False, message=f"{type(exc).__name__}: {exc}"))
            return
        self.log.info("%s done (run %s)", msg.transition, msg.run and msg.run.get("run_number"))
        self._post(m.Ack(id=msg.id, ok=True, data=plain(data)))

    def _apply(self, transition: str, run: RunInfo | None) -> dict[str, Any]:
        """Run the hooks :data:`~larpixdaq.runcontrol.statemachine.COMPONENT_HOOKS` names for
        ``transition`` in the current state; each hook that returns moves the state on."""
        hooks = component_hooks(self.state, transition)
        if transition == "prepare" and run is None:
            raise ValueError("prepare needs run info")
        if not hooks:  # already there: an end or reset still reports the counters
            if transition in ("end", "reset"):
                return {"counters": self._safe_counters(), "files": []}
            return {}
        out: dict[str, Any] = {}
        for hook in hooks:
            if hook == "prepare":
                out = dict(self.on_prepare(run) or {})
                with self._state_lock:
                    self.state, self.run = COMPONENT_STATE_AFTER[hook], run
            elif hook == "begin":
                out = dict(self.on_begin(run or self.run) or {})
                with self._state_lock:
                    self.state = COMPONENT_STATE_AFTER[hook]
            elif transition == "prepare":  # the run this component was in ends first
                if self.run is not None:
                    self._finish(self.run, hook)
            else:
                out = self._finish(run or self.run, hook)
        return out

    def _finish(self, run: RunInfo | None, hook: str) -> dict[str, Any]:
        out = (self.on_reset(run) if hook == "reset" else self.on_end(run)) or {}
        out = dict(out)
        counters = {**self._control_counts(),
                    **(out.pop("counters", None) or self._safe_counters())}
        files = [str(f) for f in out.pop("files", None) or []]
        with self._state_lock:
            self.state, self.run = COMPONENT_STATE_AFTER[hook], None
        return {"counters": counters, "files": files, **out}

    # --- actions ----------------------------------------------------------------------------

    def _on_invoke(self, msg: m.Invoke) -> None:
        spec = self._actions.get(msg.action)
        if spec is None:
            self._post(m.Result(id=msg.id, success=False,
                                message=f"{self.name} has no action {msg.action!r}; it offers: "
                                        f"{', '.join(sorted(self._actions)) or 'none'}"))
            return
        try:
            inspect.signature(spec.func).bind(**msg.params)
        except TypeError as exc:
            accepted = ", ".join(p.name for p in spec.params) or "none"
            self._post(m.Result(id=msg.id, success=False,
                                message=f"bad parameters for {msg.action}: {exc}; accepted: "
                                        f"{accepted}"))
            return
        self._post(m.Ack(id=msg.id))
        pool = self._immediate_pool if spec.immediate else self._action_pool
        pool.submit(self._run_action, spec, msg)

    def _run_action(self, spec: ActionSpec, msg: m.Invoke) -> None:
        try:
            value = spec.func(**msg.params)
            if inspect.isgenerator(value):
                gen = value
                while True:
                    try:
                        step = next(gen)
                    except StopIteration as done:
                        value = done.value
                        break
                    self._post(m.Progress(id=msg.id, data=plain(
                        step if isinstance(step, dict) else {"value": step})))
        except Exception as exc:
            with self._count_lock:
                self.control_counters["actions_failed"] += 1
            if isinstance(exc, LarpixDaqError):
                # Refused with a reason (a missing directory, an unknown chip): the reason is
                # the whole story, for the operator and for this console alike.
                self.log.warning("action %s failed: %s", spec.name, exc)
            else:  # a bug: where it happened matters
                self.log.exception("action %s failed", spec.name)
            self._post(m.Result(id=msg.id, success=False,
                                message=f"{spec.name} failed: {type(exc).__name__}: {exc}"))
            return
        with self._count_lock:
            self.control_counters["actions_run"] += 1
        self._post(m.Result(id=msg.id, success=True, message=f"{spec.name} done",
                            data={"result": plain(value)}))

