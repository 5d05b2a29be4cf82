"""The Versions API in process (FastAPI TestClient): listing, one version, evals, diffs, errors, /active."""

import json

import anyio
import pytest
from fastapi.testclient import TestClient

from helpers import ServerProcess, ratchet_distribution, schemathesis_run, with_style
from ratchet.runner.service import Runner
from ratchet.tuner.service import Tuner
from ratchet.versions.app import create_app

ERROR_KEYS = {"error", "detail", "field", "fix"}


@pytest.fixture
def client(ws):
    return TestClient(create_app(ws))


def make_versions(ws):
    """v0.1.1 manual (style formal), v0.1.2 rollback to v0.1.0, v0.2.0 architect (no file change)."""
    ws.state.update("staging", with_style("formal"))
    ws.state.promote(reason="formal", author="test", kind="manual")
    ws.state.rollback("v0.1.0", author="test")
    ws.versions.make_version("minor", paths=[], reason="plan", kind="architect", author="architect",
                             allow_empty=True)


def names(body):
    return [v["version"] for v in body["items"]]


def test_versions_list_order_and_filters(ws, client):
    make_versions(ws)
    body = client.get("/versions").json()
    assert names(body) == ["v0.2.0", "v0.1.2", "v0.1.1", "v0.1.0"] and body["total"] == 4
    assert body["items"][0]["kind"] == "architect" and body["items"][0]["author"] == "architect"
    assert names(client.get("/versions?order=asc").json()) == ["v0.1.0", "v0.1.1", "v0.1.2", "v0.2.0"]
    assert names(client.get("/versions?kind=tuner").json()) == ["v0.1.2", "v0.1.1"]  # manual and rollback too
    assert names(client.get("/versions?kind=architect").json()) == ["v0.2.0"]
    assert names(client.get("/versions?kind=rollback").json()) == ["v0.1.2"]  # a raw kind
    assert client.get("/versions?kind=nope").json() == {"items": [], "total": 0, "limit": 50, "offset": 0,
                                                         "next": None}
    assert names(client.get("/versions?since=0.1.1").json()) == ["v0.2.0", "v0.1.2"]
    assert names(client.get("/versions?since=v0.1.1&kind=tuner&order=asc").json()) == ["v0.1.2"]


def test_versions_list_pagination_follows_next(ws, client):
    make_versions(ws)
    first = client.get("/versions?limit=3").json()
    assert names(first) == ["v0.2.0", "v0.1.2", "v0.1.1"] and first["total"] == 4
    assert first["next"] == "/versions?order=desc&limit=3&offset=3"
    last = client.get(first["next"]).json()
    assert names(last) == ["v0.1.0"] and last["next"] is None
    assert names(client.get("/versions?order=asc&limit=2&offset=1").json()) == ["v0.1.1", "v0.1.2"]
    assert client.get("/versions?offset=10").json()["items"] == []


def test_versions_list_sees_new_tags(ws, client):
    assert names(client.get("/versions").json()) == ["v0.1.0"]
    ws.state.update("staging", with_style("concise"))
    ws.state.promote(reason="r", author="test", kind="manual")
    assert names(client.get("/versions").json()) == ["v0.1.1", "v0.1.0"]


def test_versions_show_state_and_tool_schemas(ws, client):
    body = client.get("/versions/v0.1.0").json()
    assert client.get("/versions/0.1.0").json() == body  # both spellings name it
    assert body["version"] == "v0.1.0" and body["commit"] == ws.versions.get("v0.1.0").commit
    assert body["kind"] == body["metadata"]["kind"] and body["author"] == body["metadata"]["author"]
    assert body["state"]["params"]["style"] and "ratchet" not in body["state"]
    assert set(body["tools"]["runner"]) == {"answer"}
    assert set(body["tools"]["tuner"]) == {"reward", "reward_batch", "promote", "status", "rebuild_staging"}
    answer = body["tools"]["runner"]["answer"]
    assert answer["input_schema"]["required"] == ["question", "conversation_id"] and answer["description"]
    assert body["tools_error"] is None
    assert body["evals"] == {"href": "/versions/v0.1.0/evals", "exists": False}
    assert ws.objects.exists(f"tools/{body['commit']}.json")  # cached: a commit's schemas never change


def promote_through_tuner(ws) -> str:
    Runner(ws, seed=0).call("answer", {"question": "How do I return an item?", "conversation_id": "c1"})
    tuner = Tuner(ws)
    tuner.feedback("reward", {"conversation_id": "c1", "value": 1.0})
    tuner.apply_pending()
    outcome = anyio.run(tuner.promote)
    assert outcome["promoted"], outcome
    return outcome["version"]


