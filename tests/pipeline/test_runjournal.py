"""What a restarted writer takes up from a journal (``plan_resume``), over journals a
writer's life can leave: rollovers, commits, parts opened and never committed, a crash
anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from larpixdaq.pipeline.runjournal import JournalRefused, plan_resume, stream_key

# A writer's life, step by step: "commit" (rows of the current part on disk, a line says so)
# or "open" (the next part is created and becomes current: a rollover, or a restart). The life
# may end anywhere (a crash): after an "open" with no commit, or mid-part.
steps = st.lists(st.sampled_from(["commit", "open"]), max_size=30)


def journal_of(life: list[str]) -> tuple[list[dict], dict]:
    """The records such a life writes, and what its last commit said (written down here
    as the life goes, not derived from the records)."""
    records: list[dict] = [{"open": True, "run_number": 3, "metadata": {"comment": "x"}},
                           {"opened_part": 0, "path": "/d/p0.h5"}]
    part, files, seq = 0, [Path("/d/p0.h5")], 0
    last = {"part": 0, "rows": (0, 0, 0), "streams": {}, "files": []}
    for step in life:
        if step == "open":
            part += 1
            files.append(Path(f"/d/p{part}.h5"))
            records.append({"opened_part": part, "path": f"/d/p{part}.h5"})
            continue
        seq += 1
        rows = (seq * 10, seq, 1)
        streams = {("src", 7): (seq, seq * 100, False)}
        records.append({"part": part, "packets": rows[0], "messages": rows[1],
                        "configs": rows[2], "files": [str(f) for f in files],
                        "streams": {stream_key(s): list(v) for s, v in streams.items()},
                        "counters": {"commits": seq}})
        last = {"part": part, "rows": rows, "streams": streams, "files": list(files)}
    return records, last


@given(steps)
def test_the_last_commit_is_taken_up_and_no_committed_part_is_ever_removed(life):
    records, last = journal_of(life)
    plan = plan_resume(records)
    assert plan.part == last["part"]
    assert plan.rows == last["rows"]
    assert plan.streams == last["streams"]
    assert plan.files == last["files"]
    named = {Path(r["path"]) for r in records if "opened_part" in r}
    # Only this run's files are touched, and nothing a commit covers is removed.
    assert plan.own <= named | set(plan.files)
    assert set(plan.stale) <= named
    assert not set(plan.stale) & ({*plan.files, Path(f"/d/p{plan.part}.h5")})
    # A new part never takes the number of one the run opened.
    assert plan.next_part > max(int(r["opened_part"]) for r in records if "opened_part" in r)


@given(steps)
def test_parts_opened_after_the_last_commit_are_the_ones_removed(life):
    records, last = journal_of(life)
    # the opened parts a restart may remove: after the last commit line in the journal
    idx = max((i for i, r in enumerate(records) if "part" in r), default=1)
    after = [Path(r["path"]) for r in records[idx + 1:] if "opened_part" in r]
    assert plan_resume(records).stale == after


def test_a_journal_that_is_none_or_closed_is_refused():
    with pytest.raises(JournalRefused, match="not a run journal"):
        plan_resume([])
    with pytest.raises(JournalRefused, match="not a run journal"):
        plan_resume([{"part": 0}])
    records, _ = journal_of(["commit"])
    with pytest.raises(JournalRefused, match="closed"):
        plan_resume([*records, {"closed": True, "clean": True}])
