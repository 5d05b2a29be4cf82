"""The Architect REST API: jobs, an external agent's steps, the approval gate, validation, OpenAPI."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from helpers import git
from ratchet.architect.app import create_app
from ratchet.architect.service import Architect


@pytest.fixture
def arch(ws):
    return Architect(ws)


@pytest.fixture
def client(ws, arch):
    with TestClient(create_app(ws, architect=arch, run_jobs=False)) as c:
        yield c


def drive(arch: Architect) -> None:
    """Run what the worker thread would run, here and now."""
    while not arch._queue.empty():
        job_id, what = arch._queue.get_nowait()
        arch.process(arch.jobs.get(job_id), what)


def test_feedback_creates_a_job_that_is_listed_and_followed(client, arch):
    r = client.post("/feedback", json={"text": "Answers are too long", "version": "0.1.0", "conversation_id": "c-9"})
    assert r.status_code == 202
    job = r.json()
    assert job["state"] == "queued" and job["source"] == "feedback"
    assert job["request"] == {"text": "Answers are too long", "version": "0.1.0", "conversation_id": "c-9"}
    drive(arch)
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["state"] == "succeeded" and done["version"] == "v0.1.1" and done["bump"] == "patch"
    assert done["plan"]["actions"] == [{"kind": "set_state", "pointer": "/params/max_sentences", "value": 2}]
    assert [t["tier"] for t in done["tiers"]] == ["micro", "fast", "full"]
    page = client.get("/jobs", params={"state": "succeeded"}).json()
    assert page["total"] == 1 and page["items"][0]["id"] == job["id"]


def test_wake_up_creates_a_job_from_the_kpi_report(client, arch, ws):
    report = {"breaches": [{"kpi": "reward_rate", "value": 0.31, "slo": 0.5, "window_seconds": 300}],
              "kpis": {"reward_rate": 0.31}, "at": 1.0}
    r = client.post("/wake", json=report)
    assert r.status_code == 202 and r.json()["source"] == "wake"
    drive(arch)
    job = client.get(f"/jobs/{r.json()['id']}").json()
    assert job["state"] == "succeeded", job["error"]
    assert job["version"] == "v0.2.0" and job["plan"]["rule"] == "drifting-preferences"


@pytest.mark.parametrize("body, field", [
    ({}, "text"),
    ({"text": "   "}, "text"),
    ({"text": "ok", "version": "one"}, "version"),
    ({"text": "ok", "extra": 1}, "extra"),
])
def test_malformed_feedback_is_422_naming_the_field(client, body, field):
    r = client.post("/feedback", json=body)
    assert r.status_code == 422
    assert r.json()["field"] == field and r.json()["fix"]


def test_wake_without_breaches_is_422(client):
    r = client.post("/wake", json={"breaches": [], "kpis": {}})
    assert r.status_code == 422 and r.json()["field"] == "breaches"


@pytest.mark.parametrize("body, field", [
    ('{"breaches": [{"kpi": "reward_rate", "value": NaN, "slo": 0.5}]}', "breaches.0.value"),
    ('{"breaches": [{"kpi": "reward_rate", "value": 0.2, "slo": Infinity}]}', "breaches.0.slo"),
    ('{"breaches": [{"kpi": "reward_rate", "value": 0.2, "slo": 0.5}], "kpis": {"reward_rate": NaN}}',
     "kpis"),
    ('{"breaches": [' + ", ".join(['{"kpi": "reward_rate", "value": 0.2, "slo": 0.5}'] * 101) + "]}", "breaches"),
])
def test_wake_refuses_non_finite_numbers_and_floods(client, ws, body, field):
    """Issue 12: /wake stored NaN and Infinity as null and took 100,000 breaches."""
    r = client.post("/wake", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    assert ws.store.list_jobs() == []


def test_unknown_and_malformed_job_ids(client):
    assert client.get("/jobs/0123456789ab").status_code == 404
    r = client.get("/jobs/not-a-job")
    assert r.status_code == 422 and r.json()["field"] == "job_id"


def test_templates_are_listed_and_shown(client):
    names = [t["name"] for t in client.get("/templates").json()]
    assert "drift-bandit" in names and "workspace" in names
    shown = client.get("/templates/drift-bandit").json()
    assert shown["family"] == "strategy" and "gamma" in [q["name"] for q in shown["questions"]]
    assert shown["readme"].startswith("# drift-bandit")
    assert client.get("/templates/nope").status_code == 404


def test_an_agent_drives_a_job_step_by_step(client, arch, ws):
    job = client.post("/jobs", json={"title": "pin a refund question"}).json()
    assert job["state"] == "applying" and job["source"] == "agent"
    jid = job["id"]
    assert "ratchet.toml" in client.get(f"/jobs/{jid}/files").json()
    assert 'name = "support-desk"' in client.get(f"/jobs/{jid}/files/ratchet.toml").json()["content"]

    case = {"id": "agent-refund", "tool": "answer", "args": {"question": "When do I get my money back?",
                                                                "conversation_id": "agent-1"},
            "expect": {"path": "entry_id", "equals": "refund-timing"}}
    r = client.post(f"/jobs/{jid}/actions", json={"kind": "add_test", "tier": "micro", "case": case})
    assert r.status_code == 200 and r.json()["files"] == ["tests/micro/architect.yaml"]
    r = client.post(f"/jobs/{jid}/actions", json={"kind": "set_state", "pointer": "/params/top_k", "value": 99})
    assert r.status_code == 422 and "top_k" in r.json()["field"]  # refused, nothing recorded
    r = client.put(f"/jobs/{jid}/files/notes/why.md", json={"content": "Refund timing is asked a lot.\n"})
    assert r.json()["files"] == ["notes/why.md"]
    results = client.post(f"/jobs/{jid}/tiers", json={"tiers": ["micro"]}).json()
    assert results[0]["tier"] == "micro" and results[0]["ok"] and results[0]["total"] == 9
    assert git(ws.root, "tag", "-l").split() == ["v0.1.0"]  # nothing merged yet

    r = client.post(f"/jobs/{jid}/release")
    assert r.status_code == 202 and r.json()["state"] == "testing"
    assert client.post(f"/jobs/{jid}/actions", json={"kind": "set_state", "pointer": "/params/top_k",
                                                     "value": 4}).status_code == 409  # no longer open
    drive(arch)
    done = client.get(f"/jobs/{jid}").json()
    assert done["state"] == "succeeded" and done["version"] == "v0.2.0" and done["bump"] == "minor"
    assert [a["kind"] for a in done["actions"]] == ["add_test", "write_file"]
    assert (ws.root / "notes/why.md").exists()


def test_breaking_change_waits_for_approval_then_makes_a_major_version(ws):
    toml = ws.root / "ratchet.toml"
    toml.write_text(toml.read_text().replace("[architect]\n", '[architect]\napproval = "major"\n'))
    git(ws.root, "commit", "-qam", "approval gate for major changes")
    from ratchet.core.workspace import Workspace

    ws = Workspace.open(ws.root)
    arch = Architect(ws)
    with TestClient(create_app(ws, architect=arch, run_jobs=False)) as client:
        jid = client.post("/jobs", json={"title": "stop tuning the style"}).json()["id"]
        current = client.get(f"/jobs/{jid}/files/ratchet.toml").json()["content"]
        # Dropping the bandit drops the tuner's `reward` tool: a breaking change for feedback clients.
        without = re.sub(r"\[\[tuner\.strategies\]\].*?(?=\[tuner\.promotion\])", "", current, flags=re.S)
        assert client.put(f"/jobs/{jid}/files/ratchet.toml", json={"content": without}).status_code == 200
        client.post(f"/jobs/{jid}/release")
        drive(arch)
        held = client.get(f"/jobs/{jid}").json()
        assert held["state"] == "needs_approval", held["error"]
        assert held["bump"] == "major" and held["schema_diff"]["servers"]["tuner"]["removed"] == ["reward", "reward_batch"]
        assert git(ws.root, "tag", "-l").split() == ["v0.1.0"]

        assert client.post(f"/jobs/{jid}/approve").json()["state"] == "testing"
        assert client.post(f"/jobs/{jid}/approve").status_code == 409
        drive(arch)
        done = client.get(f"/jobs/{jid}").json()
        assert done["state"] == "succeeded" and done["version"] == "v1.0.0"


def test_abandoning_a_job_merges_nothing(client, ws):
    jid = client.post("/jobs", json={"title": "try something"}).json()["id"]
    client.put(f"/jobs/{jid}/files/x.txt", json={"content": "x"})
    assert client.post(f"/jobs/{jid}/release").status_code == 202
    with TestClient(client.app) as again:  # a second job, abandoned while open
        other = again.post("/jobs", json={"title": "never mind"}).json()["id"]
        r = again.delete(f"/jobs/{other}")
        assert r.status_code == 200 and r.json()["state"] == "failed" and "abandoned" in r.json()["error"]["detail"]
        assert again.post(f"/jobs/{other}/release").status_code == 409
    assert not (ws.root / "x.txt").exists()


def test_release_without_changes_is_refused(client):
    jid = client.post("/jobs", json={"title": "nothing"}).json()["id"]
    r = client.post(f"/jobs/{jid}/release")
    assert r.status_code == 422 and r.json()["field"] == "actions"


@pytest.mark.parametrize("method, path, allowed", [
    ("DELETE", "/jobs", "GET, POST"),
    ("PATCH", "/jobs/0123456789ab", "DELETE, GET"),
    ("OPTIONS", "/jobs/0123456789ab/files/notes/a.md", "GET, PUT"),
    ("GET", "/feedback", "POST"),
])
def test_405_allow_lists_every_method_of_the_path(client, method, path, allowed):
    """Issue 12: a 405 named only the first route's methods (Allow: GET for /jobs, which also takes POST)."""
    r = client.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == allowed, (r.headers, r.text)
    assert r.json()["error"] == "HTTPError" and r.json()["fix"]


