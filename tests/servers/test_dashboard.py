"""The dashboard in process (FastAPI TestClient): each page renders the workspace's data, the overview's
series are aggregated in the store, reading and acting need what the token says. The browser tests are in
``test_dashboard_browser.py``."""

from __future__ import annotations

import re
from unittest.mock import ANY

import pytest
from fastapi.testclient import TestClient

from helpers import with_style
from ratchet.architect.jobs import JobStore, new_job
from ratchet.core import auth
from ratchet.versions.app import create_app
from ratchet.versions.dashboard import series, views

TOKEN = "dashboard-token-0123456789abcdef"


def make_versions(ws):
    """v0.1.1 manual (style formal), v0.1.2 rollback to v0.1.0, v0.2.0 architect (no file change)."""
    ws.state.update("staging", with_style("formal"))
    ws.state.promote(reason="formal replies", author="test", kind="manual")
    ws.state.rollback("v0.1.0", author="test")
    ws.versions.make_version("minor", paths=[], reason="a planned change", kind="architect", author="architect",
                             allow_empty=True)


def rewards(ws, values_at: list[tuple[float, float]]) -> None:
    """``reward`` events at given times in the log's shape (joined to no decision, so the tuner skips them)."""
    ws.store.append_feedback([{"tool": "reward", "ts": ts, "conversation_id": f"r{i}",
                               "payload": {"args": {"conversation_id": f"r{i}", "value": v}, "decisions": {}}}
                              for i, (ts, v) in enumerate(values_at)])


def waiting_job(ws) -> str:
    job = new_job("feedback", {"text": "answer refunds in one line"}, 600, state="needs_approval")
    job.bump = "minor"
    JobStore(ws.store).save(job)
    return job.id


@pytest.fixture
def client(ws):
    return TestClient(create_app(ws))


def test_dashboard_reward_series_is_aggregated_in_sql(ws):
    rewards(ws, [(1000.0, 1.0), (1005.0, 0.0), (1079.9, 1.0), (1020.0, 0.0), (1200.0, 0.5), (2000.0, 1.0)])
    ws.store.append_feedback([{"tool": "prefer", "ts": 1001.0, "payload": {"args": {"winner": "a"}}}])  # not a reward
    got = series.reward_series(ws.store, 1000.0, 1999.0, 60)
    # buckets [960, 1020), [1020, 1080), [1200, 1260): the start is taken down to 960; 2000 is after the end
    assert got == [{"t": 960, "count": 2, "mean": 0.5}, {"t": 1020, "count": 2, "mean": 0.5},
                   {"t": 1200, "count": 1, "mean": 0.5}]


def test_dashboard_series_join_the_rollup_and_the_log_tail(ws):
    """Whole minutes come from the rollup, the minutes since from the log: the same numbers either way,
    a bucket split between the two included, and a minute is rolled up once."""
    import time

    from ratchet.versions.dashboard import rollup

    now = time.time()
    hour = now // 3600 * 3600
    rewards(ws, [(hour - 7200 + 5, 1.0), (hour - 7200 + 65, 0.0), (hour - 30, 1.0)])
    from_logs = series.reward_series(ws.store, hour - 7200, now, 3600)
    assert rollup.rolled_until(ws.store) is None  # a read never refreshes (the server's Builder does)
    mark = rollup.refresh(ws.store, now)
    assert mark is not None and hour - 60 <= mark <= now
    before = series.reward_series(ws.store, hour - 7200, now, 3600)
    assert before == from_logs
    rewards(ws, [(now - 1, 0.0)])  # after the mark: from the log
    after = series.reward_series(ws.store, hour - 7200, now, 3600)
    assert before[0] == after[0] == {"t": hour - 7200, "count": 2, "mean": 0.5}
    assert after[-1] == {"t": hour - 3600, "count": 1, "mean": 1.0} if len(after) == 2 else True
    assert sum(b["count"] for b in after) == 4 and sum(b["count"] * b["mean"] for b in after) == 2.0
    assert rollup.refresh(ws.store) == rollup.rolled_until(ws.store)
    with ws.store.reader.connect() as conn:
        rolled = conn.execute(rollup.rollup.select().where(rollup.rollup.c.series == "reward")).all()
    assert sorted(r.bucket for r in rolled) == [hour - 7200, hour - 7140] + ([hour - 60] if mark > hour - 30 else [])


def test_dashboard_call_series_counts_errors_per_bucket(ws):
    from ratchet.core.stores.schema import turns

    rows = [{"conversation_id": "c", "ts": ts, "tool": "answer", "arguments": {}, "error": err, "latency_ms": lat}
            for ts, err, lat in [(10.0, None, 4.0), (12.0, "boom", 6.0), (25.0, None, None)]]
    with ws.store.engine.begin() as conn:
        conn.execute(turns.insert(), rows)
    got = series.call_series(ws.store, 0.0, 30.0, 10)
    assert got == [{"t": 10, "calls": 2, "errors": 1, "error_rate": 0.5, "latency_mean_ms": 5.0},
                   {"t": 20, "calls": 1, "errors": 0, "error_rate": 0.0, "latency_mean_ms": None}]


