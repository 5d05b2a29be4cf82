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


# --- in a real browser, with no network: the pages render ------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--virtual-time-budget=15000"]


def chromium() -> str:
    import os
    import shutil

    exe = shutil.which("chromium")
    if exe:
        return exe
    if os.environ.get("CI"):  # CI installs it (.ci/run): the browser check must not pass unrun there
        pytest.fail("chromium is not installed; CI installs it with apt-get install chromium (.ci/run)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


@pytest.mark.slow
@pytest.mark.parametrize("page, rendered", [("/docs", 'class="swagger-ui"'), ("/redoc", "api-content")])
def test_docs_pages_render_in_chromium_without_the_network(ws_path, tmp_path, page, rendered):
    import os
    import subprocess

    from helpers import ServerProcess

    exe = chromium()
    with ServerProcess("versions", ws_path) as server:
        url = f"http://127.0.0.1:{server.port}{page}"
        # every host but the server's resolves nowhere: a CDN script could not load even with a network
        flags = [*CHROMIUM_FLAGS, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--dump-dom", url]
        proc = subprocess.run([exe, *flags], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HOME": str(tmp_path / "home")})
    dom = proc.stdout
    assert proc.returncode == 0 and "</html>" in dom, proc.stderr[-2000:]
    assert rendered in dom, f"{page} did not render:\n{dom[:2000]}"
    assert "/versions/{version}" in dom  # the API's own operations, read from /openapi.json
