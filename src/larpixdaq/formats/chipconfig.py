"""One LArPix v2 chip's configuration: 237 register bytes with named, range-checked access.

The register bytes are the truth (they are what goes on the wire, into the ``configs``
dataset and into a simulated chip); names are a view onto them through the register map in
:mod:`larpixdaq.formats.registers`. That makes "which registers changed" a byte compare and
"write only what changed" a list of addresses, with no bookkeeping that could drift.

The JSON form is the reference library's chip configuration file, so configurations written
by either side load in the other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from larpixdaq.errors import ConfigError
from larpixdaq.formats.registers import (
    BIT_OWNER,
    CHIP_CLASS,
    DEFAULT_REGISTERS,
    FIELD_NAMES,
    FIELDS,
    NUM_REGISTERS,
    USED_BITS_MASK,
    Field,
    field,
)

PathLike = Union[str, "os.PathLike[str]"]
Value = int | list[int]

_INTEGER_TYPES = (int, np.integer)


def _is_integer(value: object) -> bool:
    # bool is an int subclass and the reference files use true/false for 1-bit fields
    return isinstance(value, _INTEGER_TYPES)


def _check_element(f: Field, value: object, where: str) -> int:
    if not _is_integer(value):
        raise ConfigError(
            f"{where} must be an integer, got {value!r} ({type(value).__name__}); "
            f"{f.name} takes {f.range_text()}"
        )
    v = int(value)  # type: ignore[arg-type]
    if not f.minimum <= v <= f.maximum:
        raise ConfigError(f"{where} = {v} is out of range; {f.name} takes {f.range_text()}")
    return v


def _check_value(f: Field, value: object) -> np.ndarray:
    """Validate a whole-field value; return the element values as int64[count]."""
    if not f.is_list:
        return np.array([_check_element(f, value, f.name)], dtype=np.int64)
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(
        value, (Sequence, np.ndarray, FieldView)
    ):
        raise ConfigError(
            f"{f.name} must be a list of {f.count} integers, got {type(value).__name__}; "
            f"{f.name} takes {f.range_text()}"
        )
    items = list(value)
    if len(items) != f.count:
        raise ConfigError(
            f"{f.name} must have exactly {f.count} elements, got {len(items)}; "
            f"{f.name} takes {f.range_text()}"
        )
    return np.array(
        [_check_element(f, v, f"{f.name}[{i}]") for i, v in enumerate(items)], dtype=np.int64
    )


def _check_index(f: Field, index: object) -> int:
    if not f.is_list:
        raise ConfigError(f"{f.name} is a single value, not a list: it takes no index")
    if not _is_integer(index) or isinstance(index, bool) or not 0 <= int(index) < f.count:
        raise ConfigError(f"{f.name} index {index!r} is out of range 0..{f.count - 1}")
    return int(index)


class FieldView:
    """A live view of one list field, so ``cfg["pixel_trim_dac"][3] = 20`` writes through."""

    __slots__ = ("_cfg", "_name")

    def __init__(self, cfg: ChipConfig, name: str) -> None:
        self._cfg = cfg
        self._name = name

    def __len__(self) -> int:
        return field(self._name).count

    def __iter__(self) -> Iterator[int]:
        return iter(self.tolist())

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self.tolist()[index]
        return self._cfg.get_value(self._name, index)

    def __setitem__(self, index: int | slice, value: Any) -> None:
        if isinstance(index, slice):
            values = self.tolist()
            values[index] = value
            f = field(self._name)
            if len(values) != f.count:
                raise ConfigError(
                    f"{self._name}[{index.start}:{index.stop}] assignment would change the "
                    f"length to {len(values)}; {self._name} has exactly {f.count} elements"
                )
            self._cfg.set_value(self._name, values)
        else:
            self._cfg.set_value(self._name, value, index=index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (FieldView, Sequence, np.ndarray)) and not isinstance(other, str):
            return self.tolist() == list(other)
        return NotImplemented

    def __hash__(self) -> int:  # mutable view
        raise TypeError("FieldView is not hashable")

    def tolist(self) -> list[int]:
        value = self._cfg.get_value(self._name)
        assert isinstance(value, list)
        return value

    def __repr__(self) -> str:
        return f"{self._name}{self.tolist()!r}"


class ChipConfig:
    """The 237 configuration registers of one LArPix v2 chip, at power-on values by default."""

    __slots__ = ("_regs",)

    def __init__(self) -> None:
        self._regs = DEFAULT_REGISTERS.copy()

    # ---- registers ---------------------------------------------------------------------
    @classmethod
    def from_registers(cls, registers: Any, strict: bool = True) -> ChipConfig:
        """Build a configuration from 237 register bytes (e.g. a readback or a file row).

        ``strict`` rejects bits set outside any field and field values outside their allowed
        range; with ``strict=False`` unused bits are dropped and any encodable value kept,
        which is what a chip actually holding such bytes would report.
        """
        arr = np.asarray(registers)
        if arr.shape != (NUM_REGISTERS,):
            raise ConfigError(
                f"a LArPix v2 configuration has {NUM_REGISTERS} registers, got shape {arr.shape}"
            )
        if arr.dtype.kind not in "iub":
            raise ConfigError(f"register values must be integers, got dtype {arr.dtype}")
        bad = np.flatnonzero((arr < 0) | (arr > 255))
        if bad.size:
            a = int(bad[0])
            raise ConfigError(f"register {a} = {int(arr[a])} does not fit in 8 bits (0..255)")
        regs = arr.astype(np.uint8)
        stray = regs & ~USED_BITS_MASK
        if strict and stray.any():
            a = int(np.flatnonzero(stray)[0])
            raise ConfigError(
                f"register {a} = 0x{int(regs[a]):02x} sets bits 0x{int(stray[a]):02x} that no "
                f"field uses (allowed mask 0x{int(USED_BITS_MASK[a]):02x})"
            )
        cfg = cls.__new__(cls)
        cfg._regs = regs & USED_BITS_MASK
        if strict:
            cfg.check_ranges()
        return cfg

    def to_registers(self) -> np.ndarray:
        """A copy of the 237 register bytes (uint8)."""
        return self._regs.copy()

    def check_ranges(self) -> None:
        """Raise ConfigError naming the first field holding a value outside its range."""
        bits = np.unpackbits(self._regs, bitorder="little")
        for f in FIELDS:
            values = self._field_values(f, bits)
            bad = np.flatnonzero((values < f.minimum) | (values > f.maximum))
            if bad.size:
                i = int(bad[0])
                where = f"{f.name}[{i}]" if f.is_list else f.name
                raise ConfigError(
                    f"{where} = {int(values[i])} is out of range; {f.name} takes {f.range_text()}"
                )

    # ---- named access ------------------------------------------------------------------
    def _field_values(self, f: Field, bits: np.ndarray | None = None) -> np.ndarray:
        """Element values of one field; ``bits`` (all 1896, unpacked) saves re-unpacking."""
        if bits is None:
            regs = f.registers
            bits = np.unpackbits(self._regs[regs.start : regs.stop], bitorder="little")
            start = f.offset - regs.start * 8
        else:
            start = f.offset
        seg = bits[start : start + f.width].reshape(f.count, f.element_width).astype(np.int64)
        return seg @ (np.int64(1) << np.arange(f.element_width, dtype=np.int64))

    def _store(self, f: Field, values: np.ndarray, index: int | None = None) -> None:
        if index is None:
            first, width = f.offset, f.width
        else:
            first, width = f.offset + index * f.element_width, f.element_width
        lo, hi = first // 8, (first + width - 1) // 8 + 1
        bits = np.unpackbits(self._regs[lo:hi], bitorder="little")
        shifts = np.arange(f.element_width, dtype=np.int64)
        new = ((values[:, None] >> shifts) & 1).astype(np.uint8).ravel()
        start = first - lo * 8
        bits[start : start + width] = new
        self._regs[lo:hi] = np.packbits(bits, bitorder="little")

    def get_value(self, name: str, index: int | None = None) -> Value:
        """A field's value: an int, or a list of ints for list fields (one element with index)."""
        f = field(name)
        values = self._field_values(f)
        if index is not None:
            return int(values[_check_index(f, index)])
        return [int(v) for v in values] if f.is_list else int(values[0])

    def set_value(self, name: str, value: Any, index: int | None = None) -> None:
        """Set a whole field, or one element of a list field; range-checked, atomic."""
        f = field(name)
        if index is not None:
            i = _check_index(f, index)
            v = _check_element(f, value, f"{name}[{i}]")
            self._store(f, np.array([v], dtype=np.int64), i)
        else:
            self._store(f, _check_value(f, value))

    def __getitem__(self, name: str) -> Any:
        f = field(name)
        return FieldView(self, name) if f.is_list else self.get_value(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.set_value(name, value)

    def __contains__(self, name: object) -> bool:
        return name in FIELD_NAMES

    def update(self, values: Mapping[str, Any]) -> None:
        """Set many fields at once; if any is invalid nothing changes."""
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"register values must be a mapping of name to value, got {type(values).__name__}"
            )
        trial = self.copy()
        for name, value in values.items():
            trial.set_value(name, value)
        self._regs = trial._regs

    def to_dict(self) -> dict[str, Value]:
        """Every field's value, in register-map order (the JSON ``register_values``)."""
        bits = np.unpackbits(self._regs, bitorder="little")
        out: dict[str, Value] = {}
        for f in FIELDS:
            values = self._field_values(f, bits).tolist()
            out[f.name] = values if f.is_list else values[0]
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ChipConfig:
        """Defaults overridden by ``values`` (fields not named keep their power-on value)."""
        cfg = cls()
        cfg.update(values)
        return cfg

    # ---- comparison ----------------------------------------------------------------------
    def copy(self) -> ChipConfig:
        cfg = ChipConfig.__new__(ChipConfig)
        cfg._regs = self._regs.copy()
        return cfg

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChipConfig):
            return NotImplemented
        return bool(np.array_equal(self._regs, other._regs))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        changed = ChipConfig().diff(self)
        inner = ", ".join(f"{k}={v[1]!r}" for k, v in changed.items())
        return f"ChipConfig({inner})" if inner else "ChipConfig(<defaults>)"

    def _other_registers(self, other: ChipConfig | np.ndarray) -> np.ndarray:
        if isinstance(other, ChipConfig):
            return other._regs
        return ChipConfig.from_registers(other, strict=False)._regs

    def changed_registers(self, other: ChipConfig | np.ndarray) -> list[int]:
        """Addresses whose bytes differ from ``other``: what to write to turn one into the other."""
        return [int(a) for a in np.flatnonzero(self._regs != self._other_registers(other))]

    def diff(self, other: ChipConfig | np.ndarray) -> dict[str, tuple[Value, Value]]:
        """``{name: (mine, theirs)}`` for every field whose value differs."""
        theirs = ChipConfig.__new__(ChipConfig)
        theirs._regs = self._other_registers(other)
        differ = np.unpackbits(self._regs ^ theirs._regs, bitorder="little").astype(bool)
        owners = np.unique(BIT_OWNER[differ])
        names = [FIELDS[i].name for i in owners if i >= 0]
        return {n: (self.get_value(n), theirs.get_value(n)) for n in names}

    def registers_of(self, name: str, index: int | None = None) -> list[int]:
        """Register addresses a field (or one element of a list field) is stored in."""
        return registers_of(name, index)

    # ---- JSON ------------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        return {"_config_type": "chip", "class": CHIP_CLASS, "register_values": self.to_dict()}

    def to_json(self) -> str:
        """The reference library's layout: one field per line, lists on one line."""
        lines = [f"        {json.dumps(k)}: {json.dumps(v)}" for k, v in self.to_dict().items()]
        return (
            "{\n"
            '    "_config_type": "chip",\n'
            f'    "class": {json.dumps(CHIP_CLASS)},\n'
            '    "register_values": {\n' + ",\n".join(lines) + "\n    }\n}"
        )

    def save(self, path: PathLike) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> ChipConfig:
        """Build from an already-parsed chip JSON object (``_include`` must be resolved)."""
        _check_chip_header(data, source, final=True)
        values = data.get("register_values")
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{source}: 'register_values' must be an object of field name to value, "
                f"got {type(values).__name__}"
            )
        try:
            return cls.from_dict(values)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def load(cls, path: PathLike) -> ChipConfig:
        """Load a chip configuration JSON, following ``_include`` files."""
        data = load_chip_json(path)
        return cls.from_json_dict(data, source=str(path))