def test_dashboard_bucket_width_keeps_the_points_few():
    assert series.bucket_width(60, 120) == 1
    assert series.bucket_width(3600, 120) == 30
    assert series.bucket_width(10 * 365 * 86400, 120) == series.WIDTHS[-1]


def test_dashboard_overview_data_marks_versions_wakeups_and_slo(ws, client):
    import time

    make_versions(ws)
    now = time.time()
    rewards(ws, [(now - 30, 1.0), (now - 20, 0.0)])
    ws.emit(series.WAKE_EVENT, {"at": now - 10, "breaches": [{"kpi": "reward_rate"}]})
    body = client.get("/ui/data/overview").json()
    assert body["active"]["version"] == "v0.1.2"  # the version whose state is served (v0.2.0 changed no state)
    assert [(v["version"], v["kind"], v["bump"]) for v in body["versions"]] == [
        ("v0.1.0", "init", "initial"), ("v0.1.1", "manual", "patch"), ("v0.1.2", "rollback", "patch"),
        ("v0.2.0", "architect", "minor")]
    assert sum(b["count"] for b in body["reward"]) == 2
    assert sum(b["mean"] * b["count"] for b in body["reward"]) == pytest.approx(1.0)
    assert body["wakeups"] == [{"t": pytest.approx(now - 10), "breaches": ["reward_rate"], "seq": ANY}]
    assert set(body["slo"]) == {"window_seconds", "reward_rate_min", "error_rate_max", "latency_p95_ms"}
    assert all(body["start"] <= v["t"] <= body["now"] for v in body["versions"])


def test_dashboard_pages_show_the_workspace(ws, client):
    make_versions(ws)
    job_id = waiting_job(ws)
    overview = client.get("/")
    assert overview.status_code == 200 and "v0.1.2" in overview.text and "/ui/static/dashboard.js" in overview.text
    listed = client.get("/ui/versions").text
    assert re.findall(r'href="/ui/versions/(v[0-9.]+)"', listed) == ["v0.2.0", "v0.1.2", "v0.1.1", "v0.1.0"]
    assert re.findall(r'href="/ui/versions/(v[0-9.]+)"', client.get("/ui/versions?kind=architect").text) == ["v0.2.0"]
    page = client.get("/ui/versions?limit=2&offset=2").text
    assert re.findall(r'href="/ui/versions/(v[0-9.]+)"', page) == ["v0.1.1", "v0.1.0"] and 'rel="prev"' in page
    version = client.get("/ui/versions/v0.1.1").text
    assert "formal replies" in version and "/style" in version and 'href="/ui/versions/v0.1.0"' in version
    jobs = client.get("/ui/jobs").text
    assert job_id in jobs and "needs_approval" in jobs
    job = client.get(f"/ui/jobs/{job_id}").text
    assert "answer refunds in one line" in job and f"/ui/actions/jobs/{job_id}/approve" in job
    assert client.get("/ui/static/vendor/uplot/uPlot.iife.min.js").status_code == 200
    external = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
    for path in ("/", "/ui/versions", "/ui/versions/v0.1.1", "/ui/jobs", f"/ui/jobs/{job_id}", "/ui/conversations"):
        assert not external.search(client.get(path).text), f"{path} loads an asset from the network"
    assert client.get("/docs").status_code == 200 and client.get("/versions").status_code == 200  # the API stays


def test_dashboard_version_page_shows_evals_against_budgets(ws, client):
    from test_versions_api import promote_through_tuner

    made = promote_through_tuner(ws)
    page = client.get(f"/ui/versions/{made}").text
    assert 'id="evals"' in page and "micro" in page and "(≥ " in page  # the tier's budget beside its result


def test_dashboard_tools_diff_comes_from_the_versions_api_diff(ws, client):
    make_versions(ws)
    body = client.get("/ui/data/versions/v0.1.1/tools-diff").json()
    assert body["parent"] == "v0.1.0" and body["tools_error"] is None
    assert body["tools"] == client.get("/versions/v0.1.0/diff/v0.1.1").json()["tools"]
    assert body["tools"]["breaking"] is False
    assert client.get("/ui/data/versions/v0.1.0/tools-diff").json() == {"parent": None, "tools": None,
                                                                        "tools_error": None}


