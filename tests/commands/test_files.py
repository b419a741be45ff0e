"""`larpix-daq convert`, `inspect` and `demo`, in process and once as a real subprocess."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from larpixdaq.cli import main
from larpixdaq.commands.files import ProgressBar
from larpixdaq.formats.hdf5file import read_packets


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_golden_file(
    tmp_path: Path, golden_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.h5"
    code, stdout, stderr = run(capsys, "convert", str(golden_dir / "raw-messages.h5"), str(out))
    assert code == 0, stderr
    assert "messages       6" in stdout and "rows           228" in stdout
    assert "decode errors  none" in stdout
    assert "converting [" not in stderr  # not a terminal, no --progress
    with h5py.File(golden_dir / "reference-v2.4.h5", "r") as ref:
        np.testing.assert_array_equal(read_packets(out), ref["packets"][()])


def test_convert_options_progress_and_json(
    tmp_path: Path, golden_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.h5"
    code, stdout, stderr = run(
        capsys, "convert", str(golden_dir / "raw-messages.h5"), str(out),
        "--chunk-messages", "2", "--chunk-rows", "100", "--compression", "lzf",
        "--progress", "--json",
    )
    assert code == 0, stderr
    assert "converting [" in stderr and "100.0% 6/6 messages" in stderr
    summary = json.loads(stdout)
    assert summary["n_rows"] == 228 and summary["errors"] == {}
    with h5py.File(out, "r") as f:
        assert f["packets"].compression == "lzf" and f["packets"].chunks == (100,)


def test_convert_errors(
    tmp_path: Path, golden_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = str(golden_dir / "raw-messages.h5")
    code, _, err = run(capsys, "convert", str(tmp_path / "nope.h5"), str(tmp_path / "o.h5"))
    assert code == 1 and "nope.h5: no such file" in err
    code, _, err = run(capsys, "convert", str(tmp_path), str(tmp_path / "o.h5"))
    assert code == 1 and "not a file" in err
    code, _, err = run(capsys, "convert", str(golden_dir / "reference-v2.4.h5"), "o.h5")
    assert code == 1 and "already a LArPix+HDF5 file" in err
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 100)
    code, _, err = run(capsys, "convert", str(junk), str(tmp_path / "o.h5"))
    assert code == 1 and "not a raw PACMAN message file" in err
    existing = tmp_path / "existing.h5"
    existing.write_bytes(b"x")
    code, _, err = run(capsys, "convert", raw, str(existing))
    assert code == 1 and "exists; pass --force" in err
    assert existing.read_bytes() == b"x"
    code, _, err = run(capsys, "convert", raw, str(existing), "--force")
    assert code == 0 and len(read_packets(existing)) == 228
    code, _, err = run(capsys, "convert", raw, str(tmp_path / "no" / "dir" / "o.h5"))
    assert code == 1 and "no such directory" in err
    truncated = tmp_path / "truncated.h5"
    rng = np.random.default_rng(0)
    from larpixdaq.formats.rawfile import write_raw

    write_raw(truncated, [b"D" + rng.bytes(7 + 16 * 400) for _ in range(400)], 1)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    code, _, err = run(capsys, "convert", str(truncated), str(tmp_path / "t.h5"))
    assert code == 1 and "error:" in err
    assert not (tmp_path / "t.h5").exists()


@pytest.mark.parametrize("bad", ["0", "-3", "many"])
def test_convert_rejects_bad_chunk_sizes(
    tmp_path: Path, golden_dir: Path, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(golden_dir / "raw-messages.h5"), str(tmp_path / "o.h5"),
              "--chunk-messages", bad])
    assert exc.value.code == 2
    assert "--chunk-messages" in capsys.readouterr().err


def test_inspect(golden_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "inspect", str(golden_dir / "reference-v2.4.h5"))
    assert code == 0, err
    assert "LArPix+HDF5 v2.4" in out and "parity errors 14" in out
    code, out, _ = run(capsys, "inspect", str(golden_dir / "raw-messages.h5"), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["format"] == "raw PACMAN messages" and summary["rows"] == 228


def test_inspect_errors_and_checksum_mismatch(
    tmp_path: Path, golden_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "inspect", str(tmp_path / "missing.h5"))
    assert code == 1 and "missing.h5: no such file" in err
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    code, _, err = run(capsys, "inspect", str(text))
    assert code == 1 and "not a readable HDF5 file" in err
    out = tmp_path / "o.h5"
    assert main(["convert", str(golden_dir / "raw-messages.h5"), str(out)]) == 0
    code, stdout, _ = run(capsys, "inspect", str(out), "--verify")
    assert code == 0 and "(verified)" in stdout
    with h5py.File(out, "r+") as f:
        f["packets"][0:1] = np.zeros(1, dtype=f["packets"].dtype)
    code, stdout, err = run(capsys, "inspect", str(out), "--verify")
    assert code == 3 and "MISMATCH" in stdout and "checksum MISMATCH" in err


def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "demo", "--out-dir", str(tmp_path / "d"), "--packets", "20000")
    assert code == 0, err
    raw, v24 = tmp_path / "d" / "demo-raw.h5", tmp_path / "d" / "demo-v2.4.h5"
    assert str(raw.resolve()) in out and str(v24.resolve()) in out
    rows = read_packets(v24)
    assert np.count_nonzero(rows["packet_type"] == 0) == 20000
    assert "(verified)" in out


def test_progress_bar_draws_and_finishes() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    bar(0, 4)
    bar(4, 4)
    bar.finish()
    text = stream.getvalue()
    assert "  0.0% 0/4 messages" in text and "100.0% 4/4 messages" in text
    assert "[##########]" in text and text.endswith("\n")
    quiet = io.StringIO()
    ProgressBar(quiet).finish()
    assert quiet.getvalue() == ""


def test_cli_as_a_subprocess(tmp_path: Path, golden_dir: Path) -> None:
    out = tmp_path / "sub.h5"
    done = subprocess.run(
        [sys.executable, "-m", "larpixdaq.cli", "convert",
         str(golden_dir / "raw-messages.h5"), str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "rows           228" in done.stdout
    again = subprocess.run(
        [sys.executable, "-m", "larpixdaq.cli", "convert",
         str(golden_dir / "raw-messages.h5"), str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 1
    assert again.stderr.strip().endswith("exists; pass --force to replace it")
    assert "Traceback" not in again.stderr


def test_demo_cannot_create_its_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    code, _, err = run(capsys, "demo", "--out-dir", str(blocker / "sub"))
    assert code == 1 and "cannot create" in err


# -- a producer's frame files ---------------------------------------------------------------


def _frame_log(directory: Path) -> tuple[Path, list[bytes]]:
    """A frame log of run 6 as the producer's own writer leaves it, its last record torn,
    and the messages in it."""
    from datagen import make_frames, make_messages

    from larpixdaq.pipeline.framelog import FrameLog
    from larpixdaq.pipeline.protocol import encode_header

    msgs = make_messages(11, 12, words=20)
    log = FrameLog(directory, "producer-1")
    for h, payload in make_frames("producer-1", 1, msgs, run=6, epoch=2):
        log.append(h.epoch, h.seq, encode_header(h), payload)
    (path,) = log.paths
    log.close()
    path.write_bytes(path.read_bytes()[:-3])  # the "Ending run" record cut short
    return path, msgs


def test_inspect_and_convert_a_producer_frame_log(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from datagen import expected_rows

    log, msgs = _frame_log(tmp_path / "data")
    stale = log.rename(log.with_suffix(".stale"))
    code, out, err = run(capsys, "inspect", str(stale))
    assert code == 0, err
    assert "producer frame log" in out and "frames        13 (data 12, info 1)" in out
    assert "stream producer-1 epoch 2" in out and "seq           0 .. 12" in out
    assert f"data packets  {12 * 20} words" in out
    assert "message time  2023-11-14T22:13:20Z .. 2023-11-14T22:13:31Z" in out
    assert "torn tail     " in out and "bytes at offset" in out
    code, out, _ = run(capsys, "inspect", str(stale), "--json")
    summary = json.loads(out)
    assert code == 0 and summary["runs"] == [6] and summary["torn_tail"]["bytes"] > 0
    h5 = tmp_path / "kept.h5"
    code, out, err = run(capsys, "convert", str(stale), str(h5), "--run", "6")
    assert code == 0, err
    assert "frames         13 written of 13 read" in out and "torn tail" in out
    rows = read_packets(h5)
    np.testing.assert_array_equal(rows[rows["packet_type"] != 5], expected_rows(msgs, 1))
    code, out, _ = run(capsys, "inspect", str(h5))
    assert code == 0 and "LArPix+HDF5 v2.4" in out and "Beginning run" in out


def test_frame_file_errors_are_said_plainly(tmp_path: Path, golden_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    log, _ = _frame_log(tmp_path / "data")
    out = tmp_path / "o.h5"
    out.write_bytes(b"x")
    code, _, err = run(capsys, "convert", str(log), str(out))
    assert code == 1 and "never replaces" in err and out.read_bytes() == b"x"
    code, _, err = run(capsys, "convert", str(log), str(out), "--force")
    assert code == 1 and "--force is for raw files" in err and out.read_bytes() == b"x"
    code, _, err = run(capsys, "convert", str(log), str(golden_dir / "raw-messages.h5"),
                       str(tmp_path / "n.h5"))
    assert code == 1 and "not a producer frame log or spill file" in err
    code, _, err = run(capsys, "convert", str(log), str(tmp_path / "n.h5"), "--run", "99")
    assert code == 1 and "no frame to export of run 99" in err
    code, _, err = run(capsys, "convert", str(golden_dir / "raw-messages.h5"),
                       str(tmp_path / "n.h5"), "--run", "1")
    assert code == 1 and "--run is for producer frame files only" in err
    assert not (tmp_path / "n.h5").exists()


def test_a_garbled_frame_log_is_reported_by_a_subprocess_without_a_traceback(
        tmp_path: Path) -> None:
    log, _ = _frame_log(tmp_path / "data")
    data = bytearray(log.read_bytes())
    data[200:200] = bytes(range(256)) * 4  # garbage inside the log
    log.write_bytes(bytes(data))
    done = subprocess.run([sys.executable, "-m", "larpixdaq.cli", "inspect", str(log)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "damaged       1 place(s)" in done.stdout and "at offset" in done.stdout
    assert "Traceback" not in done.stderr
    out = tmp_path / "g.h5"
    done = subprocess.run([sys.executable, "-m", "larpixdaq.cli", "convert", str(log),
                           str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "damaged        1 place(s) skipped" in done.stdout and out.exists()
