"""Atomic writes: a temp file in the destination folder, fsync, then rename.

Readers and interrupted runs never see a half-written report or artifact.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
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


def current_umask() -> int:
    """The process umask (read by setting and restoring it: POSIX has no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_umask_mode(path: Path) -> None:
    """Give a file or folder made by ``mkstemp``/``mkdtemp`` (always 0600/0700) the mode a plain
    ``open``/``mkdir`` would have had under the user's umask, so that renaming it into place leaves
    reports and artifacts readable by whoever the umask allows (a CI job's other users, a web server)."""
    mask = current_umask()
    if path.is_dir():
        for inner, dirs, files in os.walk(path):
            os.chmod(inner, 0o777 & ~mask)
            for name in files:
                file = Path(inner) / name
                if not file.is_symlink():
                    os.chmod(file, (file.stat().st_mode & 0o111 | 0o666) & ~mask)
    elif path.exists():
        os.chmod(path, (path.stat().st_mode & 0o111 | 0o666) & ~mask)


def make_staging_dir(prefix: str, suffix: str, parent: Path) -> Path:
    """A temporary folder beside its destination, with the umask's mode (not mkdtemp's 0700)."""
    staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(staging, 0o777 & ~current_umask())
    return staging


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
        give_umask_mode(tmp_path)
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


STDOUT = "-"  # a report path of "-" means standard output (``--json -``), as Unix tools take it
_CLAIMED_STDOUT = None  # the real standard output, once a report has claimed it


def claim_stdout() -> None:
    """Keep standard output for one report: file descriptor 1 is pointed at stderr from here on, so
    whatever else writes there (a runtime's progress bar, a C library) cannot corrupt the report,
    which :func:`write_text` then writes to the saved descriptor."""
    global _CLAIMED_STDOUT
    if _CLAIMED_STDOUT is None:
        sys.stdout.flush()
        _CLAIMED_STDOUT = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)


def write_text(dest: str | Path, text: str) -> Path:
    """Write ``text`` atomically to ``dest``, or to standard output when ``dest`` is ``-``."""
    if str(dest) == STDOUT:
        stream = _CLAIMED_STDOUT or sys.stdout
        stream.write(text)
        stream.flush()
        return Path(STDOUT)
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
