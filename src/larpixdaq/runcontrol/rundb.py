"""The run database: run numbers, run records and the core's saved state, in SQLite.

A run number is allocated in its own committed transaction *before* anything uses it, and the
table uses ``AUTOINCREMENT``, so a number handed out once is never handed out again: not after
a failed prepare, not after the core crashed, not after rows were deleted by hand.

The core also saves its state here on every change, so that a restarted core knows whether a
run was in progress and carries on with it.

A database that cannot be written (its disk full) must not stop the core: an update that
fails is kept in memory (:attr:`RunDatabase.pending`), shown by every read as if written,
and written with the next update that gets through, so the core carries its runs to the end
and answers; only a new run number, which must be on disk before it is used, is refused
(:class:`RunDatabaseError` with the reason).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from larpixdaq.errors import LarpixDaqError
from larpixdaq.processes import LockHeld, take_pid_lock
from larpixdaq.runcontrol.statemachine import EXIT_STATUSES, State

STORAGE_ROLE = "storage"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_number INTEGER PRIMARY KEY AUTOINCREMENT,
    start_time REAL NOT NULL,
    begin_time REAL,
    end_time REAL,
    state TEXT NOT NULL,
    exit_status TEXT,
    comment TEXT NOT NULL DEFAULT '',
    run_type TEXT NOT NULL DEFAULT 'physics',
    data_dir TEXT NOT NULL DEFAULT '.',
    config_hash TEXT,
    config_snapshot TEXT,
    files TEXT NOT NULL DEFAULT '[]',
    counters TEXT NOT NULL DEFAULT '{}',
    roles TEXT NOT NULL DEFAULT '{}',
    participants TEXT NOT NULL DEFAULT '{}',
    incidents TEXT NOT NULL DEFAULT '[]',
    resolved_incidents TEXT NOT NULL DEFAULT '[]',
    packets_written INTEGER NOT NULL DEFAULT 0,
    packets_lost INTEGER NOT NULL DEFAULT 0,
    end_reason TEXT NOT NULL DEFAULT '',
    prepared_by TEXT,
    begun_by TEXT,
    ended_by TEXT,
    admitted TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    user TEXT,
    role TEXT,
    client TEXT NOT NULL DEFAULT '',
    command TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    accepted INTEGER NOT NULL,
    result TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    end_time REAL
);
CREATE TABLE IF NOT EXISTS core_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
#: Columns added after the first release: (name, declaration) added to older databases.
_ADDED_COLUMNS = (("resolved_incidents", "TEXT NOT NULL DEFAULT '[]'"),
                  ("end_reason", "TEXT NOT NULL DEFAULT ''"),
                  ("prepared_by", "TEXT"), ("begun_by", "TEXT"), ("ended_by", "TEXT"),
                  ("admitted", "TEXT NOT NULL DEFAULT '{}'"))
#: Results of an audit entry: refused at once, or accepted and then how it ended.
AUDIT_RESULTS = ("refused", "accepted", "success", "failed")
AUDIT_PARAMS_LIMIT = 4000  # characters of JSON kept of a request's parameters


class RunDatabaseError(LarpixDaqError):
    """The run database cannot be opened or does not know a run."""


@dataclass
class RunRecord:
    """One run as stored: what it was, when, how it ended, and what each component counted."""

    run_number: int
    start_time: float
    state: str
    begin_time: float | None = None
    end_time: float | None = None
    exit_status: str | None = None
    comment: str = ""
    run_type: str = "physics"
    data_dir: str = "."
    config_hash: str | None = None
    config_snapshot: str | None = None
    files: list[str] = field(default_factory=list)
    counters: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    participants: dict[str, str] = field(default_factory=dict)
    incidents: list[str] = field(default_factory=list)
    #: Indices into ``incidents`` of those that were put right during the run (a lost
    #: component that registered again in time); their text says how.
    resolved_incidents: list[int] = field(default_factory=list)
    packets_written: int = 0
    packets_lost: int = 0
    #: Why the operator ended the run, when they said (e.g. interrupted with Ctrl-C).
    end_reason: str = ""
    #: Who asked for the run's transitions (user names; None: before access control).
    prepared_by: str | None = None
    begun_by: str | None = None
    ended_by: str | None = None
    #: The streams admitted to the run (``{source: [io_group, epoch_base]}``, admitted.py).
    admitted: dict[str, list] = field(default_factory=dict)

    @property
    def unresolved_incidents(self) -> list[str]:
        resolved = set(self.resolved_incidents)
        return [t for i, t in enumerate(self.incidents) if i not in resolved]

    @property
    def storage_reported(self) -> bool:
        """Whether any storage component reported its counters (so packets_lost means
        something)."""
        return STORAGE_ROLE in self.roles.values()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_JSON_COLUMNS = ("files", "counters", "roles", "participants", "incidents",
                 "resolved_incidents", "admitted")


class RunDatabase:
    """The SQLite run database; one connection, used by one thread at a time."""

    def __init__(self, path: str | Path, *, exclusive: bool = False) -> None:
        self.path = Path(path)
        self._lock: Any = None
        #: Updates the disk did not take yet: run number -> column -> value (as stored).
        self.pending: dict[int, dict[str, Any]] = {}
        self._pending_state: str | None = None
        self._pending_audit: dict[int, dict[str, Any]] = {}  # provisional id -> entry
        self._pending_audit_ends: dict[int, dict[str, Any]] = {}  # id -> its final result
        self._audit_ids: dict[int, int] = {}  # provisional id -> the id it was written as
        self._audit_seq = 0
        self.write_errors = 0
        self.last_write_error = ""
        try:
            if self.path.parent != Path(""):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if exclusive:
                self._take_lock()
            # One user at a time, but it may be built in one thread and served in another.
            self._db = sqlite3.connect(str(self.path), isolation_level=None,
                                       check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            # Counters and states survive a crash of the core with NORMAL; run numbers are
            # allocated with FULL (see allocate_run) so they survive a power cut as well.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._add_missing_columns()
        except (sqlite3.Error, OSError) as exc:
            raise RunDatabaseError(f"cannot open the run database {self.path}: {exc}") from None

    def _add_missing_columns(self) -> None:
        """A database written by an older version gets the newer columns (with defaults)."""
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(runs)")}
        for name, declaration in _ADDED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE runs ADD COLUMN {name} {declaration}")

    def _take_lock(self) -> None:
        """One core per database: two would both think they own the run in progress."""
        try:
            self._lock = take_pid_lock(f"{self.path}.lock")  # held for the object's life
        except LockHeld as held:
            raise RunDatabaseError(
                f"the run database {self.path} is in use by another core "
                f"(pid {held.holder}); stop that core or give another --db"
            ) from None

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    # --- runs ---------------------------------------------------------------------------

    def allocate_run(
        self,
        *,
        run_type: str = "physics",
        comment: str = "",
        data_dir: str = ".",
        config_hash: str | None = None,
        config_snapshot: str | None = None,
        start_time: float | None = None,
        state: str = "PREPARING",
    ) -> RunRecord:
        """Hand out the next run number, committed before it is returned."""
        start = time.time() if start_time is None else start_time
        try:
            self._flush_pending()
            if self.unwritten:
                raise sqlite3.OperationalError(self.last_write_error)
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                with self._db:
                    cur = self._db.execute(
                        "INSERT INTO runs (start_time, state, comment, run_type, data_dir,"
                        " config_hash, config_snapshot) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (start, state, comment, run_type, data_dir, config_hash,
                         config_snapshot),
                    )
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            self._failed_write(exc)
            raise RunDatabaseError(
                f"no new run: the run database {self.path} cannot be written ({exc}); "
                "free space there and try again") from None
        return self.get_run(int(cur.lastrowid))

    @property
    def unwritten(self) -> int:
        """Updates waiting for the disk: runs, audit entries and the core's state."""
        return (len(self.pending) + len(self._pending_audit) + len(self._pending_audit_ends)
                + (self._pending_state is not None))

    def _failed_write(self, exc: sqlite3.Error) -> None:
        self.write_errors += 1
        self.last_write_error = str(exc)

    def _try_write(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor | None:
        """One statement in a transaction of its own; None, the failure counted, if the
        database cannot be written now (the caller keeps what it meant to write)."""
        try:
            with self._db:
                return self._db.execute(sql, params)
        except sqlite3.Error as exc:
            self._failed_write(exc)
            return None

    def _write(self, run_number: int, values: dict[str, Any]) -> bool:
        """One UPDATE; False if the database cannot be written now."""
        cols = ", ".join(f"{k} = ?" for k in values)
        cur = self._try_write(f"UPDATE runs SET {cols} WHERE run_number = ?",
                              (*values.values(), run_number))
        if cur is None:
            return False
        if cur.rowcount == 0:
            raise RunDatabaseError(f"no run {run_number} in {self.path}")
        return True

    def _flush_pending(self) -> None:
        """Write what earlier updates could not (the disk has room again, perhaps)."""
        for run_number in sorted(self.pending):
            if not self._write(run_number, self.pending[run_number]):
                return
            del self.pending[run_number]
        for provisional in sorted(self._pending_audit, reverse=True):  # oldest first
            audit_id = self._insert_audit(self._pending_audit[provisional])
            if audit_id is None:
                return
            del self._pending_audit[provisional]
            self._audit_ids[provisional] = audit_id
        for audit_id, values in list(self._pending_audit_ends.items()):
            if not self._write_audit_end(audit_id, values):
                return
            del self._pending_audit_ends[audit_id]
        if self._pending_state is not None and self._write_state(self._pending_state):
            self._pending_state = None

    def _update(self, run_number: int, **values: Any) -> None:
        """Set columns of a run; kept in memory (and shown by reads) if the disk refuses."""
        self._flush_pending()
        if run_number in self.pending:  # keep the order: after what is already waiting
            self.pending[run_number].update(values)
            return
        if not self._write(run_number, values):
            self.pending.setdefault(run_number, {}).update(values)

    def set_state(self, run_number: int, state: str) -> None:
        self._update(run_number, state=state)

    def set_begin_time(self, run_number: int, begin_time: float | None = None) -> None:
        self._update(run_number, begin_time=time.time() if begin_time is None else begin_time)

    def set_by(self, run_number: int, request: str, user: str | None) -> None:
        """Record who asked for ``request`` (prepare_run, begin_run, end_run, reset)."""
        column = {"prepare_run": "prepared_by", "begin_run": "begun_by", "end_run": "ended_by",
                  "reset": "ended_by"}[request]
        self._update(run_number, **{column: user})

    def set_admitted(self, run_number: int, table: dict[str, list]) -> None:
        """The streams admitted to the run (what a restarted core tells components again)."""
        self._update(run_number, admitted=json.dumps(table))

    def set_participants(self, run_number: int, participants: dict[str, str]) -> None:
        """The components (name -> role) expected to take part, for recovery after a restart."""
        self._update(run_number, participants=json.dumps(participants))

    def add_incident(self, run_number: int, text: str) -> int:
        """Mark the run: something went wrong during it (kept in order, with a time).

        Returns the incident's index, by which :meth:`resolve_incident` can mark it put right.
        """
        record = self.get_run(run_number)
        record.incidents.append(f"{_stamp()} {text}")
        self._update(run_number, incidents=json.dumps(record.incidents))
        return len(record.incidents) - 1

    def resolve_incident(self, run_number: int, index: int, resolution: str) -> None:
        """Mark incident ``index`` as put right; its text keeps what happened and gains how it
        was resolved, so readers that only show the texts still tell the whole story."""
        record = self.get_run(run_number)
        if not 0 <= index < len(record.incidents):
            raise RunDatabaseError(f"run {run_number} has no incident {index}")
        if index in record.resolved_incidents:
            return
        record.incidents[index] += f"; resolved {_stamp()}: {resolution}"
        record.resolved_incidents.append(index)
        self._update(run_number, incidents=json.dumps(record.incidents),
                     resolved_incidents=json.dumps(sorted(record.resolved_incidents)))

    def record_component(
        self,
        run_number: int,
        component: str,
        role: str,
        counters: dict[str, Any],
        files: list[str] | None = None,
    ) -> None:
        """Store what one component reported at the end of the run, and re-sum the totals."""
        record = self.get_run(run_number)
        record.counters[component] = dict(counters)
        record.roles[component] = role
        for f in files or []:
            if f not in record.files:
                record.files.append(str(f))
        written = lost = 0
        for name, values in record.counters.items():
            if record.roles.get(name) == STORAGE_ROLE:
                written += int(values.get("packets_written", 0) or 0)
                lost += int(values.get("packets_lost", 0) or 0)
        self._update(
            run_number,
            counters=json.dumps(record.counters),
            roles=json.dumps(record.roles),
            files=json.dumps(record.files),
            packets_written=written,
            packets_lost=lost,
        )

    def finish_run(
        self, run_number: int, exit_status: str, end_time: float | None = None,
        end_reason: str = "",
    ) -> RunRecord:
        if exit_status not in EXIT_STATUSES:
            raise ValueError(f"exit status {exit_status!r} is not one of {EXIT_STATUSES}")
        self._update(
            run_number,
            state=State.STOP.value,
            exit_status=exit_status,
            end_time=time.time() if end_time is None else end_time,
            end_reason=end_reason,
        )
        return self.get_run(run_number)

    def get_run(self, run_number: int) -> RunRecord:
        row = self._db.execute(
            "SELECT * FROM runs WHERE run_number = ?", (run_number,)
        ).fetchone()
        if row is None:
            raise RunDatabaseError(f"no run {run_number} in {self.path}")
        return self._record(row)

    def _record(self, row: sqlite3.Row) -> RunRecord:
        values = dict(row)
        values.update(self.pending.get(values["run_number"], {}))
        return _record(values)

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """Most recent first."""
        sql = "SELECT * FROM runs ORDER BY run_number DESC"
        rows = self._db.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ())
        return [self._record(r) for r in rows]

    def open_run(self) -> RunRecord | None:
        """The most recent run that has no end, if any: the run in progress."""
        rows = self._db.execute(
            "SELECT * FROM runs WHERE end_time IS NULL ORDER BY run_number DESC")
        for row in rows:
            record = self._record(row)
            if record.end_time is None:
                return record
        return None

    # --- audit trail ---------------------------------------------------------------------

    def add_audit(self, *, user: str | None, role: str | None, client: str, command: str,
                  params: dict[str, Any], accepted: bool, message: str = "",
                  when: float | None = None) -> int:
        """Record one control request as it was decided; returns its id for
        :meth:`finish_audit`."""
        text = json.dumps(params, default=str, sort_keys=True)
        if len(text) > AUDIT_PARAMS_LIMIT:
            text = json.dumps({"truncated": f"{len(text)} characters of parameters"})
        entry = {"time": time.time() if when is None else when, "user": user, "role": role,
                 "client": client, "command": command, "params": text,
                 "accepted": int(accepted), "result": "accepted" if accepted else "refused",
                 "message": message, "end_time": None}
        self._flush_pending()
        if not self._pending_audit:
            audit_id = self._insert_audit(entry)
            if audit_id is not None:
                return audit_id
        # The disk refuses it: kept, in order, under a provisional (negative) id.
        self._audit_seq -= 1
        self._pending_audit[self._audit_seq] = entry
        return self._audit_seq

    def _insert_audit(self, entry: dict[str, Any]) -> int | None:
        cur = self._try_write(f"INSERT INTO audit ({', '.join(entry)}) VALUES "
                              f"({', '.join('?' for _ in entry)})", tuple(entry.values()))
        return None if cur is None else int(cur.lastrowid)

    def _write_audit_end(self, audit_id: int, values: dict[str, Any]) -> bool:
        return self._try_write(
            "UPDATE audit SET result = ?, message = ?, end_time = ? WHERE id = ?",
            (values["result"], values["message"], values["end_time"], audit_id)) is not None

    def finish_audit(self, audit_id: int, success: bool, message: str) -> None:
        """The final result of an accepted request."""
        values = {"result": "success" if success else "failed", "message": message[:2000],
                  "end_time": time.time()}
        if audit_id in self._pending_audit:
            self._pending_audit[audit_id].update(values)
            return
        audit_id = self._audit_ids.get(audit_id, audit_id)
        self._flush_pending()
        if not self._write_audit_end(audit_id, values):
            self._pending_audit_ends[audit_id] = values

    def list_audit(self, limit: int | None = 100, user: str | None = None,
                   refused_only: bool = False) -> list[dict[str, Any]]:
        """Most recent first."""
        where, args = [], []
        if user is not None:
            where.append("user = ?")
            args.append(user)
        if refused_only:
            where.append("accepted = 0")
        sql = "SELECT * FROM audit" + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY id DESC" + (" LIMIT ?" if limit else "")
        rows = self._db.execute(sql, (*args, limit) if limit else tuple(args))
        waiting = [{"id": k, **v} for k, v in sorted(self._pending_audit.items())
                   if (user is None or v["user"] == user)
                   and not (refused_only and v["accepted"])]
        out = []
        for row in [*waiting, *(dict(r) for r in rows)][:limit or None]:
            entry = {**dict(row), **self._pending_audit_ends.get(row["id"], {})}
            entry["params"] = json.loads(entry["params"])
            entry["accepted"] = bool(entry["accepted"])
            out.append(entry)
        return out

    # --- core state ---------------------------------------------------------------------

    def save_core_state(self, state: str, run_number: int | None) -> None:
        self._flush_pending()
        value = json.dumps({"state": state, "run_number": run_number})
        if self._pending_state is not None or not self._write_state(value):
            self._pending_state = value

    def _write_state(self, value: str) -> bool:
        return self._try_write(
            "INSERT OR REPLACE INTO core_state (key, value) VALUES ('state', ?)",
            (value,)) is not None

    def load_core_state(self) -> tuple[str, int | None]:
        if self._pending_state is not None:
            value = json.loads(self._pending_state)
            return value["state"], value["run_number"]
        row = self._db.execute("SELECT value FROM core_state WHERE key = 'state'").fetchone()
        if row is None:
            return State.STOP.value, None
        value = json.loads(row["value"])
        return value["state"], value["run_number"]


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _record(row: sqlite3.Row | dict[str, Any]) -> RunRecord:
    values = dict(row)
    for col in _JSON_COLUMNS:
        values[col] = json.loads(values[col])
    return RunRecord(**values)
