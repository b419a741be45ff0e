"""Where the core is by default: the one definition every client, server and command uses.

The core binds, and every component, operator and command connects to, ``DEFAULT_CORE``
unless told otherwise; ``$LARPIX_DAQ_CORE`` overrides it for a whole shell, so a user who
runs the DAQ elsewhere sets it once rather than passing ``--core`` to each command.
"""

from __future__ import annotations

import os

#: The core's address when nothing else is said: loopback, so a default DAQ is not exposed.
DEFAULT_CORE = "tcp://127.0.0.1:5550"
#: The environment variable that overrides :data:`DEFAULT_CORE`.
CORE_ENV = "LARPIX_DAQ_CORE"


def default_core_address() -> str:
    """The core address from ``$LARPIX_DAQ_CORE``, or :data:`DEFAULT_CORE`."""
    return os.environ.get(CORE_ENV, DEFAULT_CORE)
