"""What the REST adapters (Architect, Versions) share: error bodies, trace context, serving.

Errors: a :class:`RatchetError` becomes ``{"error", "detail", "field", "fix"}`` with 401 (no token), 404
(not found), 409 (conflict), 413 (too large), 429 (too many, with ``Retry-After``) or 500. 422 means that
the request breaks the OpenAPI schema: a request that fails validation gets the same body with the field
named, and input the schema accepts but the target refuses as it stands (a state schema, a file that is
not there) is a 409 (:func:`conflicts`).

Trace context: a ``traceparent`` header from the client becomes the parent of the request's server span,
so a client's trace continues through the server (and into jobs it creates). Guards: a body over
``[limits] body_bytes`` is refused before any route sees it; CORS only for ``[auth] cors_origins``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ratchet import restdocs
from ratchet.core import auth
from ratchet.core.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    RatchetError,
    TooLargeError,
    TooManyError,
    UserError,
)


class ErrorBody(BaseModel):
    error: str = Field(description="the error class, e.g. NotFoundError")
    detail: str = Field(description="what failed and which thing")
    field: str | None = Field(default=None, description="the parameter or field at fault")
    fix: str | None = Field(default=None, description="how to fix it")


UNAUTHORIZED = {"model": ErrorBody, "description": "no bearer token, or a wrong one (when the server has a token)"}
ERROR_RESPONSES = {400: {"model": ErrorBody, "description": "the body is not JSON"},
                   401: UNAUTHORIZED,
                   404: {"model": ErrorBody, "description": "not found"},
                   409: {"model": ErrorBody, "description": "the request is well formed, but what it names refuses "
                         "it as it stands; `field` and `fix` say why"},
                   413: {"model": ErrorBody, "description": "a body or file over its [limits] size"},
                   422: {"model": ErrorBody, "description": "the request breaks this schema; `field` names where"},
                   429: {"model": ErrorBody, "description": "over a [limits] count; retry after Retry-After seconds"}}


class _Refused(Exception):
    def __init__(self, error: RatchetError):
        self.error = error


@contextlib.contextmanager
def conflicts() -> Iterator[None]:
    """Answer a :class:`UserError` raised in the block with 409 (its body unchanged) instead of 422: for
    input the schema accepts that the target refuses as it stands (a state schema, a file that is not
    there, an id that is taken), so that 422 always means a request the schema itself rejects."""
    try:
        yield
    except (AuthError, NotFoundError, TooLargeError, TooManyError):  # their own statuses: 401, 404, 413, 429
        raise
    except UserError as exc:
        raise _Refused(exc) from exc


def status_of(exc: RatchetError) -> int:
    if isinstance(exc, AuthError):
        return 401
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, TooLargeError):
        return 413
    if isinstance(exc, TooManyError):
        return 429
    if isinstance(exc, UserError):
        return 422
    return 409 if isinstance(exc, ConflictError) else 500


def validation_body(exc: RequestValidationError) -> dict:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    loc = loc[1:] if loc[:1] in (["body"], ["query"], ["path"], ["header"]) else loc
    body = getattr(exc, "body", None)
    if len(loc) > 1 and isinstance(body, dict) and loc[0] == body.get("kind"):  # a tagged union's tag
        loc = loc[1:]
    field = ".".join(loc) or None
    ctx = err.get("ctx") or {}
    pattern = str(ctx.get("pattern", ""))
    if err.get("type") == "string_pattern_mismatch" and pattern.startswith("^v?"):  # the semver patterns
        detail, fix = f"{field}: {err.get('input')!r} is not a version", "write it like v1.2.3 or 1.2.3"
    elif "problem" in ctx and "fix" in ctx:  # a custom error that knows its fix (e.g. a workspace path)
        detail, fix = str(ctx["problem"]), str(ctx["fix"])
    else:
        detail, fix = f"{field or 'body'}: {err.get('msg')}", f"correct {field or 'the body'} (see /docs)"
    return {"error": "ValidationError", "detail": detail, "field": field, "fix": fix}


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE")


def allowed_methods(request: Request) -> str:
    """Every method the app serves at the request's path. Starlette's own 405 names only the methods of
    the first route whose path matches, so ``/jobs`` (GET and POST on two routes) said ``Allow: GET``;
    asking every route with each method also looks inside included routers."""
    from starlette.routing import Match

    routes = request.app.router.routes
    return ", ".join(m for m in _METHODS
                     if any(r.matches({**request.scope, "method": m})[0] is Match.FULL for r in routes))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RatchetError)
    async def ratchet_error(_request: Request, exc: RatchetError) -> JSONResponse:
        headers = {"WWW-Authenticate": auth.SCHEME} if isinstance(exc, AuthError) else None
        if isinstance(exc, TooManyError):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(exc.to_dict(), status_code=status_of(exc), headers=headers)

    @app.exception_handler(_Refused)
    async def refused(_request: Request, exc: _Refused) -> JSONResponse:
        return JSONResponse(exc.error.to_dict(), status_code=409)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        fix = "send a JSON body (Content-Type: application/json)" if exc.status_code == 400 else "see /docs"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            allow = allowed_methods(request)
            headers, fix = {**(headers or {}), "Allow": allow}, f"use {allow}"
        body = {"error": "HTTPError", "detail": str(exc.detail), "field": "body" if exc.status_code == 400 else None,
                "fix": fix}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(validation_body(exc), status_code=422)


def token_required(token: str | None) -> list:
    """The app-wide dependency that requires ``token`` as a bearer token (none when ``token`` is None).
    Pass it as ``FastAPI(dependencies=...)``: the API's routes require it, ``/docs`` and the OpenAPI
    schema stay readable (they show the scheme)."""
    if token is None:
        return []
    from fastapi import Depends
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    scheme = HTTPBearer(auto_error=False, description="the workspace's API token (`ratchet token`)")

    async def require(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        if credentials is None or not auth.matches(credentials.credentials, token):
            raise AuthError("no bearer token, or not this workspace's" if credentials else "no bearer token",
                            field="Authorization",
                            fix=f"send Authorization: Bearer <token>, the token in {auth.TOKEN_ENV} or "
                            "[auth] token_file")

    return [Depends(require)]


class BodyLimit:
    """Pure ASGI middleware: a request body over ``limit`` bytes is refused with 413 before the app sees
    any of it: at once when Content-Length says so, else as it streams in (chunked, or a Content-Length
    that lies). The app gets the body this read, so a refused request never reaches a route."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        from starlette.datastructures import Headers

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(f"the request body is {int(declared):,} bytes, over", scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await self._refuse("the request body streamed past", scope, receive, send)
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, what: str, scope, receive, send) -> None:
        exc = TooLargeError(f"{what} the limit of {self.limit:,} bytes; nothing was changed",
                            field="body", fix="send less (a large file as several smaller ones), or raise "
                            "[limits] body_bytes in ratchet.toml")
        await JSONResponse(exc.to_dict(), status_code=413, headers={"Connection": "close"})(scope, receive, send)