def test_versions_evals_after_promotion(ws, client):
    missing = client.get("/versions/v0.1.0/evals")
    assert missing.status_code == 404 and set(missing.json()) == ERROR_KEYS
    assert "v0.1.0" in missing.json()["detail"]
    made = promote_through_tuner(ws)
    body = client.get(f"/versions/{made}").json()
    assert body["kind"] == "tuner" and body["evals"] == {"href": f"/versions/{made}/evals", "exists": True}
    evals = client.get(body["evals"]["href"]).json()
    assert evals["commit"] == body["commit"] and evals["tiers"]["micro"]["ok"] is True


def test_versions_diff_state_and_tools(ws, client):
    made = promote_through_tuner(ws)
    body = client.get(f"/versions/0.1.0/diff/{made}").json()
    assert body["from"] == "v0.1.0" and body["to"] == made
    paths = [c["path"] for c in body["state"]]
    assert paths and all(p.startswith("/strategies/style") for p in paths)
    assert not any(p.startswith("/ratchet") for p in paths)
    assert body["tools"]["breaking"] is False
    assert all(s == {"added": [], "removed": [], "changed": {}, "breaking": False}
               for s in body["tools"]["servers"].values())


def test_versions_diff_detects_breaking_tool_change(ws, ws_path, client):
    plugin = ws_path / "plugins" / "support_desk.py"
    text = plugin.read_text()
    old = "conversation_id: CONVERSATION_ID, run: RunContext) -> Answer:"
    assert old in text
    plugin.write_text(text.replace(old, old.replace("run: RunContext", "locale: str, run: RunContext")))
    ws.versions.make_version("minor", paths=["plugins/support_desk.py"], reason="answer needs a locale",
                             kind="architect", author="test")
    body = client.get("/versions/v0.1.0/diff/v0.2.0").json()
    assert body["state"] == []
    tools = body["tools"]
    assert tools["breaking"] is True and tools["servers"]["runner"]["breaking"] is True
    change = tools["servers"]["runner"]["changed"]["answer"]
    assert change["required_added"] == ["locale"] and change["arguments_added"] == ["locale"]
    assert tools["servers"]["tuner"]["breaking"] is False
    shown = client.get("/versions/v0.2.0").json()["tools"]["runner"]["answer"]["input_schema"]
    assert "locale" in shown["required"]
    # and the other way round is not breaking: an argument removed
    back = client.get("/versions/v0.2.0/diff/v0.1.0").json()["tools"]
    assert back["breaking"] is False and back["servers"]["runner"]["changed"]["answer"]["arguments_removed"] == ["locale"]


@pytest.mark.parametrize("url, field", [
    ("/versions/v9.9.9", "version"),
    ("/versions/9.9.9/evals", "version"),
    ("/versions/v0.1.0/diff/v9.9.9", "version"),
])
def test_versions_unknown_version_is_404(client, url, field):
    r = client.get(url)
    assert r.status_code == 404
    body = r.json()
    assert set(body) == ERROR_KEYS and body["error"] == "NotFoundError" and body["field"] == field
    assert "v9.9.9 does not exist" in body["detail"] and body["fix"]


@pytest.mark.parametrize("url, field", [
    ("/versions/latest", "version"),
    ("/versions/v1.2/evals", "version"),
    ("/versions/v0.1.0/diff/nope", "b"),
    ("/versions?since=yesterday", "since"),
    ("/versions?limit=5000", "limit"),
    ("/versions?offset=-1", "offset"),
    ("/versions?order=sideways", "order"),
])
def test_versions_malformed_parameter_is_422_naming_it(client, url, field):
    r = client.get(url)
    assert r.status_code == 422
    body = r.json()
    assert set(body) == ERROR_KEYS and body["field"] == field and field in body["detail"] and body["fix"]


def test_versions_active_with_pin(ws, client):
    assert client.get("/active").json() == {"version": "v0.1.0", "commit": ws.versions.get("v0.1.0").commit,
                                            "state_revision": 1, "pinned": None, "served": "v0.1.0"}
    ws.state.update("staging", with_style("formal"))
    ws.state.promote(reason="formal", author="test", kind="manual")
    ws.state.pin("0.1.0")
    body = client.get("/active").json()
    assert body["version"] == "v0.1.1" and body["pinned"] == "v0.1.0" and body["served"] == "v0.1.0"
    assert body["state_revision"] == ws.state.read("active").revision


def test_versions_openapi_documents_responses(client):
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/versions", "/versions/{version}", "/versions/{version}/evals",
                                  "/versions/{a}/diff/{b}", "/active"}
    assert {method for path in spec["paths"].values() for method in path} == {"get"}  # it only reads
    show = spec["paths"]["/versions/{version}"]["get"]["responses"]
    assert {"200", "404", "422"} <= set(show)
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("method, path", [("POST", "/versions"), ("DELETE", "/versions/v0.1.0"), ("PUT", "/active")])
def test_405_allow_lists_the_methods_of_the_path(client, method, path):
    r = client.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == "GET"


