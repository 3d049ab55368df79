"""Atomic writes when they fail: the destination keeps its old content and no temp file is left."""

import os
import subprocess

import pytest

from edgeeff import fsio


def _leftovers(folder, keep):
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


def test_a_failure_inside_the_block_keeps_the_old_file_and_removes_the_temp(tmp_path):
    dest = tmp_path / "report.json"
    dest.write_text("old\n")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C half way through writing
        with fsio.atomic_path(dest) as tmp:
            tmp.write_text("half of the new")
            raise KeyboardInterrupt
    assert dest.read_text() == "old\n" and _leftovers(tmp_path, "report.json") == []
    fsio.write_text(dest, "new\n")  # and the success path still replaces it
    assert dest.read_text() == "new\n" and _leftovers(tmp_path, "report.json") == []


def test_a_staged_folder_that_fails_is_removed(tmp_path):
    dest = tmp_path / "saved_model"
    with pytest.raises(RuntimeError):
        with fsio.atomic_path(dest) as tmp:
            tmp.unlink()  # writers such as model.export make a folder at the temp path
            (tmp / "variables").mkdir(parents=True)
            (tmp / "variables" / "part").write_bytes(b"x" * 100)
            raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_error_and_leaves_the_old_file(tmp_path):
    """A real ENOSPC: a 64 KiB tmpfs (root; CI runs as root, where a failed mount is a failure, not a skip)."""
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {mounted.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        dest = disk / "artifact.bin"
        dest.write_bytes(b"old")
        with pytest.raises(fsio.OutputError, match="cannot write .*artifact.bin: No space left on device"):
            fsio.write_bytes(dest, b"\0" * (1 << 20))
        assert dest.read_bytes() == b"old" and _leftovers(disk, "artifact.bin") == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)