OPEN_PATHS = restdocs.OPEN_PATHS  # the docs pages, their assets and the schema: readable without a token
READ_METHODS = frozenset({"GET", "HEAD"})


def cookie_value(token: str) -> str:
    """What a browser's session cookie holds: a keyed hash of the token, never the token (which can act),
    so the cookie lets a browser read pages and nothing else."""
    import hashlib
    import hmac

    return hmac.new(token.encode(), b"ratchet dashboard session", hashlib.sha256).hexdigest()


class TokenGate:
    """Pure ASGI middleware: without the bearer token, every request but the docs' is answered with 401
    before anything else reads it: not routed (no 404 or 405 for a stranger), its body not read (no 400,
    413 or 422). :func:`token_required` checks the same token again as the routes' dependency, which is
    what puts the scheme in the OpenAPI schema.

    For a browser (the dashboard): ``open_paths`` (e.g. a login page, static assets; a path ending in ``/``
    opens everything under it) pass; a GET or HEAD with the ``cookie`` that :func:`cookie_value` makes
    passes (reads only: an action still needs the bearer token, so a cookie cannot be used to act by a page
    of another site); and a GET that asks for HTML without either is sent to ``login`` (303)."""

    def __init__(self, app, token: str, *, cookie: str | None = None, login: str | None = None,
                 open_paths: frozenset[str] = frozenset()):
        self.app = app
        self.token = token
        self.cookie = cookie
        self.login = login
        self.open_paths = OPEN_PATHS | open_paths
        self.open_prefixes = tuple(p for p in open_paths if p.endswith("/"))

    def _open(self, path: str) -> bool:
        return path in self.open_paths or bool(self.open_prefixes) and path.startswith(self.open_prefixes)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or self._open(scope["path"]):
            await self.app(scope, receive, send)
            return
        from starlette.datastructures import Headers
        from starlette.requests import cookie_parser

        headers = Headers(scope=scope)
        given = headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() == "bearer" and auth.matches(credentials.strip(), self.token):
            await self.app(scope, receive, send)
            return
        reading = scope["method"] in READ_METHODS
        if self.cookie and reading and not given:
            session = cookie_parser(headers.get("cookie", "")).get(self.cookie, "")
            if session and auth.matches(session, cookie_value(self.token)):
                await self.app(scope, receive, send)
                return
            if self.login and "text/html" in headers.get("accept", ""):
                from urllib.parse import quote

                from starlette.responses import RedirectResponse

                target = scope["path"] + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
                await RedirectResponse(f"{self.login}?next={quote(target)}", status_code=303)(scope, receive, send)
                return
        exc = AuthError("no bearer token, or not this workspace's" if given else "no bearer token",
                        field="Authorization", fix=f"send Authorization: Bearer <token>, the token in "
                        f"{auth.TOKEN_ENV} or [auth] token_file")
        await JSONResponse(exc.to_dict(), status_code=401,
                           headers={"WWW-Authenticate": auth.SCHEME})(scope, receive, send)