def registers_of(name: str, index: int | None = None) -> list[int]:
    """Register addresses a field (or one element of a list field) is stored in."""
    f = field(name)
    if index is None:
        return list(f.registers)
    return list(f.element_registers(_check_index(f, index)))


def config_write_targets(
    cfg: ChipConfig, registers: int | str | Iterable[int | str] | None = None
) -> list[tuple[int, int]]:
    """``(address, value)`` pairs to write, ascending by address, without duplicates.

    ``registers`` is None (all 237), one address, one field name, or a mix of both.
    """
    if registers is None:
        addrs: Iterable[int] = range(NUM_REGISTERS)
    else:
        single = isinstance(registers, (str, int, np.integer))
        items: Iterable[int | str] = [registers] if single else registers  # type: ignore[list-item]
        chosen: set[int] = set()
        for item in items:
            if isinstance(item, str):
                chosen.update(registers_of(item))
            elif _is_integer(item) and not isinstance(item, bool):
                a = int(item)
                if not 0 <= a < NUM_REGISTERS:
                    raise ConfigError(
                        f"register address {a} is out of range 0..{NUM_REGISTERS - 1}"
                    )
                chosen.add(a)
            else:
                raise ConfigError(
                    f"registers must be addresses (int) or field names (str), got {item!r}"
                )
        addrs = sorted(chosen)
    regs = cfg.to_registers()
    return [(a, int(regs[a])) for a in addrs]


