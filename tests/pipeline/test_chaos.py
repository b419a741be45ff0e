"""Chaos, shortened: a run with two boards (PACMAN emulators here, recorded by a subscriber:
the truth) while a component (aggregator, storage, monitor, log collector, core or a
producer, in a shuffled cycle) is SIGKILLed every few seconds and started again by the
supervisor, as `larpix-daq up` runs them. Every packet the boards published is in the run's
files exactly once, except what a killed producer could not see, which lies inside the
run's recorded data gaps; the run record agrees."""

from __future__ import annotations

from bench.bench_chaos import chaos

from larpixdaq.runcontrol.statemachine import run_losses


def test_a_run_survives_a_sigkill_every_few_seconds_and_loses_nothing(tmp_path):
    r = chaos(tmp_path, seconds=20.0, period=2.5, rate=50_000)
    run = r.run
    assert len(r.kills) >= 6, r.kills
    assert r.kinds().get("producer", 0) >= 1, r.kills  # each kind once in the first six
    for g in (1, 2):
        v = r.verdicts[g]
        assert r.sent[g] > 100_000
        assert v.ok, (g, v)
        assert v.rows_lost == 0 and v.rows_in_files + v.rows_in_gaps == v.rows
        assert (v.missing > 0) <= (r.killed(g) > 0)
    assert r.lost == 0
    assert run["packets_written"] == run["rows_in_files"]
    assert run["packets_lost"] == 0
    assert run["counters"]["storage"]["streams_unfinished"] == 0, run["counters"]["storage"]
    assert run["exit_status"] == r.expected_status, run["incidents"]
    losses = run_losses(run["counters"], run["roles"])
    assert set(losses) <= {f"producer-{g}.run_data_gaps" for g in (1, 2) if r.killed(g)}, \
        losses
    for g in (1, 2):
        if r.killed(g):
            assert losses[f"producer-{g}.run_data_gaps"] >= 1, losses
        else:  # the producer's own count agrees with the truth (a killed one's restarted)
            assert run["counters"][f"producer-{g}"]["packets_sent"] == r.words[g]
    # storage received every word in the files (each once); a message is its words' rows
    # and the row of its header time
    assert run["counters"]["storage"]["words_received"] == sum(
        v.rows_in_files - v.in_files for v in r.verdicts.values())
    assert set(run["resolved_incidents"]) == set(range(len(run["incidents"])))
