"""A run writer SIGKILLed at random moments always resumes with every frame once.

Each round forks a writer that writes as storage does (a batch at a time, a commit every few
batches), kills it after a random delay (before its first commit, between commits, in the
middle of a flush), then resumes the run in this process, delivers every frame again (as the
aggregator does) and checks that the run's parts hold each frame exactly once, none lost,
every part readable with a valid checksum, and nothing but parts, the journal and damaged
originals kept aside in the data directory.

The suite runs a bounded form (30 kills, fewer if 25 s run out on a slow machine; at least 8). The
long form, e.g. 200 kills with a CPU spinner on the other core::

    python -c 'while True: pass' &  # note its pid, kill it afterwards
    .venv/bin/python tests/pipeline/test_runfile_kills.py 200
"""

from __future__ import annotations

import multiprocessing
import random
import sys
import time
from pathlib import Path

import numpy as np

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import killwriter
from datagen import expected_rows, make_messages

from larpixdaq.formats.hdf5file import verify_checksum
from larpixdaq.formats.rows import MESSAGE
from larpixdaq.pipeline.runfile import RunWriter, read_run_packets

KILL_WITHIN = 0.3  # seconds after the writer starts; the writer needs ~0.4 s to finish


def kill_and_resume(base: Path, kills: int, budget: float, seed: int = 0) -> dict[str, int]:
    """``kills`` rounds (fewer if ``budget`` seconds run out); asserts on each; returns
    what was seen."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["h5py", "numpy", "larpixdaq.pipeline.runfile", "killwriter"])
    rng = random.Random(seed)
    seen = {"kills": 0, "finished_first": 0, "committed_nothing": 0, "rebuilt": 0}
    deadline = time.monotonic() + budget
    try:
        for k in range(kills):
            if time.monotonic() > deadline:
                break
            data = base / f"kill{k}"
            data.mkdir()
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=killwriter.write_until_killed,
                               args=(str(data), theirs, k), daemon=True)
            proc.start()
            try:
                assert ours.poll(60), "the writer did not start"
                assert ours.recv() == "go"
                # Not a sync point: the kill is meant to land at an arbitrary moment.
                time.sleep(rng.uniform(0, KILL_WITHIN))
                seen["finished_first"] += ours.poll()
            finally:
                proc.kill()
                proc.join(60)
                ours.close()
                theirs.close()
            assert proc.exitcode == -9
            seen["kills"] += 1
            _resume_and_check(data, k, seen)
    finally:
        # The forkserver this started is stopped with it (no public call does that).
        multiprocessing.forkserver._forkserver._stop()
    return seen


def _resume_and_check(data: Path, seed: int, seen: dict[str, int]) -> None:
    w = RunWriter(data, killwriter.RUN, chunk_rows=killwriter.CHUNK_ROWS)
    seen["committed_nothing"] += not w.committed()
    w.add(killwriter.frames(seed))  # the aggregator delivers everything again
    summary = w.close()
    c = summary["counters"]
    assert c["restarts"] == 1 and c["packets_lost"] == 0 and c["frames_missing"] == 0, c
    seen["rebuilt"] += c["parts_rebuilt"]
    files = [Path(p) for p in summary["files"]]
    rows = read_run_packets(files)
    chip = rows[rows["packet_type"] != MESSAGE]
    sent = expected_rows(make_messages(seed, killwriter.MESSAGES, words=killwriter.WORDS), 1)
    assert np.array_equal(chip, sent), f"kill {seed}: rows differ from what was sent"
    texts = [r for r in rows if r["packet_type"] == MESSAGE]
    assert len(texts) == 2  # "Beginning run" and "Ending run", once each
    assert c["packets_written"] == len(rows)
    for p in files:
        assert verify_checksum(p) is True
    kept = {p.name for p in data.iterdir()}
    assert kept - {p.name for p in files} - {"run-000005.journal"} == {
        n for n in kept if ".damaged" in n}


def test_a_writer_killed_at_random_moments_always_resumes_with_every_frame(tmp_path):
    seen = kill_and_resume(tmp_path, kills=30, budget=25)
    assert seen["kills"] >= 8, seen


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
        result = kill_and_resume(Path(tmp), kills=n, budget=3600, seed=int(time.time()))
        print(result, f"{time.monotonic() - start:.1f} s")
