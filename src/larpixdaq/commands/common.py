"""Arguments and parsing that many `larpix-daq` commands share, defined once."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from larpixdaq.errors import CommandError

DEFAULT_CORE = "tcp://127.0.0.1:5550"


def add_core_argument(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--core``: the core's address, from ``$LARPIX_DAQ_CORE`` when not given."""
    parser.add_argument(
        "--core", default=os.environ.get("LARPIX_DAQ_CORE", DEFAULT_CORE),
        help=help or f"address of the core (default: $LARPIX_DAQ_CORE or {DEFAULT_CORE})")


def add_keys_argument(parser: argparse.ArgumentParser, who: str) -> None:
    """``--keys``: the CURVE key directory, from ``$LARPIX_DAQ_KEYS`` when not given."""
    parser.add_argument(
        "--keys", default=os.environ.get("LARPIX_DAQ_KEYS"),
        help=f"CURVE key directory ({who}; default $LARPIX_DAQ_KEYS; none: no encryption)")


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` words; values are JSON when they parse (``[1,2]``, ``3``), else text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"{item!r} is not NAME=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
