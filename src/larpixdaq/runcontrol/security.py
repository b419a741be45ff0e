"""Optional authentication and encryption with ZeroMQ CURVE: the control port and the data path.

Without keys, anyone who can reach the core's port can change the state or register a fake
board, and anyone who reaches the aggregator or the log collector can speak to them, as in
the original system. With a key directory, the core, the aggregator (its producer, storage
and monitor sockets) and the log collector accept only clients whose public key is in
``DIR/authorized/``, and all their traffic is encrypted. The servers all use the core's
pair, so a client checks them against ``DIR/core.key``:

    DIR/core.key, DIR/core.key_secret        the core's key pair
    DIR/authorized/NAME.key                  public keys of clients allowed in
    DIR/NAME.key, DIR/NAME.key_secret        a client's key pair (default NAME: ``client``)

``larpix-daq keys DIR`` creates the core's pair and a ``client`` pair already authorised;
``larpix-daq keys DIR --name board-3`` adds another client (the core reads ``authorized/`` when
it starts: restart it to admit a new key; a run in progress carries on across the restart).
The core takes ``--keys DIR``; components, operators and commands take ``keys=DIR`` /
``--keys DIR`` or ``$LARPIX_DAQ_KEYS`` (and ``$LARPIX_DAQ_KEY_NAME`` to pick a pair other
than ``client``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from larpixdaq.errors import LarpixDaqError

CORE_NAME = "core"
DEFAULT_CLIENT = "client"


class KeysError(LarpixDaqError):
    """A key directory is missing a key, or this pyzmq cannot do CURVE."""


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise KeysError("this pyzmq/libzmq has no CURVE support; install a build with libsodium")


def create_keys(directory: str | Path, name: str = DEFAULT_CLIENT) -> Path:
    """Make ``directory`` ready: the core's pair if missing, and an authorised pair ``name``.

    Returns the path of the new public key. An existing pair of that name is kept.
    """
    _require_curve()
    d = Path(directory)
    (d / "authorized").mkdir(parents=True, exist_ok=True)
    if not (d / f"{CORE_NAME}.key_secret").exists():
        zmq.auth.create_certificates(str(d), CORE_NAME)
    if name == CORE_NAME:
        raise KeysError(f"{CORE_NAME!r} is the core's own key; pick another client name")
    public = d / f"{name}.key"
    if not (d / f"{name}.key_secret").exists():
        zmq.auth.create_certificates(str(d), name)
    shutil.copyfile(public, d / "authorized" / f"{name}.key")
    for secret in d.glob("*.key_secret"):
        os.chmod(secret, 0o600)
    return public


def _load(path: Path) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise KeysError(f"no key {path}; create it with `larpix-daq keys {path.parent}`")
    try:
        return zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise KeysError(f"cannot read the key {path}: {exc}") from None


@dataclass(frozen=True)
class ClientKeys:
    """What a client (component, operator) needs: the core's public key and its own pair."""

    server_public: bytes
    public: bytes
    secret: bytes
    directory: Path | None = None  # where they came from (a data-path server needs it)

    @classmethod
    def load(cls, directory: str | Path, name: str | None = None) -> ClientKeys:
        _require_curve()
        d = Path(directory)
        name = name or os.environ.get("LARPIX_DAQ_KEY_NAME") or DEFAULT_CLIENT
        server_public, _ = _load(d / f"{CORE_NAME}.key")
        public, secret = _load(d / f"{name}.key_secret")
        if secret is None:
            raise KeysError(f"{d / (name + '.key_secret')} holds no secret key")
        return cls(server_public, public, secret, d)

    @property
    def user_id(self) -> str:
        """What a server's authenticator says this client is (the z85 public key)."""
        return self.public.decode("ascii")  # loaded z85-encoded

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before connect) a CURVE client of the core or of a data-path
        server (they all hold the core's pair)."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def client_keys(keys: str | Path | ClientKeys | None) -> ClientKeys | None:
    """Resolve a ``keys`` argument: keys, a directory, or ``None`` (then ``$LARPIX_DAQ_KEYS``)."""
    if isinstance(keys, ClientKeys):
        return keys
    directory = keys if keys is not None else os.environ.get("LARPIX_DAQ_KEYS")
    return ClientKeys.load(directory) if directory else None


class _AllowedKeys:
    """What a context's authenticator admits: the keys of every ``authorized`` folder its
    servers named, and the servers' own (the core forwards its log records as a client)."""

    def __init__(self) -> None:
        self.keys: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


# One authenticator per context (ZeroMQ allows one ZAP handler per context): the core and
# a data-path server started in one process share it. context id -> (auth, allowed, users).
_authenticators: dict[int, tuple[ThreadAuthenticator, _AllowedKeys, int]] = {}


def _read_authorized(folder: Path) -> set[bytes]:
    keys = set()
    for path in sorted(folder.glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(str(path))
        except (ValueError, OSError):
            continue  # not a key file: never admits anyone
        keys.add(public)  # z85, as the authenticator gives it
    return keys


class ServerKeys:
    """A server's side (the core, the aggregator, the log collector): the core's key pair,
    and an authenticator admitting the authorised keys."""

    def __init__(self, directory: str | Path) -> None:
        _require_curve()
        self.directory = Path(directory)
        self.public, self.secret = _load(self.directory / f"{CORE_NAME}.key_secret")
        if self.secret is None:
            raise KeysError(f"{self.directory / 'core.key_secret'} holds no secret key")
        self.authorized = self.directory / "authorized"
        if not self.authorized.is_dir():
            raise KeysError(f"no folder {self.authorized} of authorised client keys")
        self._context: zmq.Context | None = None

    def as_client(self) -> ClientKeys:
        """The core's own pair as a client of the other servers (it forwards its log
        records to the collector, which admits the servers' key)."""
        return ClientKeys(self.public, self.public, self.secret, self.directory)

    def apply(self, sock: zmq.Socket, context: zmq.Context) -> None:
        """Make ``sock`` (before bind) a CURVE server admitting only authorised clients."""
        if self._context is None:
            self._context = context
            auth, allowed, users = _authenticators.get(id(context), (None, None, 0))
            if auth is None:
                auth, allowed = ThreadAuthenticator(context), _AllowedKeys()
                auth.start()
                auth.configure_curve_callback(domain="*", credentials_provider=allowed)
            _authenticators[id(context)] = (auth, allowed, users + 1)
            self.reload()
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def reload(self) -> None:
        """Re-read the authorised keys (after adding or removing one)."""
        if self._context is not None:
            _, allowed, _ = _authenticators[id(self._context)]
            allowed.keys = _read_authorized(self.authorized) | {self.public}

    def close(self) -> None:
        if self._context is None:
            return
        auth, allowed, users = _authenticators.pop(id(self._context))
        if users > 1:
            _authenticators[id(self._context)] = (auth, allowed, users - 1)
        else:
            auth.stop()
        self._context = None


def server_keys(keys: str | Path | ClientKeys | ServerKeys | None) -> ServerKeys | None:
    """Resolve a data-path server's ``keys`` argument: server keys, the directory of client
    keys or a directory, or ``None`` (then ``$LARPIX_DAQ_KEYS``)."""
    if isinstance(keys, ServerKeys):
        return keys
    if isinstance(keys, ClientKeys):
        return ServerKeys(keys.directory) if keys.directory is not None else None
    directory = keys if keys is not None else os.environ.get("LARPIX_DAQ_KEYS")
    return ServerKeys(directory) if directory else None
