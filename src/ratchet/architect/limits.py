"""How much the Architect holds at once, and what finished jobs leave behind.

A new job is refused (429, with ``Retry-After``) while ``[limits] open_jobs`` jobs are unfinished or
``[limits] open_worktrees`` worktrees are on disk: one client could otherwise fill the disk with
worktrees and the queue with jobs. A finished job leaves its branch (a failed one's, for inspection) and
sometimes a worktree; :func:`prune` removes them ``[limits] prune_after_days`` after the job finished.
The job's record stays. Unfinished jobs (running, open for an agent, waiting for approval) are never
touched.
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

from ratchet.architect.jobs import FINAL_STATES, JOB_STATES, Job, JobStore
from ratchet.architect.worktree import BRANCH_PREFIX, JobWorktree
from ratchet.core.errors import TooManyError

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

OPEN_STATES = tuple(s for s in JOB_STATES if s not in FINAL_STATES)
DAY = 86_400.0
_HOW_TO_CLOSE = ("release (POST /jobs/ID/release) or abandon (DELETE /jobs/ID, `ratchet jobs abandon ID`) open "
                 "agent jobs, approve or abandon jobs in needs_approval")


def jobs_dir(workspace: Workspace):
    return workspace.runtime_dir / "jobs"


def worktree_ids(workspace: Workspace) -> list[str]:
    """Ids of the jobs whose worktree is on disk."""
    return sorted(p.parent.name for p in jobs_dir(workspace).glob("*/worktree"))


def check_capacity(workspace: Workspace, open_jobs: list[Job]) -> None:
    """Refuse a new job while ``open_jobs`` (the unfinished ones) or the worktrees on disk are at their
    limit."""
    limits = workspace.config.limits
    if len(open_jobs) >= limits.open_jobs:
        counts = ", ".join(f"{sum(j.state == s for j in open_jobs)} {s}" for s in OPEN_STATES
                           if any(j.state == s for j in open_jobs))
        raise TooManyError(f"{len(open_jobs)} jobs are open ({counts}{_actionable(open_jobs)}); the limit is "
                           f"{limits.open_jobs}", field="limits.open_jobs", retry_after=_retry_after(open_jobs),
                           fix=f"wait for queued and running jobs to finish; {_HOW_TO_CLOSE}; or raise "
                           "[limits] open_jobs in ratchet.toml")
    trees = worktree_ids(workspace)
    if len(trees) >= limits.open_worktrees:
        holders = [j for j in open_jobs if j.id in trees]
        raise TooManyError(f"{len(trees)} worktrees are open (jobs {', '.join(trees[:10])}); the limit is "
                           f"{limits.open_worktrees}", field="limits.open_worktrees",
                           retry_after=_retry_after(holders),
                           fix=f"{_HOW_TO_CLOSE}; a finished job's worktree goes after [limits] prune_after_days; "
                           "or raise [limits] open_worktrees in ratchet.toml")


def _actionable(open_jobs: list[Job]) -> str:
    """The ids of the open jobs a client can close itself (agent jobs, jobs waiting for approval)."""
    ids = [j.id for j in open_jobs if j.state == "needs_approval" or (j.source == "agent" and j.state == "applying")]
    return f"; agent or waiting: {', '.join(ids[:10])}" if ids else ""


def _retry_after(open_jobs: list[Job]) -> int:
    """Seconds until the first open job reaches its time limit (a job waiting for approval has none)."""
    deadlines = [j.deadline for j in open_jobs if j.state != "needs_approval"]
    if not deadlines:
        return 60
    return max(1, min(3600, round(min(deadlines) - time.time())))


def prune(workspace: Workspace, jobs: JobStore, *, orphan_age: float) -> list[str]:
    """Remove the worktrees, branches and job folders of jobs that finished over ``[limits]
    prune_after_days`` ago; note it in each job's log. A folder with no job record (a job whose record
    was never saved) goes when older than ``orphan_age`` seconds too. Returns the pruned ids."""
    age = workspace.config.limits.prune_after_days * DAY
    now = time.time()
    branches = workspace.versions.git("for-each-ref", "--format=%(refname:short)", f"refs/heads/{BRANCH_PREFIX}*",
                                      check=False).decode()
    folders = {p.name: p for p in jobs_dir(workspace).iterdir() if p.is_dir()} if jobs_dir(workspace).is_dir() else {}
    leftovers = set(folders) | {b.removeprefix(BRANCH_PREFIX) for b in branches.splitlines() if b}
    pruned = []
    for job_id in sorted(leftovers):
        row = jobs.store.get_job(job_id)
        if row is None:
            folder = folders.get(job_id)
            if folder is not None and now - folder.stat().st_mtime > max(age, orphan_age):
                JobWorktree(workspace, job_id).remove()
                shutil.rmtree(folder, ignore_errors=True)
                pruned.append(job_id)
            continue
        job = Job.model_validate(row["payload"])
        if not job.final or now - job.updated < age:
            continue
        JobWorktree(workspace, job_id).remove()
        shutil.rmtree(jobs_dir(workspace) / job_id, ignore_errors=True)
        job.note("prune", f"worktree and branch removed, {(now - job.updated) / DAY:.1f} days after the job "
                          "finished ([limits] prune_after_days)")
        jobs.save(job)
        pruned.append(job_id)
    return pruned
