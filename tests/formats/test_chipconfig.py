"""ChipConfig: golden registers and JSON, named access, round trips, diffs and every error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from larpixdaq.errors import ConfigError
from larpixdaq.formats import registers as R
from larpixdaq.formats.chipconfig import (
    ChipConfig,
    FieldView,
    config_write_targets,
    load_chip_config,
    load_chip_json,
    registers_of,
    stack_registers,
)

GOLDEN_JSON = "chip-config-2-3-42.json"


def _value_strategy(f: R.Field) -> st.SearchStrategy[Any]:
    element = st.integers(f.minimum, f.maximum)
    if f.is_list:
        return st.lists(element, min_size=f.count, max_size=f.count)
    return element


VALUES = st.fixed_dictionaries({f.name: _value_strategy(f) for f in R.FIELDS})


def _golden_rows(golden_dir: Path) -> dict[tuple[int, int, int], np.ndarray]:
    with h5py.File(golden_dir / "reference-v2.4.h5", "r") as f:
        rows = f["configs"][:]
    return {
        (int(r["io_group"]), int(r["io_channel"]), int(r["chip_id"])): r["registers"] for r in rows
    }


# ---- golden ----------------------------------------------------------------------------------
def test_defaults_match_golden_configs_row(golden_dir: Path) -> None:
    row = _golden_rows(golden_dir)[(1, 1, 11)]
    assert np.array_equal(ChipConfig().to_registers(), row[:237])
    assert not row[237:].any()


def test_golden_json_matches_golden_configs_row(golden_dir: Path) -> None:
    row = _golden_rows(golden_dir)[(2, 3, 42)]
    cfg = ChipConfig.load(golden_dir / GOLDEN_JSON)
    assert np.array_equal(cfg.to_registers(), row[:237])
    assert not row[237:].any()


def test_golden_json_values(golden_dir: Path) -> None:
    cfg = load_chip_config(golden_dir / GOLDEN_JSON)
    assert cfg["threshold_global"] == 40
    assert cfg["periodic_trigger_cycles"] == 0x11223344
    assert cfg["channel_mask"] == [0] * 32 + [1] * 32
    assert cfg.to_registers()[166:170].tolist() == [0x44, 0x33, 0x22, 0x11]
    assert set(ChipConfig().diff(cfg)) == {
        "threshold_global",
        "channel_mask",
        "periodic_trigger_cycles",
    }


def test_save_reproduces_golden_json_byte_for_byte(golden_dir: Path, tmp_path: Path) -> None:
    cfg = ChipConfig.load(golden_dir / GOLDEN_JSON)
    out = tmp_path / "c.json"
    cfg.save(out)
    assert out.read_text() == (golden_dir / GOLDEN_JSON).read_text()
    assert ChipConfig.load(out) == cfg


# ---- round trips -----------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(VALUES)
def test_values_registers_values_round_trip(values: dict[str, Any]) -> None:
    cfg = ChipConfig.from_dict(values)
    assert cfg.to_dict() == values
    regs = cfg.to_registers()
    assert regs.dtype == np.uint8 and regs.shape == (237,)
    assert not (regs & ~R.USED_BITS_MASK).any()
    back = ChipConfig.from_registers(regs)
    assert back == cfg and back.to_dict() == values
    assert ChipConfig.from_json_dict(json.loads(cfg.to_json())) == cfg


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=237, max_size=237))
def test_any_bytes_decode_leniently(raw: bytes) -> None:
    arr = np.frombuffer(raw, dtype=np.uint8)
    cfg = ChipConfig.from_registers(arr, strict=False)
    assert np.array_equal(cfg.to_registers(), arr & R.USED_BITS_MASK)
    again = ChipConfig()
    for name, value in cfg.to_dict().items():
        f = R.field(name)
        # the lenient decode may hold values outside the allowed range; write them raw
        again._store(f, np.atleast_1d(np.asarray(value, dtype=np.int64)))
    assert again == cfg


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(R.FIELDS), st.data())
def test_set_one_field_touches_only_its_registers(f: R.Field, data: st.DataObject) -> None:
    cfg = ChipConfig()
    before = cfg.to_registers()
    cfg.set_value(f.name, data.draw(_value_strategy(f)))
    changed = np.flatnonzero(cfg.to_registers() != before)
    assert set(changed.tolist()) <= set(f.registers)
    for other in R.FIELDS:
        if other.name != f.name:
            assert cfg.get_value(other.name) == other.default_value


# ---- named access ------------------------------------------------------------------------------
def test_defaults() -> None:
    cfg = ChipConfig()
    for f in R.FIELDS:
        assert cfg.get_value(f.name) == f.default_value
    assert cfg["chip_id"] == 1 and cfg["periodic_reset_cycles"] == 4096


def test_multi_register_scalar_little_endian() -> None:
    cfg = ChipConfig()
    cfg["periodic_reset_cycles"] = 0xABCDEF
    assert cfg.to_registers()[163:166].tolist() == [0xEF, 0xCD, 0xAB]
    cfg["periodic_trigger_cycles"] = 2**32 - 1
    assert cfg.to_registers()[166:170].tolist() == [255] * 4


def test_bits_are_lsb_first_within_shared_registers() -> None:
    cfg = ChipConfig()
    cfg["enable_miso_downstream"] = [0, 1, 0, 0]
    cfg["enable_miso_differential"] = [1, 1, 1, 1]
    assert cfg.to_registers()[125] == 0xF2
    cfg["reset_length"] = 5
    assert (cfg.to_registers()[170] >> 3) & 7 == 5
    cfg["channel_mask"] = [1 if i == 9 else 0 for i in range(64)]
    assert cfg.to_registers()[131:139].tolist() == [0, 2, 0, 0, 0, 0, 0, 0]


def test_set_value_with_index_and_field_view() -> None:
    cfg = ChipConfig()
    cfg.set_value("pixel_trim_dac", 7, index=3)
    assert cfg.get_value("pixel_trim_dac", index=3) == 7
    view = cfg["pixel_trim_dac"]
    assert isinstance(view, FieldView) and len(view) == 64
    view[4] = 31
    assert cfg.to_registers()[4] == 31
    view[0:2] = [1, 2]
    assert view[:5] == [1, 2, 16, 7, 31]
    assert list(view)[:2] == [1, 2] and view.tolist()[3] == 7
    cfg["csa_enable"][63] = 0
    assert cfg.to_registers()[73] == 0x7F
    cfg["enable_mosi"] = [True, False, True, False]  # booleans as the reference files allow
    assert cfg["enable_mosi"] == [1, 0, 1, 0]
    cfg["digital_threshold"] = np.arange(64, dtype=np.uint8)
    assert cfg.get_value("digital_threshold") == list(range(64))
    cfg["digital_threshold"] = cfg["pixel_trim_dac"]  # a view is a valid list value
    assert repr(cfg["enable_mosi"]) == "enable_mosi[1, 0, 1, 0]"
    assert "chip_id" in cfg and "nope" not in cfg
    with pytest.raises(TypeError):
        hash(view)


def test_update_is_atomic() -> None:
    cfg = ChipConfig()
    with pytest.raises(ConfigError, match="vref_dac = 256"):
        cfg.update({"threshold_global": 10, "vref_dac": 256})
    assert cfg == ChipConfig()
    with pytest.raises(ConfigError, match="must be a mapping"):
        cfg.update([("threshold_global", 3)])  # type: ignore[arg-type]


def test_diff_changed_registers_and_targets() -> None:
    a, b = ChipConfig(), ChipConfig()
    b["threshold_global"] = 12
    b["pixel_trim_dac"][10] = 3
    b["enable_hit_veto"] = 0
    assert a.diff(b) == {
        "pixel_trim_dac": ([16] * 64, [16] * 10 + [3] + [16] * 53),
        "threshold_global": (255, 12),
        "enable_hit_veto": (1, 0),
    }
    assert a.changed_registers(b) == [10, 64, 128]
    assert a.changed_registers(b.to_registers()) == [10, 64, 128]
    assert a.diff(a.copy()) == {} and a.changed_registers(a) == []
    assert config_write_targets(b, b.changed_registers(a)) == [(10, 3), (64, 12), (128, 0x20)]
    assert config_write_targets(b, "threshold_global") == [(64, 12)]
    assert config_write_targets(b, 10) == [(10, 3)]
    assert config_write_targets(b, ["chip_id", 64, 122]) == [(64, 12), (122, 1)]
    full = config_write_targets(b)
    assert [a for a, _ in full] == list(range(237))
    assert bytes(v for _, v in full) == b.to_registers().tobytes()


def test_registers_of() -> None:
    cfg = ChipConfig()
    assert cfg.registers_of("periodic_reset_cycles") == [163, 164, 165]
    assert registers_of("digital_threshold", 5) == [178]
    assert registers_of("csa_enable") == list(range(66, 74))
    assert registers_of("csa_enable", 8) == [67]
    assert registers_of("enable_miso_differential") == [125]


def test_stack_registers() -> None:
    a, b = ChipConfig(), ChipConfig()
    b["chip_id"] = 42
    stacked = stack_registers([a, b])
    assert stacked.shape == (2, 237) and stacked[1, 122] == 42
    assert stack_registers([]).shape == (0, 237)


def test_repr_lists_changes() -> None:
    cfg = ChipConfig()
    assert repr(cfg) == "ChipConfig(<defaults>)"
    cfg["threshold_global"] = 5
    assert repr(cfg) == "ChipConfig(threshold_global=5)"
    assert cfg != ChipConfig() and cfg.__eq__(5) is NotImplemented


# ---- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "index", "message"),
    [
        (
            "threshhold_global",
            1,
            None,
            r"unknown .*'threshhold_global'.*did you mean threshold_global",
        ),
        ("threshold_global", 256, None, r"threshold_global = 256 is out of range; .* 0\.\.255"),
        ("threshold_global", -1, None, r"threshold_global = -1 is out of range"),
        ("pixel_trim_dac", [32] * 64, None, r"pixel_trim_dac\[0\] = 32 is out of range; .*0\.\.31"),
        ("pixel_trim_dac", [1] * 63, None, "must have exactly 64 elements, got 63"),
        ("pixel_trim_dac", 5, None, "must be a list of 64 integers, got int"),
        ("pixel_trim_dac", "16", None, "must be a list of 64 integers, got str"),
        ("pixel_trim_dac", 32, 2, r"pixel_trim_dac\[2\] = 32 is out of range"),
        ("pixel_trim_dac", 3, 64, r"index 64 is out of range 0\.\.63"),
        ("pixel_trim_dac", 3, -1, r"index -1 is out of range 0\.\.63"),
        ("pixel_trim_dac", 3, True, "index True is out of range"),
        ("voltage_monitor_bank0", [0, 0, 0, 0], None, "exactly 3 elements, got 4"),
        ("threshold_global", 3, 0, "is a single value, not a list"),
        ("threshold_global", 1.0, None, "must be an integer, got 1.0 .float."),
        ("threshold_global", None, None, "must be an integer"),
        ("periodic_trigger_cycles", 2**32, None, r"0\.\.4294967295"),
        ("clk_ctrl", 3, None, r"clk_ctrl = 3 is out of range; clk_ctrl takes a value in 0\.\.2"),
        ("csa_enable", [0.5] * 64, None, r"csa_enable\[0\] must be an integer"),
    ],
)
def test_set_value_errors(name: str, value: Any, index: Any, message: str) -> None:
    cfg = ChipConfig()
    with pytest.raises(ConfigError, match=message):
        cfg.set_value(name, value, index=index)
    assert cfg == ChipConfig()


def test_get_value_errors() -> None:
    cfg = ChipConfig()
    with pytest.raises(ConfigError, match="did you mean chip_id"):
        cfg["chipid"]
    with pytest.raises(ConfigError, match="single value"):
        cfg.get_value("chip_id", index=0)
    with pytest.raises(ConfigError, match="would change the length to 62"):
        cfg["pixel_trim_dac"][0:4] = [1, 2]


@pytest.mark.parametrize(
    ("arr", "strict", "message"),
    [
        (np.zeros(236, dtype=np.uint8), True, r"237 registers, got shape \(236,\)"),
        (np.zeros((2, 237), dtype=np.uint8), True, "got shape"),
        (np.zeros(237, dtype=float), True, "must be integers, got dtype float64"),
        (np.full(237, 256), True, "register 0 = 256 does not fit in 8 bits"),
        (np.full(237, -1), True, "register 0 = -1 does not fit"),
    ],
)
def test_from_registers_shape_and_value_errors(arr: np.ndarray, strict: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ChipConfig.from_registers(arr, strict=strict)


def test_from_registers_strict_checks() -> None:
    regs = ChipConfig().to_registers()
    regs[65] |= 0x80
    with pytest.raises(ConfigError, match="register 65 = 0x84 sets bits 0x80 that no field uses"):
        ChipConfig.from_registers(regs)
    assert ChipConfig.from_registers(regs, strict=False) == ChipConfig()
    regs = ChipConfig().to_registers()
    regs[7] = 200
    with pytest.raises(ConfigError, match=r"pixel_trim_dac\[7\] = 200 is out of range"):
        ChipConfig.from_registers(regs)
    lenient = ChipConfig.from_registers(regs, strict=False)
    assert lenient.get_value("pixel_trim_dac", 7) == 200
    with pytest.raises(ConfigError, match="pixel_trim_dac"):
        lenient.check_ranges()
    with pytest.raises(ConfigError, match="237 registers"):
        ChipConfig().diff(np.zeros(3, dtype=np.uint8))


def test_config_write_targets_errors() -> None:
    cfg = ChipConfig()
    with pytest.raises(ConfigError, match=r"register address 237 is out of range 0\.\.236"):
        config_write_targets(cfg, 237)
    with pytest.raises(ConfigError, match="did you mean"):
        config_write_targets(cfg, ["channel_masks"])
    with pytest.raises(ConfigError, match="addresses .int. or field names .str., got 1.5"):
        config_write_targets(cfg, [1.5])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="got True"):
        config_write_targets(cfg, [True])


# ---- JSON files ------------------------------------------------------------------------------
def _write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _chip(values: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"_config_type": "chip", "class": "Configuration_v2"}
    if values is not None:
        d["register_values"] = values
    d.update(extra)
    return d


def test_include_relative_recursive_and_ordered(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    _write(tmp_path / "base" / "root.json", _chip({"threshold_global": 10, "vref_dac": 1}))
    _write(
        tmp_path / "base" / "mid.json",
        _chip({"threshold_global": 20, "chip_id": 5}, _include="root.json"),
    )
    _write(tmp_path / "other.json", _chip({"vcm_dac": 9, "chip_id": 6}))
    top = _write(
        tmp_path / "top.json",
        _chip({"chip_id": 7}, _include=["base/mid.json", "other.json"]),
    )
    cfg = ChipConfig.load(top)
    assert cfg["threshold_global"] == 20  # mid overrides root
    assert cfg["vref_dac"] == 1 and cfg["vcm_dac"] == 9
    assert cfg["chip_id"] == 7  # the including file wins
    assert "_include" not in load_chip_json(top)


def test_include_cycle_detected(tmp_path: Path) -> None:
    _write(tmp_path / "a.json", _chip({}, _include="b.json"))
    _write(tmp_path / "b.json", _chip({}, _include=["c.json"]))
    _write(tmp_path / "c.json", _chip({}, _include="a.json"))
    with pytest.raises(ConfigError, match=r"_include cycle: .*a\.json -> .*b\.json -> .*c\.json"):
        ChipConfig.load(tmp_path / "a.json")
    _write(tmp_path / "self.json", _chip({}, _include="self.json"))
    with pytest.raises(ConfigError, match="_include cycle"):
        ChipConfig.load(tmp_path / "self.json")


def test_include_may_be_shared_without_cycle(tmp_path: Path) -> None:
    _write(tmp_path / "common.json", _chip({"threshold_global": 3}))
    _write(tmp_path / "x.json", _chip({}, _include="common.json"))
    top = _write(tmp_path / "top.json", _chip({}, _include=["common.json", "x.json"]))
    assert ChipConfig.load(top)["threshold_global"] == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", r"not valid JSON \(line 1 column 2"),
        ("[1, 2]", "must be a JSON object"),
        (_chip({}, _config_type="controller"), "'_config_type' is 'controller', expected 'chip'"),
        ({"class": "Configuration_v2", "register_values": {}}, "'_config_type' is None"),
        (
            _chip({}, **{"class": "Configuration_v2b"}),
            "'Configuration_v2b'; only 'Configuration_v2'",
        ),
        (_chip(None), "'register_values' must be an object"),
        (_chip([1, 2]), "'register_values' must be an object"),  # type: ignore[arg-type]
        (_chip({"threshold_globl": 3}), r"bad\.json: unknown .*did you mean threshold_global"),
        (_chip({"channel_mask": [0] * 10}), r"bad\.json: channel_mask must have exactly 64"),
        (_chip({"ibias_csa": 16}), r"bad\.json: ibias_csa = 16 is out of range; .*0\.\.15"),
        (_chip({}, _include=3), "'_include' must be a file name or a list"),
        (_chip({}, _include="missing.json"), r"chip configuration file not found: .*missing\.json"),
    ],
)
def test_bad_json_files(tmp_path: Path, content: Any, message: str) -> None:
    path = _write(tmp_path / "bad.json", content)
    with pytest.raises(ConfigError, match=message):
        ChipConfig.load(path)


def test_missing_file_and_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="chip configuration file not found"):
        ChipConfig.load(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="cannot read chip configuration"):
        ChipConfig.load(tmp_path)  # a directory


def test_included_file_must_be_a_chip_config(tmp_path: Path) -> None:
    _write(tmp_path / "net.json", {"_config_type": "controller"})
    top = _write(tmp_path / "top.json", _chip({}, _include="net.json"))
    with pytest.raises(ConfigError, match=r"net\.json: not a chip configuration"):
        ChipConfig.load(top)


def test_partial_register_values_keep_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.json", _chip({"threshold_global": 1, "csa_gain": True}))
    cfg = ChipConfig.load(path)
    expected = ChipConfig()
    expected["threshold_global"] = 1
    expected["csa_gain"] = 1
    assert cfg == expected
    assert cfg.to_json_dict()["register_values"]["csa_gain"] == 1


# ---- the reference library ----------------------------------------------------------------
@pytest.mark.reference
def test_register_map_matches_reference_library() -> None:
    import larpix
    ref = larpix.Configuration_v2
    assert list(ref.register_names) == list(R.FIELD_NAMES)
    for name in R.FIELD_NAMES:
        assert list(ref.register_map[name]) == registers_of(name), name
    assert ref.num_registers == R.NUM_REGISTERS


def _reference_bytes(conf: Any) -> np.ndarray:
    return np.array(
        [sum(int(b) << i for i, b in enumerate(bits)) for bits in conf.all_data()], dtype=np.uint8
    )


@pytest.mark.reference
@settings(max_examples=30, deadline=None)
@given(VALUES)
def test_registers_match_reference_library(values: dict[str, Any]) -> None:
    import larpix
    conf = larpix.Configuration_v2()
    conf.from_dict(values)
    assert np.array_equal(_reference_bytes(conf), ChipConfig.from_dict(values).to_registers())


@pytest.mark.reference
def test_json_interchange_with_reference_library(tmp_path: Path) -> None:
    import larpix
    cfg = ChipConfig()
    cfg["threshold_global"] = 33
    cfg["pixel_trim_dac"][5] = 2
    cfg["periodic_reset_cycles"] = 123456
    ours = tmp_path / "ours.json"
    cfg.save(ours)
    conf = larpix.Configuration_v2()
    conf.load(str(ours))
    assert np.array_equal(_reference_bytes(conf), cfg.to_registers())
    theirs = tmp_path / "theirs.json"
    conf.write(str(theirs))
    assert ChipConfig.load(theirs) == cfg
