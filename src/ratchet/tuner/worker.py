"""The tuner's worker as a process: fold logged feedback into staging and promote by policy.

``ratchet serve tuner`` starts one beside its MCP server, so acknowledging feedback (the server) and
folding it (the worker) run on separate cores instead of sharing one interpreter lock. The worker
polls the feedback log every 20 ms (one indexed ``max(seq)`` query) and exits when its server does.

    python -m ratchet.tuner.worker WORKSPACE_DIR SERVER_PID
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import anyio

from ratchet.core import telemetry
from ratchet.core.errors import RatchetError
from ratchet.core.workspace import Workspace
from ratchet.tuner.service import Tuner

POLL_SECONDS = 0.02
ERROR_BACKOFF_SECONDS = 1.0
log = logging.getLogger("ratchet.tuner.worker")


async def work(workspace_dir: str, server_pid: int) -> None:
    workspace = Workspace.open(workspace_dir, search_parents=False)
    with telemetry.serving("tuner-worker", workspace):  # spans of apply_pending and promote, flushed on exit
        await _work(Tuner(workspace), server_pid)


async def _work(tuner: Tuner, server_pid: int) -> None:
    await anyio.to_thread.run_sync(tuner.prepare)
    store = tuner.workspace.store
    period = tuner.workspace.config.tuner.promotion.every_seconds or None
    next_timed = anyio.current_time() + period if period else None
    seen = None
    while os.getppid() == server_pid:  # orphaned (the server died): stop
        last = await anyio.to_thread.run_sync(store.last_feedback_seq)
        timed = next_timed is not None and anyio.current_time() >= next_timed
        if last != seen or timed:
            if timed:
                next_timed = anyio.current_time() + period
            try:
                outcome = await tuner.tick(timed=timed)
                seen = last
            except RatchetError as exc:
                log.error("%s", exc)
                await anyio.sleep(ERROR_BACKOFF_SECONDS)
                continue
            if outcome and not outcome["promoted"]:
                log.warning("promotion skipped: %s", outcome["reason"])
        await anyio.sleep(POLL_SECONDS)


def _stop(_signum, _frame) -> None:
    raise KeyboardInterrupt  # the server terminates us: unwind, so telemetry is flushed


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="ratchet tuner worker: %(message)s")
    signal.signal(signal.SIGTERM, _stop)
    try:
        anyio.run(work, sys.argv[1], int(sys.argv[2]))
    except* (KeyboardInterrupt, SystemExit):
        pass  # stopped (SIGTERM from the server, or Ctrl-C), maybe mid-promotion inside a task group


if __name__ == "__main__":
    main()