# --- OpenAPI conformance ---------------------------------------------------------------------------------


def test_architect_api_conforms_to_its_openapi(ws):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    arch = Architect(ws)
    app = create_app(ws, architect=arch, run_jobs=False)  # generated jobs stay queued: no tiers, no merges
    open_job = arch.open_job("schemathesis")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    negative = schemathesis.GenerationMode.NEGATIVE
    strategies = [schema.as_strategy(), schema.as_strategy(negative)]
    # Reach past the 404s: an open job's read-only steps with a real id.
    for path in ("/jobs/{job_id}", "/jobs/{job_id}/files"):
        strategies.append(schema[path]["GET"].as_strategy(path_parameters={"job_id": open_job.id}))
    strategies.append(schema["/templates/{name}"]["GET"].as_strategy(path_parameters={"name": "drift-bandit"}))

    @given(case=st.one_of(strategies))
    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        if case.method in ("POST", "PUT", "DELETE") and "{job_id}" in case.path:
            case.path_parameters = {**(case.path_parameters or {}), "job_id": "0123456789ab"}  # never an open job
        if case.path.endswith("/tiers"):
            return  # runs processes; covered above
        case.call_and_validate()

    check()


def test_an_idle_agent_job_fails_at_its_time_limit(client, arch, ws):
    jid = client.post("/jobs", json={"title": "slow agent"}).json()["id"]
    record = arch.jobs.get(jid)
    record.deadline = 0  # long past
    arch.jobs.save(record)
    r = client.put(f"/jobs/{jid}/files/x.txt", json={"content": "x"})
    assert r.status_code == 409 and "failed" in r.json()["detail"]
    job = client.get(f"/jobs/{jid}").json()
    assert job["state"] == "failed" and job["error"]["field"] == "architect.job_timeout_seconds"
    assert not (ws.runtime_dir / "jobs" / jid / "worktree").exists()


@pytest.mark.parametrize("path, problem", [
    ("notes/a%00b.md", "contains a NUL"),
    ("notes/" + "x" * 5000 + ".md", "is too long"),
    ("plugins", "is a folder"),
    ("ratchet.toml/x.md", "is a file, not a folder"),
])
def test_bad_paths_are_refused_with_the_field_named_not_500(client, arch, path, problem):
    """Issue 12: a NUL in a path, a path that is a folder and a 5,000-character path were 500s."""
    jid = client.post("/jobs", json={"title": "bad paths"}).json()["id"]
    wrote = client.put(f"/jobs/{jid}/files/{path}", json={"content": "x"})
    assert wrote.status_code == 422 and wrote.json()["field"] == "path", wrote.text
    assert problem in wrote.json()["detail"]
    read = client.get(f"/jobs/{jid}/files/{path}")
    assert read.status_code in (404, 422) and read.json()["field"] == "path", read.text
    replaced = client.post(f"/jobs/{jid}/actions", json={"kind": "replace_text", "path": path.replace("%00", "\x00"),
                                                          "old": "a", "new": "b"})
    assert replaced.status_code == 422 and replaced.json()["field"] in ("path", "action.path"), replaced.text
