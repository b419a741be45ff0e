"""Chip key strings: canonical form, round trip, and a clear error for every malformed key."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.errors import ConfigError
from larpixdaq.formats.chipkey import chip_key, is_chip_key, parse_chip_key

part = st.integers(0, 255)


@settings(max_examples=200, deadline=None)
@given(part, part, part)
def test_round_trip(g: int, c: int, i: int) -> None:
    key = chip_key(g, c, i)
    assert key == f"{g}-{c}-{i}"
    assert parse_chip_key(key) == (g, c, i)
    assert is_chip_key(key)


def test_numpy_integers_accepted() -> None:
    assert chip_key(np.uint8(1), np.int64(2), np.uint16(11)) == "1-2-11"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((256, 1, 1), "io_group 256 is out of range 0..255"),
        ((1, -1, 1), "io_channel -1 is out of range 0..255"),
        ((1, 1, 300), "chip_id 300 is out of range 0..255"),
        ((1, 1, "2"), "chip_id must be an integer 0..255, got '2'"),
        ((1.0, 1, 2), "io_group must be an integer"),
        ((True, 1, 2), "io_group must be an integer"),
    ],
)
def test_chip_key_errors(args: tuple, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        chip_key(*args)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("1-2", "it has 2 part"),
        ("1-2-3-4", "it has 4 part"),
        ("", "it has 1 part"),
        ("1-2-x", "chip_id 'x' is not a decimal number"),
        ("1- 2-3", "io_channel ' 2' is not a decimal number"),
        ("01-2-3", "io_group '01' is not a decimal number without leading zeros"),
        ("1--3", "io_channel '' is not a decimal"),
        ("1-2-256", "chip_id 256 is out of range 0..255"),
        ("1000-2-3", "io_group 1000 is out of range 0..255"),
        ("1-2-3\n", "chip_id '3\\\\n' is not a decimal"),
    ],
)
def test_parse_errors_say_why(key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_chip_key(key)
    assert not is_chip_key(key)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ConfigError, match="a chip key is a string"):
        parse_chip_key(("1", "2", "3"))  # type: ignore[arg-type]
    assert not is_chip_key(None)


def test_error_names_expected_form() -> None:
    with pytest.raises(ConfigError, match=r"expected '<io_group>-<io_channel>-<chip_id>'"):
        parse_chip_key("a-b-c")
