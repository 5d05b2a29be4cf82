"""Crash-safe file primitives: an exclusive inter-process lock and an atomic replace.

The lock is a blocking ``fcntl.flock``: the kernel wakes a waiter as soon as the holder releases, so
contenders do not starve (polling locks such as the ``filelock`` package's left one of two processes
waiting seconds). ``flock`` locks belong to the open file description, so threads of one process that
each open the lock file exclude each other too.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a crash at any instant leaves the old or the new file.

    Write a temp file in the same folder, fsync it, rename it over the target, then fsync the folder so
    the rename itself is durable. ``durable=False`` skips both fsyncs: still never torn for a process
    crash, but a power cut may keep the old file (for data that is checked or rebuilt on read).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
