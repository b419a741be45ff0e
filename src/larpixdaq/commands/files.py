"""`larpix-daq convert`, `inspect` and `demo`: the file tools a physicist uses by hand.

``convert`` and ``inspect`` also take the frame files a producer leaves on disk (its frame log
and spill file, :mod:`~larpixdaq.pipeline.framefiles`): the reading is the pipeline's, the
wiring is here."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from larpixdaq.commands import Command
from larpixdaq.convert import DEFAULT_CHUNK_MESSAGES, ConvertSummary, convert
from larpixdaq.demo import write_synthetic_raw
from larpixdaq.errors import CommandError, FormatError
from larpixdaq.formats.hdf5file import DEFAULT_CHUNK_ROWS, is_hdf5_file
from larpixdaq.formats.rawfile import is_raw_file
from larpixdaq.inspect import inspect_file, iso_utc, render_json, render_text
from larpixdaq.pipeline import framefiles
from larpixdaq.pipeline.frameexport import ExportSummary, export_frames


class ProgressBar:
    """A one-line progress bar on a terminal stream, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO, label: str = "converting", width: int = 30,
                 unit: str = "messages") -> None:
        self.stream = stream
        self.label = label
        self.unit = unit
        self.width = width
        self._t0 = time.perf_counter()
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        frac = done / total if total else 1.0
        filled = int(self.width * frac)
        rate = done / (now - self._t0) if now > self._t0 else 0.0
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {100 * frac:5.1f}% "
            f"{done:,}/{total:,} {self.unit} ({rate:,.0f}/s)"
        )
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def render_summary(s: ConvertSummary) -> str:
    types = ", ".join(f"{k} {v:,}" for k, v in s.rows_by_type.items()) or "none"
    errors = ", ".join(f"{k} {v:,}" for k, v in s.errors.items()) or "none"
    return "\n".join(
        [
            f"converted {s.input} -> {s.output}",
            f"  messages       {s.n_messages:,}",
            f"  rows           {s.n_rows:,} ({types})",
            f"  parity errors  {s.parity_errors:,}",
            f"  decode errors  {errors}",
            f"  time           {s.elapsed_s:.2f} s, {s.packets_per_s / 1e6:.2f} M packets/s",
            f"  size           {s.input_bytes:,} -> {s.output_bytes:,} bytes",
        ]
    )