def test_dashboard_conversation_tells_the_story(ws, client):
    from test_versions_api import promote_through_tuner

    made = promote_through_tuner(ws)  # conversation c1: a call, its decisions, a reward, promoted
    page = client.get("/ui/conversations?id=c1").text
    assert "answer" in page and "reward" in page and f'href="/ui/versions/{made}"' in page
    missing = client.get("/ui/conversations?id=nobody").text
    assert "no conversation &#39;nobody&#39;" in missing and "Fix:" in missing


def test_dashboard_strategies_show_what_the_active_state_believes(ws, client):
    from test_versions_api import promote_through_tuner

    promote_through_tuner(ws)  # one reward of 1.0 for the arm the runner chose
    [style] = [s for s in views.strategies(ws) if s["family"] == "bandit"]
    arms = style["tables"]["per_arm"]["rows"]
    assert sum(row["pulls"] for row in arms.values()) == 1 and style["scalars"]["pulls"] == 1
    page = client.get("/ui/strategies").text
    assert f'id="strategy-{style["key"]}"' in page and style["strategy"] in page
    assert all(f"<b>{arm}</b>" in page for arm in arms)


def test_dashboard_unknown_pages_answer_404_with_the_field(ws, client):
    assert client.get("/ui/versions/v9.9.9").json()["field"] == "version"
    assert client.get("/ui/jobs/nope").json()["field"] == "job_id"
    bad = client.get("/ui/jobs?state=sleeping")
    assert bad.status_code == 422 and bad.json()["field"] == "state"


def test_dashboard_with_a_token_reads_after_login_and_acts_only_with_the_bearer(ws):
    make_versions(ws)
    client = TestClient(create_app(ws, token=TOKEN), follow_redirects=False)
    assert client.get("/", headers={"Accept": "text/html"}).headers["location"] == "/login?next=/"
    assert client.get("/ui/data/overview").status_code == 401
    assert client.get("/ui/static/dashboard.css").status_code == 200 and client.get("/login").status_code == 200
    wrong = client.post("/login", data={"token": "nope", "next": "/ui/versions"})
    assert wrong.status_code == 200 and "not this workspace" in wrong.text and "ratchet_session" not in client.cookies
    ok = client.post("/login", data={"token": TOKEN, "next": "/ui/versions"})
    assert ok.status_code == 303 and ok.headers["location"] == "/ui/versions"
    assert TOKEN not in ok.headers["set-cookie"] and "HttpOnly" in ok.headers["set-cookie"]
    assert client.get("/ui/versions").status_code == 200 and client.get("/ui/data/overview").status_code == 200
    assert client.post("/login", data={"token": TOKEN, "next": "//elsewhere.example"}).headers["location"] == "/"

    refused = client.post("/ui/actions/rollback/v0.1.0")  # the cookie reads; it does not act
    assert refused.status_code == 401 and refused.json()["field"] == "Authorization"
    assert [v.name for v in ws.versions.list()][-1] == "v0.2.0"
    done = client.post("/ui/actions/rollback/v0.1.1", headers=auth.header(TOKEN))
    assert done.status_code == 200 and done.json() == {"version": "v0.2.1", "commit": done.json()["commit"],
                                                       "rolled_back_to": "v0.1.1"}
    made = ws.versions.get("v0.2.1")
    assert made.kind == "rollback" and made.metadata["author"] == f"dashboard ({auth.token_id(TOKEN)})"


def test_dashboard_job_action_goes_to_the_architect_api(ws, monkeypatch):
    """Approve goes through the Architect's REST API with the caller's token: the Architect owns its jobs."""
    import httpx

    from ratchet.architect.app import create_app as architect_app
    from ratchet.architect.service import Architect

    job_id = waiting_job(ws)
    arch = Architect(ws)
    app = architect_app(ws, architect=arch, run_jobs=False, token=TOKEN)
    monkeypatch.setattr(httpx, "Client", lambda **kw: TestClient(app, base_url=kw["base_url"], headers=kw["headers"]))
    client = TestClient(create_app(ws, token=TOKEN, architect_url="http://architect.test"))
    assert client.post(f"/ui/actions/jobs/{job_id}/approve").status_code == 401
    assert arch.get(job_id).state == "needs_approval"
    approved = client.post(f"/ui/actions/jobs/{job_id}/approve", headers=auth.header(TOKEN))
    assert approved.status_code == 202 and approved.json()["state"] == "testing"
    entry = arch.get(job_id).log[-1]
    assert (entry.step, entry.by) == ("approve", auth.token_id(TOKEN))
    again = client.post(f"/ui/actions/jobs/{job_id}/approve", headers=auth.header(TOKEN))
    assert again.status_code == 409 and "not waiting for approval" in again.json()["detail"]


def test_dashboard_job_action_names_an_architect_it_cannot_reach(ws):
    from ratchet.serving import free_port

    job_id = waiting_job(ws)
    nobody = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    r = TestClient(create_app(ws, architect_url=nobody)).post(f"/ui/actions/jobs/{job_id}/approve")
    assert r.status_code == 422 and r.json()["field"] == "url" and nobody in r.json()["detail"]
    assert JobStore(ws.store).get(job_id).state == "needs_approval"


