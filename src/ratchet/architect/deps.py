"""Dependencies shared by the Architect's routes."""

from __future__ import annotations

from fastapi import Path, Request

from ratchet.architect.service import Architect

JOB_ID_PATTERN = r"^[0-9a-f]{12}$"


def architect(request: Request) -> Architect:
    return request.app.state.architect


def job_id_param():
    return Path(pattern=JOB_ID_PATTERN, description="a job id, as POST /feedback, /wake or /jobs returned it")
