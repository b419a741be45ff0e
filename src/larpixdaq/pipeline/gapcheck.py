"""Do a run's files hold what a board published, except inside the recorded data gaps?

A producer that is killed loses what it could not have seen: the messages its board
published while it was dead, and those that sat in the dead process's socket buffer. Each
such hole must be announced: its messages' PACMAN header times lie inside the interval of a
"data gap" incident of the run (:func:`larpixdaq.pipeline.gapmark.gap_interval`). Everything
else the board published must be in the files, in order, once.

The check walks the board's messages (a subscriber's recording: the truth) in order against
the files' chip-packet rows of that board's io_group: a message whose rows are the next rows
of the files is *in the files* (both advance), otherwise it is *missing* (the truth
advances). The files pass iff every row was consumed (nothing extra, nothing twice, nothing
out of order), every missing message is inside a gap, there are no more gaps than the
producer was killed, and with no kill nothing is missing.

Pure: arrays in, a :class:`Verdict` out (no files, sockets or clocks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Verdict:
    """What the walk found for one io_group (counts of messages and of rows = packets)."""

    messages: int  # data messages the board published
    in_files: int  # of them, whole and in order in the files
    missing: int  # not in the files
    rows: int  # packets the board published (rows of all its messages)
    rows_in_files: int
    rows_in_gaps: int  # packets of missing messages inside a recorded gap
    rows_lost: int  # packets of missing messages outside every recorded gap
    rows_extra: int  # file rows no published message accounts for, in order
    gaps: int
    kills: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def message_bounds(of_message: np.ndarray, n_msgs: int) -> np.ndarray:
    """Where each message's rows start among the truth's rows (``n_msgs + 1`` offsets: message
    ``i`` has rows ``[bounds[i], bounds[i + 1])``, none for a message without words)."""
    return np.searchsorted(np.asarray(of_message, dtype=np.int64), np.arange(n_msgs + 1))


def messages_in_files(truth_rows: np.ndarray, of_message: np.ndarray, n_msgs: int,
                      file_rows: np.ndarray) -> tuple[np.ndarray, int]:
    """The walk: which of the ``n_msgs`` published messages are in the files (a bool per
    message), and how many file rows they account for (the rest are extra). Arguments as
    for :func:`check_against_truth`."""
    of_message = np.asarray(of_message, dtype=np.int64)
    if len(of_message) != len(truth_rows):
        raise ValueError(f"{len(truth_rows)} truth rows but {len(of_message)} message indices")
    if len(of_message) and (np.any(np.diff(of_message) < 0) or of_message[0] < 0
                            or of_message[-1] >= n_msgs):
        raise ValueError("of_message must be non-decreasing message indices below "
                         f"{n_msgs}")
    bounds = message_bounds(of_message, n_msgs)
    present = np.zeros(n_msgs, dtype=bool)
    j = 0  # the next file row to account for
    n_file = len(file_rows)
    for i in range(n_msgs):  # one step per message, each compared as a whole array
        a, b = int(bounds[i]), int(bounds[i + 1])
        n = b - a
        if j + n <= n_file and np.array_equal(file_rows[j:j + n], truth_rows[a:b]):
            present[i] = True
            j += n
    return present, j


def check_against_truth(truth_rows: np.ndarray, of_message: np.ndarray,
                        message_times: np.ndarray, file_rows: np.ndarray,
                        gaps: Sequence[tuple[int, int]], kills: int) -> Verdict:
    """The walk described in the module docstring.

    ``truth_rows``: the chip-packet rows of every message the board published, in order;
    ``of_message``: the index of each row's message (non-decreasing, 0..M-1);
    ``message_times``: each message's header time (M of them: a message may have no row);
    ``file_rows``: the files' chip-packet rows of the board's io_group, in file order (same
    dtype); ``gaps``: (T0, T1) of each data-gap incident of the io_group; ``kills``: how many
    times its producer was killed.
    """
    n_msgs = len(message_times)
    present, j = messages_in_files(truth_rows, of_message, n_msgs, file_rows)
    n_file = len(file_rows)
    sizes = np.diff(message_bounds(of_message, n_msgs))
    times = np.asarray(message_times, dtype=np.int64)
    inside = np.zeros(n_msgs, dtype=bool)
    for t0, t1 in gaps:
        inside |= (times >= t0) & (times <= t1)
    missing = ~present
    lost = missing & ~inside
    problems = []
    if j < n_file:
        problems.append(f"{n_file - j} file rows from row {j} on are not the next rows of "
                        "any published message (extra, twice or out of order)")
    if lost.any():
        first = int(np.flatnonzero(lost)[0])
        problems.append(f"{int(lost.sum())} missing messages ({int(sizes[lost].sum())} "
                        f"packets) lie outside every recorded gap (the first: message "
                        f"{first}, time {int(times[first])})")
    if len(gaps) > kills:
        problems.append(f"{len(gaps)} data gaps recorded for {kills} kills of the producer")
    if kills == 0 and missing.any():
        problems.append(f"{int(missing.sum())} messages missing with no producer killed")
    return Verdict(
        messages=n_msgs, in_files=int(present.sum()), missing=int(missing.sum()),
        rows=len(truth_rows), rows_in_files=int(sizes[present].sum()),
        rows_in_gaps=int(sizes[missing & inside].sum()), rows_lost=int(sizes[lost].sum()),
        rows_extra=n_file - j, gaps=len(gaps), kills=kills, problems=tuple(problems))
