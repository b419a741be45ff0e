"""The check of a run's files against what a board published, on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from larpixdaq.pipeline.gapcheck import check_against_truth

ROW = np.dtype([("timestamp", "<u8"), ("chip_id", "u1")])


def board(sizes: list[int], times: list[int] | None = None):
    """Messages of ``sizes`` rows (row r of message k: timestamp 1000 k + r), their times
    (one second apart unless told) and each message's own rows."""
    msgs = [np.array([(1000 * k + r, k % 256) for r in range(n)], ROW)
            for k, n in enumerate(sizes)]
    rows = np.concatenate(msgs) if msgs else np.zeros(0, ROW)
    of = np.repeat(np.arange(len(sizes)), sizes)
    t = np.array(times if times is not None else [100 + k for k in range(len(sizes))])
    return rows, of, t, msgs


def files(msgs: list[np.ndarray], order: list[int]) -> np.ndarray:
    return np.concatenate([msgs[k] for k in order] + [np.zeros(0, ROW)])


def test_every_message_in_the_files_in_order_passes():
    rows, of, t, msgs = board([3, 4, 0, 2])
    v = check_against_truth(rows, of, t, files(msgs, [0, 1, 2, 3]), [], 0)
    assert v.ok, v.problems
    assert (v.messages, v.in_files, v.missing, v.rows, v.rows_in_files) == (4, 4, 0, 9, 9)


def test_a_hole_inside_a_recorded_gap_passes():
    rows, of, t, msgs = board([3, 4, 5, 2, 6])  # times 100..104
    v = check_against_truth(rows, of, t, files(msgs, [0, 3, 4]), [(101, 102)], 1)
    assert v.ok, v.problems
    assert (v.in_files, v.missing, v.rows_in_gaps, v.rows_lost, v.gaps) == (3, 2, 9, 0, 1)


def test_a_hole_outside_every_gap_fails_and_counts_the_lost_packets():
    rows, of, t, msgs = board([3, 4, 5, 2, 6])
    v = check_against_truth(rows, of, t, files(msgs, [0, 1, 3, 4]), [(103, 104)], 1)
    assert not v.ok
    assert v.rows_lost == 5 and v.rows_in_gaps == 0
    assert "outside every recorded gap" in v.problems[0] and "time 102" in v.problems[0]


def test_a_hole_half_inside_a_gap_fails_for_the_half_outside():
    rows, of, t, msgs = board([3, 4, 5, 2])
    v = check_against_truth(rows, of, t, files(msgs, [0, 3]), [(101, 101)], 1)
    assert not v.ok and (v.rows_in_gaps, v.rows_lost) == (4, 5)


def test_a_hole_with_no_producer_killed_fails_even_inside_a_gap():
    rows, of, t, msgs = board([3, 4, 5])
    v = check_against_truth(rows, of, t, files(msgs, [0, 2]), [(101, 101)], 0)
    assert not v.ok
    assert "1 data gaps recorded for 0 kills of the producer" in v.problems
    assert any("no producer killed" in p for p in v.problems)


def test_more_gaps_than_kills_fails():
    rows, of, t, msgs = board([3, 4, 5, 6])
    v = check_against_truth(rows, of, t, files(msgs, [0, 2]), [(101, 101), (103, 103)], 1)
    assert not v.ok and v.problems == ("2 data gaps recorded for 1 kills of the producer",)


def test_a_duplicated_message_fails():
    rows, of, t, msgs = board([3, 4, 5])
    v = check_against_truth(rows, of, t, files(msgs, [0, 1, 1, 2]), [(100, 102)], 1)
    assert not v.ok and v.rows_extra > 0


def test_a_reordered_message_fails():
    rows, of, t, msgs = board([3, 4, 5, 2])
    v = check_against_truth(rows, of, t, files(msgs, [0, 2, 1, 3]), [(100, 103)], 1)
    assert not v.ok and v.rows_extra > 0


def test_an_extra_row_fails():
    rows, of, t, msgs = board([3, 4, 5])
    extra = np.array([(999_999, 7)], ROW)
    got = np.concatenate([msgs[0], msgs[1], extra, msgs[2]])
    v = check_against_truth(rows, of, t, got, [(100, 102)], 1)
    assert not v.ok and "not the next rows" in v.problems[0]
    assert v.rows_extra >= 1


def test_part_of_a_message_is_not_the_message():
    rows, of, t, msgs = board([3, 4, 5])
    got = np.concatenate([msgs[0], msgs[1][:2], msgs[2]])
    v = check_against_truth(rows, of, t, got, [(101, 101)], 1)
    assert not v.ok and v.rows_extra >= 2


def test_a_row_changed_in_the_files_fails():
    rows, of, t, msgs = board([3, 4])
    got = files(msgs, [0, 1])
    got["chip_id"][5] += 1
    assert not check_against_truth(rows, of, t, got, [], 0).ok


def test_inconsistent_message_indices_are_refused():
    rows, of, t, _ = board([3, 4])
    with pytest.raises(ValueError):
        check_against_truth(rows, of[::-1], t, rows, [], 0)
    with pytest.raises(ValueError):
        check_against_truth(rows, of[:-1], t, rows, [], 0)


@given(st.lists(st.tuples(st.integers(1, 6), st.booleans()), min_size=1, max_size=30),
       st.data())
def test_any_messages_dropped_inside_announced_gaps_pass(spec, data):
    """Messages one second apart; the dropped ones form runs, each run announced by a gap
    that covers exactly its seconds; the files pass and the counts add up."""
    sizes = [n for n, _ in spec]
    dropped = [d for _, d in spec]
    rows, of, t, msgs = board(sizes)
    gaps, k = [], 0
    while k < len(spec):
        if dropped[k]:
            start = k
            while k < len(spec) and dropped[k]:
                k += 1
            gaps.append((100 + start, 100 + k - 1))
        else:
            k += 1
    kept = [k for k in range(len(spec)) if not dropped[k]]
    kills = len(gaps) + data.draw(st.integers(0, 2))
    v = check_against_truth(rows, of, t, files(msgs, kept), gaps, kills)
    assert v.ok, v.problems
    assert v.in_files == len(kept) and v.missing == len(spec) - len(kept)
    assert v.rows_in_files == sum(sizes[k] for k in kept)
    assert v.rows_in_gaps == sum(sizes) - v.rows_in_files and v.rows_lost == 0
    if gaps:  # without one of the announcements, some hole is outside every gap
        drop = data.draw(st.integers(0, len(gaps) - 1))
        fewer = gaps[:drop] + gaps[drop + 1:]
        v2 = check_against_truth(rows, of, t, files(msgs, kept), fewer, kills)
        assert not v2.ok and v2.rows_lost > 0
