"""Counters as dataclasses: each counter's name is written once, as a field.

A component's counters travel as a dict (heartbeats, the end-of-run reply, the run record),
keyed by the field names. With a dataclass a misspelt counter is an AttributeError at the
line that counts (and a type checker's complaint), where a dict would grow a new key, or
raise ``KeyError`` far from the cause.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any, TypeVar

C = TypeVar("C", bound="Counters")


@dataclass
class Counters:
    """Base of a component's counters: subclasses add ``int``/``float`` fields at 0."""

    def as_dict(self) -> dict[str, Any]:
        """Name -> value, in field order (what heartbeats and the run record show)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def copy(self: C) -> C:
        """A copy to subtract later (the counts at the start of a run)."""
        return copy.copy(self)

    def since(self, base: Counters) -> dict[str, Any]:
        """Name -> what was counted after ``base`` was copied."""
        return {f.name: getattr(self, f.name) - getattr(base, f.name) for f in fields(self)}
