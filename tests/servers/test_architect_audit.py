"""Who did what to a job (issue 12): every step an agent's request takes is in the job's log with the id
of its token (never the token) and the time; `GET /jobs/ID` and `ratchet jobs show` show it."""

from __future__ import annotations

import json

import httpx
from click.testing import CliRunner
from fastapi.testclient import TestClient

from ratchet.architect.app import create_app
from ratchet.architect.service import Architect
from ratchet.cli import cli
from ratchet.core import auth

TOKEN = "t0ken-for-audit-0123456789abcdef"


def test_every_step_records_the_token_id_and_never_the_token(ws, monkeypatch):
    arch = Architect(ws)
    who = auth.token_id(TOKEN)
    with TestClient(create_app(ws, architect=arch, run_jobs=False, token=TOKEN), headers=auth.header(TOKEN)) as client:
        jid = client.post("/jobs", json={"title": "audited"}).json()["id"]
        steps = [client.put(f"/jobs/{jid}/files/notes/a.md", json={"content": "first draft\n"}),
                 client.post(f"/jobs/{jid}/actions", json={"kind": "replace_text", "path": "notes/a.md",
                                                           "old": "first", "new": "second"}),
                 client.post(f"/jobs/{jid}/actions", json={"kind": "set_state", "pointer": "/params/max_sentences",
                                                           "value": 3}),
                 client.post(f"/jobs/{jid}/tiers", json={"tiers": ["micro"]})]
        assert [r.status_code for r in steps] == [200] * 4, [r.text for r in steps]
        before = client.get(f"/jobs/{jid}").json()["log"]
        refused = [client.put(f"/jobs/{jid}/files/.git/x", json={"content": "x"}),  # bad input: 422
                   client.put(f"/jobs/{jid}/files/notes/b.md", json={"content": "x"}, headers={"Authorization": ""})]
        assert [r.status_code for r in refused] == [422, 401]
        assert client.get(f"/jobs/{jid}").json()["log"] == before  # a refused request is not a step

        record = arch.jobs.get(jid)
        record.state = "needs_approval"  # as if released and tested, to approve it
        arch.jobs.save(record)
        assert client.post(f"/jobs/{jid}/approve").status_code == 202
        job = client.get(f"/jobs/{jid}").json()

    log = [(e["step"], e["by"]) for e in job["log"]]
    assert log[0] == ("open", who) and ("worktree", who) in log and ("approve", who) in log
    applied = [e["message"] for e in job["log"] if e["step"] == "apply"]
    assert applied == ["write_file (12 bytes): notes/a.md", "replace_text: notes/a.md",
                       "set_state /params/max_sentences: state/active.state.json"]
    assert all(e["by"] == who for e in job["log"] if e["step"] in ("apply", "tiers"))
    assert all(isinstance(e["at"], float) for e in job["log"])
    assert TOKEN not in json.dumps(job)
    for path in ws.runtime_dir.rglob("*"):  # the store, its journal, the object store, the worktree
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path

    # `ratchet jobs show` prints the same record, with who took each step
    monkeypatch.setenv(auth.TOKEN_ENV, TOKEN)
    app = create_app(ws, architect=arch, run_jobs=False, token=TOKEN)
    monkeypatch.setattr(httpx, "Client", lambda **kw: TestClient(app, base_url=kw["base_url"], headers=kw["headers"]))
    shown = CliRunner().invoke(cli, ["jobs", "show", jid, "--url", "http://testserver", "-w", str(ws.root)])
    assert shown.exit_code == 0, shown.output
    assert [(e["step"], e["by"]) for e in json.loads(shown.stdout)["log"]] == log


def test_without_a_token_the_steps_are_by_anonymous(ws):
    with TestClient(create_app(ws, run_jobs=False)) as client:
        jid = client.post("/jobs", json={"title": "open server"},
                          headers={"Authorization": "Bearer some-unchecked-value-0123"}).json()["id"]
        client.delete(f"/jobs/{jid}")
        log = client.get(f"/jobs/{jid}").json()["log"]
    assert {e["by"] for e in log} == {"anonymous"}, log
    assert [e["step"] for e in log][-1] == "failed" and "abandoned" in log[-1]["message"]
