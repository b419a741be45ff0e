"""One board as the operator sees it: its network, the software copy of its chips' registers,
and the configuration operations, on a simulated board or a real PACMAN alike.

The software copy (one :class:`~larpixdaq.formats.chipconfig.ChipConfig` per chip key) is
what the operator edits and what is written to the chips; it is also what goes into a run
file's ``configs`` table at the beginning and end of a run. Every operation on the chips
goes through the PACMAN client's code (for a simulated board, the in-process
:class:`~larpixdaq.boards.simclient.SimBoardClient`), so one code path configures both.

Results are plain JSON-able dicts: they travel to operators unchanged.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from larpixdaq.boards.pacman_client import BringUpError, PacmanClient, with_network_registers
from larpixdaq.boards.simclient import SimBoardClient, collect_messages
from larpixdaq.errors import ConfigError, LarpixDaqError
from larpixdaq.formats.chipconfig import ChipConfig, config_write_targets, load_chip_json
from larpixdaq.formats.chipkey import is_chip_key, parse_chip_key
from larpixdaq.formats.network import Network, load_network
from larpixdaq.formats.registers import FIELD_NAMES

_KEY_IN_NAME = re.compile(r"(?<![0-9])([0-9]{1,3}-[0-9]{1,3}-[0-9]{1,3})(?![0-9])")
_ELEMENT = re.compile(r"^([a-z_0-9]+)\[([0-9]+)\]$")


class BoardActionError(LarpixDaqError):
    """A configuration request named an unknown chip or register, a bad value, or the board
    cannot do what was asked (no network loaded, no board at all)."""


def _diff_plain(diff: Mapping[str, tuple[Any, Any]]) -> dict[str, list[Any]]:
    return {name: [mine, theirs] for name, (mine, theirs) in diff.items()}


class BoardSession:
    """The configuration face of one board (see module doc).

    ``client`` is the board's PACMAN client (a :class:`SimBoardClient` for a simulated board)
    or None for a source with no board (file replay): then every operation says so.
    ``lock`` guards a real board's sockets against the data loop; it is held for the length
    of one operation (a simulated board's client takes its own lock step by step instead).
    """

    def __init__(self, client: PacmanClient | None, io_group: int, *, kind: str = "pacman",
                 lock: threading.Lock | threading.RLock | None = None) -> None:
        self.client = client
        self.io_group = int(io_group)
        self.kind = kind
        self.lock = lock if lock is not None else threading.RLock()
        self.network: Network | None = None
        self.network_source = ""
        self.configs: dict[str, ChipConfig] = {}
        self.counters: Counter[str] = Counter()
        #: Called with the chip keys and the register addresses (None: all) after every
        #: configuration write that succeeded (the producer keeps its configuration of
        #: record and the run's record of writes).
        self.on_write: Callable[[list[str], list[int] | None], None] | None = None
        #: Called with the chip keys of this io_group after a bring-up reset its chips (to
        #: power-on values: whatever was written to them before no longer holds).
        self.on_reset: Callable[[list[str]], None] | None = None

    # ---- board and network -----------------------------------------------------------------
    @classmethod
    def for_sim(cls, board: Any, lock: threading.Lock | threading.RLock | None = None,
                adopt: bool = True,
                on_message: Callable[[bytes], None] | None = None) -> BoardSession:
        """A session on a simulated board with its own network loaded; with ``adopt`` the
        software copy starts as what the chips hold now (a board set up directly).
        ``on_message`` receives every data message the board sends during operations."""
        client = SimBoardClient(board, lock, on_message=on_message)
        s = cls(client, board.io_group, kind="sim", lock=client.lock)
        s.load_network(board.network_config(), source="simulated board")
        if adopt:
            with client.lock:
                regs = np.asarray(board.chips.registers, dtype=np.uint8).copy()
                io_ch = board.chips.io_channel.copy()
                ids = board.chips.design_id.copy()
            adopted = {}
            for ch, cid, r in zip(io_ch, ids, regs, strict=True):
                key = f"{s.io_group}-{int(ch)}-{int(cid)}"
                if key in s.configs:
                    adopted[key] = ChipConfig.from_registers(r, strict=False)
            # a chip not brought up yet still needs its id and links in the software copy
            assert s.network is not None
            s.configs.update(with_network_registers(adopted, s.network))
        return s

    def _op(self) -> contextlib.AbstractContextManager[Any]:
        if isinstance(self.client, SimBoardClient):
            return contextlib.nullcontext()
        return self.lock

    def _need_client(self, what: str) -> PacmanClient:
        if self.client is None:
            self.counters["no_board"] += 1
            raise BoardActionError(f"cannot {what}: this producer has no board (a file replay)")
        return self.client

    def _need_network(self, what: str) -> Network:
        if self.network is None:
            self.counters["no_network"] += 1
            raise BoardActionError(f"cannot {what}: no network loaded; use load_board first")
        return self.network

    def info(self) -> dict[str, Any]:
        """What an operator needs to pick this board: io_group, kind, chips known."""
        return {"io_group": self.io_group, "kind": self.kind,
                "network": self.network_source, "chips": sorted(self.configs, key=_key_order),
                "n_chips": len(self.configs),
                "io_channels": sorted({parse_chip_key(k)[1] for k in self.configs})}

    def load_network(self, network: str | Path | Mapping[str, Any] | Network,
                     source: str = "") -> list[str]:
        """Take ``network`` as this board's; the software copy becomes one configuration per
        chip on this io_group: the chip's current copy if it had one, else power-on values,
        with the chip id and link registers the bring-up sets."""
        try:
            net = network if isinstance(network, Network) else load_network(network)
        except (ConfigError, OSError) as exc:
            self.counters["bad_network"] += 1
            raise BoardActionError(f"cannot load network {source or network}: {exc}") from None
        keys = [k for k in net.chip_keys() if parse_chip_key(k)[0] == self.io_group]
        if not keys:
            self.counters["bad_network"] += 1
            groups = sorted({g for g, _ in net.io_channels()})
            raise BoardActionError(f"network {source or '<dict>'} has no chips on io_group "
                                   f"{self.io_group} (it has io_group(s) {groups})")
        fresh = {k: self.configs.get(k, ChipConfig()) for k in keys}
        self.configs = with_network_registers(fresh, net)
        self.network = net
        self.network_source = str(source)
        return keys

    def load_board(self, network: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
        """Load a hydra network (a file path or dict; None: a simulated board's own)."""
        if network is None:
            board = getattr(self.client, "board", None)
            if board is None:
                self.counters["bad_network"] += 1
                raise BoardActionError("load_board needs a network file for a PACMAN board")
            network, name = board.network_config(), "simulated board"
        else:
            name = str(network) if not isinstance(network, Mapping) else "<dict>"
        self.load_network(network, source=name)
        return self.info()

    # ---- chips -----------------------------------------------------------------------------
    def keys(self, chip_keys: str | Iterable[str] | None) -> list[str]:
        """The chips a request names (one key, a list, or None for all), all known."""
        if chip_keys is None or chip_keys == "" or chip_keys == []:
            return sorted(self.configs, key=_key_order)
        keys = [chip_keys] if isinstance(chip_keys, str) else list(chip_keys)
        bad = [k for k in keys if not isinstance(k, str) or not is_chip_key(k)]
        if bad:
            self.counters["bad_chip_keys"] += 1
            raise BoardActionError(f"bad chip key(s) {bad}: a chip key is "
                                   "'<io_group>-<io_channel>-<chip_id>', e.g. '1-1-11'")
        unknown = [k for k in keys if k not in self.configs]
        if unknown:
            self.counters["unknown_chips"] += 1
            known = sorted(self.configs, key=_key_order)
            shown = ", ".join(known[:6]) + (f" ... ({len(known)} chips)" if len(known) > 6
                                             else "")
            raise BoardActionError(f"unknown chip(s) {', '.join(unknown)} on io_group "
                                   f"{self.io_group}; known: {shown or 'none (load_board first)'}")
        return keys

    @staticmethod
    def _one(chip_keys: Any, keys: list[str]) -> str | None:
        return keys[0] if isinstance(chip_keys, str) and len(keys) == 1 else None

    def retrieve(self, chip_keys: str | Iterable[str] | None = None) -> dict[str, Any]:
        """The software copy as register values by name."""
        keys = self.keys(chip_keys)
        out: dict[str, Any] = {"chips": {k: self.configs[k].to_dict() for k in keys}}
        one = self._one(chip_keys, keys)
        if one:
            out.update(chip=one, registers=out["chips"][one])
        return out

    def update(self, updates: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Change the software copy: ``{chip_key: {register: value}}``, all or nothing.

        A register is a field name (``threshold_global``) or one element of a list field
        (``pixel_trim_dac[3]``).
        """
        if not isinstance(updates, Mapping) or not all(
                isinstance(v, Mapping) for v in updates.values()):
            self.counters["bad_updates"] += 1
            raise BoardActionError("updates must be {chip_key: {register_name: value}}")
        keys = self.keys(list(updates))
        trial: dict[str, ChipConfig] = {}
        for key in keys:
            cfg = self.configs[key].copy()
            for name, value in updates[key].items():
                m = _ELEMENT.match(str(name))
                base = m.group(1) if m else str(name)
                if base not in FIELD_NAMES:
                    self.counters["unknown_registers"] += 1
                    raise BoardActionError(f"{key}: unknown register {name!r}; see "
                                           "larpix-v2 register names, e.g. threshold_global")
                try:
                    cfg.set_value(base, value, index=int(m.group(2)) if m else None)
                except ConfigError as exc:
                    self.counters["bad_values"] += 1
                    raise BoardActionError(f"{key}: {exc}") from None
            trial[key] = cfg
        changed = {k: sorted(self.configs[k].diff(trial[k])) for k in keys}
        self.configs.update(trial)
        self.counters["updates"] += 1
        return {"updated": changed}

    def load_configuration(self, path: str | Path,
                           chip_keys: str | Iterable[str] | None = None) -> dict[str, Any]:
        """Chip configuration JSON files into the software copy.

        A file whose name holds a chip key (``config-1-2-11.json``) applies to that chip; any
        other file to ``chip_keys`` (default: every chip). A directory: each ``*.json`` in
        it. The chip id and link registers the network needs are kept, so the result can be
        written to a running network as is.
        """
        p = Path(path)
        if not p.exists():
            self.counters["bad_files"] += 1
            raise BoardActionError(f"no such file or directory: {p}")
        files = sorted(p.glob("*.json")) if p.is_dir() else [p]
        if not files:
            self.counters["bad_files"] += 1
            raise BoardActionError(f"{p} holds no *.json chip configuration files")
        trial = {k: c.copy() for k, c in self.configs.items()}
        applied: dict[str, str] = {}
        for f in files:
            try:
                data = load_chip_json(f)
                cfg = ChipConfig.from_json_dict(data, source=str(f))
            except ConfigError as exc:
                self.counters["bad_files"] += 1
                raise BoardActionError(str(exc)) from None
            named = _KEY_IN_NAME.search(f.name)
            targets = [named.group(1)] if named else self.keys(chip_keys)
            for key in self.keys(targets):
                trial[key] = cfg.copy()
                applied[key] = f.name
        if self.network is not None:
            trial.update(with_network_registers({k: trial[k] for k in applied}, self.network))
        self.configs = trial
        return {"loaded": dict(sorted(applied.items(), key=lambda kv: _key_order(kv[0])))}

    # ---- operations on the board -------------------------------------------------------------
    def bring_up(self, reset: bool = True) -> Generator[dict[str, Any], None, dict[str, Any]]:
        """Bring the network up io_channel by io_channel; progress after each one."""
        client = self._need_client("bring up the network")
        net = self._need_network("bring up the network")
        channels = sorted(c for g, c in net.io_channels() if g == self.io_group)
        if not channels:
            raise BoardActionError(f"the network has no chips on io_group {self.io_group}")
        with self._op():
            client.enable_channels(channels)
            if reset:
                client.reset_chips()
                if self.on_reset is not None:
                    self.on_reset([k for k in net.chip_keys()
                                   if parse_chip_key(k)[0] == self.io_group])
        up: list[str] = []
        failed: dict[str, str] = {}
        for i, ch in enumerate(channels):
            sub = _channel_network(net, self.io_group, ch)
            t0 = time.monotonic()
            try:
                with self._op():
                    keys = client.bring_up(sub, reset=False)
            except BringUpError as exc:
                self.counters["bring_up_failures"] += 1
                failed[str(ch)] = str(exc)
                yield {"io_channel": ch, "ok": False, "error": str(exc), "done": i + 1,
                       "of": len(channels)}
                continue
            up.extend(keys)
            yield {"io_channel": ch, "ok": True, "chips": len(keys), "done": i + 1,
                   "of": len(channels), "seconds": round(time.monotonic() - t0, 3)}
        self.counters["bring_ups"] += 1
        result = {"chips_up": len(up), "io_channels": channels, "failed": failed}
        if failed:
            raise BringUpError(f"bring-up failed on io_channel(s) {', '.join(failed)}: "
                               + "; ".join(failed.values()))
        return result

    def write(self, chip_keys: str | Iterable[str] | None = None,
              registers: Iterable[str | int] | None = None) -> dict[str, Any]:
        """Write the software copy of these chips to them (all registers, or only those of
        ``registers``: field names or addresses)."""
        client = self._need_client("write configurations")
        keys = self.keys(chip_keys)
        addrs = None
        if registers is not None:
            try:
                addrs = [a for a, _ in config_write_targets(ChipConfig(), list(registers))]
            except ConfigError as exc:
                self.counters["unknown_registers"] += 1
                raise BoardActionError(str(exc)) from None
        with self._op():
            n = client.write_configs({k: self.configs[k] for k in keys}, registers=addrs)
        self.counters["chips_written"] += len(keys)
        if self.on_write is not None:
            self.on_write(keys, addrs)
        return {"written": keys if len(keys) <= 16 else len(keys), "packets": n}

    def read(self, chip_keys: str | Iterable[str] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Read these chips' registers back (by name); the software copy is left alone."""
        client = self._need_client("read configurations")
        keys = self.keys(chip_keys)
        with self._op():
            regs = client.read_configs(keys, timeout=timeout)
        self.counters["chips_read"] += len(keys)
        out: dict[str, Any] = {"chips": {
            k: ChipConfig.from_registers(regs[k], strict=False).to_dict() for k in keys}}
        one = self._one(chip_keys, keys)
        if one:
            out.update(chip=one, registers=out["chips"][one])
        return out

    def validate(self, chip_keys: str | Iterable[str] | None = None,
                 timeout: float | None = None) -> dict[str, Any]:
        """Read the chips back and compare with the software copy, register by name."""
        client = self._need_client("verify configurations")
        keys = self.keys(chip_keys)
        with self._op():
            res = client.verify_configs({k: self.configs[k] for k in keys}, timeout=timeout)
        diffs = {k: _diff_plain(d) for k, d in res.differences.items()}
        if not res.ok:
            self.counters["verify_mismatches"] += 1
        one = self._one(chip_keys, keys)
        return {
            "match": bool(res.ok),
            "differences": diffs.get(one, {}) if one else diffs,
            "missing": {k: len(v) for k, v in res.missing.items()},
            "summary": _short_summary(res.differences, res.missing),
            "chips": len(keys),
        }

    def collect(self, seconds: float, stop: threading.Event | None = None) -> list[bytes]:
        """The board's data messages over ``seconds`` (simulated seconds on a simulated board)."""
        client = self._need_client("read data")
        if isinstance(client, SimBoardClient):
            return client.collect(seconds)
        with self.lock:
            return collect_messages(client, seconds, stop)

    def config_rows(self, chip_keys: Iterable[str] | None = None) -> np.ndarray:
        """The software copy (of ``chip_keys``, or every chip) as ``configs`` rows (for the
        run file)."""
        from larpixdaq.formats.rows import CONFIGS_DTYPE

        keys = sorted(self.configs if chip_keys is None else
                      [k for k in chip_keys if k in self.configs], key=_key_order)
        rows = np.zeros(len(keys), dtype=CONFIGS_DTYPE)
        if not keys:
            return rows
        parts = np.array([parse_chip_key(k) for k in keys], dtype=np.int64)
        rows["timestamp"] = int(time.time())
        rows["io_group"] = parts[:, 0]
        rows["io_channel"] = parts[:, 1]
        rows["chip_id"] = parts[:, 2]
        regs = np.stack([self.configs[k].to_registers() for k in keys])
        rows["registers"][:, : regs.shape[1]] = regs
        return rows


def _short_summary(differences: Mapping[str, Any], missing: Mapping[str, Any],
                   shown: int = 4) -> str:
    """One line, however many chips differ."""
    if not differences and not missing:
        return "all configurations match"
    parts = [f"{k}: {', '.join(sorted(d))}" for k, d in list(differences.items())[:shown]]
    if len(differences) > shown:
        parts.append(f"{len(differences) - shown} more chip(s) differ")
    if missing:
        first = ", ".join(list(missing)[:shown])
        more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
        parts.append(f"{len(missing)} chip(s) did not answer ({first}{more})")
    return "; ".join(parts)


def _key_order(key: str) -> tuple[int, int, int]:
    try:
        return parse_chip_key(key)
    except ConfigError:
        return (999, 999, 999)


def _channel_network(net: Network, io_group: int, io_channel: int) -> Network:
    """The part of ``net`` on one io_channel (bring-up one UART at a time)."""
    d = net.to_dict()
    group = d["network"][str(io_group)]
    for key in [k for k in group if k.isdigit() and int(k) != io_channel]:
        del group[key]
    for key in [k for k in d["network"] if k.isdigit() and int(k) != io_group]:
        del d["network"][key]
    return load_network(json.loads(json.dumps(d)))
