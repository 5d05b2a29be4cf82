"""``ratchet up status|logs|down``: a running ``ratchet up`` seen and stopped from another terminal.

``ratchet up`` keeps its status (its PID, and every component's PID, address, state, restarts and log)
in ``.ratchet/run/up.json`` while it runs; a record whose PID is gone (``ratchet up`` was killed) is
stale and read as "not running". Logs stay in ``.ratchet/logs/NAME.log`` after it stops.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from ratchet.core.errors import NotFoundError, UserError
from ratchet.ops.addresses import RUN_DIR, pid_alive
from ratchet.ops.supervisor import COMPONENT_NAMES

LOG_DIR = Path(".ratchet") / "logs"


def record_path(root: Path) -> Path:
    return Path(root) / RUN_DIR / "up.json"


def running(root: Path) -> dict[str, Any] | None:
    """The status of the ``ratchet up`` running on this workspace, or None."""
    try:
        status = json.loads(record_path(root).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict) or not isinstance(status.get("pid"), int) or not pid_alive(status["pid"]):
        return None
    return status


def refuse_second(root: Path) -> None:
    """A second ``ratchet up`` on one workspace would fight the first over its ports and records."""
    status = running(root)
    if status is not None:
        raise UserError(f"ratchet up is already running for {root} (pid {status['pid']})", field="ratchet up",
                        fix="see it with `ratchet up status`, stop it with `ratchet up down`")


def status(root: Path) -> dict[str, Any]:
    found = running(root)
    if found is None:
        raise NotFoundError(f"ratchet up is not running for {root}", field="ratchet up",
                            fix="start it with `ratchet up` (its logs stay readable: `ratchet up logs`)")
    return found


def log_files(root: Path, names: Iterable[str]) -> list[Path]:
    names = list(names) or list(COMPONENT_NAMES)
    unknown = [n for n in names if n not in COMPONENT_NAMES]
    if unknown:
        raise UserError(f"unknown component(s) {unknown}", field="NAME",
                        fix=f"name some of {', '.join(COMPONENT_NAMES)}")
    paths = [Path(root) / LOG_DIR / f"{n}.log" for n in names]
    found = [p for p in paths if p.is_file()]
    if not found:
        raise NotFoundError(f"no logs in {Path(root) / LOG_DIR} for {', '.join(names)}", field="NAME",
                            fix="`ratchet up` writes them: start it first")
    return found


def tail(path: Path, lines: int) -> list[str]:
    with path.open("rb") as f:
        return f.read().decode("utf-8", errors="replace").splitlines()[-lines:] if lines > 0 else []


def show_logs(root: Path, names: Iterable[str], *, lines: int, follow: bool, out: IO[str],
              stop: Callable[[], bool] = lambda: False, interval: float = 0.2) -> None:
    """The last ``lines`` of each component's log, each line prefixed with its name (as ``ratchet up``
    echoes them); with ``follow``, then every new line until ``stop()`` or Ctrl-C."""
    paths = log_files(root, names)
    width = max(len(p.stem) for p in paths)
    for path in paths:
        for line in tail(path, lines):
            out.write(f"{path.stem:<{width}} | {line}\n")
    out.flush()
    if not follow:
        return
    offsets = {p: p.stat().st_size for p in paths}
    while not stop():
        for path in paths:
            size = path.stat().st_size if path.exists() else 0
            if size < offsets[path]:  # rotated or truncated: start again
                offsets[path] = 0
            if size > offsets[path]:
                with path.open("rb") as f:
                    f.seek(offsets[path])
                    chunk = f.read()
                complete = chunk[:chunk.rfind(b"\n") + 1]  # a half-written line waits for its end
                offsets[path] += len(complete)
                for line in complete.decode("utf-8", errors="replace").splitlines():
                    out.write(f"{path.stem:<{width}} | {line}\n")
                out.flush()
        time.sleep(interval)


def down(root: Path, *, timeout: float = 30.0) -> dict[str, Any] | None:
    """SIGTERM the running ``ratchet up`` (it stops every component, as on Ctrl-C) and wait until it is
    gone; the status it had, or None when none was running."""
    found = running(root)
    if found is None:
        return None
    pid = found["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return found
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise UserError(f"ratchet up (pid {pid}) is still stopping after {timeout:g} s", field="--timeout",
                            fix=f"wait longer (--timeout), or `kill -9 {pid}` (its components die with it)")
        time.sleep(0.1)
    return found
