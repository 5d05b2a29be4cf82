"""Dependencies shared by the Architect's routes."""

from __future__ import annotations

from fastapi import Path, Request

from ratchet.architect.jobs import ANONYMOUS
from ratchet.architect.service import Architect
from ratchet.core import auth

JOB_ID_PATTERN = r"^[0-9a-f]{12}$"


def architect(request: Request) -> Architect:
    return request.app.state.architect


def caller(request: Request) -> str:
    """Who the request is by, for the job's log: the id of its bearer token (the app has checked it), or
    anonymous when the app takes none. Never the token itself."""
    if not request.app.state.token_required:
        return ANONYMOUS
    _scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return auth.token_id(value.strip())


def job_id_param():
    return Path(pattern=JOB_ID_PATTERN, description="a job id, as POST /feedback, /wake or /jobs returned it")
