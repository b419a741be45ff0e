"""Which streams belong to a run: the producers the core admitted, their io_groups, epochs.

Pure: no sockets, no clock; randomness is passed in. The core mints the table when a run is
prepared (:func:`mint`), keeps it with the run (the run database and the run info every
component is told), and the aggregator and storage refuse every frame the table does not
know (:meth:`AdmittedStreams.refusal`). Without it, any process that reaches the aggregator's
inlet and speaks the protocol writes into the run file.

Epochs. A producer starts a new stream (a new ``epoch``) at every prepare and every restart,
and a restarted process must not reuse an epoch (its ``seq`` starts again at 0, which would
read as duplicates). The core cannot hand out one epoch per restart ahead of time, so it
gives each admitted source an *epoch block*: a random base whose low :data:`EPOCH_LOW_BITS`
bits are zero. The producer picks its epoch inside its block at random (a restarted process
picks another one with odds of ``2**-EPOCH_LOW_BITS`` of meeting its predecessor's), and
the aggregator and storage accept an epoch only inside the block of its source. The high
bits are secret to the run's components: a process that was not told the table cannot guess
a valid epoch (one chance in ``2**EPOCH_BLOCK_BITS``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PRODUCER_ROLE = "producer"
"""The role whose components are admitted (one stream source each)."""
EPOCH_BITS = 62
"""Epochs are below ``2**62`` (what every receiver's int64 arithmetic holds)."""
EPOCH_LOW_BITS = 20
"""Bits of an epoch a producer picks itself, inside the block the core gave its source."""
EPOCH_BLOCK_BITS = EPOCH_BITS - EPOCH_LOW_BITS
_LOW_MASK = (1 << EPOCH_LOW_BITS) - 1


def mint(producers: Mapping[str, int | None], randbits: Callable[[int], int]) -> dict[str, list]:
    """The table of a new run: ``{source: [io_group, epoch_base]}`` for each producer name.

    ``producers`` maps each registered producer to the io_group it said at registration (None
    if it said none: then no io_group is accepted from it). ``randbits(k)`` gives ``k``
    random bits (``secrets.randbits``; a test passes its own).
    """
    return {source: [io_group, randbits(EPOCH_BLOCK_BITS) << EPOCH_LOW_BITS]
            for source, io_group in producers.items()}


def epoch_in_block(base: int, randbits: Callable[[int], int]) -> int:
    """A producer's epoch for this stream: inside the block ``base`` its source was given."""
    return (base & ~_LOW_MASK) | randbits(EPOCH_LOW_BITS)


def parse(table: Any) -> dict[str, tuple[int | None, int]]:
    """A table as it travels (a run info's ``admitted``) checked: ``{source: (io_group,
    base)}``; entries that are not ``[int or None, int]`` are left out (never admitted)."""
    out: dict[str, tuple[int | None, int]] = {}
    if not isinstance(table, Mapping):
        return out
    for source, entry in table.items():
        if not isinstance(source, str) or not isinstance(entry, (list, tuple)) or len(entry) != 2:
            continue
        io_group, base = entry
        if isinstance(io_group, bool) or isinstance(base, bool) or not isinstance(base, int):
            continue
        if io_group is not None and not isinstance(io_group, int):
            continue
        out[source] = (io_group, base & ~_LOW_MASK)
    return out


@dataclass(frozen=True)
class AdmittedStreams:
    """One run's admission table, and the check every frame of that run passes.

    ``run_number``: the run whose frames are accepted (a frame of another run is refused);
    ``sources``: ``{source: (io_group, epoch_base)}``.
    """

    run_number: int
    sources: Mapping[str, tuple[int | None, int]]

    @classmethod
    def from_run(cls, run_number: int, table: Any) -> AdmittedStreams | None:
        """The check for a run from its info's table; None (admit any, as without run
        control) when the table is empty: a run prepared with no producer registered, or a
        run info built by hand (a storage resuming from its journal, a test)."""
        return cls(int(run_number), parse(table)) if table else None

    def refusal(self, source: str, epoch: int, io_group: int, run: int) -> str | None:
        """Why a frame with this header does not belong to the run, or None if it does.

        The reason names the field that is wrong, so a log line says what was forged or
        misconfigured (the first of ``run``, ``source``, ``io_group``, ``epoch``).
        """
        if run != self.run_number:
            return f"run {run} is not run {self.run_number}"
        entry = self.sources.get(source)
        if entry is None:
            return f"source {source[:64]!r} was not admitted to run {self.run_number}"
        want_io_group, base = entry
        if io_group != want_io_group:
            return (f"io_group {io_group} is not {source}'s ({want_io_group}) in run "
                    f"{self.run_number}")
        if epoch & ~_LOW_MASK != base:
            return f"epoch {epoch} is not in {source}'s block for run {self.run_number}"
        return None
