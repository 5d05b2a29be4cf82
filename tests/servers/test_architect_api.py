"""The Architect REST API: jobs, an external agent's steps, the approval gate, validation, OpenAPI."""

from __future__ import annotations

import os
import re

import pytest
from fastapi.testclient import TestClient

from helpers import git, schemathesis_run, use_style_strategy
from ratchet.architect.app import create_app
from ratchet.architect.service import Architect
from ratchet.core import auth

TOKEN = "t0ken-for-tests-0123456789abcdef"


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


def test_the_job_list_holds_summaries_not_transcripts(client, arch):
    from ratchet.architect.transcript import TranscriptEntry

    jid = client.post("/feedback", json={"text": "Answers are too long\nand rambling"}).json()["id"]
    drive(arch)
    job = arch.jobs.get(jid)
    job.transcript = [TranscriptEntry(at=1.0, kind="tool", name="read_file", text="x" * 10_000) for _ in range(50)]
    arch.jobs.save(job)
    full = client.get(f"/jobs/{jid}")
    assert len(full.json()["transcript"]) == 50 and len(full.content) > 500_000
    listed = client.get("/jobs")
    assert len(listed.content) < 2_000
    item = listed.json()["items"][0]
    assert set(item) == {"id", "state", "source", "about", "by", "planner", "model", "bump", "version", "summary",
                         "error", "created", "started", "finished"}
    assert item["about"] == "Answers are too long" and item["by"] == "anonymous" and item["planner"] == "playbook"
    assert item["state"] == "succeeded" and item["bump"] == "patch" and item["version"] == "v0.1.1"
    assert item["summary"] == job.plan.summary and item["error"] is None
    assert item["created"] <= item["started"] <= item["finished"] == job.updated
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["JobPage"]["properties"]["items"]["items"] == {"$ref": "#/components/schemas/JobSummary"}


def test_a_failed_job_is_listed_with_its_reason(client, arch, ws):
    (ws.root / "architect" / "playbook.yaml").write_text("rules: []\n")
    git(ws.root, "commit", "-qam", "no rules")
    jid = client.post("/feedback", json={"text": "make it sparkle"}).json()["id"]
    drive(arch)
    item = client.get("/jobs", params={"state": "failed"}).json()["items"][0]
    assert item["id"] == jid and item["error"]["detail"] and item["finished"] is not None and item["version"] is None


def test_wake_up_creates_a_job_from_the_kpi_report(ws_path):
    ws = use_style_strategy(ws_path, "thompson")  # stationary: the playbook's drift rule replaces it
    arch = Architect(ws)
    report = {"breaches": [{"kpi": "reward_rate", "value": 0.31, "slo": 0.5, "window_seconds": 300}],
              "kpis": {"reward_rate": 0.31}, "at": 1.0}
    with TestClient(create_app(ws, architect=arch, run_jobs=False)) as client:
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
    # well formed, but the state schema refuses it: 409 (422 is for requests the OpenAPI schema rejects)
    assert r.status_code == 409 and "top_k" in r.json()["field"]  # refused, nothing recorded
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
    held = client.get(f"/jobs/{jid}").json()  # an agent's change beyond the state waits by default
    assert held["state"] == "needs_approval" and held["bump"] == "minor", held["error"]
    assert git(ws.root, "tag", "-l").split() == ["v0.1.0"] and not (ws.root / "notes/why.md").exists()
    assert client.post(f"/jobs/{jid}/approve").status_code == 202
    drive(arch)
    done = client.get(f"/jobs/{jid}").json()
    assert done["state"] == "succeeded" and done["version"] == "v0.2.0" and done["bump"] == "minor"
    assert [a["kind"] for a in done["actions"]] == ["add_test", "write_file"]
    assert (ws.root / "notes/why.md").exists()
    by = {(e["step"], e["by"]) for e in done["log"]}  # who took each step: no token, so anonymous
    assert {("open", "anonymous"), ("apply", "anonymous"), ("tiers", "anonymous"), ("release", "anonymous"),
            ("approve", "anonymous"), ("tag", "architect")} <= by


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


