"""The producer under run control: the transitions drive its :class:`~.producer.Producer`,
the board's configuration and routines are its actions, and what the data thread finds
(a hole in the data, a dead predecessor's files) becomes an incident of the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from larpixdaq.pipeline import gapmark
from larpixdaq.pipeline.boardactions import BoardActions
from larpixdaq.pipeline.producer import Producer
from larpixdaq.runcontrol import admitted
from larpixdaq.runcontrol.component import Component
from larpixdaq.runcontrol.messages import RunInfo


class ProducerComponent(Component):
    """A producer under run control: data flows from prepare to end; the board's
    configuration and routines are its actions (a :class:`BoardActions`, see
    :mod:`larpixdaq.pipeline.boardactions`)."""

    role = "producer"

    def __init__(self, name: str, core: str, producer: Producer, *,
                 routine_dirs: Iterable[str | Path] = (), **kw: Any) -> None:
        super().__init__(name, core, **kw)
        self.producer = producer
        self.io_group = producer.io_group
        if producer.keys is None:  # the data path with the component's keys
            producer.keys = self._keys
        self._unsent_before = 0.0  # messages_unsent when this run was prepared
        self._gaps_before = 0  # data_gaps when this run was prepared
        self._orphans_told = False
        producer.on_gap = lambda text, data: self.notice(text, **data)
        producer.on_stale = lambda text, data: self.notice(text, **data)
        self._before_begin_base = 0
        self._restored: dict[str, Any] | None = None  # what start() re-applied, until told
        self.board = BoardActions(producer, name=name, log=self.log,
                                  routine_dirs=routine_dirs)
        self.register_actions_of(self.board)

    def counters(self) -> dict[str, Any]:
        return {**self.producer.snapshot(), **self.board.counters()}

    def on_prepare(self, run: RunInfo) -> dict | None:
        if self.board.restore_problem:
            raise RuntimeError(f"{self.board.restore_problem}; write the configuration "
                               "again before taking data")
        self._unsent_before = self.producer.counters.messages_unsent
        self._gaps_before = self.producer.counters.data_gaps
        self._before_begin_base = self.producer.counters.messages_before_begin
        block = admitted.parse(run.admitted).get(self.name)
        if block is None and run.admitted:
            self.log.warning("%s was not admitted to run %d (it registered after the run was "
                             "prepared): its frames will be refused", self.name, run.run_number)
        self.producer.prepare(run.run_number, None if block is None else block[1])
        if self._restored is not None and self._restored.get("chips"):
            # Once: the first run this process takes part in says where its settings came from.
            self.producer.send_info(f"config of record re-applied: {self._restored['chips']} "
                                    "chips")
            self._restored = None
        return None

    def on_begin(self, run: RunInfo) -> dict | None:
        self.producer.begin()
        orphans = self.producer.orphaned_spills
        if orphans and not self._orphans_told:  # once, in the first run this process joins
            self._orphans_told = True
            self.notice(gapmark.orphan_text(self.name, orphans),
                        files=[str(p) for p in orphans])
        return None

    def on_end(self, run: RunInfo | None) -> dict | None:
        counters = self.producer.end()
        # What this run read from the board and never sent (the total covers every run).
        unsent = self.producer.counters.messages_unsent - self._unsent_before
        early = self.producer.counters.messages_before_begin - self._before_begin_base
        return {"counters": {**counters, **self.board.counters(),
                             "run_messages_unsent": unsent,
                             "run_data_gaps": self.producer.counters.data_gaps
                             - self._gaps_before,
                             "run_messages_before_begin": early}}

    def start(self) -> ProducerComponent:
        # First: a process taking over a dead one's stream reads its board from now on
        # (see earlyread), while the configuration is re-applied and it registers.
        self.producer.start()
        # Before registering, so the chips hold their recorded settings before this process
        # takes part in any run (a restart must not fall back to power-on values unnoticed).
        restored = self.board.restore_configuration()
        if restored is not None:
            self._restored = restored
            if restored["ok"]:
                self.log.warning("re-applied the configuration of record to %d chip(s) and "
                                 "verified it (%s)", restored.get("chips", 0),
                                 restored.get("record", ""))
            else:
                self.log.error("%s", self.board.restore_problem)
        super().start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.board.abort_routine("the producer is shutting down")
        super().stop(timeout)
        self.producer.stop()
