"""The dashboard that ``ratchet serve versions`` serves at ``/``: server-rendered pages (Jinja2), a little
vanilla JavaScript, and uPlot for the charts, all shipped in this package (nothing from a CDN).

:func:`install` adds it to the Versions app; the API keeps its paths (``/versions``, ``/active``, ``/docs``).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ratchet.core.errors import UserError

POLL_MS = 2000  # how often the overview asks for new data: a running demo is watched live


def architect_url(workspace, given: str | None):
    """Where approve and abandon go: ``given`` (``ratchet up`` passes the Architect's address), else
    ``[architect] host`` and ``port`` from ``ratchet.toml``."""

    def url() -> str:
        if given:
            return given.rstrip("/")
        cfg = workspace.config.architect
        if not cfg.port:
            raise UserError("the dashboard does not know where the Architect listens ([architect] port is 0)",
                            field="architect_url", fix="start it with `ratchet up`, pass --architect-url to "
                            "`ratchet serve versions`, or set [architect] port in ratchet.toml")
        return f"http://{cfg.host}:{cfg.port}"

    return url


def lifespan(workspace):
    """The Versions app's lifespan: the rollup's :class:`~ratchet.versions.dashboard.rollup.Builder` runs
    while the server does, so no request pays for a catch-up."""
    from ratchet.versions.dashboard.rollup import Builder

    @asynccontextmanager
    async def run(app: FastAPI):
        builder = app.state.dashboard_builder = Builder(workspace.store)
        builder.start()
        try:
            yield
        finally:
            builder.stop()

    return run


def install(app: FastAPI, workspace, *, token: str | None, architect: str | None = None,
            poll_ms: int = POLL_MS) -> dict:
    """Add the dashboard's routes and assets to ``app``; returns the :class:`ratchet.rest.TokenGate`
    options that let a browser in (login page, assets, session cookie)."""
    from ratchet.versions.dashboard import estimates, routes, views

    state = app.state
    state.dashboard_token = token
    state.dashboard_poll_ms = poll_ms
    state.dashboard_markers = views.Markers(state.catalog)
    state.dashboard_estimates = estimates.Cache()
    state.architect_url = architect_url(workspace, architect)
    app.mount(routes.STATIC.rstrip("/"), StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    for router in (routes.pages, routes.data, routes.actions):
        app.include_router(router)
    return {"cookie": routes.COOKIE, "login": routes.LOGIN,
            "open_paths": frozenset({routes.LOGIN, routes.STATIC})}
