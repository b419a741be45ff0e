"""Where a client finds the credential (user + token) it sends with every command.

In this order:

1. ``$LARPIX_DAQ_USER`` and ``$LARPIX_DAQ_TOKEN`` (a script, a service account);
2. the local token file of the core's address, written by a core that runs on this machine
   for the user who started it (as Jupyter leaves a token file for the local tools):
   ``$LARPIX_DAQ_CONFIG/credentials/local-PORT.json`` (``$LARPIX_DAQ_CONFIG`` defaults to
   ``$XDG_CONFIG_HOME/larpix-daq``, that is ``~/.config/larpix-daq``), mode 0600 in a 0700
   folder, so only that user can read it;
3. none: the core treats the client as anonymous (a viewer, unless the site requires a login).

A core on another machine is ``HOST-PORT.json``; a site can copy a token file there by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

_LOCAL_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0", "*", "::1", "[::1]", "::", "[::]"}


@dataclass(frozen=True)
class Credential:
    """Who a client says it is, and the token that proves it."""

    user: str
    token: str

    def __repr__(self) -> str:  # never print the token by accident
        return f"Credential(user={self.user!r}, token=<hidden>)"


def config_dir() -> Path:
    explicit = os.environ.get("LARPIX_DAQ_CONFIG")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "larpix-daq"


def token_file(core_address: str) -> Path:
    """The token file for the core at ``core_address`` (``tcp://HOST:PORT``)."""
    rest = core_address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    if host in _LOCAL_HOSTS:
        host = "local"
    stem = re.sub(r"[^A-Za-z0-9.-]", "_", f"{host}-{port}")
    return config_dir() / "credentials" / f"{stem}.json"


def save_token_file(core_address: str, credential: Credential) -> Path:
    """Write the token file (0600, created that way: never readable by others, not even
    for an instant); returns its path."""
    path = token_file(core_address)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"core": core_address, "user": credential.user,
                   "token": credential.token}, f)
    os.replace(tmp, path)
    return path


def read_token_file(path: Path) -> Credential | None:
    """The credential in ``path``; None when it is missing or not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    user, token = (data.get("user"), data.get("token")) if isinstance(data, dict) else (0, 0)
    if isinstance(user, str) and isinstance(token, str):
        return Credential(user, token)
    return None


def find_credential(core_address: str) -> Credential | None:
    """The credential to use with the core at ``core_address`` (see the module doc)."""
    user, token = os.environ.get("LARPIX_DAQ_USER"), os.environ.get("LARPIX_DAQ_TOKEN")
    if user and token:
        return Credential(user, token)
    return read_token_file(token_file(core_address))
