"""A board that outlives its producer, and the record of everything it published.

A simulated board inside a producer dies with it, so what that producer "had read" cannot be
told apart from what no DAQ could have kept. Here the board is a PACMAN emulator (a
``SimulatedBoard`` at a fixed rate) in the harness's own process, and a SUB socket of ours,
connected before the run, records every data message it publishes: the truth, against which
a run's files are checked (:mod:`larpixdaq.pipeline.gapcheck`).

The emulator is paused around the run's beginning and end (:meth:`BoardTruth.hold`), so the
run's stretch of the truth is exactly what was published between the two holds, and a
producer reads everything the board published from the first message after the beginning
to the last before the end. At each hold the recording is checked against the emulator's own
counters: a message the recorder did not get would make the truth wrong, so it fails loudly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import zmq


class TruthError(RuntimeError):
    """The recording is not what the board published: no check against it can be trusted."""


@dataclass(frozen=True)
class Stretch:
    """The messages a board published between two holds, as the checker wants them."""

    messages: list[bytes]
    rows: np.ndarray  # their rows but MESSAGE (per message its TIMESTAMP, then its words)
    of_message: np.ndarray  # the message of each row
    times: np.ndarray  # each message's header time (UNIX s)
    words: np.ndarray  # each message's PACMAN words
    arrived: np.ndarray  # when the recorder got each message (UNIX s, this host's clock)


class BoardTruth:
    """One board (io_group ``io_group``, ``rate`` packets/s) and its recorder."""

    def __init__(self, io_group: int, rate: float, *, seed: int | None = None,
                 message_words: int = 1000) -> None:
        from larpixdaq.boards.pacman_emulator import PacmanEmulator
        from larpixdaq.boards.simboard import SimulatedBoard

        board = SimulatedBoard(io_group, seed=io_group if seed is None else seed)
        self.io_group = io_group
        self.emulator = PacmanEmulator(board.bring_up_all(), cmd_port=0, data_port=0,
                                       echo_port=0, rate=rate, message_words=message_words)
        self.messages: list[bytes] = []
        self.arrived: list[float] = []  # time.time() as each message was recorded
        self._stop = threading.Event()
        self._sub: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._marks: list[tuple[int, int, int]] = []  # (index in messages, messages, words)

    def start(self, timeout: float = 20.0) -> BoardTruth:
        """Serve the board, subscribe, and return once the recorder has its first message
        (from then on, nothing the board publishes is missed), with the data held."""
        self.emulator.start()
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 0)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.emulator.data_endpoint)
        self._sub = sub
        self._thread = threading.Thread(target=self._record, name=f"truth-{self.io_group}",
                                        daemon=True)
        self._thread.start()
        self._wait(lambda: len(self.messages) > 0, timeout, "no data message from the board")
        self.hold(timeout)
        return self

    @property
    def board(self) -> str:
        """The ``--board`` value a producer reads this board with."""
        cmd = self.emulator.cmd_endpoint.rsplit(":", 1)[1]
        data = self.emulator.data_endpoint.rsplit(":", 1)[1]
        return f"pacman:127.0.0.1:{cmd}:{data}"

    def _record(self) -> None:
        sub = self._sub
        while not self._stop.is_set():
            if sub.poll(50):
                while True:
                    try:
                        msg = sub.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.arrived.append(time.time())
                    self.messages.append(msg)

    @staticmethod
    def _wait(cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TruthError(f"{what} within {timeout:g} s")
            time.sleep(0.01)

    def hold(self, timeout: float = 60.0) -> None:
        """Pause the board's data; return once the recorder has everything it published,
        and check that (the count of messages and words since the last hold)."""
        from larpixdaq.formats.pacman import HEADER_BYTES, WORD_BYTES

        emu = self.emulator
        emu.pause()
        last = emu.last_message
        self._wait(lambda: bool(self.messages) and self.messages[-1] == last, timeout,
                   f"io_group {self.io_group}: the recorder did not get the board's last "
                   f"message ({len(self.messages)} recorded, {emu.counters['data_messages']} "
                   "published)")
        mark = (len(self.messages), emu.counters["data_messages"], emu.counters["data_words"])
        if self._marks:
            i, n, w = self._marks[-1]
            got = self.messages[i:]
            words = sum((len(m) - HEADER_BYTES) // WORD_BYTES for m in got)
            if len(got) != mark[1] - n or words != mark[2] - w:
                raise TruthError(
                    f"io_group {self.io_group}: the board published {mark[1] - n} messages "
                    f"({mark[2] - w} words) since the last hold, the recorder got "
                    f"{len(got)} ({words} words): the truth is incomplete")
        self._marks.append(mark)

    def resume(self) -> None:
        self.emulator.resume()

    def stretch(self, first: int = 0) -> Stretch:
        """What was published between hold number ``first`` and the next one."""
        from larpixdaq.formats.pacman import (
            HEADER,
            HEADER_BYTES,
            WORD_BYTES,
            decode_data_messages,
        )
        from larpixdaq.formats.rows import MESSAGE, TIMESTAMP

        (a, _, _), (b, _, _) = self._marks[first], self._marks[first + 1]
        data = [i for i in range(a, b) if self.messages[i][:1] == b"D"]
        msgs = [self.messages[i] for i in data]
        arrived = np.array([self.arrived[i] for i in data], np.float64)
        rows = decode_data_messages(msgs, self.io_group).rows
        # Rows come per message: its TIMESTAMP row (the header time), then one per word.
        rows = rows[rows["packet_type"] != MESSAGE]
        of_message = np.cumsum(rows["packet_type"] == TIMESTAMP) - 1
        words = np.array([(len(m) - HEADER_BYTES) // WORD_BYTES for m in msgs], np.int64)
        times = np.array([HEADER.unpack_from(m)[1] for m in msgs], np.int64)
        if len(rows) != int(words.sum()) + len(msgs):
            raise TruthError(f"io_group {self.io_group}: {len(msgs)} messages of "
                             f"{int(words.sum())} words decode to {len(rows)} rows")
        return Stretch(msgs, rows, of_message, times, words, arrived)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sub is not None:
            self._sub.close(0)
        self.emulator.stop()
