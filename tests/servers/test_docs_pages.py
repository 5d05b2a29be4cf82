"""The REST servers' /docs (Swagger UI) and /redoc pages load nothing from another host: every script,
style and icon they name is served by the server itself, with or without the token."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from ratchet.architect.app import create_app as architect_app
from ratchet.versions.app import create_app as versions_app

TOKEN = "docs-token-0123456789abcdefghijklmnopqrstuvwxyz"
APPS = [lambda ws, t: versions_app(ws, token=t), lambda ws, t: architect_app(ws, run_jobs=False, token=t)]
URL = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")
KINDS = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


@pytest.mark.parametrize("token", [None, TOKEN])
@pytest.mark.parametrize("make", APPS)
@pytest.mark.parametrize("page, must_load", [("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}),
                                             ("/redoc", {"redoc.standalone.js"})])
def test_docs_pages_name_only_local_assets_and_every_one_is_served(ws, make, token, page, must_load):
    with TestClient(make(ws, token)) as client:
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        urls = [a or b for a, b in URL.findall(html.text)]
        assert {u.rsplit("/", 1)[-1] for u in urls} >= must_load | {"openapi.json"}, urls
        assert "fonts.googleapis" not in html.text and "cdn.jsdelivr" not in html.text
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
            got = client.get(url)  # no Authorization header: what a browser sends
            assert got.status_code == 200 and len(got.content) > 1000, (url, got.status_code)
            kind = next(k for ext, k in KINDS.items() if url.endswith(ext))
            assert kind in got.headers["content-type"], (url, got.headers["content-type"])


def test_the_bundles_are_the_real_ones(ws):
    with TestClient(versions_app(ws)) as client:
        assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text[:2000]
        assert "Redoc" in client.get("/docs/assets/redoc.standalone.js").text[:2000]
