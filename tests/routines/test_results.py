"""Routine results on disk: summary and arrays split losslessly, never a file overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from larpixdaq.routines.results import (
    ARRAY_MIN_SIZE,
    ResultStore,
    join_result,
    split_result,
    summary_lines,
)
from larpixdaq.routines.testing import run_routine_offline

ints = st.lists(st.integers(-2**40, 2**40), min_size=0, max_size=40)
floats = st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=40)
leaves = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none(), ints, floats)
results = st.recursive(
    leaves,
    lambda inner: st.one_of(st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), inner,
                                            max_size=5),
                            st.lists(inner, max_size=4)),
    max_leaves=30)


def _numbers_inline(summary) -> int:
    """The largest list of plain numbers left in a summary."""
    if isinstance(summary, dict):
        return max((_numbers_inline(v) for v in summary.values()), default=0)
    if isinstance(summary, list):
        flat = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in summary)
        return max([len(summary) if flat else 0, *(_numbers_inline(v) for v in summary)])
    return 0


@given(results)
def test_split_then_join_gives_the_result_back(result):
    summary, arrays = split_result(result)
    json.dumps(summary)  # the summary is plain JSON
    assert join_result(summary, arrays) == result
    assert _numbers_inline(summary) < ARRAY_MIN_SIZE


def test_one_record_per_chip_becomes_one_array_per_field():
    result = {"chips": {f"1-1-{c}": {"mean": [1.5] * 64, "std": [None] * 64, "n": [3] * 64}
                        for c in range(11, 111)}, "packets": 5}
    summary, arrays = split_result(result)
    assert arrays["chips.mean"].shape == (100, 64) and arrays["chips.n"].dtype == np.int64
    assert np.isnan(arrays["chips.std"]).all()  # JSON null: no value, NaN in numpy
    assert arrays["chips.keys"].tolist()[:2] == ["1-1-11", "1-1-12"]
    assert len(summary_lines(summary)) == 5  # not 6,400 numbers


def test_the_store_never_overwrites_and_lists_newest_first(tmp_path):
    store = ResultStore(tmp_path / "routines")
    out = run_routine_offline("threshold_scan", start=30, stop=40, step=10, dwell=0.02)
    first = store.save(out.to_dict(), finished=1_796_000_000.0)
    before = (tmp_path / "routines").joinpath(first["summary_file"]).read_bytes()
    second = store.save({**out.to_dict(), "status": "failed"}, finished=1_796_000_000.0)
    assert first["summary_file"] != second["summary_file"]
    assert first["arrays_file"] != second["arrays_file"]
    assert Path(first["summary_file"]).read_bytes() == before
    # A name already taken by someone else's file is skipped, not written over.
    taken = tmp_path / "routines" / "20261204T180000.000Z-hello_world.json"
    taken.write_text("not ours")
    third = store.save(run_routine_offline("hello_world").to_dict(),
                       finished=1_796_407_200.0)
    assert taken.read_text() == "not ours" and third["summary_file"] != str(taken)
    listed = store.list()
    assert [r["summary_file"] for r in listed if r["status"] != "unreadable"] == [
        third["summary_file"], second["summary_file"], first["summary_file"]]
    assert any(r["status"] == "unreadable" for r in listed)
    # Each listing carries the start of its summary: a line per scalar, arrays by shape.
    hello = listed[0]["brief"]
    assert hello[0] == 'greeting  "Hello, world!"' and len(hello) <= 3
    scan = listed[-1]["brief"]
    assert len(scan) == 4 and scan[-1].startswith("... (") and "more; see the files" in scan[-1]
    # The arrays are in numpy, the summary and parameters in JSON: the whole result.
    record = json.loads(Path(first["summary_file"]).read_text())
    with np.load(first["arrays_file"]) as npz:
        assert join_result(record["summary"], dict(npz)) == out.result
    assert record["params"] == {"start": 30, "stop": 40, "step": 10, "dwell": 0.02}
    assert record["finished"] == "2026-11-30T00:53:20.000Z"


def test_a_directory_that_cannot_be_written_raises_for_the_caller_to_count(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        ResultStore(tmp_path / "file" / "routines").save(
            run_routine_offline("hello_world").to_dict(), finished=1.0)


def test_numbers_an_array_cannot_hold_exactly_stay_in_the_summary():
    # Found by the property above: a result with integers past int64 must not crash the save.
    big = {"a": [2**63, 1], "b": [3, 4], "c": [5, 6], "d": [7, 8], "e": [9, 10],
           "f": [11, 12], "g": [13, 14], "h": [15, 16]}
    summary, arrays = split_result(big)
    assert join_result(summary, arrays) == big
    mixed = [2**60 + 1, 0.5] * 8
    summary, arrays = split_result({"x": mixed})
    assert join_result(summary, arrays) == {"x": mixed}
