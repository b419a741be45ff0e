"""Routines: what they are, where they come from, and how one runs to a typed outcome.

A routine is a plain function ``def routine(ctx, **params)``. It may be a generator whose
yielded dicts are progress (the DAQ relays them to the operator as they happen); its
return value is the result and must be JSON-serialisable. Whatever happens inside it - an
exception, bad parameters, an unserialisable result, a stop request - ends as one
:class:`RoutineResult` with a status (``success``, ``failed``, ``aborted``), a message and
the result, never as an exception that could take the producer down.

Plug-ins are Python files in a directory: ``NAME.py`` defining ``routine(ctx, ...)`` (the
name is the file's stem, or the module's ``NAME`` string). Files whose name starts with
``_`` are skipped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import sys
import time
import traceback
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from larpixdaq.errors import LarpixDaqError
from larpixdaq.routines import builtin
from larpixdaq.routines.context import RoutineAborted
from larpixdaq.routines.params import check_params, describe_params
from larpixdaq.runcontrol.actions import plain

SUCCESS, FAILED, ABORTED = "success", "failed", "aborted"


class RoutineError(LarpixDaqError):
    """A routine could not be found, loaded or started."""


@dataclass(frozen=True)
class RoutineSpec:
    """A routine known to a registry."""

    name: str
    func: Callable[..., Any]
    doc: str
    origin: str

    def params(self) -> list[dict[str, Any]]:
        """The routine's own parameters (after ``ctx``), as shown to operators: name,
        required, default and what each accepts (type, range, choices)."""
        return describe_params(self.func, _json_ok)

    def check(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters as the routine gets them; RoutineError with every reason when
        they make no sense. The one check every way of running a routine goes through."""
        try:
            return check_params(self.func, params)
        except ValueError as exc:
            raise RoutineError(f"bad parameters for routine {self.name}: {exc}") from None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "doc": self.doc, "params": self.params(),
                "origin": self.origin}


@dataclass
class RoutineResult:
    """How a routine ended: ``status`` success / failed / aborted, a message, the result."""

    name: str
    status: str
    message: str
    result: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    traceback: str = ""
    progress: list[dict[str, Any]] = field(default_factory=list)
    """Progress steps seen (kept by :func:`run_to_end`, e.g. for offline tests)."""

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message,
                "result": self.result, "params": self.params,
                "seconds": round(self.seconds, 6), "traceback": self.traceback}


