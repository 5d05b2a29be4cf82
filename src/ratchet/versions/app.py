"""The Versions API as a FastAPI app: a thin, read-only adapter over :class:`ratchet.versions.catalog.Catalog`.

Routes: ``GET /versions`` (filtered, paginated), ``/versions/{version}``, ``/versions/{version}/evals``,
``/versions/{a}/diff/{b}`` and ``/active``; OpenAPI at ``/docs`` and ``/openapi.json``. ``v1.2.3`` and
``1.2.3`` name the same version. Errors carry ``error``, ``detail``, ``field`` and ``fix``: 404 for an
unknown version, 422 for a malformed parameter.

Pagination is by offset (``limit``, ``offset``), with ``total`` and ``next`` (the URL of the next page,
or null). Offsets count from the newest version with ``order=desc`` (the default), so a version made
while you page shifts a desc listing by one; page with ``order=asc`` for a stable walk.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ratchet import __version__
from ratchet.rest import (UNAUTHORIZED, ErrorBody, install_error_handlers, install_guards, install_tracing, serve_app,
                          token_required)
from ratchet.restdocs import install_docs
from ratchet.versions.catalog import Catalog

# SemVer 2.0 with an optional "v"; [0-9] rather than \d so that other scripts' digits are not versions.
_NUM = r"(0|[1-9][0-9]*)"
_PRE = r"(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
VERSION_PATTERN = (rf"^v?{_NUM}\.{_NUM}\.{_NUM}(-{_PRE}(\.{_PRE})*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$")
_VERSION_DOC = "A version: v1.2.3 or 1.2.3."


# --- response models ---------------------------------------------------------------------------------


class VersionSummary(BaseModel):
    version: str = Field(description="the tag, vMAJOR.MINOR.PATCH")
    commit: str
    created: str | None = Field(description="when it was tagged (ISO 8601)")
    kind: str | None = Field(description="who made it: tuner, rollback, manual, architect, initial, ...")
    author: str | None
    bump: str | None = Field(description="major, minor, patch or initial")
    reason: str | None
    signature: Literal["verified", "unverified", "unsigned"] = Field(
        description="whether the tag's signature verifies against [versions] allowed_signers: unverified is a "
        "bad signature or a key the file does not list")
    metadata: dict[str, Any] = Field(description="the tag's whole JSON metadata (plugin_distributions: the "
                                     "installed plugin distributions that made it)")


class VersionPage(BaseModel):
    items: list[VersionSummary]
    total: int = Field(description="versions matching the filters, over all pages")
    limit: int
    offset: int
    next: str | None = Field(description="URL of the next page; null on the last one")


class ToolSchema(BaseModel):
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None


class EvalsLink(BaseModel):
    href: str
    exists: bool = Field(description="whether an eval summary was recorded for this version's commit")


class VersionDetail(VersionSummary):
    state: dict[str, Any] | None = Field(description="the active state at this version, as its own tagged "
                                         "ratchet.toml and state schema read it (null if it has none)")
    tools: dict[str, dict[str, ToolSchema]] | None = Field(
        description="MCP tool schemas at this version, by server (runner, tuner) and tool")
    tools_error: str | None = Field(description="why the tool schemas could not be read, if they could not")
    evals: EvalsLink
    ope: dict[str, float] = Field(default_factory=dict, description=(
        "off-policy estimates of this version's mean reward recorded by its tiers' ope cases: "
        "'ope.<estimator>.<strategy key>' and, beside it, '....active' for the active state it was compared with"))


class EvalSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    commit: str
    tiers: dict[str, Any] = Field(default_factory=dict, description="per test tier: results and budget checks")
    ope: dict[str, float] = Field(default_factory=dict, description="the tiers' off-policy estimates (ope cases)")
    updated: str | None = None


class StateChange(BaseModel):
    path: str = Field(description="JSON pointer, e.g. /strategies/style/arms/0")
    op: Literal["add", "remove", "replace"]
    old: Any = None
    new: Any = None


class Narrowing(BaseModel):
    argument: str
    change: str = Field(description="e.g. 'type number -> integer'")


class ToolChange(BaseModel):
    required_added: list[str]
    arguments_added: list[str]
    arguments_removed: list[str]
    narrowed: list[Narrowing]
    breaking: bool


class ServerDiff(BaseModel):
    added: list[str]
    removed: list[str]
    changed: dict[str, ToolChange]
    breaking: bool


class SchemaDiff(BaseModel):
    servers: dict[str, ServerDiff]
    breaking: bool = Field(description="a tool removed, an argument newly required, or a type narrowed")


class VersionDiff(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: str = Field(alias="from")
    to: str
    state: list[StateChange]
    tools: SchemaDiff | None
    tools_error: str | None


class Active(BaseModel):
    version: str | None = Field(description="the latest version")
    commit: str | None
    state_revision: int = Field(description="revision of state/active.state.json")
    pinned: str | None = Field(description="the pinned version, if the runner is pinned")
    served: str | None = Field(description="the version whose state the runner serves")


# --- routes --------------------------------------------------------------------------------------------

ERRORS: dict[int | str, dict[str, Any]] = {401: UNAUTHORIZED,
                                           404: {"model": ErrorBody, "description": "Unknown version"},
                                           422: {"model": ErrorBody, "description": "Malformed parameter"}}


def catalog(request: Request) -> Catalog:
    return request.app.state.catalog


def version_param():
    return Path(pattern=VERSION_PATTERN, description=_VERSION_DOC, examples=["v0.1.0"])


versions_router = APIRouter(prefix="/versions", tags=["versions"], responses=ERRORS)


@versions_router.get("", response_model=VersionPage)
def list_versions(
    request: Request,
    kind: str | None = Query(None, description="tuner (tuner, rollback and manual versions), architect, or "
                             "any raw metadata kind; an unknown kind matches nothing"),
    since: str | None = Query(None, pattern=VERSION_PATTERN, description="only versions newer than this one"),
    order: Literal["asc", "desc"] = Query("desc", description="desc: newest first"),
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, description="versions to skip, counted in the chosen order"),
    cat: Catalog = Depends(catalog),
) -> dict[str, Any]:
    """Versions in semver order, newest first by default."""
    page = cat.page(kind=kind, since=since, order=order, limit=limit, offset=offset)
    following = page.pop("next_offset")
    query = {k: v for k, v in {"kind": kind, "since": since, "order": order, "limit": limit,
                               "offset": following}.items() if v is not None}
    page["next"] = f"{request.url.path}?{urlencode(query)}" if following is not None else None
    return page


@versions_router.get("/{version}", response_model=VersionDetail)
def show_version(version: str = version_param(), cat: Catalog = Depends(catalog)) -> dict[str, Any]:
    """A version's metadata, its active state, its tool schemas and a link to its eval summary."""
    found = cat.detail(version)
    found["evals"] = {"href": f"/versions/{found['version']}/evals", "exists": found.pop("evals_exist")}
    return found