def test_a_token_holder_runs_code_through_the_architect(ws, arch, tmp_path):
    """The security page's claim: the Architect's API is as powerful as a shell for whoever holds the token
    (its tiers run the job's code, in a process of their own, as the Architect's user)."""
    marker = tmp_path / "ran.txt"
    with TestClient(create_app(ws, architect=arch, run_jobs=False, token=TOKEN)) as client:
        headers = auth.header(TOKEN)
        jid = client.post("/jobs", json={"title": "any code"}, headers=headers).json()["id"]
        plugin = client.get(f"/jobs/{jid}/files/plugins/support_desk.py", headers=headers).json()["content"]
        code = plugin + f"\nimport os\nopen({str(marker)!r}, 'w').write(f'{{os.getuid()}} {{os.getpid()}}')\n"
        assert client.put(f"/jobs/{jid}/files/plugins/support_desk.py", json={"content": code},
                          headers=headers).status_code == 200
        assert client.post(f"/jobs/{jid}/tiers", json={"tiers": ["micro"]}, headers=headers).status_code == 200
    uid, pid = marker.read_text().split()
    assert int(uid) == os.getuid() and int(pid) != os.getpid()


def test_release_without_changes_is_refused(client):
    """Issue 12: this was a 422, for a request without a body (schemathesis: schema-valid request rejected)."""
    jid = client.post("/jobs", json={"title": "nothing"}).json()["id"]
    r = client.post(f"/jobs/{jid}/release")
    assert r.status_code == 409 and r.json()["field"] == "actions"


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


@pytest.mark.parametrize("auth", ["off", "on", "on, no token sent"])
def test_architect_api_conforms_to_its_openapi(ws, arch, auth):
    """Issue 12: schemathesis found 405s saying only `Allow: GET` and schema-valid requests answered 422.
    With a token, the auth check also sends each request without it and with a wrong one (401s)."""
    token = None if auth == "off" else TOKEN
    app = create_app(ws, architect=arch, run_jobs=False, token=token)  # jobs stay queued: no tiers, no merges
    open_job = arch.open_job("schemathesis").id  # the steps on files, actions and render reach a real job
    statuses: dict[str, set[int]] = {}
    failures = schemathesis_run(app, token=None if auth == "on, no token sent" else token,
                                exclude_path=r"/tiers$",  # runs processes; tested above
                                pin={r"/(files/\{path\}|actions|render)$": {"job_id": open_job}},
                                max_examples=5 if auth == "on, no token sent" else 12, statuses=statuses)
    assert not failures, "\n\n".join(failures)
    if auth == "on, no token sent":  # nothing but 401, or what routing and JSON parsing answer before auth
        assert all(401 in seen and seen <= {400, 401, 404, 405} for seen in statuses.values()), statuses
        assert [job.id for job in arch.list()] == [open_job]  # and nothing changed
    else:  # generated requests reached past the 404s and the 401s
        for operation in ("GET /jobs/{job_id}", "PUT /jobs/{job_id}/files/{path}", "POST /jobs/{job_id}/actions"):
            assert 200 in statuses[operation], statuses


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


@pytest.mark.parametrize("path, problem, status", [
    ("notes/a%00b.md", "contains a NUL", 422),
    ("notes/" + "x" * 5000 + ".md", "is too long", 422),
    ("notes/" + "é" * 200 + ".md", "over 255 bytes", 409),  # what the schema allows, the file system does not
    ("plugins", "is a folder", 409),
    ("ratchet.toml/x.md", "is a file, not a folder", 409),
])
def test_bad_paths_are_refused_with_the_field_named_not_500(client, arch, path, problem, status):
    """Issue 12: a NUL in a path, a path that is a folder and a 5,000-character path were 500s. What the
    OpenAPI schema rejects is a 422; what it allows and the worktree refuses, a 409."""
    jid = client.post("/jobs", json={"title": "bad paths"}).json()["id"]
    wrote = client.put(f"/jobs/{jid}/files/{path}", json={"content": "x"})
    assert wrote.status_code == status and wrote.json()["field"] == "path", wrote.text
    assert problem in wrote.json()["detail"]
    read = client.get(f"/jobs/{jid}/files/{path}")
    assert read.status_code in (404, 409, 422) and read.json()["field"] == "path", read.text
    replaced = client.post(f"/jobs/{jid}/actions", json={"kind": "replace_text", "path": path.replace("%00", "\x00"),
                                                          "old": "a", "new": "b"})
    assert replaced.status_code in (409, 422) and replaced.json()["field"] == "path", replaced.text


