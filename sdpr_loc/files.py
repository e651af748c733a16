"""Atomic file writes, one way for every file the package writes whole (maps, checkpoints, cached
indices): a temporary file beside the target, flushed to disk, then renamed over it, so a crash or
a signal never leaves half a file and readers see the old file or the new one.

The temporary file is created with the usual permissions (0666 less the umask): with
``tempfile.mkstemp``'s 0600 a map written by the robot's teach run could not be read by a
localization launched under another user."""
from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_write", "writable_folder"]


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_write(path) as f: f.write(...)``: ``path`` appears (or is replaced) only when
    the block ends without an exception; folders are made as needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def writable_folder(folder: str | os.PathLike) -> Path:
    """``folder``, made if needed and checked writable: a command fails on an unusable output
    before its work, not after it (build-map and eval wrote their results only after minutes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK):
        raise PermissionError(errno.EACCES, "output folder is not writable", str(folder))
    return folder
