"""What a routine's parameters accept, declared once and checked in one place.

Operators type parameters by hand (``larpixdaq routine run pedestal seconds=-1``) and a
routine that starts on nonsense either fails half-way or, worse, ends ``success`` with an
empty result. So each parameter has a :class:`Param`: its type, and where it matters its
range or its choices. A routine declares them with :func:`params`::

    @params(seconds=Param(float, above=0), unmask=Param(str, choices=("routed", "all")))
    def routine(ctx, seconds: float = 2.0, unmask: str = "routed"): ...

Parameters not declared get their type from a plain annotation (``int``, ``float``,
``bool``, ``str``, ``list[str]``, each optionally ``| None``); parameters with neither are
taken as they come. :func:`check_params` (used by the registry before any routine runs)
gives the values the routine will get, or raises ``ValueError`` with every reason.
"""

from __future__ import annotations

import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_KINDS: dict[type, str] = {bool: "bool", int: "int", float: "float", str: "str", list: "list"}


@dataclass(frozen=True)
class Param:
    """What one parameter accepts. ``above`` is an exclusive lower bound (``seconds > 0``),
    ``minimum``/``maximum`` inclusive ones; ``item`` is what each element of a list
    accepts; ``optional`` allows None. ``one_or_list`` also takes a single item for a list
    (``chip_keys="1-1-11"``). ``unit`` is what the number counts (``"s"``, ``"Hz"``, ``"DAC"``),
    shown next to the input on the page."""

    kind: type
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    choices: tuple[Any, ...] | None = None
    item: Param | None = None
    optional: bool = False
    one_or_list: bool = False
    unit: str | None = None

    def describe(self) -> dict[str, Any]:
        """The declaration as plain values (for `routine list` and the web page)."""
        out: dict[str, Any] = {"type": _KINDS.get(self.kind, self.kind.__name__)}
        if self.item is not None:
            out["type"] = f"list of {self.item.describe()['type']}"
            out.update({f"item_{k}": v for k, v in self.item.describe().items() if k != "type"})
        for name in ("minimum", "maximum", "above"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.optional:
            out["optional"] = True
        if self.unit:
            out["unit"] = self.unit
        return out

    def text(self) -> str:
        """The declaration in words, for the reason of a refusal."""
        d = self.describe()
        parts = [d["type"]]
        if self.above is not None:
            parts.append(f"> {self.above:g}")
        if self.minimum is not None:
            parts.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"<= {self.maximum:g}")
        if self.choices is not None:
            parts.append("one of " + ", ".join(repr(c) for c in self.choices))
        return " ".join(parts)

    def check(self, name: str, value: Any) -> Any:
        """``value`` as the routine gets it (an int for a float is widened); ValueError
        saying what was expected otherwise."""
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{name} must be {self.text()}, got None")
        if self.kind is list:
            if self.one_or_list and not isinstance(value, list):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{name} must be a list, got {value!r}")
            item = self.item
            return [item.check(f"{name}[{i}]", v) if item else v for i, v in enumerate(value)]
        got = value
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, self.kind) or (self.kind is not bool and isinstance(value,
                                                                                     bool)):
            raise ValueError(f"{name} must be {self.text()}, got {got!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {got!r}")
        if self.above is not None and not value > self.above:
            raise ValueError(f"{name} must be > {self.above:g}, got {got!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{name} must be >= {self.minimum:g}, got {got!r}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{name} must be <= {self.maximum:g}, got {got!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, self.choices))}, "
                             f"got {got!r}")
        return value


#: A selection of chips: one chip key, a list of them, or None for all.
CHIP_KEYS = Param(list, item=Param(str), optional=True, one_or_list=True)

Rule = tuple[Callable[[Mapping[str, Any]], bool], str]


def params(*rules: Rule, **declared: Param) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare what a routine's parameters accept (and, as ``(predicate, reason)`` pairs,
    what they must satisfy together, e.g. ``start <= stop``)."""
    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        names = list(inspect.signature(func).parameters)[1:]
        unknown = sorted(set(declared) - set(names))
        if unknown:
            raise TypeError(f"{func.__name__} has no parameter(s) {', '.join(unknown)}")
        func.routine_params = dict(declared)  # type: ignore[attr-defined]
        func.routine_rules = list(rules)  # type: ignore[attr-defined]
        return func
    return mark


def _from_annotation(hint: Any) -> Param | None:
    """A Param for a plain annotation (int, float, bool, str, list[str], X | None)."""
    optional = False
    args = typing.get_args(hint)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            return None
        hint, optional = rest[0], True
    if hint in (int, float, bool, str):
        return Param(hint, optional=optional)
    if typing.get_origin(hint) is list:
        (inner,) = typing.get_args(hint) or (None,)
        item = Param(inner) if inner in (int, float, bool, str) else None
        return Param(list, item=item, optional=optional)
    return None


def declared_params(func: Callable[..., Any]) -> dict[str, Param | None]:
    """Each parameter after the context: its declared Param, one from its annotation, or
    None (anything goes)."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # an annotation that does not resolve: no types from annotations
        hints = {}
    declared = getattr(func, "routine_params", {})
    out: dict[str, Param | None] = {}
    for i, p in enumerate(inspect.signature(func).parameters.values()):
        if i == 0 or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = declared.get(p.name) or (_from_annotation(hints[p.name])
                                               if p.name in hints else None)
    return out


def check_params(func: Callable[..., Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values ``func(ctx, **values)`` will get, checked; ValueError listing every
    parameter that is wrong, unknown or missing, and why."""
    sig = inspect.signature(func)
    spec = declared_params(func)
    accepted = ", ".join(spec) or "none"
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    problems = []
    unknown = [k for k in values if k not in spec]
    if unknown and not takes_any:
        problems.append(f"unknown parameter(s) {', '.join(unknown)} (accepted: {accepted})")
    checked: dict[str, Any] = {}
    for name, value in values.items():
        param = spec.get(name)
        try:
            checked[name] = param.check(name, value) if param is not None else value
        except ValueError as exc:
            problems.append(str(exc))
    missing = [n for n, p in list(sig.parameters.items())[1:]
               if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               and n not in values]
    if missing:
        problems.append(f"missing required parameter(s) {', '.join(missing)}")
    if not problems:
        full = {n: p.default for n, p in list(sig.parameters.items())[1:]
                if p.default is not p.empty}
        full.update(checked)
        problems += [reason for ok, reason in getattr(func, "routine_rules", [])
                     if not ok(full)]
    if problems:
        raise ValueError("; ".join(problems))
    return checked


def describe_params(func: Callable[..., Any], json_ok: Callable[[Any], bool]
                    ) -> list[dict[str, Any]]:
    """Each parameter for operators: name, required, default, and what it accepts."""
    spec = declared_params(func)
    out = []
    for name, p in list(inspect.signature(func).parameters.items())[1:]:
        if name not in spec:
            continue
        item: dict[str, Any] = {"name": name, "required": p.default is p.empty}
        if p.default is not p.empty and json_ok(p.default):
            item["default"] = p.default
        if spec[name] is not None:
            item.update(spec[name].describe())
        out.append(item)
    return out