# -- convert ------------------------------------------------------------------------------
def configure_convert(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Convert a raw PACMAN message file, or the frame files a producer left on disk "
        "(framelog-NAME-PID-N.bin/.stale, spill-NAME-PID.bin: its data frames, each once, in "
        "(source, epoch, seq) order, info frames as messages), to LArPix+HDF5 v2.4.")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                        help="one raw PACMAN message file (v0.0), or one or more producer "
                             "frame log / spill files")
    parser.add_argument("out", type=Path, metavar="OUT.h5", help="LArPix+HDF5 v2.4 file to write")
    parser.add_argument("--run", type=int, default=None, metavar="N",
                        help="frame files only: export only run N's frames")
    parser.add_argument(
        "--chunk-messages", type=_positive_int, default=DEFAULT_CHUNK_MESSAGES, metavar="N",
        help=f"messages decoded per batch (default {DEFAULT_CHUNK_MESSAGES})",
    )
    parser.add_argument(
        "--chunk-rows", type=_positive_int, default=DEFAULT_CHUNK_ROWS, metavar="N",
        help=f"HDF5 chunk size of 'packets' in rows (default {DEFAULT_CHUNK_ROWS})",
    )
    parser.add_argument(
        "--compression", choices=("none", "gzip", "lzf"), default="none",
        help="compression of the 'packets' dataset (default none)",
    )
    parser.add_argument("--force", action="store_true",
                        help="replace OUT.h5 if it exists (raw files only: an export of frame "
                             "files never replaces a file)")
    parser.add_argument(
        "--progress", action="store_true",
        help="draw a progress bar on stderr even when it is not a terminal",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _check_input(path: Path) -> None:
    if not path.exists():
        raise CommandError(f"{path}: no such file")
    if not path.is_file():
        raise CommandError(f"{path}: not a file")


def render_export(s: ExportSummary) -> str:
    types = ", ".join(f"{k} {v:,}" for k, v in s.rows_by_type.items()) or "none"
    errors = ", ".join(f"{k} {v:,}" for k, v in s.decode_errors.items()) or "none"
    lines = [f"exported {', '.join(s.inputs)} -> {s.output}"
             + (f" (run {s.run})" if s.run is not None else ""),
             f"  frames         {s.frames_written:,} written of {s.frames_read:,} read; "
             f"{s.frames_duplicate:,} duplicate, {s.frames_conflicting:,} conflicting, "
             f"{s.frames_other_runs:,} of other runs",
             f"  rows           {s.n_rows:,} ({types})",
             f"  messages       {s.messages_written:,}; configs rows {s.configs_written:,}",
             f"  decode errors  {errors}"]
    for st in s.streams:
        lines.append(f"  stream         {st['source']} epoch {st['epoch']}: seq {st['seq_first']}"
                     f" .. {st['seq_last']}, {st['frames']:,} frames, {st['missing']:,} missing")
    for t in s.torn_tails:
        lines.append(f"  torn tail      {t['file']} at offset {t['offset']:,} ({t['bytes']} "
                     "bytes left out)")
    if s.damaged_count:
        lines.append(f"  damaged        {s.damaged_count} place(s) skipped")
        for d in s.damaged[:5]:
            lines.append(f"    {d['file']} at offset {d['offset']:,}: {d['reason']}")
    return "\n".join(lines)


def _run_export(args: argparse.Namespace) -> int:
    out: Path = args.out
    if args.force:
        raise CommandError("frame files are exported to a new file only; --force is for raw "
                           "files")
    if out.exists():
        raise CommandError(f"{out} exists; an export never replaces a file")
    if not out.parent.exists():
        raise CommandError(f"{out.parent}: no such directory")
    show = args.progress or sys.stderr.isatty()
    try:
        with progress_shown(show, label="exporting", unit="frames") as bar:
            summary = export_frames(args.inputs, out, run=args.run, chunk_rows=args.chunk_rows,
                                    batch_frames=args.chunk_messages,
                                    compression=args.compression, progress=bar)
    except (FileNotFoundError, FileExistsError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    print(json.dumps(summary.as_dict(), indent=2) if args.json else render_export(summary))
    return 0


def run_convert(args: argparse.Namespace) -> int:
    for path in args.inputs:
        _check_input(path)
    frames = [framefiles.sniff(p) is not None for p in args.inputs]
    if any(frames):
        if not all(frames):
            other = [str(p) for p, f in zip(args.inputs, frames, strict=True) if not f]
            raise CommandError(f"{', '.join(other)}: not a producer frame log or spill file; "
                               "frame files are converted only with each other")
        return _run_export(args)
    if len(args.inputs) > 1:
        raise CommandError("a raw PACMAN message file is converted alone (one INPUT)")
    if args.run is not None:
        raise CommandError("--run is for producer frame files only")
    raw: Path = args.inputs[0]
    out: Path = args.out
    if not is_raw_file(raw):
        if is_hdf5_file(raw):
            raise CommandError(
                f"{raw} is already a LArPix+HDF5 file, not a raw PACMAN message file; "
                "nothing to convert (see `larpix-daq inspect`)"
            )
        raise CommandError(
            f"{raw} is not a raw PACMAN message file (needs HDF5 with 'meta', 'msgs', "
            "'msg_headers')"
        )
    if out.exists() and not args.force:
        raise CommandError(f"{out} exists; pass --force to replace it")
    if not out.parent.exists():
        raise CommandError(f"{out.parent}: no such directory")
    try:
        with progress_shown(args.progress or sys.stderr.isatty()) as bar:
            summary = convert(raw, out, chunk_messages=args.chunk_messages,
                              chunk_rows=args.chunk_rows, compression=args.compression,
                              overwrite=args.force, progress=bar)
    except (FormatError, FileNotFoundError, FileExistsError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    print(json.dumps(summary.as_dict(), indent=2) if args.json else render_summary(summary))
    return 0


# -- inspect ------------------------------------------------------------------------------
def configure_inspect(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Summarise a LArPix+HDF5 file, a raw PACMAN message file, or a frame file a producer "
        "left on disk (framelog-NAME-PID-N.bin/.stale, spill-NAME-PID.bin; recognised by "
        "its content): per stream its runs, seq range and holes, frames by kind, data "
        "packets, message times, a torn tail and damaged records.")
    parser.add_argument("file", type=Path, metavar="FILE",
                        help="LArPix+HDF5, raw PACMAN message, or producer frame log / spill "
                             "file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--verify", action="store_true",
                        help="recompute the packets checksum of a v2.4 file")


def run_inspect(args: argparse.Namespace) -> int:
    if args.file.is_file() and framefiles.sniff(args.file) is not None:
        try:
            frames = framefiles.summarise_file(args.file)
        except OSError as exc:
            raise CommandError(f"{args.file}: {exc.strerror or exc}") from exc
        print(render_json(frames) if args.json else framefiles.render_text(frames, iso_utc))
        return 0
    try:
        summary = inspect_file(args.file, verify=args.verify)
    except FileNotFoundError as exc:
        raise CommandError(f"{args.file}: no such file") from exc
    except (FormatError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    print(render_json(summary) if args.json else render_text(summary))
    if args.verify and summary.get("checksum_ok") is False:
        print(f"larpix-daq inspect: {args.file}: packets checksum MISMATCH", file=sys.stderr)
        return 3
    return 0


# -- demo ---------------------------------------------------------------------------------
def configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out-dir", type=Path, default=Path("data"),
                        help="where to write the demo files (default ./data)")
    parser.add_argument("--packets", type=_positive_int, default=300_000,
                        help="synthetic data packets to generate (default 300000)")
    parser.add_argument("--seed", type=int, default=0)


@contextlib.contextmanager
def progress_shown(show: bool, **options: Any) -> Iterator[ProgressBar | None]:
    """A :class:`ProgressBar` on stderr when ``show`` (else None), whose line is ended
    however the work ends, so an error message starts on a line of its own."""
    bar = ProgressBar(sys.stderr, **options) if show else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.finish()


def run_demo(args: argparse.Namespace) -> int:
    out_dir: Path = args.out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create {out_dir}: {exc}") from exc
    raw = out_dir / "demo-raw.h5"
    out = out_dir / "demo-v2.4.h5"
    print(f"1/3 writing {args.packets:,} synthetic packets as PACMAN messages to {raw}")
    n = write_synthetic_raw(raw, args.packets, seed=args.seed)
    print(f"    {n:,} messages")
    print(f"2/3 converting to LArPix+HDF5 v2.4: {out}")
    with progress_shown(sys.stderr.isatty()) as bar:
        summary = convert(raw, out, overwrite=True, progress=bar)
    print(render_summary(summary))
    print("3/3 what is in it:")
    print(render_text(inspect_file(out, verify=True)))
    print(f"\nfiles:\n  raw   {raw.resolve()}\n  v2.4  {out.resolve()}")
    print(f"try:   larpix-daq inspect {out}   |   larpix-daq convert {raw} OTHER.h5")
    return 0


COMMANDS = [
    Command("convert", "convert a raw PACMAN message file, or producer frame files, to "
            "LArPix+HDF5 v2.4",
            configure_convert, run_convert),
    Command("inspect", "summarise a LArPix+HDF5, raw PACMAN message or producer frame file",
            configure_inspect, run_inspect),
    Command("demo", "make a synthetic raw file, convert it and inspect the result",
            configure_demo, run_demo),
]
