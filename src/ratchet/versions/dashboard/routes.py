"""The dashboard's routes: HTML pages under ``/`` and ``/ui/``, their JSON data under ``/ui/data/``, and
the actions under ``/ui/actions/`` (POST, bearer token).

Reading needs what the Versions API needs: nothing on a loopback server without a token; else the bearer
token, or the session cookie that ``/login`` sets once the token was typed there (reads only). An action
needs the bearer token itself in ``Authorization`` (the pages send the token typed in their token box),
so a page of another site cannot act through a logged-in browser. Actions go to their owner: approve and
abandon to the Architect's API (with the caller's token), a rollback to the State Manager.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from ratchet import __version__
from ratchet.core import auth
from ratchet.core.errors import AuthError, NotFoundError, UserError
from ratchet.versions.dashboard import activity, drawings, estimates, views

HERE = Path(__file__).parent
COOKIE = "ratchet_session"
LOGIN = "/login"
STATIC = "/ui/static/"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
templates.env.filters["when"] = lambda ts: views.when(ts)

NAV = [("/", "Overview"), ("/ui/versions", "Versions"), ("/ui/strategies", "Strategies"), ("/ui/jobs", "Jobs"),
       ("/ui/conversations", "Conversations")]

pages = APIRouter(include_in_schema=False)
data = APIRouter(prefix="/ui/data", include_in_schema=False)
actions = APIRouter(prefix="/ui/actions", include_in_schema=False)


def render(request: Request, template: str, **context: Any) -> HTMLResponse:
    app = request.app.state
    return templates.TemplateResponse(request, template, {
        "nav": NAV, "path": request.url.path, "workspace": app.catalog.workspace.name, "ratchet_version": __version__,
        "token_required": app.dashboard_token is not None, **context})


# --- pages ----------------------------------------------------------------------------------------------------


@pages.get("/", response_class=HTMLResponse)
def overview_page(request: Request):
    st = request.app.state
    return render(request, "overview.html", active=st.catalog.active(), poll_ms=st.dashboard_poll_ms)


@pages.get("/ui/versions", response_class=HTMLResponse)
def versions_page(request: Request, kind: str | None = Query(None), offset: int = Query(0, ge=0),
                  limit: int = Query(50, ge=1, le=500)):
    kind = kind or None
    page = request.app.state.catalog.page(kind=kind, order="desc", limit=limit, offset=offset)
    return render(request, "versions.html", page=page, kind=kind, kinds=["tuner", "architect", "rollback", "manual",
                                                                         "init"])


@pages.get("/ui/versions/{version}", response_class=HTMLResponse)
def version_page(request: Request, version: str):
    return render(request, "version.html", **views.version_page(request.app.state.catalog, version))


@pages.get("/ui/strategies", response_class=HTMLResponse)
def strategies_page(request: Request):
    return render(request, "strategies.html", strategies=views.strategies(request.app.state.catalog.workspace))


@pages.get("/ui/strategies/{key}/estimates", response_class=HTMLResponse)
def estimates_page(request: Request, key: str, last: int = Query(estimates.DEFAULT_LAST, ge=1, le=estimates.MAX_LAST)):
    result = request.app.state.dashboard_estimates.get(request.app.state.catalog.workspace, key, last)
    drawn = estimates.drawing(result)
    return render(request, "estimates.html", result=result, svg=drawings.draw(drawn) if drawn else None,
                  max_last=estimates.MAX_LAST)


@pages.get("/ui/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, state: str | None = Query(None)):
    from ratchet.architect.jobs import JOB_STATES

    state = state or None
    if state is not None and state not in JOB_STATES:
        raise UserError(f"state: {state!r} is not a job state", field="state", fix=f"use one of {', '.join(JOB_STATES)}")
    ws = request.app.state.catalog.workspace
    return render(request, "jobs.html", jobs=views.jobs_list(ws, state), state=state, states=JOB_STATES)


@pages.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str):
    return render(request, "job.html", **views.job_page(request.app.state.catalog.workspace, job_id))


@pages.get("/ui/conversations", response_class=HTMLResponse)
def conversations_page(request: Request, id: str | None = Query(None, max_length=200),
                       start: float | None = Query(None, description="window start, Unix seconds"),
                       end: float | None = Query(None, description="window end (excluded), Unix seconds"),
                       offset: int = Query(0, ge=0), limit: int = Query(activity.LIMIT, ge=1, le=activity.MAX_LIMIT)):
    story, error, window = None, None, None
    if id:
        try:
            story = views.conversation(request.app.state.catalog.workspace, id)
        except NotFoundError as exc:
            error = exc
    elif start is not None or end is not None:
        window = conversations_in(request, start, end, offset, limit)
    return render(request, "conversations.html", conversation_id=id or "", story=story, error=error, window=window)


def conversations_in(request: Request, start: float | None, end: float | None, offset: int, limit: int) -> dict:
    if start is None or end is None or not end > start:
        raise UserError("start, end: a window needs both, with end after start", field="end" if start is not None
                        else "start", fix="pass start and end as Unix seconds, e.g. click a point of the overview's chart")
    return activity.conversations(request.app.state.catalog.workspace.store, start, end, limit=limit, offset=offset)


@pages.get(LOGIN, response_class=HTMLResponse)
def login_page(request: Request, next: str = Query("/")):
    return render(request, "login.html", next=_local(next), failed=False)


@pages.post(LOGIN, response_class=HTMLResponse)
async def login(request: Request):
    """Check the typed token; set the session cookie (reads only) and go on to ``next``."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    given, target = (form.get("token") or [""])[0].strip(), _local((form.get("next") or ["/"])[0])
    token = request.app.state.dashboard_token
    if token is None:
        return RedirectResponse(target, status_code=303)
    if not auth.matches(given, token):
        return render(request, "login.html", next=target, failed=True)
    from ratchet.rest import cookie_value

    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, cookie_value(token), httponly=True, samesite="strict", path="/")
    return response


