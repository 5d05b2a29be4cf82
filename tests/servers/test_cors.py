"""CORS is off unless [auth] cors_origins lists the web origins whose pages may call the REST apps."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from helpers import commit_all
from ratchet.architect.app import create_app as architect_app
from ratchet.core.errors import ConfigError
from ratchet.core.workspace import Workspace
from ratchet.versions.app import create_app as versions_app

APPS = [(lambda ws: architect_app(ws, run_jobs=False), "/jobs"), (versions_app, "/versions")]
DASHBOARD, EVIL = "https://dashboard.example", "https://evil.example"


def preflight(client: TestClient, path: str, origin: str):
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "authorization, content-type"})


def with_origins(ws_path, origins: str) -> Workspace:
    with open(ws_path / "ratchet.toml", "a") as f:
        f.write(f"\n[auth]\ncors_origins = {origins}\n")
    commit_all(ws_path, "cors")
    return Workspace.open(ws_path)


@pytest.mark.parametrize("make, path", APPS)
def test_no_cors_by_default(ws, make, path):
    with TestClient(make(ws)) as client:
        for origin in (DASHBOARD, EVIL):
            assert "access-control-allow-origin" not in preflight(client, path, origin).headers
            r = client.get(path, headers={"Origin": origin})
            assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("make, path", APPS)
def test_listed_origins_only_get_cors(ws_path, make, path):
    ws = with_origins(ws_path, f'["{DASHBOARD}"]')
    with TestClient(make(ws)) as client:
        allowed = preflight(client, path, DASHBOARD)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == DASHBOARD
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        assert client.get(path, headers={"Origin": DASHBOARD}).headers["access-control-allow-origin"] == DASHBOARD
        assert "access-control-allow-origin" not in preflight(client, path, EVIL).headers
        assert "access-control-allow-origin" not in client.get(path, headers={"Origin": EVIL}).headers
        refused = client.post(path, content=b"x" * (ws.config.limits.body_bytes + 1),
                              headers={"Origin": DASHBOARD, "Content-Type": "application/json"})
        assert refused.status_code == 413  # the page can read why
        assert refused.headers["access-control-allow-origin"] == DASHBOARD


@pytest.mark.parametrize("origins", ['["*"]', '["https://dashboard.example/"]', '["dashboard.example"]'])
def test_cors_origins_must_be_origins(ws_path, origins):
    with pytest.raises(ConfigError) as caught:
        with_origins(ws_path, origins)
    assert caught.value.field == "auth.cors_origins" and "scheme://host" in str(caught.value)
