"""Limits at the door (issue 12): request bodies, files an Architect job writes, open jobs and worktrees.

Testers opened 124 jobs and 22 worktrees in 28 s from one client and wrote a 50 MB file. Each limit is
set in ``[limits]`` of ``ratchet.toml``; a refused request is 413 or 429 with the field and the fix, and
changes nothing."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from fastapi.testclient import TestClient

from helpers import commit_all, git, tree_snapshot
from ratchet.architect.app import create_app as architect_app
from ratchet.architect.service import Architect
from ratchet.core.workspace import Workspace
from ratchet.versions.app import create_app as versions_app


def with_limits(ws_path, **limits) -> Workspace:
    """The workspace with ``[limits]`` set (and committed, as an operator would)."""
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in limits.items())
    with open(ws_path / "ratchet.toml", "a") as f:
        f.write(f"\n[limits]\n{lines}")
    commit_all(ws_path, "limits")
    return Workspace.open(ws_path)


@pytest.fixture
def small(ws_path):
    return with_limits(ws_path, body_bytes=2048, file_bytes=1000, open_jobs=3, open_worktrees=2)


@pytest.fixture
def client(small):
    with TestClient(architect_app(small, architect=Architect(small), run_jobs=False)) as c:
        yield c


def jobs_and_files(ws: Workspace) -> tuple:
    """What a refused request must leave as it was: the job records, the workspace's files, the tags."""
    files = {k: v for k, v in tree_snapshot(ws.root).items() if not k.startswith(".ratchet/")}
    return [r["payload"] for r in ws.store.list_jobs()], files, git(ws.root, "tag", "-l")


def test_the_defaults_refuse_what_the_testers_did(ws):
    """No [limits] in ratchet.toml: a 50 MB write_file is refused, and so is an eleventh open job."""
    with TestClient(architect_app(ws, architect=Architect(ws), run_jobs=False)) as client:
        jid = client.post("/jobs", json={"title": "huge"}).json()["id"]
        r = client.put(f"/jobs/{jid}/files/huge.txt", json={"content": "x" * 50_000_000})
        assert r.status_code == 413 and r.json()["field"] == "body", r.text
        assert "4,194,304 bytes" in r.json()["detail"]
        assert not (ws.runtime_dir / "jobs" / jid / "worktree" / "huge.txt").exists()
        codes = [client.post("/feedback", json={"text": f"complaint {i}"}).status_code for i in range(10)]
        assert codes == [202] * 9 + [429]
    assert len(ws.store.list_jobs()) == 10


# --- request bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("make, path", [(lambda ws: architect_app(ws, run_jobs=False), "/feedback"),
                                        (versions_app, "/versions")])
def test_body_over_the_limit_by_content_length_is_413_naming_the_setting(small, make, path):
    before = jobs_and_files(small)
    with TestClient(make(small)) as client:
        r = client.post(path, json={"text": "x" * 5000})
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["error"] == "TooLargeError" and body["field"] == "body"
    assert "2,048 bytes" in body["detail"] and "[limits] body_bytes" in body["fix"]
    assert jobs_and_files(small) == before


async def _call(app, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, dict, bool]:
    """One raw ASGI request whose body arrives in ``chunks``: (status, body, whether the app read it all)."""
    sent: list[dict] = []
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/feedback", "raw_path": b"/feedback", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), *headers],
             "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80)}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), not queue


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [[(b"transfer-encoding", b"chunked")], [(b"content-length", b"20")]],
                         ids=["chunked", "content-length-lies"])
async def test_a_body_streaming_past_the_limit_is_413_whatever_content_length_says(small, headers):
    app = architect_app(small, run_jobs=False)
    chunks = [b'{"text": "', *[b"y" * 500] * 8, b'"}']  # 4 KB in pieces, over the 2 KB limit
    status, body, _ = await _call(app, chunks, headers)
    assert status == 413 and body["field"] == "body" and "2,048 bytes" in body["detail"]
    assert small.store.list_jobs() == []
    status, body, read_all = await _call(app, [b'{"text": ', b'"answers are too long"}'], [])  # in limit: passes
    assert status == 202 and read_all, body


