"""Chaos, shortened: a run with two boards while a random component (aggregator, storage,
monitor, log collector, core) is SIGKILLed every few seconds and started again by the
supervisor, as `larpix-daq up` runs them. Every packet the boards sent (the producers'
``--record`` files) is in the run's files exactly once, and the run record agrees."""

from __future__ import annotations

from bench.bench_chaos import chaos

from larpixdaq.runcontrol.statemachine import run_losses


def test_a_run_survives_a_sigkill_every_few_seconds_and_loses_nothing(tmp_path):
    r = chaos(tmp_path, seconds=20.0, period=2.5, rate=50_000)
    run = r.run
    assert len(r.kills) >= 5, r.kills
    for g in (1, 2):
        assert r.sent[g] > 100_000
        assert r.exactly_once[g], f"io_group {g}: {r.in_files[g]} in files, {r.sent[g]} sent"
    assert r.lost == 0
    assert run["packets_written"] == run["rows_in_files"]
    assert run["packets_lost"] == 0
    assert run_losses(run["counters"], run["roles"]) == {}
    for g in (1, 2):  # the producers' own count agrees with the truth, and storage's
        assert run["counters"][f"producer-{g}"]["packets_sent"] == r.words[g]
    assert run["counters"]["storage"]["words_received"] == sum(r.words.values())
    assert set(run["resolved_incidents"]) == set(range(len(run["incidents"])))
    assert run["exit_status"] == "success", run["incidents"]
