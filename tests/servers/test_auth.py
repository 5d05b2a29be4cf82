"""One bearer token for every server (issue 12): where it comes from, the REST apps' dependency, the bind
refusal, `ratchet token`, and (slow) all four servers as real processes refusing a client without it."""

import os
import stat

import anyio
import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from mcp import Client

from helpers import ServerProcess
from ratchet.architect.app import create_app as architect_app
from ratchet.cli import cli
from ratchet.core import auth
from ratchet.core.errors import ConfigError
from ratchet.core.workspace import Workspace
from ratchet.ops.triggerer import architect_wake
from ratchet.tiers.harness import run_tiers
from ratchet.versions.app import create_app as versions_app

TOKEN = "t0ken-for-tests-0123456789abcdef"


def test_the_token_comes_from_the_variable_else_the_file_named_in_ratchet_toml(ws_path, monkeypatch):
    monkeypatch.delenv(auth.TOKEN_ENV, raising=False)
    assert auth.load_token(Workspace.open(ws_path)) is None
    (ws_path / "secret").write_text(TOKEN + "\n")
    with open(ws_path / "ratchet.toml", "a") as f:
        f.write('\n[auth]\ntoken_file = "secret"\n')
    ws = Workspace.open(ws_path)
    assert auth.load_token(ws) == TOKEN
    monkeypatch.setenv(auth.TOKEN_ENV, "another-token-0123456789")
    assert auth.load_token(ws) == "another-token-0123456789"
    monkeypatch.setenv(auth.TOKEN_ENV, "short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        auth.load_token(ws)
    monkeypatch.delenv(auth.TOKEN_ENV)
    (ws_path / "secret").unlink()
    with pytest.raises(ConfigError) as caught:
        auth.load_token(ws)
    assert caught.value.field == "auth.token_file" and "ratchet token --file" in caught.value.fix


def test_every_server_binds_loopback_by_default(ws):
    config = ws.config
    assert [s.host for s in (config.runner, config.tuner, config.architect, config.versions)] == ["127.0.0.1"] * 4
    assert config.auth.token_file is None  # and has no token: open, on this machine only


def test_binding_beyond_loopback_needs_a_token():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        auth.check_bind(host, None, component="runner")
    for host in ("0.0.0.0", "10.1.2.3", "::", "example.org"):
        with pytest.raises(ConfigError, match=f"refusing to bind {host} without a token") as caught:
            auth.check_bind(host, None, component="runner")
        assert caught.value.exit_code == 3 and auth.TOKEN_ENV in caught.value.fix
        auth.check_bind(host, TOKEN, component="runner")


@pytest.mark.parametrize("kind", ["runner", "tuner", "architect", "versions"])
def test_serve_refuses_a_public_address_without_a_token(ws_path, monkeypatch, kind):
    monkeypatch.delenv(auth.TOKEN_ENV, raising=False)
    result = CliRunner().invoke(cli, ["serve", kind, "--host", "0.0.0.0", "--port", "0", "-w", str(ws_path)])
    assert result.exit_code == 3, result.output
    assert "refusing to bind 0.0.0.0 without a token" in result.output


def test_ratchet_token_prints_one_or_writes_a_private_file(tmp_path):
    printed = CliRunner().invoke(cli, ["token"])
    assert printed.exit_code == 0 and len(printed.stdout.strip()) >= 40
    path = tmp_path / "keys" / "token"
    written = CliRunner().invoke(cli, ["token", "--file", str(path)])
    assert written.exit_code == 0 and "token_file" in written.output
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and len(path.read_text().strip()) >= 40


@pytest.mark.parametrize("make, path", [(lambda ws, t: versions_app(ws, token=t), "/versions"),
                                        (lambda ws, t: architect_app(ws, run_jobs=False, token=t), "/jobs")])
def test_rest_apps_require_the_token_and_keep_their_docs_readable(ws, make, path):
    with TestClient(make(ws, TOKEN)) as client:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}):
            r = client.get(path, headers=headers)
            assert r.status_code == 401 and r.json()["field"] == "Authorization", (headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
        assert client.get(path, headers=auth.header(TOKEN)).status_code == 200
        assert client.get("/openapi.json").status_code == 200 and client.get("/docs").status_code == 200
        assert "HTTPBearer" in client.get("/openapi.json").json()["components"]["securitySchemes"]
    with TestClient(make(ws, None)) as client:  # no token: open (loopback only, see check_bind)
        assert client.get(path).status_code == 200


@pytest.mark.parametrize("make", [lambda ws, t: versions_app(ws, token=t),
                                  lambda ws, t: architect_app(ws, run_jobs=False, token=t)])
def test_without_the_token_every_request_is_401_before_it_is_routed_or_read(ws, make):
    """A stranger learned which paths and methods exist (404, 405) and that a body was read (400, 413,
    422) before the token was checked; now every request but the docs' is 401 first."""
    strangers = [("GET", "/no/such/path", {}), ("DELETE", "/versions", {}),
                 ("POST", "/feedback", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
                 ("POST", "/feedback", {"json": {"text": ""}}),
                 ("PUT", "/jobs/0123456789ab/files/x.txt", {"content": b"x" * (ws.config.limits.body_bytes + 1)})]
    with TestClient(make(ws, TOKEN)) as client:
        for method, path, kwargs in strangers:
            r = client.request(method, path, **kwargs)
            assert r.status_code == 401 and r.json()["field"] == "Authorization", (method, path, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            with_token = client.request(method, path, **{**kwargs, "headers": {**kwargs.get("headers", {}),
                                                                               **auth.header(TOKEN)}})
            assert with_token.status_code in (400, 404, 405, 413, 422), (method, path, with_token.text)
        assert client.get("/openapi.json").status_code == 200 and client.get("/docs").status_code == 200
    assert ws.store.list_jobs() == []


def test_a_refused_architect_request_changes_nothing(ws):
    with TestClient(architect_app(ws, run_jobs=False, token=TOKEN)) as client:
        r = client.post("/feedback", json={"text": "answers are too long"})
        assert r.status_code == 401
    assert ws.store.list_jobs() == []


@pytest.mark.slow
@pytest.mark.anyio
async def test_every_server_refuses_a_client_without_the_token(ws, monkeypatch):
    """The attacker test: four real processes with RATCHET_API_TOKEN set; a client without the token gets
    401 from every one and changes nothing; the project's clients, which send it, work."""
    monkeypatch.setenv(auth.TOKEN_ENV, TOKEN)
    servers = {kind: ServerProcess(kind, ws.root, *(["--allow-test-overrides"] if kind == "runner" else []))
               for kind in ("runner", "tuner", "architect", "versions")}
    try:
        base = {k: s.url.removesuffix("/mcp") for k, s in servers.items()}
        for kind in ("runner", "tuner"):
            r = httpx.post(servers[kind].url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                           headers={"Accept": "application/json, text/event-stream"})
            assert r.status_code == 401, (kind, r.text)
            foreign = httpx.post(servers[kind].url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                 headers={**auth.header(TOKEN), "Host": "evil.example",
                                          "Accept": "application/json, text/event-stream"})
            assert foreign.status_code == 421, (kind, foreign.text)  # DNS rebinding, as for the REST apps below
            with pytest.raises(BaseException):  # the SDK's client fails to connect (an ExceptionGroup)
                async with Client(servers[kind].url) as c:
                    await c.list_tools()
        for kind, path in (("architect", "/jobs"), ("versions", "/versions")):
            assert httpx.get(base[kind] + path).status_code == 401
            assert httpx.get(base[kind] + path, headers=auth.header(TOKEN)).status_code == 200
            foreign = httpx.get(base[kind] + path, headers={**auth.header(TOKEN), "Host": "evil.example"})
            assert foreign.status_code == 400  # DNS rebinding: a loopback server answers loopback names only
        assert httpx.post(base["architect"] + "/feedback", json={"text": "x"}).status_code == 401
        async with Client(auth.mcp_target(servers["runner"].url, TOKEN)) as runner, \
                Client(auth.mcp_target(servers["tuner"].url, TOKEN)) as tuner:
            answer = await runner.call_tool("answer", {"question": "where is my parcel?", "conversation_id": "a1"})
            assert not answer.is_error
            ack = await tuner.call_tool("reward", {"conversation_id": "a1", "value": 1})
            assert not ack.is_error and ack.structured_content["accepted"] == 1
        # the project's other clients send the token too: tiers against a URL, the CLI, the Triggerer
        results = await anyio.to_thread.run_sync(lambda: run_tiers(ws, ["micro"], servers["runner"].url))
        assert results[0].ok, results[0]
        listed = CliRunner().invoke(cli, ["jobs", "--url", base["architect"], "-w", str(ws.root)])
        assert listed.exit_code == 0, listed.output
        architect_wake(ws, url=base["architect"])({"breaches": [{"kpi": "reward_rate", "value": 0.2, "slo": 0.5}]})
        assert len(ws.store.list_jobs()) == 1
    finally:
        for s in servers.values():
            s.stop()
    assert ws.store.last_feedback_seq() == 1  # only the authenticated reward