def test_dashboard_job_action_without_an_architect_port_says_how_to_give_one(ws):
    toml = ws.root / "ratchet.toml"
    toml.write_text(toml.read_text().replace("port = 8703", "port = 0"))
    from ratchet.core.workspace import Workspace

    ws = Workspace.open(ws.root)
    job_id = waiting_job(ws)
    r = TestClient(create_app(ws)).post(f"/ui/actions/jobs/{job_id}/approve")
    assert r.status_code == 422 and r.json()["field"] == "architect_url" and "--architect-url" in r.json()["fix"]


def test_dashboard_assets_are_package_data():
    """Every template and asset matches pyproject's package-data, so the wheel ships them (nothing is
    fetched at run time): a new file type under static/ must be added there."""
    import fnmatch
    import tomllib
    from pathlib import Path

    import ratchet.versions.dashboard as dashboard

    root = Path(dashboard.__file__).parent
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["ratchet.versions.dashboard"]
    files = [p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert "static/vendor/uplot/uPlot.iife.min.js" in files and "static/vendor/uplot/LICENSE" in files
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []


# --- the rollup: built in the background, never by a request; late rows; polls send what is new ---------


def spread_rewards(ws, n: int, span: float, end: float) -> None:
    rewards(ws, [(end - span + i * span / n, float(i % 2)) for i in range(n)])


def test_dashboard_answers_at_once_while_the_rollup_is_built(ws, client):
    """A request during the build reads what is ready and says how far the build is; it neither writes
    nor waits for the builder (who holds the rollup's lock: on SQLite the write lock itself)."""
    import threading
    import time

    from ratchet.versions.dashboard import rollup

    now = time.time()
    spread_rewards(ws, 2000, 2 * 86400, now)
    rollup.refresh(ws.store, now - 86400)  # the first day is rolled up, the second is not yet
    client.get("/active")  # a fresh workspace's first read seeds the active state: a write, once
    holding, release = threading.Event(), threading.Event()

    def builder():
        with ws.store.locked(rollup.LOCK):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=builder)
    thread.start()
    try:
        assert holding.wait(10)
        t0 = time.monotonic()
        body = client.get("/ui/data/overview").json()
        page = client.get("/").text
        assert time.monotonic() - t0 < 10  # the builder holds the lock for 30 s
    finally:
        release.set()
        thread.join()
    state = body["rollup"]
    assert state["building"] is True and 40 <= state["percent"] <= 60, state
    assert 'id="rollup-state"' in page
    # what is ready: the rolled-up first day, and the last minutes from the log; not the hours between
    counted = sum(b["count"] for b in body["reward"])
    assert 990 <= counted <= 1000 + 2000 * rollup.BEHIND / (2 * 86400) + 2, counted
    rollup.refresh(ws.store)
    done = client.get("/ui/data/overview").json()
    assert done["rollup"]["building"] is False and sum(b["count"] for b in done["reward"]) == 2000


def test_dashboard_server_builds_the_rollup_in_the_background(ws):
    """The Versions app's lifespan starts the Builder: without any request, the rollup catches up."""
    import time

    from ratchet.versions.dashboard import rollup

    now = time.time()
    spread_rewards(ws, 500, 86400, now)
    with TestClient(create_app(ws)) as c:
        deadline = time.monotonic() + 60
        while rollup.rolled_until(ws.store) is None or rollup.rolled_until(ws.store) < now - rollup.BEHIND:
            assert time.monotonic() < deadline, "the Builder did not catch up"
            time.sleep(0.1)
        body = c.get("/ui/data/overview").json()
    assert body["rollup"]["building"] is False and sum(b["count"] for b in body["reward"]) == 500


def test_dashboard_rollup_status_says_how_far_the_build_is(ws):
    from ratchet.versions.dashboard import rollup

    first = 1_000_020.0
    rewards(ws, [(first, 1.0), (first + 86400, 1.0)])
    now = first + 86400 + 100
    assert rollup.status(ws.store, now, first) == {"building": True, "percent": 0, "rolled_until": None}
    rollup.refresh(ws.store, first + 43200 + rollup.SETTLE)
    assert rollup.status(ws.store, now, first)["percent"] == 49  # half the minutes up to the last settled one
    rollup.refresh(ws.store, now)
    assert rollup.status(ws.store, now, first)["building"] is False
    assert rollup.status(ws.store, now, None)["building"] is False  # nothing logged: nothing to build