def test_a_real_server_refuses_a_chunked_upload_past_the_limit(small):
    """Through uvicorn: a chunked body (no Content-Length) is cut off at the limit."""
    import uvicorn

    from ratchet.serving import free_port

    port = free_port("127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(architect_app(small, run_jobs=False), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(200):  # up in well under a second
                try:
                    http.get("/openapi.json")
                    break
                except httpx.TransportError:
                    threading.Event().wait(0.02)

            def stream():
                yield b'{"text": "'
                for _ in range(64):
                    yield b"z" * 1024
                yield b'"}'

            r = http.post("/feedback", content=stream(), headers={"content-type": "application/json"})
            assert r.status_code == 413 and r.json()["field"] == "body", r.text
            assert http.post("/feedback", json={"text": "answers are too long"}).status_code == 202
    finally:
        server.should_exit = True
        thread.join(10)
    assert [j["payload"]["request"]["text"] for j in small.store.list_jobs()] == ["answers are too long"]


def test_the_default_body_limit_takes_a_file_at_the_file_limit(ws):
    """The defaults fit together: a whole file at [limits] file_bytes, JSON-escaped, fits in a body."""
    limits = ws.config.limits
    assert limits.body_bytes >= 2 * limits.file_bytes + 1024


# --- files an Architect job writes --------------------------------------------------------------------


def test_writing_a_file_over_the_limit_is_413_naming_content_and_changes_nothing(client, small):
    jid = client.post("/jobs", json={"title": "big files"}).json()["id"]
    assert client.put(f"/jobs/{jid}/files/notes/ok.md", json={"content": "start" + "a" * 995}).status_code == 200
    worktree = small.runtime_dir / "jobs" / jid / "worktree"
    before = jobs_and_files(small), tree_snapshot(worktree)

    r = client.put(f"/jobs/{jid}/files/notes/big.md", json={"content": "b" * 1001})
    assert r.status_code == 413, r.text
    assert r.json()["field"] == "content" and "1,001 bytes" in r.json()["detail"]
    assert "1,000 bytes" in r.json()["detail"] and "[limits] file_bytes" in r.json()["fix"]
    r = client.post(f"/jobs/{jid}/actions", json={"kind": "write_file", "path": "notes/big.md", "content": "é" * 501})
    assert r.status_code == 413 and r.json()["field"] == "content"  # bytes, not characters
    r = client.post(f"/jobs/{jid}/actions", json={"kind": "replace_text", "path": "notes/ok.md", "old": "start",
                                                  "new": "begin!"})
    assert r.status_code == 413 and r.json()["field"] == "new", r.text
    assert "notes/ok.md" in r.json()["detail"]
    assert (jobs_and_files(small), tree_snapshot(worktree)) == before


def test_a_job_cannot_raise_its_own_file_limit(client, small):
    """The limit is the Architect's (main's ratchet.toml), not the one in the job's worktree."""
    jid = client.post("/jobs", json={"title": "raise the limit"}).json()["id"]
    r = client.post(f"/jobs/{jid}/actions", json={"kind": "edit_config", "set": {"limits.file_bytes": 10**9}})
    assert r.status_code == 200, r.text
    assert client.put(f"/jobs/{jid}/files/big.md", json={"content": "b" * 1500}).status_code == 413


# --- open jobs and worktrees --------------------------------------------------------------------------


def test_too_many_open_jobs_is_429_with_retry_after_and_how_to_close_them(client, small):
    opened = [client.post("/feedback", json={"text": f"complaint {i}"}).json()["id"] for i in range(3)]
    before = jobs_and_files(small)
    for attempt in (lambda: client.post("/feedback", json={"text": "one more"}),
                    lambda: client.post("/wake", json={"breaches": [{"kpi": "reward_rate", "value": 0.1, "slo": 0.5}]}),
                    lambda: client.post("/jobs", json={"title": "one more"})):
        r = attempt()
        assert r.status_code == 429, r.text
        assert 590 <= int(r.headers["retry-after"]) <= 600  # the first open job's time limit (600 s)
        body = r.json()
        assert body["field"] == "limits.open_jobs" and "3 jobs are open" in body["detail"]
        assert "3 queued" in body["detail"] and "DELETE /jobs/ID" in body["fix"] and "[limits] open_jobs" in body["fix"]
    assert jobs_and_files(small) == before
    record = small.store.get_job(opened[0])["payload"]
    record["state"] = "failed"
    small.store.put_job(opened[0], "failed", record)  # one finished: room for one more
    assert client.post("/feedback", json={"text": "now there is room"}).status_code == 202


def test_too_many_open_worktrees_is_429_naming_the_open_agent_jobs(ws_path):
    ws = with_limits(ws_path, open_jobs=10, open_worktrees=2)
    with TestClient(architect_app(ws, architect=Architect(ws), run_jobs=False)) as client:
        first, second = (client.post("/jobs", json={"title": f"agent {i}"}).json()["id"] for i in range(2))
        before = jobs_and_files(ws)
        r = client.post("/jobs", json={"title": "a third worktree"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
        body = r.json()
        assert body["field"] == "limits.open_worktrees" and "2 worktrees are open" in body["detail"]
        assert first in body["detail"] and second in body["detail"] and "DELETE /jobs/ID" in body["fix"]
        assert jobs_and_files(ws) == before
        assert client.delete(f"/jobs/{first}").status_code == 200  # abandoning frees its worktree
        assert client.post("/jobs", json={"title": "a third worktree"}).status_code == 201


def test_an_agent_job_past_its_time_limit_no_longer_counts_as_open(ws_path):
    ws = with_limits(ws_path, open_jobs=1)
    arch = Architect(ws)
    with TestClient(architect_app(ws, architect=arch, run_jobs=False)) as client:
        stale = client.post("/jobs", json={"title": "forgotten"}).json()["id"]
        assert client.post("/jobs", json={"title": "next"}).status_code == 429
        record = arch.jobs.get(stale)
        record.deadline = 0  # long past: it fails when next looked at, also by the count
        arch.jobs.save(record)
        assert client.post("/jobs", json={"title": "next"}).status_code == 201
    assert arch.jobs.get(stale).state == "failed"
