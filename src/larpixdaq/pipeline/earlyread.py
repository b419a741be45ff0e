"""Reading a board early when a restarted producer takes over a dead predecessor's stream.

Why: a PACMAN board (or a simulated board at a set rate) runs on its own, and its PUB socket
drops what nobody reads. A producer of the same name started after a SIGKILL would read its
board only at the catch-up's begin, after its process start, its registration with the core
and the catch-up prepare; all that time is a hole in the board's data. The process start
(0.26-0.29 s measured on a quiet machine) cannot be helped here, the rest can (10-40 ms
quiet, far longer with a large dead log or while the core is down): when the dead process's
frame log ends with data of a stream it had not finished, the successor knows which run it
is taking over before it registers, so it starts reading the board as soon as its data
thread runs and holds what it reads raw (the frames cannot be made yet: the catch-up
prepare gives the new stream its epoch). Then:

* the catch-up prepares the SAME run: reading goes on until its begin, and what was held goes
  into the new stream right after ``Beginning run`` (behind the recovered frames and the
  dead stream's takeover frame), so the hole (:mod:`~larpixdaq.pipeline.gapmark`) ends at
  the first message read early (``messages_read_early``);
* the catch-up prepares ANOTHER run (the dead one's ended meanwhile), or the run ends before
  this process begins it, or the process stops first: what was held belongs to no run; it
  is dropped and counted (``early_messages_outside_run``), as data outside a run is;
* what is held outgrows the hold budget (``--hold-mb``, shared with the frames waiting to be
  sent): early reading stops, what was held is dropped and counted
  (``early_messages_over_budget``), and the producer reads from the begin as a fresh one
  does (the hole then runs to the first message after begin, as it would have).

A producer started fresh (no dead stream to take over), or with a source that waits for its
reader (a file, a simulated board as fast as it goes), reads nothing before its run begins.

Pure here: :class:`DeadStreams` (which run a dead predecessor's log leaves unfinished) and
:class:`EarlyHold` (what the messages read early become); :class:`EarlyReader` is the thin
shell the producer's data thread drives (the source, the log, the counters).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from larpixdaq.pipeline.framelog import LoggedFrame
from larpixdaq.pipeline.protocol import KIND_DATA

if TYPE_CHECKING:
    from larpixdaq.pipeline.sources import Source

log = logging.getLogger("larpixdaq.producer")

KEEP, OTHER_RUN, OVER = "keep", "other run", "over"
"""What :meth:`EarlyHold.at_prepare` says of the messages read early: they go into this run,
they belong to none (dropped), or early reading was over already (nothing held)."""
OVER_BUDGET = "over budget"
"""Why early reading stopped, when the hold outgrew its budget."""


class DeadStreams:
    """Fed a dead predecessor's logged frames in the order logged (:meth:`watch` passes
    them on, so the log is read once for this and for the hole's start), it says which run
    the successor takes over: the run of the stream whose data the log ends with, if that
    stream has no last frame (``Ending run`` or a takeover frame). Pure."""

    def __init__(self) -> None:
        self._finished: set[int] = set()  # epochs with a last frame
        self._last_data: tuple[int, int] | None = None  # (epoch, run) of the last data frame

    def see(self, epoch: int, run: int, data: bool, last: bool) -> None:
        """One frame: its stream, its run, whether it is data, whether it is the last."""
        if last:
            self._finished.add(epoch)
        if data:
            self._last_data = (epoch, run)

    def watch(self, frames: Iterable[LoggedFrame]) -> Iterator[LoggedFrame]:
        """``frames`` unchanged, each seen on the way."""
        for f in frames:
            h = f.header
            self.see(h.epoch, h.run, h.kind == KIND_DATA, h.last)
            yield f

    def unfinished_run(self) -> int | None:
        """The run whose stream the dead process left unfinished with its last data, or None
        (no data logged, or that stream was ended)."""
        if self._last_data is None:
            return None
        epoch, run = self._last_data
        return None if epoch in self._finished else run


@dataclass
class EarlyHold:
    """The messages read early for the dead stream's ``run``, raw, in order, at most
    ``limit`` bytes together with what else the producer holds in memory. Pure: the
    producer reads, this decides; every message taken ends in exactly one of
    :meth:`release` (the run), ``outside_run`` or ``over_budget`` (dropped, counted)."""

    run: int
    limit: int
    messages: list[bytes] = field(default_factory=list)
    nbytes: int = 0
    stopped: str | None = None  # why early reading is over (KEEP: released at begin)
    prepared: bool = False  # the catch-up prepared this run: what is held is the run's
    outside_run: int = 0  # messages dropped: read early for a run this process never began
    over_budget: int = 0  # messages dropped: the hold outgrew the budget

    def take(self, msgs: list[bytes], in_use: int = 0) -> bool:
        """Hold ``msgs``; ``in_use``: bytes the producer holds in memory besides. False
        once that would exceed ``limit``: everything held and ``msgs`` are dropped (counted
        in ``over_budget``) and early reading is over. Taken after early reading stopped
        (what the source still gave as it was stopped), ``msgs`` are dropped and counted
        with the reason it stopped."""
        size = sum(map(len, msgs))
        if self.stopped is None and self.nbytes + size + in_use <= self.limit:
            self.messages.extend(msgs)
            self.nbytes += size
            return True
        if self.stopped is None:
            self.over_budget += len(self.messages)
            self._close(OVER_BUDGET)
        if self.stopped == OVER_BUDGET:
            self.over_budget += len(msgs)
        else:
            self.outside_run += len(msgs)
        return False

    @property
    def reading(self) -> bool:
        """Early reading goes on (until the begin, a drop or the budget)."""
        return self.stopped is None

    def at_prepare(self, run_number: int) -> str:
        """A prepare of ``run_number``: :data:`KEEP` (the dead stream's run, still read:
        reading goes on until :meth:`release` at its begin), :data:`OTHER_RUN` (that run is
        over: what was held is dropped, counted in ``outside_run``) or :data:`OVER` (early
        reading was over already: beyond the budget, or ended; nothing held)."""
        if self.stopped is not None:
            return OVER
        if run_number == self.run and not self.prepared:
            self.prepared = True
            return KEEP
        self.discard()
        return OTHER_RUN

    def release(self) -> list[bytes]:
        """At the begin of the prepared run: everything held, in the order read; early
        reading is over. Without that prepare what is held is dropped (``outside_run``)."""
        if not self.prepared:
            self.discard()
        out = self.messages
        self._close(KEEP)
        return out

    def discard(self) -> int:
        """Drop what is held (the run ended before its begin here, another run was
        prepared, or the process stops): counted in ``outside_run``; returns how many."""
        n = len(self.messages)
        self.outside_run += n
        self._close(self.stopped or OTHER_RUN)
        return n

    def _close(self, why: str) -> None:
        self.messages = []
        self.nbytes = 0
        self.stopped = why


DRAIN_READS = 100
"""Reads at most, when early reading stops, of what the source had already taken (a PACMAN
client's queue; an unsubscribed socket takes nothing new): dropped and counted, so none of
it reaches a later run's stream."""


class EarlyReader:
    """The shell around an :class:`EarlyHold`: starts the source at once, reads it into the
    hold from the producer's data thread, stops it when the hold gives up, and keeps the
    producer's counters (``messages_read_early``, ``early_messages_outside_run``,
    ``early_messages_over_budget``). Called only from the producer's data thread (and from
    :meth:`start` before that thread runs)."""

    def __init__(self, name: str, source: Source, hold: EarlyHold, counters: Any) -> None:
        """``counters``: the producer's ``ProducerCounters`` (not imported here: the
        producer imports this module), whose three early-read fields this keeps."""
        self.name = name
        self.source = source
        self.hold = hold
        self.counters = counters

    @property
    def reading(self) -> bool:
        return self.hold.reading

    def start(self) -> None:
        """The source as a run's prepare and begin leave it: reading from now."""
        self.source.prepare()
        self.source.start()
        log.warning("%s: taking over a dead process's stream of run %d: reading the board "
                    "now, before the run control brings this process into the run",
                    self.name, self.hold.run)

    def read(self, in_use: int) -> None:
        """One read of the board into the hold; ``in_use``: bytes the producer holds in
        memory besides (the hold budget is shared)."""
        msgs = self.source.read(0.02)
        if msgs and not self.hold.take(msgs, in_use):
            self._stop_source()
            log.warning("%s: stopped reading the board early: what it held outgrew the hold "
                        "budget (%d bytes); dropped %d messages (early_messages_over_budget)",
                        self.name, self.hold.limit, self.hold.over_budget)
        self._count()

    def prepare(self, run_number: int) -> bool:
        """The catch-up's prepare: True if what was read goes into this run (reading goes
        on until its begin; the source is not prepared again), False if the producer is
        to prepare the source as usual (another run: what was held is dropped and the
        source stopped first, so nothing read before this run's begin enters it)."""
        verdict = self.hold.at_prepare(run_number)
        if verdict == OTHER_RUN:
            self._stop_source()
            log.warning("%s: run %d (whose stream a dead process left) is over: %d messages "
                        "read early for it belong to no run, dropped "
                        "(early_messages_outside_run)", self.name, self.hold.run,
                        self.hold.outside_run)
        self._count()
        return verdict == KEEP

    def release(self) -> list[bytes] | None:
        """At the begin: what was read early, in order (the source runs on); None if early
        reading had stopped (the producer starts the source as usual)."""
        if not self.hold.reading:
            return None
        msgs = self.hold.release()
        self.counters.messages_read_early += len(msgs)
        self._count()
        return msgs

    def discard(self) -> None:
        """The run ended before its begin here, or the process stops: what was held is
        dropped (``early_messages_outside_run``); the producer stops the source."""
        if self.hold.discard():
            log.warning("%s: %d messages read early for run %d dropped: this process did not "
                        "begin that run (early_messages_outside_run)", self.name,
                        self.hold.outside_run, self.hold.run)
        self._count()

    def _stop_source(self) -> None:
        """Stop reading; what the source had already taken is dropped (counted by the hold
        with the reason). If the catch-up had prepared the run, the source is prepared again
        (after its stop, as for a run), so the begin finds it where a prepare leaves it."""
        self.source.stop()
        for _ in range(DRAIN_READS):
            msgs = self.source.read(0.0)
            if not msgs:
                break
            self.hold.take(msgs)
        if self.hold.prepared:
            self.source.prepare()

    def _count(self) -> None:
        self.counters.early_messages_outside_run = self.hold.outside_run
        self.counters.early_messages_over_budget = self.hold.over_budget
