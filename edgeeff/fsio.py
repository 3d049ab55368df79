"""Atomic writes: a temp file in the destination folder, fsync, then rename.

Readers and interrupted runs never see a half-written report or artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgeeff.errors import EdgeeffError


class OutputError(EdgeeffError):
    """A destination that cannot be written."""


def _check_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise OutputError(f"output folder {directory} is not writable; choose another with --out")


def ensure_writable_dir(directory: str | Path) -> Path:
    """Create ``directory`` if needed and check it is writable, before any work that would write there."""
    _check_dir(Path(directory))
    return Path(directory)


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "", keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds.

    ``keep_suffix`` ends the temporary name with ``suffix`` itself (``.tmp`` goes before it), for
    writers that insist on a file name ending, such as Keras's ``.weights.h5``.
    """
    dest = Path(dest)
    _check_dir(dest.parent if str(dest.parent) else Path("."))
    tail = ".tmp" + suffix if keep_suffix else suffix + ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=tail, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    except BaseException:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            tmp_path.unlink(missing_ok=True)
        raise


def sha256_of(path: str | Path) -> str:
    """Streamed sha256 of a file (weights, artifacts, calibration images)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_text(dest: str | Path, text: str) -> Path:
    try:
        with atomic_path(dest) as tmp:
            tmp.write_text(text)
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {exc.strerror}") from None
    return Path(dest)


def write_bytes(dest: str | Path, data: bytes) -> Path:
    try:
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
    except OSError as exc:
        raise OutputError(f"cannot write {dest}: {exc.strerror}") from None
    return Path(dest)
