"""Chip keys: ``"<io_group>-<io_channel>-<chip_id>"``, the name of one chip in a whole system.

Chip ids are only unique within one io_channel's network, so the key carries the PACMAN
(io_group) and UART (io_channel) too. The string form is the reference library's, used in
files and on screens; keys are canonical (no spaces, no leading zeros) so equal chips have
equal strings and can index dictionaries.
"""

from __future__ import annotations

import re

import numpy as np

from larpixdaq.errors import ConfigError

_PARTS = ("io_group", "io_channel", "chip_id")
_KEY_RE = re.compile(r"(0|[1-9][0-9]{0,2})-(0|[1-9][0-9]{0,2})-(0|[1-9][0-9]{0,2})")


def _check_part(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer 0..255, got {value!r}")
    v = int(value)
    if not 0 <= v <= 255:
        raise ConfigError(f"{name} {v} is out of range 0..255")
    return v


def chip_key(io_group: int, io_channel: int, chip_id: int) -> str:
    """The key string of a chip; each part must be an integer 0..255."""
    g = _check_part("io_group", io_group)
    c = _check_part("io_channel", io_channel)
    i = _check_part("chip_id", chip_id)
    return f"{g}-{c}-{i}"


def parse_chip_key(key: str) -> tuple[int, int, int]:
    """``"1-2-11"`` -> ``(1, 2, 11)``; anything else raises ConfigError saying why."""
    if not isinstance(key, str):
        raise ConfigError(
            f"a chip key is a string '<io_group>-<io_channel>-<chip_id>', got {key!r}"
        )
    m = _KEY_RE.fullmatch(key)
    if m is None:
        parts = key.split("-")
        if len(parts) != 3:
            reason = f"it has {len(parts)} part(s), expected 3 separated by '-'"
        else:
            reason = next(
                (
                    f"{name} {p!r} is not a decimal number without leading zeros"
                    for name, p in zip(_PARTS, parts, strict=True)
                    if not re.fullmatch(r"0|[1-9][0-9]*", p)
                ),
                "",
            )
            if not reason:
                name, p = next((n, p) for n, p in zip(_PARTS, parts, strict=True) if int(p) > 255)
                reason = f"{name} {int(p)} is out of range 0..255"
        raise ConfigError(
            f"bad chip key {key!r}: {reason} (expected '<io_group>-<io_channel>-<chip_id>', "
            "each 0..255, e.g. '1-2-11')"
        )
    values = tuple(int(p) for p in m.groups())
    for name, v in zip(_PARTS, values, strict=True):
        if v > 255:
            raise ConfigError(
                f"bad chip key {key!r}: {name} {v} is out of range 0..255 "
                "(expected '<io_group>-<io_channel>-<chip_id>', e.g. '1-2-11')"
            )
    return values  # type: ignore[return-value]


def is_chip_key(key: object) -> bool:
    """True when ``key`` is a canonical chip key string."""
    try:
        parse_chip_key(key)  # type: ignore[arg-type]
    except ConfigError:
        return False
    return True