def test_dashboard_rollup_sums_again_a_minute_a_late_row_falls_in(ws):
    """A row committed after its minute was rolled up (its ts stamped long before) is found by its seq at
    the next refresh; summing a minute again does not count its rows twice."""
    import time

    from ratchet.core.stores.schema import turns
    from ratchet.versions.dashboard import rollup

    now = time.time()
    minute = (now - 3600) // 60 * 60
    rewards(ws, [(minute + 10, 1.0)])
    rollup.refresh(ws.store, now)
    ws.store.append_feedback([{"tool": "reward", "ts": minute + 20, "event_id": "late",
                               "payload": {"args": {"conversation_id": "x", "value": 0.0}, "decisions": {}}}])
    with ws.store.engine.begin() as conn:
        conn.execute(turns.insert(), [{"conversation_id": "c", "ts": minute + 30, "tool": "answer", "arguments": {},
                                       "error": "boom", "latency_ms": 8.0}])
    for _ in range(3):  # the late rows are looked at by two refreshes: each sums the minute again
        rollup.refresh(ws.store, now)
        assert rollup.rolled_series(ws.store, "reward", minute, minute + 60, 60) == [(minute, 2, 1.0, None, None, None)]
        assert rollup.rolled_series(ws.store, "calls", minute, minute + 60, 60) == [(minute, 1, None, 1, 8.0, 1)]


def test_dashboard_polls_send_only_the_versions_and_wakeups_since_their_cursor(ws, client):
    import time

    make_versions(ws)
    ws.emit(series.WAKE_EVENT, {"at": time.time() - 5, "breaches": [{"kpi": "reward_rate"}]})
    first = client.get("/ui/data/overview").json()
    assert len(first["versions"]) == 4 and len(first["wakeups"]) == 1 and first["versions_total"] == 4
    again = client.get("/ui/data/overview", params={"cursor": first["cursor"]}).json()
    assert again["versions"] == [] and again["wakeups"] == [] and again["versions_total"] == 4
    ws.state.rollback("v0.1.1", author="test")
    ws.emit(series.WAKE_EVENT, {"at": time.time(), "breaches": [{"kpi": "error_rate"}]})
    new = client.get("/ui/data/overview", params={"cursor": again["cursor"]}).json()
    assert [v["version"] for v in new["versions"]] == ["v0.2.1"] and new["versions_total"] == 5
    assert [w["breaches"] for w in new["wakeups"]] == [["error_rate"]]
    assert client.get("/ui/data/overview", params={"cursor": new["cursor"]}).json()["versions"] == []
    for nonsense in ("nonsense", "v1.2|x", "1.2.3.4|0"):
        bad = client.get("/ui/data/overview", params={"cursor": nonsense})
        assert bad.status_code in (400, 422) and "cursor" in bad.text, nonsense


def test_dashboard_polls_find_versions_in_semver_order_whatever_their_time(ws, client):
    """The tuner can tag v0.1.9 and v0.1.10 in the same second (the demo promotes 1.5 times a second):
    the poll after v0.1.9 gets v0.1.10, though its name sorts before and its time is not later."""
    for _ in range(9):
        ws.versions.make_version("patch", paths=[], reason="tick", kind="manual", author="test", allow_empty=True)
    first = client.get("/ui/data/overview").json()
    assert first["versions"][-1]["version"] == "v0.1.9" and first["cursor"].startswith("v0.1.9|")
    ws.versions.make_version("patch", paths=[], reason="tick", kind="manual", author="test", allow_empty=True)
    new = client.get("/ui/data/overview", params={"cursor": first["cursor"]}).json()
    assert [v["version"] for v in new["versions"]] == ["v0.1.10"] and new["cursor"].startswith("v0.1.10|")


# --- strategies: beliefs drawn by kind, off-policy estimates ------------------------------------------------


def rewarded_calls(ws, n: int, *, start: int = 0) -> None:
    """``n`` runner calls (conversations b{i}), rewarded 1 three times in four for the arm 'formal' and one
    time in three for the others, else 0: decisions with propensities (Thompson sampling logs them) joined
    with their rewards, applied to staging."""
    from ratchet.runner.service import Runner
    from ratchet.tuner.service import Tuner

    runner, tuner = Runner(ws, seed=1), Tuner(ws)
    for i in range(start, start + n):
        cid = f"b{i}"
        runner.call("answer", {"question": "Where is my order?", "conversation_id": cid})
        [d] = ws.store.decisions_for(cid)
        won = i % 4 != 0 if d["choice"] == "formal" else i % 3 == 0
        tuner.feedback("reward", {"conversation_id": cid, "value": 1.0 if won else 0.0})
    tuner.apply_pending()