def install_guards(app: FastAPI, config, token: str | None = None, **gate) -> None:
    """The body limit of ``config.limits``; with ``token``, the :class:`TokenGate` (``gate``: its browser
    options) before it; and, only for ``config.auth.cors_origins``, CORS (outermost, so that a listed page
    can read a refusal too)."""
    app.add_middleware(BodyLimit, limit=config.limits.body_bytes)
    if token is not None:
        app.add_middleware(TokenGate, token=token, **gate)
    if config.auth.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.auth.cors_origins),
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "traceparent"],
                           expose_headers=["Retry-After"], max_age=600)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


async def unicode_body(request: Request) -> None:
    """An app-wide dependency: refuse a JSON body whose strings are not Unicode text. A lone surrogate
    escape (``"\\ud800"``) is valid JSON, but no file or database can hold it, so it failed deep in a
    write (a 500, perhaps after a file was truncated); a pair (an emoji) is fine."""
    body = await request.body()
    if not _SURROGATE_ESCAPE.search(body):
        return
    try:
        json.dumps(json.loads(body), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise UserError("the body has a lone surrogate escape (e.g. \\ud800): not Unicode text", field="body",
                        fix="send UTF-8 text; escape a character beyond U+FFFF as a pair of surrogates") from None
    except ValueError:
        return  # not JSON: the route says so


def install_tracing(app: FastAPI, component: str) -> None:
    """A SERVER span per request, child of the client's ``traceparent`` when it sends one."""
    from opentelemetry import context, propagate, trace

    from ratchet.core import telemetry

    @app.middleware("http")
    async def traced(request: Request, call_next):
        token = context.attach(propagate.extract(dict(request.headers)))
        try:
            tracer = telemetry.current().tracer
            with tracer.start_as_current_span(f"ratchet.{component}.request", kind=trace.SpanKind.SERVER,
                                              attributes={"http.request.method": request.method,
                                                          "url.path": request.url.path}) as span:
                response = await call_next(request)
                span.set_attribute("http.response.status_code", response.status_code)
                return response
        finally:
            context.detach(token)


def serve_app(app: FastAPI, *, host: str, port: int, label: str, root=None) -> None:
    """Serve until interrupted; port 0 picks a free one. Prints the one line ``ratchet up`` waits for.

    The caller has checked the bind (:func:`ratchet.core.auth.check_bind`) before starting anything. On
    loopback the app refuses foreign ``Host`` headers, as the MCP servers do (DNS rebinding)."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from ratchet.serving import serve_asgi

    if auth.is_loopback(host):
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(auth.LOOPBACK_NAMES | {host}))
    serve_asgi(app, host=host, port=port, label=label, root=root)
