"""Routine parameters: declared types and ranges, checked once before a routine starts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from larpixdaq.routines import FAILED, SUCCESS, RoutineRegistry
from larpixdaq.routines.params import CHIP_KEYS, Param, check_params, params
from larpixdaq.routines.testing import run_routine_offline


@pytest.mark.parametrize(("routine", "given_params", "reason"), [
    ("pedestal", {"seconds": -1}, "seconds must be > 0, got -1"),
    ("pedestal", {"seconds": 0}, "seconds must be > 0, got 0"),
    ("pedestal", {"cycles": 0}, "cycles must be >= 1, got 0"),
    ("pedestal", {"seconds": "long"}, "seconds must be float > 0, got 'long'"),
    ("threshold_scan", {"start": 50, "stop": 40}, "start must not be above stop"),
    ("threshold_scan", {"stop": 256}, "stop must be <= 255, got 256"),
    ("threshold_scan", {"step": 0}, "step must be >= 1, got 0"),
    ("testpulse", {"amplitudes": []}, "amplitudes must not be empty"),
    ("testpulse", {"amplitudes": [20, 0]}, "amplitudes[1] must be >= 1, got 0"),
    ("quickstart", {"unmask": "some"}, "unmask must be one of 'routed', 'all', 'none'"),
    ("quickstart", {"verify": "yes"}, "verify must be bool, got 'yes'"),
    ("trim", {"target_rate": float("nan")}, "target_rate must be a finite number"),
    ("hello_world", {"colour": "red"}, "unknown parameter(s) colour (accepted: name)"),
])
def test_nonsense_is_refused_with_the_reason_before_the_routine_runs(routine, given_params,
                                                                      reason):
    out = run_routine_offline(routine, **given_params)
    assert out.status == FAILED and out.progress == []  # nothing ran
    assert out.message.startswith(f"bad parameters for routine {routine}: ")
    assert reason in out.message


def test_widening_and_single_chip_keys_are_accepted():
    reg = RoutineRegistry()
    assert reg.get("pedestal").check({"seconds": 1, "chip_keys": "1-1-11"}) == {
        "seconds": 1.0, "chip_keys": ["1-1-11"]}
    out = run_routine_offline("threshold_scan", start=30, stop=30, dwell=0.02,
                              chip_keys="1-1-11")
    assert out.status == SUCCESS and list(out.result["chips"]) == ["1-1-11"]


def test_listing_says_what_each_parameter_accepts():
    described = {d["name"]: {p["name"]: p for p in d["params"]}
                 for d in RoutineRegistry().describe()}
    assert described["pedestal"]["seconds"] == {"name": "seconds", "required": False,
                                                "default": 2.0, "type": "float", "above": 0,
                                                "unit": "s"}
    assert described["threshold_scan"]["start"]["maximum"] == 255
    assert described["threshold_scan"]["start"]["unit"] == "DAC"
    assert described["trim"]["target_rate"]["unit"] == "Hz"
    assert "unit" not in described["quickstart"]["unmask"]
    assert described["quickstart"]["unmask"]["choices"] == ["routed", "all", "none"]
    assert described["trim"]["chip_keys"]["type"] == "list of str"


def test_a_plugin_gets_types_from_its_annotations(tmp_path):
    (tmp_path / "plug.py").write_text(
        "def routine(ctx, n: int = 1, gain: float | None = None, tag='x'):\n"
        "    return {'n': n, 'gain': gain, 'tag': tag}\n")
    reg = RoutineRegistry()
    spec = reg.load_file(tmp_path / "plug.py")
    assert spec.check({"n": 3, "gain": 2, "tag": [1]}) == {"n": 3, "gain": 2.0, "tag": [1]}
    with pytest.raises(Exception, match="n must be int, got 'three'"):
        spec.check({"n": "three"})


def test_declaring_a_parameter_the_routine_lacks_is_a_mistake_caught_at_once():
    with pytest.raises(TypeError, match="no parameter"):
        @params(secs=Param(float))
        def routine(ctx, seconds=1.0):
            return seconds


@given(st.floats(allow_nan=False, allow_infinity=False, width=32),
       st.floats(min_value=-1e6, max_value=1e6, width=32))
def test_a_range_accepts_exactly_the_values_inside_it(value, bound):
    inside = value > bound

    def routine(ctx, x: float = 1.0):
        return x

    routine.routine_params = {"x": Param(float, above=bound)}
    routine.routine_rules = []
    if inside:
        assert check_params(routine, {"x": value}) == {"x": value}
    else:
        with pytest.raises(ValueError, match=re.escape(f"x must be > {bound:g}")):
            check_params(routine, {"x": value})


def test_chip_keys_take_none_one_or_many():
    assert CHIP_KEYS.check("k", None) is None
    assert CHIP_KEYS.check("k", "1-1-11") == ["1-1-11"]
    assert CHIP_KEYS.check("k", ["1-1-11", "1-1-12"]) == ["1-1-11", "1-1-12"]
    with pytest.raises(ValueError, match=r"k\[0\] must be str"):
        CHIP_KEYS.check("k", [11])
