import subprocess
import sys

import h5py
import pytest

from larpixdaq.errors import FormatError
from larpixdaq.formats.hdf5file import Hdf5File, verify_checksum
from larpixdaq.pipeline.h5recover import clear_write_flags, lookup3, truncate_to_commit


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
