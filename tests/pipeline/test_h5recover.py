import subprocess
import sys

import h5py
import pytest

from larpixdaq.errors import FormatError
from larpixdaq.formats.hdf5file import Hdf5File, verify_checksum
from larpixdaq.pipeline.h5recover import (
    clear_write_flags,
    lookup3,
    repair_part,
    truncate_to_commit,
)


def test_lookup3_reference_values():
    # The values printed by the driver of Bob Jenkins' lookup3.c.
    assert lookup3(b"") == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161


_KILLED = """
import os, signal
import numpy as np
from larpixdaq.formats.hdf5file import Hdf5Writer, PACKETS_DTYPE
w = Hdf5Writer({path!r}, swmr=True, chunk_rows=100)
rows = np.zeros(250, PACKETS_DTYPE)
rows["timestamp"] = np.arange(250)
w.append(rows)
w.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def killed_file(tmp_path):
    path = tmp_path / "k.h5"
    proc = subprocess.run([sys.executable, "-c", _KILLED.format(path=str(path))])
    assert proc.returncode == -9
    return path


def test_a_killed_swmr_file_opens_again_after_clearing(killed_file):
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(killed_file, "r")
    assert clear_write_flags(killed_file) is True
    assert clear_write_flags(killed_file) is False  # nothing left to clear
    with Hdf5File(killed_file) as f:
        assert f.n_packets == 250


def test_truncate_cuts_back_to_the_commit(killed_file):
    cut = truncate_to_commit(killed_file, 120, 0, 0)
    assert cut["packets"] == 130
    with Hdf5File(killed_file) as f:
        rows = f.read_packets()
        assert rows["timestamp"].tolist() == list(range(120))
        info = f.info()
        assert info.header["recovered"] > 0
        # Repaired means complete: the clean-close mark and the checksum of what it keeps.
        assert info.clean_close is True
    assert verify_checksum(killed_file) is True


def test_not_hdf5_is_refused(tmp_path):
    p = tmp_path / "x.h5"
    p.write_bytes(b"hello, not hdf5" * 10)
    with pytest.raises(FormatError, match="no HDF5 superblock"):
        clear_write_flags(p)


def test_a_damaged_superblock_is_not_rewritten(killed_file):
    data = bytearray(killed_file.read_bytes())
    data[20] ^= 0xFF  # inside the superblock, covered by its checksum
    killed_file.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="checksum does not match"):
        clear_write_flags(killed_file)


# A storage's first moments: the part is created and switched to SWMR, "Beginning run" and
# rows are written, and the process dies before its first commit (a full flush). A SWMR
# writer flushes each dataset's new chunk index at once, while the superblock's end-of-file
# address stays where switching to SWMR left it. With {commit} the first 250 rows are
# committed before the message.
_KILLED_EARLY = """
import os, signal
import numpy as np
from larpixdaq.formats.hdf5file import Hdf5Writer, PACKETS_DTYPE
w = Hdf5Writer({path!r}, swmr=True, chunk_rows=100, run_metadata={{"run_number": 3}})
rows = np.zeros(250, PACKETS_DTYPE)
rows["timestamp"] = np.arange(250)
if {commit}:
    w.append(rows)
    w.flush()
w.add_message("Beginning run", 7)
if not {commit}:
    w.append(rows)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _superblock_eoa(path):
    head = path.read_bytes()[:64]
    size_offsets = head[9]
    return int.from_bytes(head[12 + 2 * size_offsets:12 + 3 * size_offsets], "little")


def _killed_early(path, commit):
    code = _KILLED_EARLY.format(path=str(path), commit=commit)
    assert subprocess.run([sys.executable, "-c", code]).returncode == -9
    return path


def test_a_kill_before_the_first_commit_defeats_an_in_place_cut(tmp_path):
    # What made a restarted storage fail: the index the writer flushed lies past the end
    # address the superblock still names, and the library refuses to go there.
    path = _killed_early(tmp_path / "k.h5", commit=False)
    assert _superblock_eoa(path) < path.stat().st_size
    with pytest.raises(RuntimeError, match="addr overflow"):
        truncate_to_commit(path, 0, 0, 0)


def test_repair_sets_the_end_address_and_cuts_in_place(tmp_path):
    path = _killed_early(tmp_path / "k.h5", commit=False)
    size, eoa = path.stat().st_size, _superblock_eoa(path)
    result = repair_part(path, 0, 0, 0)
    assert result.eoa_grown == size - eoa > 0
    assert not result.rebuilt
    assert result.cut == {"packets": 200, "messages": 1, "configs": 0}  # 50 still buffered
    with Hdf5File(path) as f:
        assert f.n_packets == 0 and len(f.messages()) == 0
        assert f.info().clean_close is True
    assert verify_checksum(path) is True
    assert list(tmp_path.iterdir()) == [path]  # nothing set aside


def test_a_part_whose_metadata_points_past_its_end_is_rebuilt_and_the_original_kept(
        tmp_path):
    path = _killed_early(tmp_path / "c.h5", commit=True)
    # What was written after the commit never reached the disk (the file ends where the
    # commit left it) while the metadata on disk already names it.
    with open(path, "r+b") as f:
        f.truncate(_superblock_eoa(path))
    damaged = path.read_bytes()
    result = repair_part(path, 250, 0, 0)
    assert result.rebuilt and "past the end of the file" in result.reason
    assert result.cut["packets"] == 0  # every committed row came through
    assert result.aside == tmp_path / "c.h5.damaged"
    assert result.aside.read_bytes() == damaged  # the original, untouched
    with Hdf5File(path) as f:
        assert f.read_packets()["timestamp"].tolist() == list(range(250))
        info = f.info()
        assert info.clean_close is True and info.header["recovered"] > 0
        assert info.run["run_number"] == 3 and info.n_messages == 0
    assert verify_checksum(path) is True
    # The rebuilt part is whole: repairing it again changes nothing and sets nothing aside.
    again = repair_part(path, 250, 0, 0)
    assert not again.rebuilt and again.cut["packets"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "c.h5.damaged"]


def test_committed_rows_that_cannot_be_read_back_are_counted_lost(tmp_path):
    path = tmp_path / "gone.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(8))  # a superblock of a version not ours
    result = repair_part(path, 40, 0, 0)
    assert result.rebuilt and result.cut["packets"] == -40
    with Hdf5File(path) as f:
        assert f.n_packets == 0 and f.info().clean_close is True
    assert (tmp_path / "gone.h5.damaged").read_bytes().startswith(b"\x89HDF")


def test_a_part_with_a_damaged_superblock_is_rebuilt_not_refused(killed_file):
    data = bytearray(killed_file.read_bytes())
    data[20] ^= 0xFF  # inside the superblock, covered by its checksum
    killed_file.write_bytes(bytes(data))
    result = repair_part(killed_file, 120, 0, 0)
    assert result.rebuilt and "checksum does not match" in result.reason
    assert result.cut["packets"] == -120  # nothing readable: counted lost, not hidden
    assert result.aside.read_bytes() == bytes(data)
    with Hdf5File(killed_file) as f:
        assert f.n_packets == 0 and f.info().clean_close is True
