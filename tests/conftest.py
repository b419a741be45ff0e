"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import atexit
import contextlib
import errno
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from larpixdaq.runcontrol.testing import CoreProcess

# Token files written by the cores the tests start (and read by their clients) go to a folder
# of this test session, never the tester's own ~/.config/larpix-daq. Set before any test
# starts a process, so every child inherits it.
_CONFIG = tempfile.mkdtemp(prefix="larpix-daq-test-config-")
os.environ["LARPIX_DAQ_CONFIG"] = _CONFIG
os.environ.pop("LARPIX_DAQ_USER", None)
os.environ.pop("LARPIX_DAQ_TOKEN", None)
atexit.register(shutil.rmtree, _CONFIG, True)

DATA_DIR = Path(__file__).resolve().parent / "data"
"""Files the tests read, kept in the repository so a clone is all a contributor needs."""

GOLDEN_DIR = DATA_DIR / "golden"
"""Files written by the field's reference library (larpix-control 3.7.0); see its README."""

REGISTER_TABLE = DATA_DIR / "reference" / "larpix-v2-registers.txt"
"""The reference library's listing of every v2 register field, checked against our map."""


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The folder of golden files, so compatibility tests never hard-code an absolute path."""
    if not (GOLDEN_DIR / "README.md").is_file():
        pytest.fail(
            f"golden files not found at {GOLDEN_DIR}: they are part of the repository "
            "(tests/data/golden); restore them with git",
            pytrace=False,
        )
    return GOLDEN_DIR


@pytest.fixture
def golden_messages(golden_dir: Path) -> tuple[list[bytes], list[int]]:
    """The reference library's PACMAN messages and their io_groups (``pacman-messages.hex``:
    one ``io_group hex-bytes`` line a message)."""
    messages, groups = [], []
    for line in (golden_dir / "pacman-messages.hex").read_text().splitlines():
        if line.strip():
            group, hexed = line.split()
            groups.append(int(group))
            messages.append(bytes.fromhex(hexed))
    return messages, groups


@pytest.fixture
def held_by_child() -> Callable[[str, str], contextlib.AbstractContextManager[None]]:
    """``with held_by_child(setup, teardown):`` runs the Python source ``setup`` in a child
    process, which then holds what it opened until the block ends and runs ``teardown``; the
    child must end cleanly. For what another process (a writer of a run in progress) does to
    the files it holds."""

    @contextlib.contextmanager
    def hold(setup: str, teardown: str) -> Iterator[None]:
        code = f"import sys\n{setup}print('ready', flush=True)\nsys.stdin.read()\n{teardown}"
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            yield
        finally:
            try:
                child.communicate("", timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.communicate()
                raise
        assert child.returncode == 0

    return hold


@pytest.fixture
def core(tmp_path: Path) -> Iterator[CoreProcess]:
    """A real core process with its run database in the test's folder, ended after the test."""
    with CoreProcess(tmp_path / "runs.sqlite") as c:
        yield c


@pytest.fixture(scope="session")
def register_table() -> Path:
    """The reference register listing, failing with where it should be when it is missing."""
    if not REGISTER_TABLE.is_file():
        pytest.fail(f"register table not found at {REGISTER_TABLE}: restore it with git",
                    pytrace=False)
    return REGISTER_TABLE


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``reference`` fails, saying why, when the reference library is missing:
    it is part of the test set-up, and a skip would quietly drop the compatibility cases."""
    if not item.get_closest_marker("reference"):
        return
    try:
        importlib.import_module("larpix")
    except ImportError as err:
        pytest.fail(f"the reference library larpix-control is missing ({err}); it is part of "
                    "the test set-up: pip install -e '.[test,reference]' (make test does it)",
                    pytrace=False)


class SmallDisk:
    """A real file system of a few MB (tmpfs) that tests fill up and free again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fillers: list[Path] = []

    def fill(self) -> Path:
        """Write a file until the disk says ENOSPC; returns it (remove it with :meth:`free`)."""
        filler = self.path / f".filler-{len(self._fillers)}"
        self._fillers.append(filler)
        block = b"\xa5" * (64 << 10)
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        # A partial block may still fit: take the last bytes too.
        with open(filler, "ab", buffering=0) as f:
            for size in (4096, 512, 1):
                try:
                    while True:
                        f.write(b"\xa5" * size)
                except OSError:
                    pass
        return filler

    def free(self) -> None:
        for filler in self._fillers:
            filler.unlink(missing_ok=True)
        self._fillers.clear()


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs mounted for the test (we run as root); skipped, saying why, where a
    mount is not permitted."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a 16 MB tmpfs to fill up: {proc.stderr.strip()}")
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


class SyncSpy:
    """Records the path behind every ``fsync`` the process makes (and still makes it)."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def clear(self) -> None:
        self.paths.clear()


@pytest.fixture
def synced(monkeypatch) -> SyncSpy:
    spy = SyncSpy()
    real = os.fsync

    def fsync(fd: int) -> None:
        spy.paths.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return spy