def _local(target: str) -> str:
    """Only a path of this site: never send a browser elsewhere after its login."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


# --- data -----------------------------------------------------------------------------------------------------


@data.get("/overview")
def overview_data(request: Request, window: float | None = Query(None, gt=0, description="seconds back from now"),
                  cursor: str | None = Query(None, max_length=400, description="the previous answer's cursor: "
                                             "send only the versions and wake-ups since")):
    st = request.app.state
    return views.overview(st.catalog.workspace, st.catalog, st.dashboard_markers, window=window, cursor=cursor)


@data.get("/conversations")
def conversations_data(request: Request, start: float | None = Query(None), end: float | None = Query(None),
                       offset: int = Query(0, ge=0), limit: int = Query(activity.LIMIT, ge=1, le=activity.MAX_LIMIT)):
    return conversations_in(request, start, end, offset, limit)


@data.get("/strategies/kpis")
def strategy_kpis_data(request: Request, window: float | None = Query(None, gt=0, description="seconds back from now")):
    return views.strategy_kpis(request.app.state.catalog.workspace, window=window)


@data.get("/strategies/{key}/estimates")
def estimates_data(request: Request, key: str, last: int = Query(estimates.DEFAULT_LAST, ge=1, le=estimates.MAX_LAST)):
    return request.app.state.dashboard_estimates.get(request.app.state.catalog.workspace, key, last)


@data.get("/versions/{version}/tools-diff")
def tools_diff_data(request: Request, version: str):
    return views.tools_diff(request.app.state.catalog, version)


# --- actions --------------------------------------------------------------------------------------------------


def bearer(request: Request) -> str | None:
    """The caller's bearer token; required when the server has one (the TokenGate has checked it)."""
    token = request.app.state.dashboard_token
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if token is None:
        return value.strip() or None if scheme.lower() == "bearer" else None
    if scheme.lower() != "bearer" or not auth.matches(value.strip(), token):
        raise AuthError("an action needs the bearer token", field="Authorization",
                        fix="type the workspace's token (`ratchet token`) in the token box, or send "
                        "Authorization: Bearer <token>")
    return value.strip()


def who(token: str | None) -> str:
    return f"dashboard ({auth.token_id(token)})" if token else "dashboard"


@actions.post("/jobs/{job_id}/{what}")
def job_action(request: Request, job_id: str, what: str, token: str | None = Depends(bearer)):
    """Approve or abandon a job, through the Architect's API (it owns its jobs and their worker)."""
    from ratchet.architect.client import ArchitectClient

    if what not in ("approve", "abandon"):
        raise NotFoundError(f"no job action {what!r}", field="action", fix="use approve or abandon")
    client = ArchitectClient(request.app.state.architect_url(), token=token, timeout=15)
    return JSONResponse(client.action(job_id, what), status_code=202 if what == "approve" else 200)


@actions.post("/rollback/{version}")
def rollback(request: Request, version: str, token: str | None = Depends(bearer)):
    """A new patch version whose active state equals ``version``'s (the State Manager's rollback)."""
    ws = request.app.state.catalog.workspace
    made = ws.state.rollback(version, reason=f"rolled back from the dashboard to {version}", author=who(token))
    return {"version": made.name, "commit": made.commit, "rolled_back_to": made.metadata.get("rolled_back_to")}
