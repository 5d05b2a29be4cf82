"""Architect jobs: their record and its persistence in the store (so jobs survive a restart).

A job moves ``queued → planning → applying → testing → succeeded``, or to ``failed`` from any step,
or through ``needs_approval`` (a major change under an approval gate) before it merges. A job an
external agent drives (``source = "agent"``) starts in ``applying`` and stays there, step by step,
until it is released.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from ratchet.architect.plans import Action, Plan
from ratchet.architect.transcript import TranscriptEntry
from ratchet.core.errors import NotFoundError

if TYPE_CHECKING:
    from ratchet.core.stores.sql import Store

JobState = Literal["queued", "planning", "applying", "testing", "needs_approval", "succeeded", "failed"]
JOB_STATES: tuple[str, ...] = JobState.__args__  # type: ignore[attr-defined]
FINAL_STATES = ("succeeded", "failed")
JobSource = Literal["feedback", "wake", "agent"]
logger = logging.getLogger("ratchet.architect")


ARCHITECT = "architect"  # who the Architect's own steps (planning, testing, merging) are by
ANONYMOUS = "anonymous"  # who a request is by when the servers have no token


class LogEntry(BaseModel):
    at: float = Field(description="Unix time")
    step: str = Field(description="queued, plan, apply, commit, tiers, bump, merge, tag, ...")
    message: str
    ok: bool = True
    by: str | None = Field(default=None, description="who took the step: the id of the request's token "
                           "(`ratchet token` prints it; never the token), 'anonymous' when the servers have "
                           "no token, or 'architect' for its own steps (null in records older than this field)")


class JobError(BaseModel):
    detail: str
    field: str | None = None
    fix: str | None = None
    step: str | None = Field(default=None, description="the step that failed")


class Job(BaseModel):
    """One Architect job: what was asked, the plan, every step taken, the tier results, the version."""

    id: str
    state: JobState
    source: JobSource
    request: dict[str, Any] = Field(description="the feedback text (and ids), the KPI report, or the agent's title")
    planner: str | None = None
    model: str | None = Field(default=None, description="the chat model the planner used, if any")
    plan: Plan | None = None
    actions: list[Action] = Field(default_factory=list, description="every action applied, in order")
    log: list[LogEntry] = Field(default_factory=list)
    tiers: list[dict[str, Any]] = Field(default_factory=list, description="tier results of the last run")
    base: str | None = Field(default=None, description="main's commit the job's branch started from")
    branch: str | None = None
    commit: str | None = Field(default=None, description="the job branch's head once committed")
    changed: list[str] = Field(default_factory=list, description="paths the job changed")
    bump: Literal["major", "minor", "patch"] | None = None
    schema_diff: dict[str, Any] | None = Field(default=None, description="runner/tuner tool-schema diff")
    version: str | None = Field(default=None, description="the version the job made")
    intent: str | None = Field(default=None, description="the store's record of its merge, once begun "
                               "(a restart finishes or undoes the merge from it)")
    error: JobError | None = None
    trace: dict[str, str] = Field(default_factory=dict, description="W3C trace context of the request that made it")
    transcript: list[TranscriptEntry] = Field(default_factory=list, description="the planner's model calls and "
                                              "the tool calls they made, in order (an LLM planner's job)")
    created: float
    updated: float
    deadline: float = Field(description="Unix time after which the job fails (the time limit)")

    def note(self, step: str, message: str, ok: bool = True, *, by: str = ARCHITECT) -> None:
        now = time.time()
        self.log.append(LogEntry(at=now, step=step, message=message, ok=ok, by=by))
        self.updated = now
        # the architect's console shows each step
        logger.log(logging.INFO if ok else logging.WARNING, "job %s %s: %s", self.id, step, message)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class JobSummary(BaseModel):
    """A job as ``GET /jobs`` lists it: what, who, when and how it ended, without its transcript, log,
    actions and tier results (``GET /jobs/{id}`` has them)."""

    id: str
    state: JobState
    source: JobSource
    about: str = Field(description="what was asked: the feedback's or the agent's title's first line, or the "
                       "KPIs a wake-up named (at most 200 characters)")
    by: str | None = Field(default=None, description="who asked: the id of the request's token, 'anonymous' or "
                           "'architect'")
    planner: str | None = None
    model: str | None = Field(default=None, description="the chat model the planner used, if any")
    bump: Literal["major", "minor", "patch"] | None = None
    version: str | None = Field(default=None, description="the version the job made")
    summary: str | None = Field(default=None, description="the plan's one-line summary")
    error: JobError | None = Field(default=None, description="why it failed")
    created: float = Field(description="Unix time it was asked for")
    started: float | None = Field(default=None, description="Unix time it started running (planning, or opened "
                                  "for an agent)")
    finished: float | None = Field(default=None, description="Unix time it succeeded or failed")

    @classmethod
    def of(cls, job: Job) -> JobSummary:
        started = next((e.at for e in job.log if e.step in ("plan", "open")), None)
        return cls(id=job.id, state=job.state, source=job.source, about=about(job.request),
                   by=job.log[0].by if job.log else None, planner=job.planner, model=job.model, bump=job.bump,
                   version=job.version, summary=job.plan.summary if job.plan else None, error=job.error,
                   created=job.created, started=started, finished=job.updated if job.final else None)


def about(request: dict[str, Any]) -> str:
    """A request in one short line."""
    if "report" in request or "breaches" in request:
        report = request.get("report", request)
        kpis = ", ".join(str(b.get("kpi")) for b in report.get("breaches", []) if isinstance(b, dict))
        line = f"KPIs breached their SLO: {kpis}"
    else:
        text = str(request.get("text") or request.get("title") or "")
        line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 200 else line[:199] + "…"


def new_job(source: JobSource, request: dict[str, Any], timeout: float, *, state: JobState = "queued",
            by: str = ARCHITECT) -> Job:
    now = time.time()
    job = Job(id=uuid.uuid4().hex[:12], state=state, source=source, request=request, created=now, updated=now,
              deadline=now + timeout)
    job.note(state if state == "queued" else "open", f"{source} job created", by=by)
    return job


class JobStore:
    """Jobs as JSON rows of the store's ``jobs`` table."""

    def __init__(self, store: Store):
        self.store = store

    def save(self, job: Job) -> None:
        self.store.put_job(job.id, job.state, job.model_dump(mode="json"))

    def get(self, job_id: str) -> Job:
        row = self.store.get_job(job_id)
        if row is None:
            raise NotFoundError(f"no job {job_id!r}", field="job_id", fix="list jobs with GET /jobs")
        return Job.model_validate(row["payload"])

    def list(self, state: str | None = None) -> list[Job]:
        return [Job.model_validate(r["payload"]) for r in self.store.list_jobs(state)]
