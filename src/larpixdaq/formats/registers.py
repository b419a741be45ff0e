"""The LArPix v2 configuration register map, as data.

A v2 chip holds 237 eight-bit registers (1896 bits). Each named field occupies a contiguous
bit range: bits are LSB-first inside a register and values wider than one register are
little-endian across consecutive registers, so the whole map is one little-endian bit string
and a field is just ``(offset, element_width, count)`` inside it. Keeping the map as a table
(rather than code per field) lets the chip configuration, the simulated chip and the
write-only-what-changed logic share one source of truth, and lets a test hold it against
the reference library's own listing line by line.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from larpixdaq.errors import ConfigError

NUM_REGISTERS = 237
NUM_BITS = NUM_REGISTERS * 8
NUM_CHANNELS = 64
CHIP_CLASS = "Configuration_v2"
"""The ``class`` a chip configuration JSON must name to be a v2 configuration."""


@dataclass(frozen=True)
class Field:
    """One named register field: where its bits live and which values it accepts.

    ``count`` is 1 for a scalar and the number of elements for a per-channel / per-UART list;
    element *i* occupies ``element_width`` bits starting at ``offset + i * element_width``.
    ``minimum``/``maximum`` bound each element (the chip ignores or misbehaves on values the
    bit width could hold but the design does not use, e.g. pixel_trim_dac above 31).
    """

    name: str
    offset: int
    element_width: int
    count: int
    default: int
    minimum: int
    maximum: int
    is_list: bool

    @property
    def width(self) -> int:
        """Total bits the field occupies."""
        return self.element_width * self.count

    @property
    def end(self) -> int:
        """One past the last bit of the field."""
        return self.offset + self.width

    @property
    def first_register(self) -> int:
        return self.offset // 8

    @property
    def last_register(self) -> int:
        return (self.end - 1) // 8

    @property
    def registers(self) -> range:
        """Register addresses the field touches (what must be written after a change)."""
        return range(self.first_register, self.last_register + 1)

    def element_registers(self, index: int) -> range:
        """Register addresses one list element touches."""
        start = self.offset + index * self.element_width
        return range(start // 8, (start + self.element_width - 1) // 8 + 1)

    @property
    def default_value(self) -> int | list[int]:
        """The power-on value, as ``get`` would return it (a list for list fields)."""
        return [self.default] * self.count if self.is_list else self.default

    def range_text(self) -> str:
        kind = f"list of {self.count} values" if self.is_list else "a value"
        return f"{kind} in {self.minimum}..{self.maximum}"


# name, first bit, bits per element, element count (0 = scalar), default, minimum, maximum.
# Bit ranges and defaults follow the reference library's v2 map; the allowed ranges follow
# its validators except test_mode_uart*, capped to what its 2 bits can hold.
_TABLE: tuple[tuple[str, int, int, int, int, int, int], ...] = (
    ("pixel_trim_dac", 0, 8, 64, 16, 0, 31),
    ("threshold_global", 512, 8, 0, 255, 0, 255),
    ("csa_gain", 520, 1, 0, 0, 0, 1),
    ("csa_bypass_enable", 521, 1, 0, 0, 0, 1),
    ("bypass_caps_en", 522, 1, 0, 1, 0, 1),
    ("csa_enable", 528, 1, 64, 1, 0, 1),
    ("ibias_tdac", 592, 4, 0, 8, 0, 15),
    ("ibias_comp", 600, 4, 0, 8, 0, 15),
    ("ibias_buffer", 608, 4, 0, 8, 0, 15),
    ("ibias_csa", 616, 4, 0, 8, 0, 15),
    ("ibias_vref_buffer", 624, 4, 0, 8, 0, 15),
    ("ibias_vcm_buffer", 632, 4, 0, 8, 0, 15),
    ("ibias_tpulse", 640, 4, 0, 5, 0, 15),
    ("ref_current_trim", 648, 5, 0, 16, 0, 31),
    ("override_ref", 653, 1, 0, 0, 0, 1),
    ("ref_kickstart", 654, 1, 0, 0, 0, 1),
    ("vref_dac", 656, 8, 0, 219, 0, 255),
    ("vcm_dac", 664, 8, 0, 77, 0, 255),
    ("csa_bypass_select", 672, 1, 64, 0, 0, 1),
    ("csa_monitor_select", 736, 1, 64, 0, 0, 1),
    ("csa_testpulse_enable", 800, 1, 64, 1, 0, 1),
    ("csa_testpulse_dac", 864, 8, 0, 0, 0, 255),
    ("current_monitor_bank0", 872, 1, 4, 0, 0, 1),
    ("current_monitor_bank1", 880, 1, 4, 0, 0, 1),
    ("current_monitor_bank2", 888, 1, 4, 0, 0, 1),
    ("current_monitor_bank3", 896, 1, 4, 0, 0, 1),
    ("voltage_monitor_bank0", 904, 1, 3, 0, 0, 1),
    ("voltage_monitor_bank1", 912, 1, 3, 0, 0, 1),
    ("voltage_monitor_bank2", 920, 1, 3, 0, 0, 1),
    ("voltage_monitor_bank3", 928, 1, 3, 0, 0, 1),
    ("voltage_monitor_refgen", 936, 1, 8, 0, 0, 1),
    ("digital_monitor_enable", 944, 1, 0, 0, 0, 1),
    ("digital_monitor_select", 945, 4, 0, 0, 0, 10),
    ("digital_monitor_chan", 952, 6, 0, 0, 0, 63),
    ("slope_control0", 960, 4, 0, 0, 0, 15),
    ("slope_control1", 964, 4, 0, 0, 0, 15),
    ("slope_control2", 968, 4, 0, 0, 0, 15),
    ("slope_control3", 972, 4, 0, 0, 0, 15),
    ("chip_id", 976, 8, 0, 1, 0, 255),
    ("load_config_defaults", 985, 1, 0, 0, 0, 1),
    ("enable_fifo_diagnostics", 986, 1, 0, 0, 0, 1),
    ("clk_ctrl", 987, 2, 0, 0, 0, 2),
    ("enable_miso_upstream", 992, 1, 4, 0, 0, 1),
    ("enable_miso_downstream", 1000, 1, 4, 0, 0, 1),
    ("enable_miso_differential", 1004, 1, 4, 0, 0, 1),
    ("enable_mosi", 1008, 1, 4, 1, 0, 1),
    ("test_mode_uart0", 1016, 2, 0, 0, 0, 3),
    ("test_mode_uart1", 1018, 2, 0, 0, 0, 3),
    ("test_mode_uart2", 1020, 2, 0, 0, 0, 3),
    ("test_mode_uart3", 1022, 2, 0, 0, 0, 3),
    ("enable_cross_trigger", 1024, 1, 0, 0, 0, 1),
    ("enable_periodic_reset", 1025, 1, 0, 0, 0, 1),
    ("enable_rolling_periodic_reset", 1026, 1, 0, 0, 0, 1),
    ("enable_periodic_trigger", 1027, 1, 0, 0, 0, 1),
    ("enable_rolling_periodic_trigger", 1028, 1, 0, 0, 0, 1),
    ("enable_periodic_trigger_veto", 1029, 1, 0, 1, 0, 1),
    ("enable_hit_veto", 1030, 1, 0, 1, 0, 1),
    ("adc_hold_delay", 1032, 4, 0, 0, 0, 15),
    ("adc_burst_length", 1040, 8, 0, 0, 0, 255),
    ("channel_mask", 1048, 1, 64, 1, 0, 1),
    ("external_trigger_mask", 1112, 1, 64, 1, 0, 1),
    ("cross_trigger_mask", 1176, 1, 64, 1, 0, 1),
    ("periodic_trigger_mask", 1240, 1, 64, 1, 0, 1),
    ("periodic_reset_cycles", 1304, 24, 0, 4096, 0, 2**24 - 1),
    ("periodic_trigger_cycles", 1328, 32, 0, 0, 0, 2**32 - 1),
    ("enable_dynamic_reset", 1360, 1, 0, 0, 0, 1),
    ("enable_min_delta_adc", 1361, 1, 0, 0, 0, 1),
    ("threshold_polarity", 1362, 1, 0, 1, 0, 1),
    ("reset_length", 1363, 3, 0, 1, 0, 7),
    ("mark_first_packet", 1366, 1, 0, 1, 0, 1),
    ("reset_threshold", 1368, 8, 0, 0, 0, 255),
    ("min_delta_adc", 1376, 8, 0, 0, 0, 255),
    ("digital_threshold", 1384, 8, 64, 0, 0, 255),
)

FIELDS: tuple[Field, ...] = tuple(
    Field(
        name=name,
        offset=offset,
        element_width=ew,
        count=max(count, 1),
        default=default,
        minimum=lo,
        maximum=hi,
        is_list=count > 0,
    )
    for name, offset, ew, count, default, lo, hi in _TABLE
)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
FIELDS_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}


def _bit_owner() -> np.ndarray:
    """Index of the field that owns each of the 1896 bits, -1 for bits no field uses."""
    owner = np.full(NUM_BITS, -1, dtype=np.int16)
    for i, f in enumerate(FIELDS):
        if (owner[f.offset : f.end] != -1).any():
            raise AssertionError(f"register map overlap at {f.name}")
        owner[f.offset : f.end] = i
    return owner


BIT_OWNER = _bit_owner()
USED_BITS_MASK: np.ndarray = np.packbits(BIT_OWNER >= 0, bitorder="little")
"""uint8[237]: the bits of each register that belong to some field."""

REGISTER_FIELDS: dict[int, tuple[str, ...]] = {
    addr: tuple(dict.fromkeys(FIELDS[i].name for i in BIT_OWNER[addr * 8 : addr * 8 + 8] if i >= 0))
    for addr in range(NUM_REGISTERS)
}
"""For each register address, the fields stored (at least partly) in it."""


def closest_names(name: str, n: int = 3) -> list[str]:
    """Field names a mistyped name most likely meant."""
    return difflib.get_close_matches(name, FIELD_NAMES, n=n, cutoff=0.5)


def unknown_name_error(name: object) -> ConfigError:
    """The error for a field name the v2 map does not have, with spelling suggestions."""
    hint = closest_names(name) if isinstance(name, str) else []
    msg = f"unknown LArPix v2 register field {name!r}"
    if hint:
        msg += f"; did you mean {', '.join(hint)}?"
    else:
        msg += f" (there are {len(FIELD_NAMES)} fields, e.g. threshold_global, channel_mask)"
    return ConfigError(msg)


def field(name: str) -> Field:
    """Look a field up by name; an unknown name raises ConfigError with suggestions."""
    try:
        return FIELDS_BY_NAME[name]
    except (KeyError, TypeError):
        raise unknown_name_error(name) from None


def default_registers() -> np.ndarray:
    """The 237 register bytes of a chip at power-on."""
    bits = np.zeros(NUM_BITS, dtype=np.uint8)
    for f in FIELDS:
        element = (f.default >> np.arange(f.element_width)) & 1
        bits[f.offset : f.end] = np.tile(element, f.count)
    return np.packbits(bits, bitorder="little")


DEFAULT_REGISTERS: np.ndarray = default_registers()
DEFAULT_REGISTERS.flags.writeable = False

# The registers that set up a chip's place in the hydra network (its id and which UARTs it
# listens and talks on). Network planning writes them, the board driver reads the id back,
# the simulated chip routes by them: one definition here for all three.
CHIP_ID_REG = field("chip_id").first_register  # 122
UPSTREAM_REG = field("enable_miso_upstream").first_register  # 124
DOWNSTREAM_REG = field("enable_miso_downstream").first_register  # 125
MOSI_REG = field("enable_mosi").first_register  # 126
