"""Jobs: free-text feedback and wake-ups create them; read them, approve them, abandon them."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ratchet.architect.deps import architect, caller, job_id_param
from ratchet.architect.jobs import JOB_STATES, Job, JobSummary
from ratchet.architect.service import Architect
from ratchet.core.admission import check_finite
from ratchet.core.errors import UserError
from ratchet.rest import ERROR_RESPONSES

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES)

# Something besides whitespace, where JSON Schema (ECMA-262) and pydantic (Rust) agree on what whitespace
# is: their \s differ on U+0085 and U+FEFF.
_NOT_BLANK = r"[^\s\x85\ufeff]"
_VERSION = r"^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=20_000, pattern=_NOT_BLANK,
                      description="what users or operators say, e.g. 'answers are too long'")
    version: str | None = Field(default=None, pattern=_VERSION, description="the version it is about")
    conversation_id: str | None = Field(default=None, min_length=1, max_length=200)


MAX_BREACHES = 100  # a report names each KPI at most once; more is a flood, not a report


class Breach(BaseModel):
    # JSON numbers only (true is not a KPI value), and finite ones: NaN and Infinity are not JSON
    model_config = ConfigDict(strict=True, allow_inf_nan=False)
    kpi: str = Field(min_length=1, description="reward_rate, error_rate or latency_p95_ms")
    value: float
    slo: float
    window_seconds: float | None = None


class WakeRequest(BaseModel):
    """The Triggerer's KPI report (``ratchet serve triggerer`` posts it)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)
    breaches: list[Breach] = Field(min_length=1, max_length=MAX_BREACHES)
    kpis: dict[str, Any] = Field(default_factory=dict, max_length=MAX_BREACHES,
                                 description="the KPIs over the window")
    at: float | None = Field(default=None, description="Unix time of the check")

    @field_validator("kpis")
    @classmethod
    def _finite(cls, kpis: dict[str, Any]) -> dict[str, Any]:
        try:
            check_finite(kpis, "kpis")
        except UserError as exc:
            raise ValueError(exc.message) from None
        return kpis


class OpenJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=500, pattern=_NOT_BLANK,
                       description="what the agent means to change (the version's reason)")


class JobPage(BaseModel):
    items: list[JobSummary] = Field(description="summaries, newest first; GET /jobs/{id} has a job's whole record")
    total: int
    limit: int
    offset: int


@router.post("/feedback", status_code=202, response_model=Job)
def post_feedback(body: FeedbackRequest, arch: Architect = Depends(architect), by: str = Depends(caller)) -> Job:
    """Free-text feedback: a job plans a change from it, tests it and, if it passes, merges and tags."""
    return arch.submit_feedback(body.text, version=body.version, conversation_id=body.conversation_id, by=by)


@router.post("/wake", status_code=202, response_model=Job)
def post_wake(body: WakeRequest, arch: Architect = Depends(architect), by: str = Depends(caller)) -> Job:
    """A wake-up from the Triggerer with its KPI report: a job plans a change from the breaches."""
    return arch.submit_wake(body.model_dump(mode="json"), by=by)


@router.get("/jobs", response_model=JobPage)
def list_jobs(state: Literal[JOB_STATES] | None = Query(None, description="only jobs in this state"),  # type: ignore[valid-type]
              limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0),
              arch: Architect = Depends(architect)) -> dict[str, Any]:
    """Jobs, newest first, as summaries (state, what was asked and by whom, when it was made, started and
    finished, its bump and version, the plan's summary or why it failed); ``GET /jobs/{id}`` has the whole
    record, with its log, tier results and transcript."""
    jobs = list(reversed(arch.list(state)))
    return {"items": [JobSummary.of(j) for j in jobs[offset:offset + limit]], "total": len(jobs), "limit": limit,
            "offset": offset}


@router.post("/jobs", status_code=201, response_model=Job)
def open_job(body: OpenJobRequest, arch: Architect = Depends(architect), by: str = Depends(caller)) -> Job:
    """Open a job for an external agent: a worktree and branch of its own, changed step by step
    (``/jobs/{id}/actions``, ``/files``, ``/render``, ``/tiers``), then released."""
    return arch.open_job(body.title, by=by)


@router.get("/jobs/{job_id}", response_model=Job)
def get_job(job_id: str = job_id_param(), arch: Architect = Depends(architect)) -> Job:
    """A job: its state, plan, step log (each step with who took it), tier results, bump and the version
    it made (or why it failed)."""
    return arch.get(job_id)


@router.post("/jobs/{job_id}/release", status_code=202, response_model=Job)
def release_job(job_id: str = job_id_param(), arch: Architect = Depends(architect),
                by: str = Depends(caller)) -> Job:
    """Finish an agent's job: commit, run micro → fast → full, bump, then merge and tag (or wait for approval)."""
    return arch.release(job_id, by=by)


@router.post("/jobs/{job_id}/approve", status_code=202, response_model=Job)
def approve_job(job_id: str = job_id_param(), arch: Architect = Depends(architect),
                by: str = Depends(caller)) -> Job:
    """Approve a job held in needs_approval by the approval gate; it then merges and tags."""
    return arch.approve(job_id, by=by)


@router.delete("/jobs/{job_id}", response_model=Job)
def abandon_job(job_id: str = job_id_param(), arch: Architect = Depends(architect),
                by: str = Depends(caller)) -> Job:
    """Abandon an open agent job or one waiting for approval: nothing is merged."""
    return arch.abandon(job_id, by=by)