def test_dashboard_strategies_draw_each_belief_by_kind(ws, client):
    from test_versions_api import promote_through_tuner

    promote_through_tuner(ws)
    [style] = views.strategies(ws)
    assert style["belief_error"] is None and [b["kind"] for b in style["beliefs"]] == ["intervals"]
    belief = style["beliefs"][0]
    arms = {i["label"]: i for i in belief["items"]}
    assert set(arms) == {"concise", "friendly", "detailed", "formal"} and belief["highlight"] == style["served"]
    rewarded = [a for a in arms.values() if a["n"] == 1]
    assert len(rewarded) == 1 and rewarded[0]["value"] == pytest.approx(2 / 3)  # Beta(2, 1) after one reward of 1
    assert all(a["low"] < a["value"] < a["high"] for a in arms.values())
    page = client.get("/ui/strategies").text
    assert page.count('<g class="item"') == 4 and 'data-label="formal"' in page and "95% credible interval" in page
    assert 'href="/ui/strategies/style/estimates"' in page


def test_dashboard_beliefs_of_every_first_party_family_are_valid(tmp_path):
    """Each first-party family describes its belief in one of the kinds, and each kind draws."""
    import numpy as np

    from ratchet.plugins.tuner_strategies import bandits, cmaes, optuna_tpe, preference, rules
    from ratchet.versions.dashboard.drawings import draw

    for cls in bandits.BANDITS:
        strategy = cls("k", cls.Config(arms=["a", "b", "c"]))
        section = bandits.simulate(strategy, [0.2, 0.5, 0.8], 300, seed=3, full=True).section
        [b] = strategy.belief(section)
        best = max(b.items, key=lambda i: i.value if i.value is not None else -1)
        assert best.label == "c" and b.highlight == "c", cls.name
        assert all(i.low <= i.value <= i.high for i in b.items if i.low is not None), cls.name
        assert draw(b).count('<g class="item"') == 3
    search = cmaes.CMAES("p", cmaes.CMAESConfig(dimensions={"t": {"low": 0, "high": 2}}, popsize=4))
    [p] = search.belief(search.initial_state())
    assert p.kind == "points" and p.center == {"t": 1.0} and p.spread == {"t": pytest.approx(0.6)}
    assert len(p.points) == 4 and p.best is None and 'class="center"' in draw(p)
    pref = preference.Preference("v", preference.PreferenceConfig(variants=["x", "y"], refit_every=1))
    from ratchet import FeedbackEvent

    won = pref.apply(pref.initial_state(), [FeedbackEvent(event_id=str(i), tool="prefer_variants",
                                                          payload={"winner": "y", "loser": "x"}) for i in range(5)])
    [bt] = pref.belief(won)
    strengths = {i.label: i for i in bt.items}
    assert strengths["y"].value > 0 > strengths["x"].value and bt.highlight == "y" and bt.reference == 0.0
    miner = rules.Rules("r", rules.RulesConfig(features=["vip"], outcomes=["ok", "escalated"],
                                               actions={"escalated": {"style": "formal"}}))
    [table] = miner.belief(miner.initial_state())
    assert table.kind == "rules" and table.rules == [] and "no rules" in draw(table)
    space = {"variant": {"type": "categorical", "choices": ["A", "B"]}, "temperature": {"type": "float", "low": 0,
                                                                                      "high": 2}}
    tpe = optuna_tpe.OptunaTPE("o", optuna_tpe.OptunaConfig(storage=f"sqlite:///{tmp_path}/o.db", space=space))
    section, rng, told = tpe.initial_state(), np.random.default_rng(0), []
    for i in range(8):
        told.append(FeedbackEvent(event_id=str(i), tool="score", payload={"value": float(i % 3)}, ts=float(i),
                                  decision=tpe.decide(section, {}, rng)))
        if i % 4 == 3:
            section, told = tpe.apply(section, told), []
    [trials] = tpe.belief(section)
    assert [d.name for d in trials.dimensions] == ["temperature"] and "categorical variant" in trials.title
    assert trials.best is not None and trials.best.score == 2.0 and trials.best.label.startswith("best, trial")
    assert trials.points and all("variant=" in p.label for p in trials.points)
    assert 'class="best"' in draw(trials) and "centre ±" not in draw(trials)


def test_dashboard_strategy_without_a_belief_keeps_its_tables_and_a_broken_one_says_why(ws):
    from ratchet.plugins.tuner_strategies.bandits import ThompsonSampling

    class Plain(ThompsonSampling):
        name = "plain"

        def belief(self, section):
            return None

    class Broken(ThompsonSampling):
        name = "broken"

        def belief(self, section):
            return [{"kind": "intervals", "title": "x"}]  # no items, no interval label

    config = ThompsonSampling.Config(arms=["a", "b"])
    plain = views.beliefs(Plain("k", config), Plain("k", config).initial_state())
    assert plain == {"beliefs": [], "belief_error": None}
    broken = views.beliefs(Broken("k", config), Broken("k", config).initial_state())
    assert broken["beliefs"] == [] and "broken.belief() returned an invalid description" in broken["belief_error"]


