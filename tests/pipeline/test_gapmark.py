"""Where a dead producer's hole is: what a PACMAN message says, where a log's data stops,
the texts."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from larpixdaq.formats.pacman import (
    concat_words,
    data_words,
    encode_data_message,
    sync_words,
)
from larpixdaq.pipeline import gapmark

u32 = st.integers(0, 2**32 - 1)


def _message(stamp: int, syncs: list[int], packets: int = 5) -> bytes:
    parts = [data_words(1, np.arange(packets, dtype=np.uint64), 7)]
    for t in syncs:
        parts += [sync_words(t), data_words(1, np.arange(2, dtype=np.uint64), 8)]
    return encode_data_message(stamp, concat_words(parts))


@given(stamp=u32, syncs=st.lists(u32, max_size=4))
def test_a_message_gives_its_header_time_and_its_last_sync(stamp, syncs):
    assert gapmark.message_marks(_message(stamp, syncs)) == (
        stamp, syncs[-1] if syncs else None)


def test_the_first_sync_after_a_restart_is_looked_for_across_messages():
    msgs = [_message(10, []), _message(11, [500, 600]), _message(12, [700])]
    assert gapmark.first_sync(msgs) == 500
    assert gapmark.first_sync(msgs[:1]) is None
    assert gapmark.message_marks(b"D\x00") == (0, None)  # too short: no time, no crash


@given(t0=u32, t1=u32, s0=st.none() | u32, s1=st.none() | u32)
def test_the_file_row_fits_the_messages_table_and_says_the_interval(t0, t1, s0, s1):
    info = gapmark.gap_info(gapmark.Mark(3, 1, t0, s0), t1, s1)
    assert len(info.encode()) <= gapmark.MAX_INFO_BYTES
    assert info == f"gap {t0}-{t1} SYNC {'none' if s0 is None else s0}-" \
                   f"{'none' if s1 is None else s1}"


def test_the_incident_names_the_producer_the_io_group_and_both_units():
    text = gapmark.gap_text("producer-7", gapmark.Mark(3, 7, 1000, 25), 1004, None)
    assert text.startswith("data gap: producer-7 ")
    assert "io_group 7 has no data from message time 1000 to 1004 (unix s, 4 s)" in text
    assert "SYNC 25 to none" in text


@given(g=st.integers(0, 255), t0=u32, t1=u32, s0=st.none() | u32, s1=st.none() | u32,
       name=st.text("abcdefgh-0123456789", min_size=1, max_size=20))
def test_the_interval_is_read_back_from_the_incident_text(g, t0, t1, s0, s1, name):
    text = gapmark.gap_text(name, gapmark.Mark(2, g, t0, s0), t1, s1)
    assert gapmark.gap_interval(text) == (g, t0, t1)


def test_other_incidents_have_no_gap_interval():
    assert gapmark.gap_interval("storage was lost and came back") is None
    assert gapmark.gap_interval(gapmark.gap_info(gapmark.Mark(1, 1, 5, 6), 7, 8)) is None


def test_where_a_log_s_data_stops_is_its_last_message_with_the_last_sync_of_that_run():
    log = [(3, 1, _message(1000, [10])), (3, 1, _message(1001, [20, 30])),
           (3, 1, _message(1002, []))]
    assert gapmark.last_mark(log) == gapmark.Mark(3, 1, 1002, 30)
    # A SYNC of an earlier run is not one of this run's.
    assert gapmark.last_mark([(2, 1, _message(900, [5])), (3, 1, _message(1003, []))]) == (
        gapmark.Mark(3, 1, 1003, None))
    assert gapmark.last_mark([]) is None


@given(runs=st.lists(st.tuples(st.integers(0, 3), u32, st.lists(u32, max_size=2)),
                     min_size=1, max_size=8))
def test_the_mark_is_the_last_message_and_the_last_sync_seen_in_its_run(runs):
    log = [(run, 1, _message(stamp, syncs)) for run, stamp, syncs in runs]
    mark = gapmark.last_mark(log)
    run, stamp, _ = runs[-1]
    # The test's own bookkeeping: walk back while the run is the same, to the last SYNC.
    expected_sync = None
    for r, _, syncs in reversed(runs):
        if r != run:
            break
        if syncs:
            expected_sync = syncs[-1]
            break
    assert mark == gapmark.Mark(run, 1, stamp, expected_sync)
