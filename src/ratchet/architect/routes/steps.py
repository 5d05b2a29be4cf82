"""Steps an external agent takes on its open job (``POST /jobs``): read and write files, apply any
action, render templates, run tiers. Each change is recorded in the job and decides its bump."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ratchet.architect.deps import architect, caller, job_id_param
from ratchet.architect.jobs import Job
from ratchet.architect.plans import PATH_SCHEMA, TIERS, Action, RenderTemplate, check_path
from ratchet.architect.service import Architect
from ratchet.rest import ERROR_RESPONSES, conflicts

router = APIRouter(prefix="/jobs/{job_id}", tags=["steps"], responses=ERROR_RESPONSES)


class Applied(BaseModel):
    files: list[str] = Field(description="paths the step wrote, relative to the workspace")
    job: Job


class FileContent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    content: str


class FileBody(BaseModel):
    path: str
    content: str


class TiersRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tiers: list[Literal[TIERS]] = Field(default=["micro"], min_length=1, description="run in order")  # type: ignore[valid-type]


FilePath = Annotated[str, AfterValidator(check_path),
                     Path(description="a path relative to the workspace root, e.g. notes/why.md",
                          json_schema_extra=PATH_SCHEMA)]


@router.get("/files", response_model=list[str])
def list_files(job_id: str = job_id_param(), arch: Architect = Depends(architect)) -> list[str]:
    """The files of the job's worktree."""
    with arch.session(job_id) as s:
        return s.files()


@router.get("/files/{path:path}", response_model=FileBody)
def read_file(path: FilePath, job_id: str = job_id_param(), arch: Architect = Depends(architect)) -> dict:
    """One file of the job's worktree."""
    with conflicts(), arch.session(job_id) as s:
        return {"path": path, "content": s.read_file(path)}


@router.put("/files/{path:path}", response_model=Applied)
def write_file(body: FileContent, path: FilePath, job_id: str = job_id_param(),
               arch: Architect = Depends(architect), by: str = Depends(caller)) -> dict[str, Any]:
    """Write a whole file in the job's worktree (a ``write_file`` action; at most ``[limits] file_bytes``)."""
    with conflicts(), arch.session(job_id, by=by) as s:
        files = s.apply({"kind": "write_file", "path": path, "content": body.content})
        return {"files": files, "job": s.job}


@router.post("/actions", response_model=Applied)
def apply_action(action: Action = Body(discriminator="kind"), job_id: str = job_id_param(),
                 arch: Architect = Depends(architect), by: str = Depends(caller)) -> dict[str, Any]:
    """Apply any action: set_state, render_template, write_file, replace_text, edit_config, add_test."""
    with conflicts(), arch.session(job_id, by=by) as s:
        files = s.apply(action)
        return {"files": files, "job": s.job}


@router.post("/render", response_model=Applied)
def render(body: RenderTemplate, job_id: str = job_id_param(), arch: Architect = Depends(architect),
           by: str = Depends(caller)) -> dict:
    """Render a template of the library into the job's worktree (never overwriting a file)."""
    with conflicts(), arch.session(job_id, by=by) as s:
        files = s.apply(body)
        return {"files": files, "job": s.job}


@router.post("/tiers", response_model=list[dict[str, Any]])
def run_tiers(body: TiersRequest, job_id: str = job_id_param(), arch: Architect = Depends(architect),
              by: str = Depends(caller)) -> list:
    """Run tiers on the worktree as it is now, stopping at the first that fails; nothing is merged."""
    with arch.session(job_id, by=by) as s:
        return s.run_tiers(body.tiers)