def test_dashboard_estimates_refuse_with_too_little_data(ws, client):
    from test_versions_api import promote_through_tuner

    promote_through_tuner(ws)  # one rewarded call
    body = client.get("/ui/data/strategies/style/estimates").json()
    assert body["candidates"] == [] and body["usable"] == 1 and "at least 20 are needed" in body["refused"]
    page = client.get("/ui/strategies/style/estimates").text
    assert 'id="estimates-refused"' in page and "Not enough data" in page
    assert client.get("/ui/data/strategies/nope/estimates").json()["field"] == "key"
    assert client.get("/ui/data/strategies/style/estimates?last=999999").status_code == 422


def test_dashboard_estimates_per_candidate_are_computed_once_per_change(ws, client, monkeypatch):
    from ratchet.versions.dashboard import estimates

    rewarded_calls(ws, 30)
    computed = []
    real = estimates.estimates
    monkeypatch.setattr(estimates, "estimates", lambda *a, **k: computed.append(a[1:]) or real(*a, **k))
    body = client.get("/ui/data/strategies/style/estimates?last=25").json()
    assert body["refused"] is None and body["calls"] == 25 and body["cached"] is False
    labels = [c["label"] for c in body["candidates"]]
    strategy = ws.config.tuner.strategies[0].strategy  # the workspace's own (glr_thompson by default)
    assert labels[0] == f"active state ({strategy})" and len(labels) == 1 + estimates.OTHERS
    active = body["candidates"][0]
    assert active["error"] is None and active["n"] == 25
    dr = active["estimates"]["dr"]
    assert dr["low"] <= dr["value"] <= dr["high"]
    assert body["observed"]["n"] == 25 and 0 <= body["observed"]["value"] <= 1
    assert client.get("/ui/data/strategies/style/estimates?last=25").json()["cached"] is True
    assert len(computed) == 1
    rewarded_calls(ws, 1, start=30)  # a new reward: computed again
    assert client.get("/ui/data/strategies/style/estimates?last=25").json()["cached"] is False
    page = client.get("/ui/strategies/style/estimates?last=25").text
    assert 'id="estimates-drawing"' in page and page.count('<g class="item"') >= 2 and 'class="reference"' in page


# --- chart buckets -> conversations ---------------------------------------------------------------------------


def test_dashboard_conversations_of_a_time_bucket(ws, client):
    from ratchet.core.stores.schema import turns

    with ws.store.engine.begin() as conn:
        conn.execute(turns.insert(), [
            {"conversation_id": cid, "ts": ts, "tool": "answer", "arguments": {}, "error": err, "latency_ms": 3.0}
            for cid, ts, err in [("a", 100.0, None), ("a", 130.0, "boom"), ("b", 110.0, None), ("c", 200.0, None),
                                 ("early", 99.9, None)]])
    rewards(ws, [(120.0, 1.0), (125.0, 0.0)])  # conversations r0, r1 (feedback only)
    ws.store.append_feedback([{"tool": "reward", "ts": 140.0, "conversation_id": "a",
                               "payload": {"args": {"conversation_id": "a", "value": 0.5}, "decisions": {}}}])
    got = client.get("/ui/data/conversations?start=100&end=200").json()
    assert [c["conversation_id"] for c in got["items"]] == ["a", "b", "r0", "r1"]  # c at 200: the end is excluded
    a = got["items"][0]
    assert (a["first"], a["last"], a["calls"], a["errors"], a["rewards"], a["reward_mean"]) == (
        100.0, 140.0, 2, 1, 1, 0.5)
    assert got["next_offset"] is None and got["cut"] is False
    first = client.get("/ui/data/conversations?start=100&end=200&limit=3").json()
    assert [c["conversation_id"] for c in first["items"]] == ["a", "b", "r0"] and first["next_offset"] == 3
    rest = client.get("/ui/data/conversations?start=100&end=200&limit=3&offset=3").json()
    assert [c["conversation_id"] for c in rest["items"]] == ["r1"] and rest["next_offset"] is None
    page = client.get("/ui/conversations?start=100&end=200&limit=3").text
    assert re.findall(r'href="/ui/conversations\?id=(\w+)"', page) == ["a", "b", "r0"] and 'rel="next"' in page
    bad = client.get("/ui/data/conversations?start=200&end=100")
    assert bad.status_code == 422 and bad.json()["field"] == "end"
    assert client.get("/ui/data/conversations?start=100").json()["field"] == "end"
    assert client.get("/ui/data/conversations?start=0&end=1&limit=100000").status_code == 422


