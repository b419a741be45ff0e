"""Actions as operators see them, and the wire-safe values they return (no core needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from larpixdaq.runcontrol.actions import action, marked_actions, plain, spec_of


def test_plain_values():
    assert plain({1: (np.int8(2), Path("/x")), "a": {np.str_("b")}}) == {
        "1": [2, "/x"], "a": ["b"]}
    assert plain(np.arange(3, dtype=np.uint16)) == [0, 1, 2]
    assert type(plain(np.float32(0.5))) is float


class Thing:
    @action
    def scan(self, start: int, stop: int = 10, *rest, **kw):
        """Scan from start to stop."""

    @action(name="halt", immediate=True)
    def _halt(self):
        "Stop now."

    def helper(self):
        """Not an action."""


def test_marked_methods_become_specs_bound_to_the_object():
    thing = Thing()
    specs = marked_actions(thing)
    assert sorted(specs) == ["halt", "scan"]
    assert specs["scan"].func.__self__ is thing
    assert specs["halt"].immediate and not specs["scan"].immediate
    assert specs["scan"].describe() == {
        "doc": "Scan from start to stop.",
        "params": [
            {"name": "start", "required": True, "annotation": "int"},
            {"name": "stop", "required": False, "annotation": "int", "default": 10},
        ],
    }
    assert specs["halt"].describe() == {"doc": "Stop now.", "immediate": True, "params": []}


def test_a_default_the_wire_cannot_carry_is_left_out_of_the_description():
    def f(path: Path = Path("/tmp"), n: int = 3):
        pass

    params = spec_of("f", f, doc="x").describe()["params"]
    assert params == [{"name": "path", "required": False, "annotation": "Path"},
                      {"name": "n", "required": False, "annotation": "int", "default": 3}]
