"""Syncing to the disk itself: what is synced, in which order, and a full disk mid-write."""

from __future__ import annotations

import pytest

from larpixdaq.pipeline.durable import sync_dir, sync_file, write_atomically


def test_a_file_is_synced_and_then_the_directory_that_names_it(tmp_path, synced):
    target = tmp_path / "record.json"
    write_atomically(target, "new")
    assert target.read_text() == "new"
    # the data (under its temporary name) first, then the directory holding the rename
    assert len(synced.paths) == 2
    assert synced.paths[0].parent == tmp_path and synced.paths[0].name.startswith(".record.json.")
    assert synced.paths[1] == tmp_path
    synced.clear()
    sync_file(target)
    sync_dir(tmp_path)
    assert synced.paths == [target, tmp_path]


def test_a_read_only_file_can_be_synced(tmp_path, synced):
    target = tmp_path / "sealed.h5"
    target.write_bytes(b"x" * 100)
    target.chmod(0o444)
    sync_file(target)
    assert synced.paths == [target]


def test_a_full_disk_leaves_the_old_file_whole_and_no_temporary_one(small_disk):
    target = small_disk.path / "record.json"
    write_atomically(target, "old record")
    small_disk.fill()
    with pytest.raises(OSError):
        write_atomically(target, "x" * (1 << 20))
    assert target.read_text() == "old record"
    assert sorted(p.name for p in small_disk.path.iterdir()
                  if not p.name.startswith(".filler")) == ["record.json"]
    small_disk.free()
    write_atomically(target, "new record")
    assert target.read_text() == "new record"