def test_dashboard_conversations_of_a_window_read_a_bounded_number_of_rows(ws, client, monkeypatch):
    from ratchet.versions.dashboard import activity

    monkeypatch.setattr(activity, "SCAN", 3)
    rewards(ws, [(float(t), 1.0) for t in range(10, 20)])  # r0..r9, one a second
    got = activity.conversations(ws.store, 0.0, 100.0)
    assert got["cut"] is True and got["until"] == 13.0  # the 4th row's ts: rows at 10, 11, 12 are read
    assert [c["conversation_id"] for c in got["items"]] == ["r0", "r1", "r2"]
    assert "the list stops at" in client.get("/ui/conversations?start=0&end=100").text
    assert "the list stops at" not in client.get("/ui/conversations?start=0&end=12").text


# --- strategies over time: reward per choice, latency p95 ----------------------------------------------------


def joined_rewards(ws, rows: list[tuple[float, str | None, float]], key: str = "style") -> None:
    """``reward`` events at given times as the tuner stores them: with the decision of ``key`` it joined
    (its choice), or with none."""
    ws.store.append_feedback([{"tool": "reward", "ts": ts, "conversation_id": f"j{i}", "payload": {
        "args": {"conversation_id": f"j{i}", "value": v},
        "decisions": {"conversation_id": {key: {"choice": choice, "propensity": 0.5}}} if choice else {}}}
        for i, (ts, choice, v) in enumerate(rows)])


def test_dashboard_reward_per_choice_comes_from_the_joined_decisions(ws):
    from ratchet.versions.dashboard import kpis

    joined_rewards(ws, [(100.0, "formal", 1.0), (105.0, "formal", 0.0), (110.0, "concise", 1.0),
                        (115.0, None, 0.0), (130.0, "concise", 0.5)])
    joined_rewards(ws, [(101.0, "a", 1.0)], key="other")  # another strategy's decision
    got = kpis.reward_by_choice(ws.store, "style", 100.0, 200.0, 20)
    assert got["choices"] == ["concise", "formal"]
    assert got["buckets"] == [
        {"t": 100, "n": 3, "mean": pytest.approx(2 / 3), "by": {"formal": {"n": 2, "mean": 0.5},
                                                              "concise": {"n": 1, "mean": 1.0}}},
        {"t": 120, "n": 1, "mean": 0.5, "by": {"concise": {"n": 1, "mean": 0.5}}}]


def test_dashboard_latency_p95_per_bucket_interpolates_like_the_triggerer(ws):
    from ratchet.core.stores.schema import turns
    from ratchet.ops.triggerer import kpis as trigger_kpis
    from ratchet.versions.dashboard import kpis

    latencies = {0: [float(v) for v in range(1, 21)], 100: [5.0], 200: [1.0, 3.0]}
    with ws.store.engine.begin() as conn:
        conn.execute(turns.insert(), [{"conversation_id": "c", "ts": b + 1 + k * 0.1, "tool": "answer",
                                       "arguments": {}, "latency_ms": ms}
                                      for b, values in latencies.items() for k, ms in enumerate(values)]
                     + [{"conversation_id": "c", "ts": 50.0, "tool": "answer", "arguments": {}, "latency_ms": None}])
    got = kpis.latency_p95(ws.store, 0.0, 299.0, 100)["buckets"]
    assert [(b["t"], b["n"]) for b in got] == [(0, 20), (100, 1), (200, 2)]
    for b in got:  # the same number the Triggerer computes over that bucket alone
        expected = trigger_kpis(ws.store, 99.0, b["t"] + 99.0).latency_p95_ms
        assert b["p95"] == pytest.approx(expected)
    assert got[0]["p95"] == pytest.approx(19.05) and got[2]["p95"] == pytest.approx(2.9)


def test_dashboard_strategy_series_read_a_bounded_number_of_rows(ws, monkeypatch):
    from ratchet.versions.dashboard import kpis

    monkeypatch.setattr(kpis, "SCAN", 2)
    joined_rewards(ws, [(100.0, "formal", 1.0), (110.0, "formal", 1.0), (120.0, "formal", 0.0)])
    got = kpis.reward_by_choice(ws.store, "style", 0.0, 200.0, 10)
    assert got["since"] == 110.0 and [b["t"] for b in got["buckets"]] == [110, 120]


def test_dashboard_strategy_kpis_endpoint(ws, client):
    import time

    now = time.time()
    joined_rewards(ws, [(now - 30, "formal", 1.0), (now - 20, "concise", 0.0)])
    body = client.get("/ui/data/strategies/kpis").json()
    style = body["strategies"]["style"]
    assert style["choices"] == ["concise", "formal"] and sum(b["n"] for b in style["buckets"]) == 2
    assert body["latency"]["buckets"] == [] and body["slo"]["latency_p95_ms"] > 0
    assert body["start"] <= now - 30 and body["width"] in series.WIDTHS
    page = client.get("/ui/strategies").text
    assert 'id="latency-chart"' in page and 'data-strategy="style"' in page
