"""The v2 register map table against the reference library's listing, and its invariants."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from larpixdaq.errors import ConfigError
from larpixdaq.formats import registers as R

LINE_RE = re.compile(
    r"^(?P<name>\w+)\s+regs (?P<r0>\d+)-(?P<r1>\d+)\s+bits\[(?P<b0>\d+),(?P<b1>\d+)\)\s+"
    r"width\s+(?P<width>\d+)\s+default (?:list\[(?P<n>\d+)\] first=(?P<first>\d+)|(?P<d>\d+))$"
)


def _reference_lines(register_table: Path) -> tuple[str, list[re.Match[str]]]:
    text = register_table.read_text()
    lines = text.splitlines()
    header = lines[0]
    v2 = []
    for line in lines[1:]:
        if not line.strip():
            break  # the v2b section follows a blank line
        m = LINE_RE.match(line)
        assert m is not None, f"unparsed reference line: {line!r}"
        v2.append(m)
    return header, v2


def test_header_counts_match_reference(register_table: Path) -> None:
    header, lines = _reference_lines(register_table)
    assert header.split() == [
        "num_registers",
        str(R.NUM_REGISTERS),
        "num_bits",
        str(R.NUM_BITS),
        "names",
        str(len(R.FIELDS)),
    ]
    assert len(lines) == len(R.FIELDS) == 73


def test_every_field_matches_reference_line_by_line(register_table: Path) -> None:
    _, lines = _reference_lines(register_table)
    for f, m in zip(R.FIELDS, lines, strict=True):
        assert f.name == m["name"]
        assert (f.first_register, f.last_register) == (int(m["r0"]), int(m["r1"])), f.name
        assert (f.offset, f.end) == (int(m["b0"]), int(m["b1"])), f.name
        assert f.width == int(m["width"]), f.name
        if m["n"] is not None:
            assert f.is_list and f.count == int(m["n"]), f.name
            assert f.default == int(m["first"]), f.name
        else:
            assert not f.is_list and f.default == int(m["d"]), f.name


@pytest.mark.parametrize(
    ("name", "count", "element_width"),
    [
        ("pixel_trim_dac", 64, 8),
        ("csa_enable", 64, 1),
        ("current_monitor_bank0", 4, 1),
        ("voltage_monitor_bank0", 3, 1),
        ("voltage_monitor_refgen", 8, 1),
        ("enable_miso_upstream", 4, 1),
        ("digital_threshold", 64, 8),
        ("periodic_reset_cycles", 1, 24),
        ("periodic_trigger_cycles", 1, 32),
    ],
)
def test_list_and_wide_fields(name: str, count: int, element_width: int) -> None:
    f = R.field(name)
    assert (f.count, f.element_width) == (count, element_width)


def test_fields_do_not_overlap_and_fit() -> None:
    used = np.zeros(R.NUM_BITS, dtype=int)
    for f in R.FIELDS:
        used[f.offset : f.end] += 1
        assert f.minimum <= f.default <= f.maximum <= (1 << f.element_width) - 1, f.name
    assert used.max() == 1
    assert int(np.unpackbits(R.USED_BITS_MASK).sum()) == int(used.sum())


def test_register_fields_index() -> None:
    assert R.REGISTER_FIELDS[65] == ("csa_gain", "csa_bypass_enable", "bypass_caps_en")
    assert R.REGISTER_FIELDS[125] == ("enable_miso_downstream", "enable_miso_differential")
    assert R.REGISTER_FIELDS[167] == ("periodic_trigger_cycles",)
    assert R.REGISTER_FIELDS[3] == ("pixel_trim_dac",)


def test_element_registers() -> None:
    assert list(R.field("pixel_trim_dac").element_registers(5)) == [5]
    assert list(R.field("channel_mask").element_registers(9)) == [132]
    assert list(R.field("periodic_trigger_cycles").registers) == [166, 167, 168, 169]


def test_default_registers_known_bytes() -> None:
    d = R.DEFAULT_REGISTERS
    assert d.shape == (237,) and d.dtype == np.uint8
    assert list(d[:64]) == [16] * 64
    assert d[64] == 255 and d[65] == 0b100 and d[122] == 1 and d[126] == 0x0F
    assert list(d[163:166]) == [0x00, 0x10, 0x00]  # 4096 little-endian
    assert d[128] == 0b0110_0000 and d[170] == 0b0100_1100
    with pytest.raises(ValueError):
        d[0] = 3  # shared read-only table


def test_unknown_field_suggests_closest() -> None:
    with pytest.raises(ConfigError, match=r"'threshhold_global'.*did you mean threshold_global"):
        R.field("threshhold_global")
    with pytest.raises(ConfigError, match="unknown LArPix v2 register field 'zzz'"):
        R.field("zzz")
    with pytest.raises(ConfigError, match="unknown"):
        R.field(12)  # type: ignore[arg-type]
