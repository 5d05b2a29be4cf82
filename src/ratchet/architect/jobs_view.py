"""``ratchet jobs`` without a running Architect: past jobs read from the workspace's store.

Listing and showing jobs need no server (jobs are rows of the store, which the Architect writes); the
CLI asks the Architect over HTTP only for ``--url``, and for what changes a job (approve, abandon).
Times are printed as ISO-8601 (UTC) instead of the API's Unix seconds.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ratchet.architect.jobs import JOB_STATES, JobStore
from ratchet.core.errors import UserError

TIME_FIELDS = ("created", "updated", "deadline")


def list_jobs(workspace, *, state: str | None = None, limit: int = 50) -> dict[str, Any]:
    """Jobs newest first, paged as ``GET /jobs`` pages them."""
    if state is not None and state not in JOB_STATES:
        raise UserError(f"unknown job state {state!r}", field="--state", fix=f"use one of {', '.join(JOB_STATES)}")
    jobs = [j.model_dump(mode="json") for j in reversed(JobStore(workspace.store).list(state))]
    return {"items": jobs[:limit], "total": len(jobs), "limit": limit, "offset": 0}


def get_job(workspace, job_id: str) -> dict[str, Any]:
    return JobStore(workspace.store).get(job_id).model_dump(mode="json")


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO-8601 in UTC, to the millisecond: ``2026-12-05T06:30:00.123Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def with_iso_times(job: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``job`` whose times (its own, its log's and its transcript's) are ISO-8601 strings."""
    out = {**job, **{k: iso(job[k]) for k in TIME_FIELDS if k in job}}
    for key in ("log", "transcript"):
        if isinstance(job.get(key), list):
            out[key] = [{**e, "at": iso(e["at"])} if isinstance(e, dict) and "at" in e else e for e in job[key]]
    return out
