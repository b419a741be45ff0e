"""`larpix-daq convert`, `inspect` and `demo`: the file tools a physicist uses by hand."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from larpixdaq.commands import Command
from larpixdaq.convert import DEFAULT_CHUNK_MESSAGES, ConvertSummary, convert
from larpixdaq.demo import write_synthetic_raw
from larpixdaq.errors import CommandError, FormatError
from larpixdaq.formats.hdf5file import DEFAULT_CHUNK_ROWS, is_hdf5_file
from larpixdaq.formats.rawfile import is_raw_file
from larpixdaq.inspect import inspect_file, render_json, render_text


class ProgressBar:
    """A one-line progress bar on a terminal stream, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO, label: str = "converting", width: int = 30) -> None:
        self.stream = stream
        self.label = label
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
            f"{done:,}/{total:,} messages ({rate:,.0f}/s)"
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
    parser.add_argument("raw", type=Path, metavar="RAW.h5", help="raw PACMAN message file (v0.0)")
    parser.add_argument("out", type=Path, metavar="OUT.h5", help="LArPix+HDF5 v2.4 file to write")
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
    parser.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")
    parser.add_argument(
        "--progress", action="store_true",
        help="draw a progress bar on stderr even when it is not a terminal",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_convert(args: argparse.Namespace) -> int:
    raw: Path = args.raw
    out: Path = args.out
    if not raw.exists():
        raise CommandError(f"{raw}: no such file")
    if not raw.is_file():
        raise CommandError(f"{raw}: not a file")
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
    bar = ProgressBar(sys.stderr) if (args.progress or sys.stderr.isatty()) else None
    try:
        summary = convert(
            raw, out,
            chunk_messages=args.chunk_messages,
            chunk_rows=args.chunk_rows,
            compression=args.compression,
            overwrite=args.force,
            progress=bar,
        )
    except (FormatError, FileNotFoundError, FileExistsError, ValueError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    finally:
        if bar is not None:
            bar.finish()
    print(json.dumps(summary.as_dict(), indent=2) if args.json else render_summary(summary))
    return 0


# -- inspect ------------------------------------------------------------------------------
def configure_inspect(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE.h5",
                        help="LArPix+HDF5 or raw PACMAN message file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--verify", action="store_true",
                        help="recompute the packets checksum of a v2.4 file")


def run_inspect(args: argparse.Namespace) -> int:
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
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    summary = convert(raw, out, overwrite=True, progress=bar)
    if bar is not None:
        bar.finish()
    print(render_summary(summary))
    print("3/3 what is in it:")
    print(render_text(inspect_file(out, verify=True)))
    print(f"\nfiles:\n  raw   {raw.resolve()}\n  v2.4  {out.resolve()}")
    print(f"try:   larpix-daq inspect {out}   |   larpix-daq convert {raw} OTHER.h5")
    return 0


COMMANDS = [
    Command("convert", "convert a raw PACMAN message file to LArPix+HDF5 v2.4",
            configure_convert, run_convert),
    Command("inspect", "summarise a LArPix+HDF5 or raw PACMAN message file",
            configure_inspect, run_inspect),
    Command("demo", "make a synthetic raw file, convert it and inspect the result",
            configure_demo, run_demo),
]
