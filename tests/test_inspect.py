"""File summaries: the same figures from a v2.4 file and from the raw file it came from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from larpixdaq.errors import FormatError
from larpixdaq.formats.hdf5file import Hdf5Writer
from larpixdaq.formats.rawfile import write_raw
from larpixdaq.formats.rows import PACKETS_DTYPE
from larpixdaq.inspect import inspect_file, render_json, render_text

SHARED_KEYS = (
    "rows", "rows_by_type", "chip_packets", "io_groups", "chips", "chip_keys", "channels",
    "time_span", "sync_rows_by_kind", "triggers", "parity_errors",
)


def test_reference_file_summary(golden_dir: Path) -> None:
    path = golden_dir / "reference-v2.4.h5"
    s = inspect_file(path)
    with h5py.File(path, "r") as f:
        rows = f["packets"][()]
    chip = rows[rows["packet_type"] < 4]
    data = rows[rows["packet_type"] == 0]
    assert s["format"] == "LArPix+HDF5" and s["version"] == "2.4"
    assert s["rows"] == 228
    assert s["rows_by_type"] == {
        "data": 134, "config_write": 42, "config_read": 33, "timestamp": 6, "sync": 7,
        "trigger": 6,
    }
    assert s["io_groups"] == [1, 2]
    keys = {f"{r['io_group']}-{r['io_channel']}-{r['chip_id']}" for r in chip}
    assert s["chips"] == len(keys) and set(s["chip_keys"]) == keys
    assert s["channels"] == len(
        {(r["io_group"], r["io_channel"], r["chip_id"], r["channel_id"]) for r in data}
    )
    assert s["parity_errors"] == int(np.count_nonzero(chip["valid_parity"] == 0)) > 0
    assert s["time_span"]["start"] == 1795484013 and s["time_span"]["seconds"] == 0
    assert s["sync_rows_by_kind"] == {"H": 1, "S": 6}
    assert s["triggers"] == 6
    assert s["messages"]["count"] == 0
    assert s["configs"] == {"count": 2, "chips": ["1-1-11", "2-3-42"], "asic_version": "2"}
    assert s["clean_close"] is None  # the reference writer records no such mark
    assert s["header"]["version"] == "2.4"


def test_raw_file_summary_matches_its_conversion(golden_dir: Path) -> None:
    raw = inspect_file(golden_dir / "raw-messages.h5")
    ref = inspect_file(golden_dir / "reference-v2.4.h5")
    assert raw["format"] == "raw PACMAN messages" and raw["version"] == "0.0"
    for key in SHARED_KEYS:
        assert raw[key] == ref[key], key
    assert raw["raw"]["messages"] == 6
    assert raw["raw"]["messages_by_type"] == {"D": 6}
    assert raw["raw"]["messages_by_io_group"] == {"1": 3, "2": 3}
    assert raw["raw"]["decode_errors"] == {}


def test_messages_configs_run_metadata_and_checksum(tmp_path: Path, golden_dir: Path) -> None:
    with h5py.File(golden_dir / "reference-v2.4.h5", "r") as f:
        rows, configs = f["packets"][()], f["configs"][()]
    path = tmp_path / "ours.h5"
    with Hdf5Writer(path, run_metadata={"run_number": 7}) as w:
        w.add_message("begin", 100)
        w.append(rows)
        w.add_configs(configs)
    s = inspect_file(path, verify=True)
    assert s["rows_by_type"]["message"] == 1 and s["rows"] == 229
    assert s["messages"]["texts"] == [{"index": 0, "timestamp": 100, "message": "begin"}]
    assert s["configs"]["count"] == 2
    assert s["run"] == {"run_number": 7}
    assert s["clean_close"] is True and s["checksum_ok"] is True
    with h5py.File(path, "r+") as f:
        f["packets"][3:4] = np.zeros(1, dtype=PACKETS_DTYPE)
    assert inspect_file(path, verify=True)["checksum_ok"] is False
    text = render_text(inspect_file(path, verify=True))
    assert "MISMATCH" in text and "begin" in text and "run.run_number" in text


def test_decode_errors_in_a_raw_file(tmp_path: Path) -> None:
    raw = tmp_path / "r.h5"
    write_raw(raw, [b"", b"?\x00\x00\x00\x00\x00\x00\x00", b"D\x00"], [4, 4, 5])
    s = inspect_file(raw)
    assert s["raw"]["messages_by_type"] == {"?": 1, "D": 1, "empty": 1}
    assert s["raw"]["decode_errors"] == {"truncated_header": 2, "not_data_message": 1}
    assert s["rows"] == 0 and s["time_span"] is None and s["io_groups"] == []
    assert "unknown (no timestamp rows)" in render_text(s)


def test_renderings(golden_dir: Path) -> None:
    for name in ("reference-v2.4.h5", "raw-messages.h5"):
        s = inspect_file(golden_dir / name)
        assert json.loads(render_json(s))["rows"] == 228
        text = render_text(s)
        assert "parity errors" in text and "io_groups     1, 2" in text
        assert "190 in all" in text


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        inspect_file(tmp_path / "missing.h5")
    with pytest.raises(FormatError, match="not a file"):
        inspect_file(tmp_path)
    text = tmp_path / "x.h5"
    text.write_text("hello")
    with pytest.raises(FormatError, match="not a readable HDF5"):
        inspect_file(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["something"] = [1, 2, 3]
    with pytest.raises(FormatError, match="not a LArPix"):
        inspect_file(other)


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "big.h5"
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 256, 60000 * 36, dtype=np.uint8).view(PACKETS_DTYPE)
    with Hdf5Writer(path, chunk_rows=2048) as w:
        w.append(rows)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FormatError):
        inspect_file(cut)


def test_files_being_recorded_by_another_process(tmp_path: Path, golden_dir: Path,
                                                held_by_child) -> None:
    """A run in progress (SWMR writers in another process) can be inspected."""
    raw, v24 = tmp_path / "live-raw.h5", tmp_path / "live.h5"
    setup = (
        "import h5py\n"
        "from larpixdaq.formats.hdf5file import Hdf5Writer\n"
        "from larpixdaq.formats.rawfile import RawWriter, open_raw\n"
        f"msgs, groups = open_raw({str(golden_dir / 'raw-messages.h5')!r}).read()\n"
        f"rows = h5py.File({str(golden_dir / 'reference-v2.4.h5')!r}, 'r')['packets'][()]\n"
        f"r = RawWriter({str(raw)!r}, swmr=True)\n"
        "r.append(msgs, groups)\n"
        f"w = Hdf5Writer({str(v24)!r}, swmr=True)\n"
        "w.append(rows)\n"
        "w.flush()\n"
    )
    with held_by_child(setup, "w.close()\nr.close()\n"):
        live_raw = inspect_file(raw)
        live = inspect_file(v24)
    assert live_raw["format"] == "raw PACMAN messages" and live_raw["rows"] == 228
    assert live["rows"] == 228 and live["clean_close"] is False
    assert inspect_file(v24)["clean_close"] is True


def test_text_is_key_value_with_readable_times_and_the_config_hash(tmp_path: Path,
                                                                  golden_dir: Path) -> None:
    import datetime as dt

    from larpixdaq.pipeline.runfile import RunWriter

    with h5py.File(golden_dir / "reference-v2.4.h5", "r") as f:
        configs = f["configs"][()]
    w = RunWriter(tmp_path, 12, {"start_time": 1_796_154_881.5, "comment": ""})
    w._ensure_part()
    w._writer.add_configs(configs)  # as storage adds a producer's snapshot
    w._configs_seen.append(configs)
    w.close()
    s = inspect_file(w.files[0])
    text = render_text(s)
    meta = {}
    for line in text.splitlines():
        if line.startswith(("  run.", "  header.")):
            key, _, value = line.strip().partition(" ")
            assert key and not key[-1].isdigit(), line  # never `run.messages_truncated0`
            meta[key] = value.strip()
    for key in ("run.start_time", "run.end_time", "header.created", "header.modified"):
        raw = s["run" if key.startswith("run.") else "header"][key.split(".", 1)[1]]
        shown = dt.datetime.fromisoformat(meta[key].replace("Z", "+00:00"))
        assert shown.tzinfo is not None and abs(shown.timestamp() - raw) < 0.001, key
    assert meta["run.start_time"] == "2026-12-01T19:54:41.500Z"
    assert re.fullmatch(r"[0-9a-f]{64}", meta["run.config_hash"])


def test_a_file_without_a_recorded_hash_gets_it_from_its_configs_table(tmp_path: Path,
                                                                       golden_dir: Path) -> None:
    with h5py.File(golden_dir / "reference-v2.4.h5", "r") as f:
        configs = f["configs"][()]
    paths = []
    for name, rows in (("a.h5", configs), ("b.h5", configs[::-1]), ("c.h5", configs[:1])):
        with Hdf5Writer(tmp_path / name, run_metadata={"run_number": 7}) as w:
            w.add_configs(rows)
        paths.append(tmp_path / name)
    a, b, c = (inspect_file(p) for p in paths)
    assert a["config_hash_from"] == "configs table" and len(a["config_hash"]) == 64
    assert a["config_hash"] == b["config_hash"] != c["config_hash"]  # order-free, content-bound
    assert f"run.config_hash       {a['config_hash']} (from the configs table)" in render_text(a)