@versions_router.get("/{version}/evals", response_model=EvalSummary)
def version_evals(version: str = version_param(), cat: Catalog = Depends(catalog)) -> dict[str, Any]:
    """The eval summary (``evals/{commit}/summary.json``) recorded for a version."""
    return cat.evals(version)


@versions_router.get("/{a}/diff/{b}", response_model=VersionDiff)
def diff_versions(a: str = version_param(), b: str = version_param(),
                  cat: Catalog = Depends(catalog)) -> dict[str, Any]:
    """What changed from version ``a`` to version ``b``: state paths and tool schemas."""
    return cat.diff(a, b)


active_router = APIRouter(tags=["active"], responses={401: UNAUTHORIZED})


@active_router.get("/active", response_model=Active)
def active(cat: Catalog = Depends(catalog)) -> dict[str, Any]:
    """What is served: the latest version, the active state's revision, and the pin if any."""
    return cat.active()


# --- the app ---------------------------------------------------------------------------------------------


def create_app(workspace, *, token: str | None = None, architect_url: str | None = None) -> FastAPI:
    """The read-only Versions API of ``workspace`` and its dashboard at ``/``; with ``token`` every route
    requires it (a browser may read the dashboard with the cookie its login page sets). ``architect_url``:
    where the dashboard sends approve and abandon (default: ``[architect]`` in ratchet.toml)."""
    from ratchet.versions import dashboard

    app = FastAPI(title=f"Ratchet versions: {workspace.name}", version=__version__,
                  lifespan=dashboard.lifespan(workspace),  # keeps the dashboard's rollup current
                  description="Read-only view of a Ratchet workspace's versions: metadata, state, tool "
                  "schemas, eval summaries and diffs. The dashboard is at /.", docs_url=None, redoc_url=None)
    install_docs(app)  # Swagger UI and ReDoc served from the package, not a CDN
    app.state.catalog = Catalog(workspace)
    app.include_router(versions_router, dependencies=token_required(token))
    app.include_router(active_router, dependencies=token_required(token))
    gate = dashboard.install(app, workspace, token=token, architect=architect_url)

    install_error_handlers(app)
    install_tracing(app, "versions")
    install_guards(app, workspace.config, token, **gate)
    return app


def serve(workspace, *, host: str, port: int, architect_url: str | None = None) -> None:
    """Serve until interrupted; port 0 picks a free one."""
    from ratchet.core import telemetry
    from ratchet.core.auth import check_bind, load_token

    token = load_token(workspace)
    check_bind(host, token, component="versions")  # before telemetry takes over the process
    with telemetry.serving("versions", workspace):
        serve_app(create_app(workspace, token=token, architect_url=architect_url), host=host, port=port,
                  label="versions", root=workspace.root)
