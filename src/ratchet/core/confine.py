"""Confine plugin code to the folders it may write: the tuner's strategies may write only under
``state/`` and ``.ratchet/``.

A process-wide audit hook (PEP 578) watches file writes, renames, deletions, folder changes and process
spawns; it acts only inside a :func:`confined` block and raises :class:`PermissionError` naming the path
and the allowed folders. The block's confinement is a context variable, so other threads and tasks are
unaffected, and it follows the code it runs: a ``threading.Thread`` started in the block runs confined
(for its whole life), and so does work the block submits to a ``concurrent.futures.ThreadPoolExecutor``
(work submitted from outside the block is not, whichever pool thread runs it).

This is a guard against mistakes in plugin code, not a sandbox. It sees only what raises an audit event
in Python, so code in C writes unseen: sqlite3 (``ATTACH DATABASE``), ctypes, C extensions, and threads
started through ``_thread`` directly. Run untrusted plugins in a separate OS-level sandbox.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_allowed: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("ratchet_confined", default=None)
_installed = False
_install_lock = threading.Lock()

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


def _carrying(allowed: tuple[str, ...] | None, fn):
    """``fn`` run with ``allowed`` as its confinement, in whatever thread calls it."""
    def run(*args, **kwargs):
        token = _allowed.set(allowed)
        try:
            return fn(*args, **kwargs)
        finally:
            _allowed.reset(token)

    return run


def _install() -> None:
    # A new thread starts with an empty context, and a pool thread keeps the one it started with, so
    # the confinement is handed over explicitly. Both wrappers cost one context-variable read.
    sys.addaudithook(_hook)  # cannot be removed; costs one context-variable read per event
    start, submit = threading.Thread.start, concurrent.futures.ThreadPoolExecutor.submit

    @functools.wraps(start)
    def start_confined(self, *args, **kwargs):
        allowed = _allowed.get()
        if allowed is not None:
            self.run = _carrying(allowed, self.run)
        return start(self, *args, **kwargs)

    @functools.wraps(submit)
    def submit_confined(self, fn, /, *args, **kwargs):
        return submit(self, _carrying(_allowed.get(), fn), *args, **kwargs)

    threading.Thread.start = start_confined
    concurrent.futures.ThreadPoolExecutor.submit = submit_confined


@contextmanager
def confined(*roots: Path) -> Iterator[None]:
    """Run the block, and the threads and pool work it starts, with writes allowed only under ``roots``."""
    global _installed
    with _install_lock:
        if not _installed:
            _install()
            _installed = True
    token = _allowed.set(tuple(os.path.realpath(r) for r in roots))
    try:
        yield
    finally:
        _allowed.reset(token)
