"""The REST servers' ``/docs`` (Swagger UI) and ``/redoc`` pages with their scripts and styles served by
the server itself, from the ``fastapi-offline`` package's copy of the swagger-ui and ReDoc bundles: the
pages work without the network (FastAPI's defaults load them from a CDN), and ReDoc loads no web fonts.

Every asset is under ``/docs/assets/`` and, like the pages and ``/openapi.json``, readable without the
token (:data:`OPEN_PATHS`).
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import FileResponse, HTMLResponse

DOCS, REDOC, OAUTH2_REDIRECT = "/docs", "/redoc", "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}
OPEN_PATHS = frozenset({DOCS, OAUTH2_REDIRECT, REDOC, "/openapi.json", *(f"{ASSETS_URL}/{a}" for a in ASSETS)})


def assets_dir():
    return resources.files("fastapi_offline") / "static"


def install_docs(app: FastAPI) -> None:
    """Add the docs pages and their assets to ``app``, made with ``docs_url=None, redoc_url=None``. Routes
    are added as plain Starlette routes, as FastAPI adds its own docs: the app's dependencies (the token)
    do not apply to them."""
    assert app.docs_url is None and app.redoc_url is None, "make the app with docs_url=None, redoc_url=None"
    folder = assets_dir()

    def root(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request) + ASSETS_URL
        return get_swagger_ui_html(openapi_url=root(request) + app.openapi_url, title=f"{app.title} - Swagger UI",
                                   oauth2_redirect_url=root(request) + OAUTH2_REDIRECT,
                                   swagger_js_url=f"{base}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{base}/swagger-ui.css", swagger_favicon_url=f"{base}/favicon.png",
                                   swagger_ui_parameters=app.swagger_ui_parameters)

    async def redoc(request: Request) -> HTMLResponse:
        base = root(request) + ASSETS_URL
        return get_redoc_html(openapi_url=root(request) + app.openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{base}/redoc.standalone.js", redoc_favicon_url=f"{base}/favicon.png",
                              with_google_fonts=False)

    async def oauth2_redirect(_request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_route(DOCS, swagger_ui, include_in_schema=False)
    app.add_route(REDOC, redoc, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT, oauth2_redirect, include_in_schema=False)
    for name, media_type in ASSETS.items():
        path = folder / name

        async def asset(_request: Request, path=path, media_type=media_type) -> FileResponse:
            return FileResponse(str(path), media_type=media_type, headers={"Cache-Control": "max-age=86400"})

        app.add_route(f"{ASSETS_URL}/{name}", asset, include_in_schema=False)
