"""Confine plugin code to the folders it may write: the tuner's strategies may write only under
``state/`` and ``.ratchet/``.

A process-wide audit hook (PEP 578) watches file writes, renames, deletions, folder changes and process
spawns; it acts only inside a :func:`confined` block (a context variable, so other threads and tasks
are unaffected) and raises :class:`PermissionError` naming the path and the allowed folders. This is
a guard against mistakes in plugin code, not a sandbox against hostile code (which could, e.g.,
use ctypes); run untrusted plugins in a separate OS-level sandbox.
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_allowed: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("ratchet_confined", default=None)
_installed = False

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_PATH_EVENTS = {  # event -> indexes of its path arguments
    "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1), "os.truncate": (0,),
    "os.symlink": (1,), "os.link": (1,), "os.chmod": (0,), "os.chown": (0,), "os.utime": (0,),
    "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.move": (1,), "shutil.copytree": (1,),
}
_SPAWN_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork"}


def _inside(path, allowed: tuple[str, ...]) -> bool:
    if isinstance(path, int):  # a file descriptor: already opened, so already checked
        return True
    real = os.path.realpath(os.fsdecode(path))
    return any(real == root or real.startswith(root + os.sep) for root in allowed)


def _refuse(what: str, path, allowed: tuple[str, ...]) -> None:
    raise PermissionError(f"{what} {os.fsdecode(path) if path is not None else ''!s} refused: this code may "
                          f"only write under {', '.join(allowed)}")


def _hook(event: str, args: tuple) -> None:
    allowed = _allowed.get()
    if allowed is None:
        return
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in mode for c in "wax+")) or bool(flags & _WRITE_FLAGS)
        if writing and path is not None and not _inside(path, allowed):
            _refuse("writing", path, allowed)
    elif event in _PATH_EVENTS:
        for i in _PATH_EVENTS[event]:
            if i < len(args) and args[i] is not None and not _inside(args[i], allowed):
                _refuse(event, args[i], allowed)
    elif event in _SPAWN_EVENTS:
        _refuse("starting a process", None, allowed)


@contextmanager
def confined(*roots: Path) -> Iterator[None]:
    """Run the block with writes allowed only under ``roots``."""
    global _installed
    if not _installed:
        sys.addaudithook(_hook)  # cannot be removed; costs one context-variable read per event
        _installed = True
    token = _allowed.set(tuple(os.path.realpath(r) for r in roots))
    try:
        yield
    finally:
        _allowed.reset(token)