def test_well_formed_steps_the_worktree_refuses_are_409_naming_the_field(client):
    """422 is kept for requests the OpenAPI schema rejects; the worktree's refusals are 409s."""
    jid = client.post("/jobs", json={"title": "refusals"}).json()["id"]
    case = {"id": "c1", "tool": "answer", "args": {"question": "q", "conversation_id": "x"},
            "expect": {"contains": "a"}}
    added = client.post(f"/jobs/{jid}/actions", json={"kind": "add_test", "tier": "micro", "case": case})
    assert added.status_code == 200, added.text
    for action, field in [({"kind": "add_test", "tier": "micro", "case": case}, "case.id"),  # the id is taken
                          ({"kind": "replace_text", "path": "notes/none.md", "old": "a", "new": "b"}, "path"),
                          ({"kind": "replace_text", "path": "ratchet.toml", "old": "no such text", "new": "b"}, "old"),
                          ({"kind": "set_state", "pointer": "/nope/deeper", "value": 1}, "pointer"),
                          ({"kind": "edit_config", "set": {"nope[key=x].y": 1}}, "edit_config")]:
        r = client.post(f"/jobs/{jid}/actions", json=action)
        assert r.status_code == 409 and r.json()["field"] == field and r.json()["fix"], (action, r.text)
    assert [a["kind"] for a in client.get(f"/jobs/{jid}").json()["actions"]] == ["add_test"]  # nothing recorded


def test_text_that_is_not_unicode_is_422_not_500(client, ws):
    """A lone surrogate escape ("\\ud800") is valid JSON but no file can hold it: writing it was a 500."""
    jid = client.post("/jobs", json={"title": "surrogates"}).json()["id"]
    headers = {"content-type": "application/json"}
    for url, body in [(f"/jobs/{jid}/files/notes/a.md", '{"content": "a\\ud800b"}'),
                      (f"/jobs/{jid}/actions", '{"kind": "write_file", "path": "a\\udc00.md", "content": "x"}')]:
        r = client.request("PUT" if "files" in url else "POST", url, content=body, headers=headers)
        assert r.status_code == 422 and r.json()["field"] == "body" and "surrogate" in r.json()["detail"], r.text
    assert client.put(f"/jobs/{jid}/files/notes/a.md", content='{"content": "\\ud83d\\ude00"}',  # a pair: 😀
                      headers=headers).status_code == 200
    assert (ws.runtime_dir / "jobs" / jid / "worktree" / "notes" / "a.md").read_text() == "\U0001F600"


@pytest.mark.parametrize("path, problem", [
    ("../outside.md", "leaves the workspace"),
    ("/etc/passwd", "leaves the workspace"),
    ("notes//a.md", "has an empty or '.' part"),
    ("./notes/a.md", "has an empty or '.' part"),
    (".git/config", "Ratchet's or git's own data"),
    (".ratchet/jobs/x", "Ratchet's or git's own data"),
])
def test_paths_the_schema_rejects_are_422(client, path, problem):
    jid = client.post("/jobs", json={"title": "bad paths"}).json()["id"]
    r = client.post(f"/jobs/{jid}/actions", json={"kind": "write_file", "path": path, "content": "x"})
    assert r.status_code == 422 and r.json()["field"] == "path" and problem in r.json()["detail"], r.text
    assert client.post(f"/jobs/{jid}/actions", json={"kind": "write_file", "path": ".gitignore.d/ok",
                                                     "content": "x"}).status_code == 200


def test_the_openapi_schema_states_the_path_rules(client):
    from ratchet.architect.plans import MAX_PATH, PATH_PATTERN

    spec = client.get("/openapi.json").json()
    param = next(p for p in spec["paths"]["/jobs/{job_id}/files/{path}"]["put"]["parameters"] if p["name"] == "path")
    body = spec["components"]["schemas"]["WriteFile"]["properties"]["path"]
    for schema in (param["schema"], body):
        assert schema["pattern"] == PATH_PATTERN and schema["maxLength"] == MAX_PATH
        assert schema["not"] == {"pattern": r"^\.(git|ratchet)(/|$)"}
