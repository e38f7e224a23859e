"""Atomic writes and the refusal of anything that is not a regular file."""
from __future__ import annotations

import errno
import os

import pytest

from advgui.core.fileio import (FileProblem, atomic_write_bytes, atomic_write_with, check_regular_file,
                                check_writable_folder, is_temp_name, read_small_file)


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write_bytes(p, b"old")
    atomic_write_bytes(p, b"new content")
    assert p.read_bytes() == b"new content"
    assert [f.name for f in p.parent.iterdir()] == ["a.txt"]
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)


def test_failed_write_keeps_the_old_file_and_names_the_path(tmp_path):
    p = tmp_path / "keep.bin"
    atomic_write_bytes(p, b"good")

    def full_disk(tmp):
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as e:
        atomic_write_with(p, full_disk)
    assert "disk is full" in str(e.value) and str(p) in str(e.value)
    assert p.read_bytes() == b"good"
    assert [f.name for f in tmp_path.iterdir()] == ["keep.bin"]


def test_temp_names_are_recognisable(tmp_path):
    from advgui.core.fileio import temp_path
    t = temp_path(tmp_path / "x.png")
    assert is_temp_name(t.name) and not is_temp_name("x.png") and not is_temp_name(".hidden.png")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "labels.txt"
    os.mkfifo(fifo)
    with pytest.raises(FileProblem, match="named pipe"):
        read_small_file(fifo, "labels file")
    link = tmp_path / "link.txt"
    link.symlink_to(fifo)
    with pytest.raises(FileProblem, match="named pipe"):
        check_regular_file(link)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_device_and_folder_are_refused(tmp_path):
    with pytest.raises(FileProblem, match="device"):
        read_small_file("/dev/zero")
    with pytest.raises(FileProblem, match="folder"):
        check_regular_file(tmp_path)
    with pytest.raises(FileProblem, match="no such"):
        check_regular_file(tmp_path / "missing.pt", "model file")


def test_size_cap(tmp_path):
    p = tmp_path / "big.json"
    p.write_bytes(b"x" * 2048)
    assert read_small_file(p, max_bytes=4096) == "x" * 2048
    with pytest.raises(FileProblem, match="larger than"):
        read_small_file(p, max_bytes=1024 * 1024 // 1024)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder_is_refused_up_front(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(FileProblem, match="not writable"):
            check_writable_folder(ro / "out")
    finally:
        ro.chmod(0o755)
