"""Users, their roles and their API tokens, in the run database (SQLite).

A token is a random secret (256 bits) shown once, when it is made; only a salted scrypt hash
of it is stored, and a presented token is compared with :func:`hmac.compare_digest`. The KDF
parameters travel in the stored string (``scrypt$N$r$p$salt$hash``) so they can be raised
later without invalidating tokens already given out. They are modest (N = 2**13) because a
token is not a password people choose: guessing 256 random bits is hopeless whatever the KDF
costs, and the core verifies a token on its single thread (then remembers it, see
:mod:`.access`).

The store shares the run database's file but has its own connection, so ``larpix-daq users``
can change users while the core runs; the core reads the tables on every new credential, so a
removed user or a changed role takes effect at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from larpixdaq.errors import LarpixDaqError
from larpixdaq.runcontrol.policy import Role

TOKEN_PREFIX = "ldq_"
_TOKEN_RE = re.compile(r"^ldq_[A-Za-z0-9_-]{40,64}$")
_USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SCRYPT = (2**13, 8, 1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    hash TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    expires REAL
);
"""


class UserError(LarpixDaqError):
    """A user that does not exist or already exists, a bad name or role."""


def valid_user_name(name: object) -> bool:
    return isinstance(name, str) and bool(_USER_RE.match(name))


def well_formed_token(token: object) -> bool:
    """Whether ``token`` has the shape of a token this module makes (checked before any KDF)."""
    return isinstance(token, str) and bool(_TOKEN_RE.match(token))


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str, *, salt: bytes | None = None,
                params: tuple[int, int, int] = _SCRYPT) -> str:
    """The stored form of ``secret``: ``scrypt$N$r$p$salt_hex$hash_hex``."""
    salt = secrets.token_bytes(16) if salt is None else salt
    n, r, p = params
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=2**26, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def check_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored`` (constant-time comparison of the digests)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        again = hash_secret(secret, salt=bytes.fromhex(salt), params=(int(n), int(r), int(p)))
    except ValueError:
        return False
    return hmac.compare_digest(again.rsplit("$", 1)[1], digest)


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created: float
    tokens: int = 0


@dataclass(frozen=True)
class TokenRow:
    id: int
    user: str
    hash: str
    label: str
    created: float
    expires: float | None


class UserStore:
    """The users and tokens tables of one database file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            if self.path.parent != Path(""):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None,
                                       check_same_thread=False, timeout=10.0)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise UserError(f"cannot open the user tables in {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> UserStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- users ----------------------------------------------------------------------------

    def add_user(self, name: str, role: Role, *, expires_s: float | None = None,
                 label: str = "") -> str:
        """Create ``name`` with ``role`` and its first token; returns the token (shown once)."""
        if not valid_user_name(name):
            raise UserError(f"bad user name {name!r}: 1-64 letters, digits, . _ @ -, "
                            "starting with a letter or digit")
        try:
            with self._db:
                self._db.execute("INSERT INTO users (name, role, created) VALUES (?, ?, ?)",
                                 (name, str(role), time.time()))
        except sqlite3.IntegrityError:
            raise UserError(f"user {name} already exists") from None
        return self.new_token(name, expires_s=expires_s, label=label)

    def get_user(self, name: str) -> User | None:
        row = self._db.execute(
            "SELECT u.name, u.role, u.created, COUNT(t.id) AS n FROM users u LEFT JOIN tokens"
            " t ON t.user = u.name WHERE u.name = ? GROUP BY u.name", (name,)).fetchone()
        return None if row is None else User(row["name"], Role.parse(row["role"]),
                                             row["created"], row["n"])

    def list_users(self) -> list[User]:
        rows = self._db.execute(
            "SELECT u.name, u.role, u.created, COUNT(t.id) AS n FROM users u LEFT JOIN tokens"
            " t ON t.user = u.name GROUP BY u.name ORDER BY u.name")
        return [User(r["name"], Role.parse(r["role"]), r["created"], r["n"]) for r in rows]

    def remove_user(self, name: str) -> None:
        with self._db:
            self._db.execute("DELETE FROM tokens WHERE user = ?", (name,))
            cur = self._db.execute("DELETE FROM users WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise UserError(f"no user {name}")

    def set_role(self, name: str, role: Role) -> None:
        with self._db:
            cur = self._db.execute("UPDATE users SET role = ? WHERE name = ?",
                                   (str(role), name))
        if cur.rowcount == 0:
            raise UserError(f"no user {name}")

    # --- tokens ---------------------------------------------------------------------------

    def new_token(self, name: str, *, expires_s: float | None = None, label: str = "") -> str:
        """Another token for ``name`` (valid ``expires_s`` seconds, or for ever)."""
        if self.get_user(name) is None:
            raise UserError(f"no user {name}")
        secret = new_secret()
        now = time.time()
        with self._db:
            self._db.execute(
                "INSERT INTO tokens (user, hash, label, created, expires) VALUES (?, ?, ?, ?, ?)",
                (name, hash_secret(secret), label, now,
                 None if expires_s is None else now + expires_s))
        return secret

    def revoke_tokens(self, name: str, label: str | None = None) -> int:
        """Forget ``name``'s tokens (only those labelled ``label`` if given); how many."""
        if label is None:
            cur = self._db.execute("DELETE FROM tokens WHERE user = ?", (name,))
        else:
            cur = self._db.execute("DELETE FROM tokens WHERE user = ? AND label = ?",
                                   (name, label))
        return cur.rowcount

    def tokens_of(self, name: str) -> list[TokenRow]:
        rows = self._db.execute("SELECT * FROM tokens WHERE user = ? ORDER BY id", (name,))
        return [TokenRow(**dict(r)) for r in rows]

    def token(self, token_id: int) -> TokenRow | None:
        row = self._db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return None if row is None else TokenRow(**dict(row))