@dataclass
class LoadReport:
    """What loading a directory of routine files gave."""

    loaded: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"loaded": self.loaded, "errors": self.errors}


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into plain values; raises if impossible."""
    out = plain(value)
    json.dumps(out, allow_nan=False)
    return out


class RoutineRegistry:
    """Routines by name: the built-ins plus any loaded from files."""

    def __init__(self, builtins: bool = True) -> None:
        self._routines: dict[str, RoutineSpec] = {}
        if builtins:
            for name, fn in builtin.BUILTINS.items():
                self.register(fn, name=name, origin="built-in")

    def register(self, func: Callable[..., Any], name: str | None = None,
                 origin: str = "") -> RoutineSpec:
        """Add (or replace) a routine; the function's first parameter receives the context."""
        if not callable(func):
            raise RoutineError(f"routine {name or func!r} is not a function")
        params = list(inspect.signature(func).parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY,
                                                params[0].POSITIONAL_OR_KEYWORD):
            raise RoutineError(f"routine {name or func.__name__} must take the context as its "
                               "first parameter: def routine(ctx, ...)")
        spec = RoutineSpec(name or func.__name__, func, (inspect.getdoc(func) or "").strip(),
                           origin or getattr(func, "__module__", ""))
        self._routines[spec.name] = spec
        return spec

    def names(self) -> list[str]:
        return sorted(self._routines)

    def get(self, name: str) -> RoutineSpec:
        try:
            return self._routines[name]
        except KeyError:
            raise RoutineError(f"no routine {name!r}; known: {', '.join(self.names())}") from None

    def describe(self) -> list[dict[str, Any]]:
        return [self._routines[n].describe() for n in self.names()]

    def load_file(self, path: str | Path) -> RoutineSpec:
        """Import one routine file; RoutineError says what is wrong with it."""
        p = Path(path)
        if not p.is_file():
            raise RoutineError(f"no routine file {p}")
        tag = hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:10]
        modname = f"larpixdaq_routine_{p.stem}_{tag}"
        spec = importlib.util.spec_from_file_location(modname, p)
        if spec is None or spec.loader is None:
            raise RoutineError(f"{p}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise RoutineError(f"{p.name}: syntax error at line {exc.lineno}: {exc.msg}") from None
        except Exception as exc:
            raise RoutineError(f"{p.name}: importing it failed: {type(exc).__name__}: {exc}"
                               ) from None
        finally:
            sys.modules.pop(modname, None)
        fn = getattr(module, "routine", None)
        if not callable(fn):
            raise RoutineError(f"{p.name}: defines no function `routine(ctx, ...)`")
        name = getattr(module, "NAME", None)
        name = name if isinstance(name, str) and name else p.stem
        return self.register(fn, name=name, origin=str(p))

    def load_directory(self, directory: str | Path) -> LoadReport:
        """Load every ``*.py`` routine file of ``directory``; errors are reported per file."""
        d = Path(directory)
        if not d.is_dir():
            raise RoutineError(f"no routine directory {d}")
        report = LoadReport()
        for f in sorted(d.glob("*.py")):
            if f.name.startswith("_"):
                continue
            try:
                report.loaded.append(self.load_file(f).name)
            except RoutineError as exc:
                report.errors[f.name] = str(exc)
        return report


def _summary(exc: BaseException, limit: int = 4) -> str:
    frames = traceback.extract_tb(exc.__traceback__)[-limit:]
    lines = [f"{Path(f.filename).name}:{f.lineno} in {f.name}: {(f.line or '').strip()}"
             for f in frames]
    return "\n".join([*lines, f"{type(exc).__name__}: {exc}"])


def execute(spec: RoutineSpec, ctx: Any, params: dict[str, Any] | None = None
            ) -> Generator[dict[str, Any], None, RoutineResult]:
    """Run ``spec`` with ``ctx``: yields its progress, returns its :class:`RoutineResult`.

    Never raises for anything the routine does; a stop request (``ctx.stop`` set) ends it as
    ``aborted`` at its next progress step.
    """
    params = dict(params or {})
    t0 = time.monotonic()

    def done(status: str, message: str, result: Any = None, tb: str = "") -> RoutineResult:
        return RoutineResult(spec.name, status, message, result, params,
                             time.monotonic() - t0, tb)

    try:
        checked = spec.check(params)
    except RoutineError as exc:
        return done(FAILED, str(exc))
    stop = getattr(ctx, "stop", None)
    try:
        value = spec.func(ctx, **checked)
        if inspect.isgenerator(value):
            gen = value
            while True:
                if stop is not None and stop.is_set():
                    gen.close()
                    return done(ABORTED, f"routine {spec.name} aborted: stop requested")
                try:
                    step = next(gen)
                except StopIteration as end:
                    value = end.value
                    break
                yield _jsonable(step if isinstance(step, dict) else {"value": step})
    except RoutineAborted as exc:
        return done(ABORTED, f"routine {spec.name} aborted: {exc or 'stop requested'}")
    except Exception as exc:
        return done(FAILED, f"routine {spec.name} failed: {type(exc).__name__}: {exc}",
                    tb=_summary(exc))
    try:
        result = _jsonable(value)
    except (TypeError, ValueError) as exc:
        return done(FAILED, f"routine {spec.name} returned a result that is not "
                            f"JSON-serialisable: {exc}")
    return done(SUCCESS, f"routine {spec.name} done", result)


def run_to_end(gen: Generator[dict[str, Any], None, RoutineResult],
               on_progress: Callable[[dict[str, Any]], None] | None = None) -> RoutineResult:
    """Drive :func:`execute` to its end, keeping the progress steps in the result."""
    steps: list[dict[str, Any]] = []
    while True:
        try:
            step = next(gen)
        except StopIteration as end:
            result: RoutineResult = end.value
            result.progress = steps
            return result
        steps.append(step)
        if on_progress is not None:
            on_progress(step)


def names_of(specs: Iterable[RoutineSpec]) -> list[str]:
    return sorted(s.name for s in specs)
