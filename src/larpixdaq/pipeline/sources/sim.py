"""The simulated board as a producer's source.

Its DATA words are packed into messages of ``words_per_message`` words at ``rate``
packets/s (0: as fast as it goes), or, with ``rate="physics"``, at the rate its physics
and configuration give (thresholds, masks, test pulses), its time kept to the wall clock.
``pool`` > 0 pre-generates that many messages and sends them round and round, so a
benchmark measures the data path rather than the physics model.

Apart from the pool, the messages carry the board's SYNC words (one per simulated second)
and, with a ``beam``, its spills' TRIG words where they fall. At a fixed rate the simulated
time runs at that rate's pace, not the wall clock's: a board sending 8 times its physics rate
sends 8 SYNCs and 8 x (1 / beam period) spills per second; ``rate="physics"`` keeps both to
the wall clock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from larpixdaq.boards.beam import Beam
from larpixdaq.boards.session import BoardSession
from larpixdaq.formats.pacman import encode_data_message
from larpixdaq.formats.rows import CONFIGS_DTYPE
from larpixdaq.pipeline.sources import Source

DEFAULT_WORDS_PER_MESSAGE = 4096

PHYSICS_RATE = "physics"
"""``SimSource(rate=PHYSICS_RATE)``: the simulated board sends at the rate its physics and
configuration give, not at a rate fixed by the operator."""
PHYSICS_STEP = 0.01
MAX_PHYSICS_STEP = 0.5


class SimSource(Source):
    """Messages from a :class:`~larpixdaq.boards.simboard.SimulatedBoard` (see module doc)."""

    def __init__(self, io_group: int = 1, *, rate: float | str = 0.0, seed: int = 0,
                 words_per_message: int = DEFAULT_WORDS_PER_MESSAGE, tiles: int = 1,
                 pool: int = 0, clock: Callable[[], float] = time.monotonic,
                 detector: str | None = None, beam: Beam | None = None) -> None:
        """``rate``: packets per second (0: as fast as possible), or ``"physics"``: the
        board's own rate, which follows its configuration (thresholds, masks, test pulses),
        with simulated time kept to the wall clock. ``detector``: simulate ``io_group`` of
        this detector (a packaged name or a layout file) instead of ``tiles`` standard tiles.
        ``beam``: spills, their activity and (if wired on this board) their TRIG words."""
        from larpixdaq.boards.simboard import SimulatedBoard
        from larpixdaq.geometry import load_detector

        self.io_group = io_group
        self.physics = rate == PHYSICS_RATE
        self.rate = 0.0 if self.physics else float(rate)
        self.runs_on_its_own = self.physics or self.rate > 0
        self._clock = clock
        self.words_per_message = int(words_per_message)
        if detector is None:
            self.board = SimulatedBoard(io_group, tiles=tiles, seed=seed,
                                        beam=beam).bring_up_all()
        else:
            self.board = SimulatedBoard.for_detector(load_detector(detector), io_group,
                                                     seed=seed, beam=beam).bring_up_all()
        # The board is shared with configuration actions and routines (another thread).
        self.lock = threading.RLock()
        self._pool = [self._make(self.words_per_message) for _ in range(pool)]
        self._pool_at = 0
        self._t_last = time.monotonic()
        self._budget = 0.0
        # Messages the board sent while a configuration action advanced its time.
        self._operations_output: deque[bytes] = deque()
        self._flowing = False
        self._prepared = False
        self.operations_messages_dropped = 0

    def board_output(self, message: bytes) -> None:
        """Data the board sent during a configuration action or routine: part of the run
        once it is prepared (as a real board's would be); outside READY/RUN nothing is
        recorded, and those messages are counted."""
        if self._flowing or self._prepared:
            self._operations_output.append(message)
        else:
            self.operations_messages_dropped += 1

    def prepare(self) -> None:
        self._prepared = True

    def pending(self) -> list[bytes]:
        out = []
        while self._operations_output:
            out.append(self._operations_output.popleft())
        return out

    def _make(self, n: int, markers: bool = False) -> bytes:
        """One message of ``n`` data words (with ``markers``: those generated, with the SYNC
        and TRIG words among them, which may be a few more)."""
        with self.lock:
            words = self.board.generate_packets(n, markers=markers)
        return encode_data_message(int(time.time()), words if markers else words[:n])

    def start(self) -> None:
        self._t_last = self._clock()
        self._budget = 0.0
        self._flowing = True

    def stop(self) -> None:
        self._flowing = False
        self._prepared = False

    def read(self, wait: float) -> list[bytes]:
        if self._operations_output:
            return self.pending()
        if self.physics:
            return self._read_physics(wait)
        n_msgs = 8
        if self.rate > 0:
            now = time.monotonic()
            self._budget = min(self._budget + (now - self._t_last) * self.rate,
                               self.rate * 0.5 + self.words_per_message)
            self._t_last = now
            n_msgs = int(self._budget // self.words_per_message)
            if n_msgs == 0:
                # Low rates: send what has accumulated after a short wait, in smaller messages.
                time.sleep(min(wait, self.words_per_message / self.rate))
                now = time.monotonic()
                self._budget += (now - self._t_last) * self.rate
                self._t_last = now
                n = int(min(self._budget, self.words_per_message))
                if n <= 0:
                    return []
                self._budget -= n
                return [self._make(n, markers=True)]
            self._budget -= n_msgs * self.words_per_message
        if self._pool:
            out = []
            for _ in range(n_msgs):
                out.append(self._pool[self._pool_at])
                self._pool_at = (self._pool_at + 1) % len(self._pool)
            return out
        with self.lock:
            words = self.board.generate_packets(n_msgs * self.words_per_message, markers=True)
        stamp = int(time.time())
        k = self.words_per_message
        return [encode_data_message(stamp, words[i:i + k]) for i in range(0, len(words), k)]

    def _read_physics(self, wait: float) -> list[bytes]:
        """Everything the board sent since the last read, its time advanced to the wall
        clock (at most ``MAX_PHYSICS_STEP`` at once: after a long stall the simulation
        falls behind the wall clock rather than losing what it would have sent)."""
        dt = self._clock() - self._t_last
        if dt < PHYSICS_STEP:
            time.sleep(max(0.0, min(wait, PHYSICS_STEP - dt)))
            dt = self._clock() - self._t_last
        dt = min(dt, MAX_PHYSICS_STEP)
        if dt <= 0:
            return []
        self._t_last += dt
        with self.lock:
            words = self.board.generate(dt)
        stamp = int(time.time())
        k = self.words_per_message
        return [encode_data_message(stamp, words[i:i + k]) for i in range(0, len(words), k)]

    def session(self) -> BoardSession:
        """The board's operations; what the board sends meanwhile goes to
        :meth:`board_output`."""
        return BoardSession.for_sim(self.board, self.lock, on_message=self.board_output)

    def ignores_configuration(self, run_number: int) -> str | None:
        if self.physics:
            return None
        return (f"the simulated board sends at a fixed rate in run {run_number}, "
                "not at the rate its configuration gives; end the run first, or take "
                "runs with --sim-rate physics")

    def counters(self) -> dict[str, int]:
        return {"board_messages_outside_run": self.operations_messages_dropped}

    def configs(self) -> np.ndarray:
        """The chips' registers now, as ``configs`` rows (the run's configuration snapshot)."""
        chips = self.board.chips
        with self.lock:
            regs = np.asarray(chips.registers, dtype=np.uint8).copy()
        rows = np.zeros(chips.n, dtype=CONFIGS_DTYPE)
        rows["timestamp"] = int(time.time())
        rows["io_group"] = self.io_group
        rows["io_channel"] = chips.io_channel
        rows["chip_id"] = chips.design_id
        rows["registers"][:, : regs.shape[1]] = regs
        return rows
