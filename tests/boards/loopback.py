"""Loopback ports for the board tests."""

from __future__ import annotations

import socket


def port_of(endpoint: str) -> int:
    """The port of a ``tcp://host:port`` endpoint."""
    return int(endpoint.rsplit(":", 1)[1])


def free_port() -> int:
    """A port nobody listens on: bound by the OS for us, then released."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