def test_cli_serve_versions_over_http(ws_path):
    import httpx

    with ServerProcess("versions", ws_path) as server:
        r = httpx.get(f"http://127.0.0.1:{server.port}/versions?limit=1", timeout=30)
        assert r.status_code == 200 and r.json()["items"][0]["version"] == "v0.1.0"


# --- schemathesis: generated requests, no 5xx, responses match the OpenAPI schema -------------------


TOKEN = "t0ken-for-schemathesis-0123456789"


@pytest.mark.parametrize("auth", ["off", "on", "on, no token sent"])
def test_versions_api_conforms_to_its_openapi(ws, auth):
    ws.state.update("staging", with_style("formal"))
    ws.state.promote(reason="formal", author="test", kind="manual")
    token = None if auth == "off" else TOKEN
    statuses: dict[str, set[int]] = {}
    failures = schemathesis_run(create_app(ws, token=token), token=None if auth == "on, no token sent" else token,
                                max_examples=5 if auth == "on, no token sent" else 20, statuses=statuses)
    assert not failures, "\n\n".join(failures)
    if auth == "on, no token sent":  # nothing but 401, or what routing answers before auth
        assert all(401 in seen and seen <= {401, 404, 405} for seen in statuses.values()), statuses
    else:
        assert 200 in statuses["GET /versions/{a}/diff/{b}"], statuses


def test_versions_show_reads_each_version_through_its_own_tagged_config(ws_path):
    """Issue 12: a version's state is shown as its own tagged ratchet.toml reads it, not converted
    through the current one (here another strategy): v0.1.0 keeps thompson's section, v0.1.1 ucb1's."""
    from helpers import set_strategy
    from ratchet.core.documents import ACTIVE_PATH
    from ratchet.core.workspace import Workspace

    set_strategy(ws_path, '[[tuner.strategies]]\nkey = "style"\nstrategy = "ucb1"\nparam = "style"\n'
                          'arms = ["concise", "friendly", "detailed", "formal"]\n')
    ws = Workspace.open(ws_path)
    ws.state.update("staging", with_style("formal"))
    ws.state.promote(reason="formal, learned with ucb1", author="test")
    client = TestClient(create_app(ws))
    for name in ("v0.1.0", "v0.1.1"):
        tagged = json.loads(ws.versions.read_file(name, ACTIVE_PATH))
        assert client.get(f"/versions/{name}").json()["state"]["strategies"] == tagged["strategies"]
    changes = {c["path"]: c for c in client.get("/versions/v0.1.0/diff/v0.1.1").json()["state"]}
    assert changes["/strategies/style/policy"]["new"] == "ucb1"


def test_versions_signature_status_of_each_version(ws_path, ssh_keys):
    """A tag signed by a key the allowed signers file does not list is flagged unverified."""
    from helpers import sign_versions
    from ratchet.core.workspace import Workspace

    for key, style in ((ssh_keys["trusted"], "formal"), (ssh_keys["stranger"], "concise")):
        sign_versions(ws_path, key, ssh_keys["signers"])
        ws = Workspace.open(ws_path)
        ws.state.update("staging", with_style(style))
        ws.state.promote(reason=style, author="test")
    client = TestClient(create_app(ws))
    items = client.get("/versions", params={"order": "asc"}).json()["items"]
    assert [(v["version"], v["signature"]) for v in items] == [
        ("v0.1.0", "unsigned"), ("v0.1.1", "verified"), ("v0.1.2", "unverified")]
    assert items[1]["metadata"]["plugin_distributions"][ratchet_distribution()]
    shown = client.get("/versions/v0.1.2").json()
    assert shown["signature"] == "unverified" and shown["reason"] == "concise"


def test_versions_a_page_verifies_only_its_own_versions_once(ws_path, ssh_keys, monkeypatch):
    from helpers import sign_versions
    from ratchet.core.signing import Verifier
    from ratchet.core.workspace import Workspace

    sign_versions(ws_path, ssh_keys["trusted"], ssh_keys["signers"])
    ws = Workspace.open(ws_path)
    for style in ("formal", "concise", "detailed"):
        ws.state.update("staging", with_style(style))
        ws.state.promote(reason=style, author="test")
    verified = []
    real = Verifier._verify
    monkeypatch.setattr(Verifier, "_verify", lambda self, obj: verified.append(obj) or real(self, obj))
    client = TestClient(create_app(Workspace.open(ws_path)))
    for _ in range(2):
        page = client.get("/versions", params={"limit": 1}).json()
        assert [(v["version"], v["signature"]) for v in page["items"]] == [("v0.1.3", "verified")]
    assert len(verified) == 1  # the newest tag only, and once
