"""Actions: what a component offers operators, described once for the wire.

A component's actions are methods marked with :func:`action` (or callables given to
``Component.register_action``). This module turns them into :class:`ActionSpec` values whose
:meth:`ActionSpec.describe` is what the core shows operators, and holds :func:`plain`, the one
conversion of results, progress and counters into values msgpack takes. It is apart from the
component base so that code that only returns wire values (routines, for one) needs neither
sockets nor threads to do it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Param:
    """One parameter of an action, as shown to operators."""

    name: str
    required: bool
    default: Any = None
    annotation: str = ""


@dataclass(frozen=True)
class ActionSpec:
    """A registered action: its callable, parameters and documentation."""

    name: str
    func: Callable[..., Any]
    params: tuple[Param, ...]
    doc: str
    immediate: bool = False

    def describe(self) -> dict[str, Any]:
        """The wire form sent to the core at registration."""
        return {
            "doc": self.doc,
            **({"immediate": True} if self.immediate else {}),
            "params": [
                {"name": p.name, "required": p.required, "annotation": p.annotation,
                 **({"default": p.default} if not p.required and _wire_safe(p.default) else {})}
                for p in self.params
            ],
        }


def plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, paths and tuples turned into wire-safe values.

    Counters and results often come from numpy (``np.int64`` counts); msgpack takes only plain
    Python values, so they are converted here rather than failing a transition.
    """
    if value is None or isinstance(value, (str, bytes, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "dtype") and hasattr(value, "tolist"):
        return plain(value.tolist())
    return value


def _wire_safe(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def action(func: Callable | None = None, *, name: str | None = None,
           immediate: bool = False) -> Any:
    """Mark a method of a :class:`Component` subclass as an action operators can invoke.

    The action's name is the method name unless ``name`` is given; its parameters and
    docstring are shown to operators. It may return a value (sent as ``data["result"]``) or
    be a generator: each yielded dict is sent to the operator as progress and the generator's
    ``return`` value is the result.

    ``immediate=True``: run at once in the immediate lane instead of queueing behind the
    action worker (see the module doc); only for short, thread-safe actions (stop, abort,
    status). Advertised as ``"immediate": true`` in the action's description.
    """

    def mark(f: Callable) -> Callable:
        f._larpix_action = name or f.__name__  # type: ignore[attr-defined]
        f._larpix_immediate = immediate  # type: ignore[attr-defined]
        return f

    return mark(func) if func is not None else mark


def spec_of(name: str, func: Callable[..., Any], doc: str | None = None,
            immediate: bool = False) -> ActionSpec:
    """The spec of ``func`` offered as action ``name``: parameters from its signature, the
    documentation from ``doc`` or its docstring."""
    params = []
    for p in inspect.signature(func).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        required = p.default is inspect.Parameter.empty
        ann = p.annotation if isinstance(p.annotation, str) else getattr(
            p.annotation, "__name__", "" if p.annotation is inspect.Parameter.empty else
            str(p.annotation))
        params.append(Param(p.name, required, None if required else p.default, ann))
    text = doc if doc is not None else inspect.getdoc(func) or ""
    return ActionSpec(name, func, tuple(params), text.strip(), immediate)




def marked_actions(obj: object) -> dict[str, ActionSpec]:
    """Every method of ``obj``'s class marked with :func:`action`, bound to ``obj``, by the
    action's name."""
    found: dict[str, ActionSpec] = {}
    for attr in dir(type(obj)):
        fn = getattr(type(obj), attr, None)
        tag = getattr(fn, "_larpix_action", None)
        if tag:
            found[tag] = spec_of(tag, getattr(obj, attr),
                                 immediate=getattr(fn, "_larpix_immediate", False))
    return found
