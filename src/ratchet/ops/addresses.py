"""Where a workspace's servers listen right now: ``.ratchet/run/NAME.json``.

Every ``ratchet serve`` over HTTP writes its address there once its port is bound (``ratchet up``'s
children too, so a configured port of 0 is no obstacle) and removes the file when it stops. A process
killed outright cannot remove it: a file whose PID is no longer alive is stale and read as absent.
Commands that talk to a server (``ratchet feedback``, ``ratchet jobs``) look here first, then at the
port in ``ratchet.toml``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RUN_DIR = Path(".ratchet") / "run"


def path(root: Path, name: str) -> Path:
    return Path(root) / RUN_DIR / f"{name}.json"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie has exited: it only waits for its parent
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@contextlib.contextmanager
def recorded(root: Path | None, name: str, url: str) -> Iterator[None]:
    """Record that ``name`` listens at ``url`` (this process) for the duration of the block."""
    if root is None:
        yield
        return
    target = path(root, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "url": url, "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, target)
    try:
        yield
    finally:
        current = read(root, name, live_only=False)
        if current is not None and current.get("pid") == os.getpid():  # not a newer server's
            with contextlib.suppress(OSError):
                target.unlink()


def read(root: Path, name: str, *, live_only: bool = True) -> dict[str, Any] | None:
    """The record of ``name``, or None when there is none (or, with ``live_only``, its process is gone)."""
    try:
        record = json.loads(path(root, name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return None
    if live_only and not pid_alive(record["pid"]):
        return None
    return record


def url(root: Path, name: str) -> str | None:
    """Where ``name`` listens now, as it printed it (``http://HOST:PORT``, plus ``/mcp`` for an MCP
    server), or None."""
    record = read(root, name)
    return record["url"] if record else None