def stack_registers(configs: Iterable[ChipConfig]) -> np.ndarray:
    """``(n, 237)`` uint8 registers of many chips, e.g. for one ``configs`` dataset write."""
    rows = [c.to_registers() for c in configs]
    if not rows:
        return np.zeros((0, NUM_REGISTERS), dtype=np.uint8)
    return np.stack(rows)


# ---- JSON files with _include ---------------------------------------------------------------
_DESCRIPTIONS = {"chip": "chip configuration file", "controller": "network file"}


def _check_chip_header(data: Mapping[str, Any], source: str, final: bool) -> None:
    _check_type(data, source, "chip")
    if final:
        cls = data.get("class")
        if cls != CHIP_CLASS:
            raise ConfigError(
                f"{source}: 'class' is {cls!r}; only {CHIP_CLASS!r} (LArPix v2) is supported"
            )


def _check_type(data: Mapping[str, Any], source: str, config_type: str) -> None:
    kind = data.get("_config_type")
    if kind != config_type:
        what = _DESCRIPTIONS.get(config_type, f"{config_type} configuration file")
        raise ConfigError(
            f"{source}: not a {what}: '_config_type' is {kind!r}, expected {config_type!r}"
        )


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{path}: not valid JSON (line {err.lineno} column {err.colno}: {err.msg})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must be a JSON object")
    return data


def _load_merged(path: Path, stack: tuple[Path, ...], config_type: str) -> dict[str, Any]:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"_include cycle: {chain}")
    what = _DESCRIPTIONS.get(config_type, f"{config_type} configuration file")
    data = _read_json(path, what)
    _check_type(data, str(path), config_type)
    includes = data.pop("_include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: '_include' must be a file name or a list of file names")
    merged: dict[str, Any] = {}
    for name in includes:
        merged = _merge(merged, _load_merged(path.parent / name, (*stack, path), config_type))
    return _merge(merged, data)


def load_config_json(path: PathLike, config_type: str) -> dict[str, Any]:
    """Read a reference-library configuration JSON with its ``_include`` chain merged in.

    Every file in the chain must declare ``_config_type`` = ``config_type``. Included files
    (paths relative to the including file) are applied in order, then the file's own keys
    on top; objects such as ``register_values`` merge key by key, lists are replaced.
    """
    return _load_merged(Path(path), (), config_type)


def load_chip_json(path: PathLike) -> dict[str, Any]:
    """A chip configuration JSON with its ``_include`` chain merged in."""
    return load_config_json(path, "chip")


def load_chip_config(path: PathLike) -> ChipConfig:
    return ChipConfig.load(path)
