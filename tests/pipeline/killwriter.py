"""A run writer that writes as storage does until it is SIGKILLed, for the kill tests.

It runs in a process forked from a forkserver that has imported h5py, numpy and the writer
already, so a kill test can start (and kill) dozens of writers in seconds.
"""

from __future__ import annotations

import time
from multiprocessing.connection import Connection

from datagen import make_frames, make_messages

from larpixdaq.pipeline.runfile import RunWriter

RUN = 5
MESSAGES = 1500
WORDS = 100
CHUNK_ROWS = 4096
COMMIT_INTERVAL = 0.05  # seconds; storage commits every 0.2 s, not after every batch


def frames(seed: int) -> list:
    return make_frames("a", 1, make_messages(seed, MESSAGES, words=WORDS))


def write_until_killed(data_dir: str, conn: Connection, seed: int) -> None:
    """Write the run's frames one batch at a time, committing as storage does (by time);
    say "go" once the run's journal exists and "done" after the last batch, then wait."""
    todo = frames(seed)
    w = RunWriter(data_dir, RUN, chunk_rows=CHUNK_ROWS)
    conn.send("go")
    last = time.monotonic()
    for i in range(len(todo)):
        w.add(todo[i:i + 1])
        if time.monotonic() - last >= COMMIT_INTERVAL:
            w.commit()
            last = time.monotonic()
    w.commit()
    conn.send("done")
    conn.recv()  # held open: only a kill ends it
