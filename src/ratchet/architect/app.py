"""The Architect as a FastAPI app: a thin adapter over :class:`ratchet.architect.service.Architect`.

Routes: ``POST /feedback`` and ``POST /wake`` create jobs; ``GET /jobs``, ``GET /jobs/{id}``; approval
and abandonment; the steps an external agent drives (``POST /jobs``, then ``/jobs/{id}/files``,
``/actions``, ``/render``, ``/tiers``, ``/release``); the template library (``/templates``). OpenAPI at
``/docs`` and ``/openapi.json``. Errors carry ``error``, ``detail``, ``field`` and ``fix``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from ratchet import __version__
from ratchet.architect.routes import jobs, steps, templates
from ratchet.architect.service import Architect
from ratchet.rest import install_error_handlers, install_guards, install_tracing, token_required, unicode_body
from ratchet.restdocs import install_docs


def create_app(workspace, *, architect: Architect | None = None, run_jobs: bool = True,
               token: str | None = None) -> FastAPI:
    """The Architect API of ``workspace``. ``run_jobs=False`` leaves queued jobs alone (tests drive them);
    with ``token`` every route requires it as a bearer token."""
    arch = architect or Architect(workspace)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if run_jobs:
            arch.start()
        try:
            yield
        finally:
            arch.stop()

    app = FastAPI(title=f"Ratchet architect: {workspace.name}", version=__version__, lifespan=lifespan,
                  description="Plans, applies, tests, merges and tags changes to a Ratchet workspace, from "
                  "free-text feedback, Triggerer wake-ups, or an external agent's steps.",
                  dependencies=[*token_required(token), Depends(unicode_body)], docs_url=None, redoc_url=None)
    install_docs(app)  # Swagger UI and ReDoc served from the package, not a CDN
    app.state.architect = arch
    app.state.token_required = token is not None  # requests are by a token's id, else anonymous
    for module in (jobs, steps, templates):
        app.include_router(module.router)
    install_error_handlers(app)
    install_tracing(app, "architect")
    install_guards(app, workspace.config, token)
    return app
