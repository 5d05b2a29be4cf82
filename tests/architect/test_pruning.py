"""What finished jobs leave behind (worktrees, branches, folders) goes after [limits] prune_after_days, at
the Architect's start and when a job is created; the records stay; unfinished jobs are never touched."""

from __future__ import annotations

import os
import time

from helpers import commit_all, git
from ratchet.architect.service import Architect
from ratchet.core.workspace import Workspace

DAY = 86_400


def aged(arch: Architect, job_id: str, *, days: float, state: str | None = None) -> None:
    """Make a job's record look ``days`` old (and put it in ``state``), as if time had passed."""
    job = arch.jobs.get(job_id)
    job.updated = time.time() - days * DAY
    job.deadline = time.time() + DAY  # an open agent job stays open: not expired by its time limit
    if state:
        job.state = state
    arch.jobs.save(job)


def leftovers(ws: Workspace, job_id: str) -> dict[str, bool]:
    folder = ws.runtime_dir / "jobs" / job_id
    return {"folder": folder.exists(), "worktree": (folder / "worktree").exists(),
            "branch": bool(git(ws.root, "branch", "--list", f"ratchet/job-{job_id}").strip())}


def test_old_finished_jobs_lose_worktree_and_branch_but_never_an_open_or_waiting_job(ws_path):
    with open(ws_path / "ratchet.toml", "a") as f:
        f.write("\n[limits]\nprune_after_days = 1\n")
    commit_all(ws_path, "prune after a day")
    ws = Workspace.open(ws_path)
    arch = Architect(ws)
    abandoned, crashed, recent, running, waiting = (arch.open_job(t).id for t in
                                                    ("abandoned", "crashed", "recent", "running", "waiting"))
    arch.abandon(abandoned)  # worktree removed, branch kept for inspection
    aged(arch, abandoned, days=2)
    aged(arch, crashed, days=2, state="failed")  # a failed job whose worktree was left behind
    arch.abandon(recent)
    aged(arch, running, days=30)  # open for an agent, however old
    aged(arch, waiting, days=30, state="needs_approval")
    orphan = ws.runtime_dir / "jobs" / "0000deadbeef" / "worktree"  # a folder with no job record
    orphan.mkdir(parents=True)
    os.utime(orphan.parent, (time.time() - 2 * DAY,) * 2)
    fresh_orphan = ws.runtime_dir / "jobs" / "0000cafef00d"  # one being opened right now, maybe
    fresh_orphan.mkdir()
    assert leftovers(ws, abandoned) == {"folder": True, "worktree": False, "branch": True}
    assert leftovers(ws, crashed) == {"folder": True, "worktree": True, "branch": True}

    assert sorted(arch.prune()) == sorted([abandoned, crashed, "0000deadbeef"])

    for pruned in (abandoned, crashed):
        assert leftovers(ws, pruned) == {"folder": False, "worktree": False, "branch": False}
        record = arch.jobs.get(pruned)  # the record stays, and says what was removed
        assert record.state == "failed" and record.log[-1].step == "prune" and record.log[-1].by == "architect"
    assert leftovers(ws, recent) == {"folder": True, "worktree": False, "branch": True}
    for untouched in (running, waiting):
        assert leftovers(ws, untouched) == {"folder": True, "worktree": True, "branch": True}
        assert arch.jobs.get(untouched).log[-1].step != "prune"
    assert not orphan.parent.exists() and fresh_orphan.exists()
    assert f"job-{crashed}" not in git(ws.root, "worktree", "list")
    assert arch.prune() == []  # nothing left to do


def test_pruning_runs_when_a_job_is_created_and_when_the_architect_starts(ws):
    arch = Architect(ws)
    first, second = arch.open_job("first").id, arch.open_job("second").id
    for job_id in (first, second):
        arch.abandon(job_id)
    aged(arch, first, days=8)  # past the default of 7 days
    arch.open_job("third")
    assert leftovers(ws, first)["branch"] is False and leftovers(ws, second)["branch"] is True

    aged(arch, second, days=8)
    restarted = Architect(ws)
    restarted.start()
    restarted.stop()
    assert leftovers(ws, second) == {"folder": False, "worktree": False, "branch": False}
