"""Architect jobs on a real workspace: worktree, tiers, bump, merge, tag, and every way they can fail."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from helpers import errors_at_once, git, serve_and_reward, tree_snapshot, use_style_strategy
from ratchet import hookimpl
from ratchet.architect.planners import select_planner
from ratchet.architect.plans import Plan, SetState
from ratchet.architect.service import Architect
from ratchet.core.errors import ConfigError, UserError

DRIFT = "Our users' preferences have drifted: they used to like friendly answers, now they don't."


@pytest.fixture
def arch(ws):
    return Architect(ws)


def run(arch: Architect, job):
    return arch.process(arch.jobs.get(job.id))


def main_snapshot(ws):
    return {"head": git(ws.root, "rev-parse", "HEAD"), "tags": git(ws.root, "tag", "-l"),
            "branches": git(ws.root, "branch", "--list", "main"), "active": (ws.root / "state/active.state.json").read_bytes()}


def test_drift_feedback_becomes_a_tested_minor_version_listed_by_the_versions_api(ws_path):
    from ratchet.versions.app import create_app

    ws = use_style_strategy(ws_path, "thompson")  # stationary: the playbook's drift rule replaces it
    arch = Architect(ws)
    job = run(arch, arch.submit_feedback(DRIFT))
    assert job.state == "succeeded", job.error
    assert job.version == "v0.2.0" and job.bump == "minor" and job.planner == "playbook"
    assert job.plan.rule == "drifting-preferences"
    assert [a.kind for a in job.actions] == ["render_template", "edit_config"]
    assert set(job.changed) == {".copier-answers.drift-bandit.yml", "plugins/drift_style.py", "ratchet.toml"}
    assert [t["tier"] for t in job.tiers] == ["micro", "fast", "full"] and all(t["ok"] for t in job.tiers)
    assert job.schema_diff is not None and not job.schema_diff["breaking"]
    steps = [e.step for e in job.log]
    assert steps.index("plan") < steps.index("apply") < steps.index("tiers") < steps.index("bump") < steps.index("tag")

    # main moved to the job's commit; the worktree and its branch are gone
    assert git(ws.root, "describe", "--tags", "--exact-match", "HEAD").strip() == "v0.2.0"
    assert 'strategy = "drift_style"' in (ws.root / "ratchet.toml").read_text()
    assert not (ws.runtime_dir / "jobs" / job.id / "worktree").exists()
    assert "ratchet/job-" not in git(ws.root, "branch", "--list")
    assert git(ws.root, "status", "--porcelain").strip() == ""

    client = TestClient(create_app(ws))
    listed = client.get("/versions", params={"kind": "architect"}).json()["items"]
    assert [v["version"] for v in listed] == ["v0.2.0"]
    detail = client.get("/versions/v0.2.0").json()
    assert detail["evals"]["exists"] and detail["metadata"]["job"] == job.id
    evals = client.get("/versions/0.2.0/evals").json()
    assert set(evals["tiers"]) == {"micro", "fast", "full"}

    # the new strategy is what the runner and tuner now build
    from ratchet.core.workspace import Workspace

    fresh = Workspace.open(ws.root)
    from ratchet.core.strategy import build_strategies

    assert type(build_strategies(fresh, fresh.plugins)["style"]).name == "drift_style"


def test_a_style_users_ask_for_becomes_a_new_arm_in_a_minor_version(ws, arch):
    """What state cannot do: a reply style the runner cannot render yet. The playbook adds it from the
    template library (data, its tests, the bandit's arm, the schemas' enums); the tiers pass; then the
    runner can serve it and the style bandit has it as a fresh arm, the old arms' statistics kept."""
    from ratchet.core.strategy import build_strategies
    from ratchet.core.workspace import Workspace
    from ratchet.runner.service import Runner

    rates = {"concise": 0.2, "friendly": 0.5, "detailed": 0.8, "formal": 0.2}
    serve_and_reward(ws, 120, rates)
    ws.state.promote(reason="learned before the new style", author="test")
    serve_and_reward(ws, 120, rates, start=120)  # served by what was learned: the log the gate reads
    job = run(arch, arch.submit_feedback("Could you answer with bullet points? Paragraphs are hard to scan."))
    assert job.state == "succeeded", [(t["metrics"], t["failures"]) for t in job.tiers if t["tier"] == "full"]
    assert (job.version, job.bump, job.plan.rule) == ("v0.2.0", "minor", "new-reply-style")
    assert set(job.changed) == {".copier-answers.style-bullets.yml", "data/styles/bullets.yaml",
                                "tests/fast/style_bullets.yaml", "ratchet.toml", "state/schema.json",
                                "tests/micro/answer.yaml", "tests/full/architect.yaml"}
    assert all(t["ok"] for t in job.tiers) and "users asked: Could you answer with bullet points" in (
        ws.root / "data/styles/bullets.yaml").read_text()
    # gated off-policy: the old arms' estimate on the traffic the new arm leaves them, beside active's; the
    # new arm's share reported (a fresh arm wins some of the draws)
    (full,) = [t for t in job.tiers if t["tier"] == "full"]
    ope = {k: v for k, v in full["metrics"].items() if k.startswith("ope.")}
    assert set(ope) == {"ope.dr.style", "ope.dr.style.active", "ope.dr.style.unobserved"}, ope
    assert ope["ope.dr.style"] >= ope["ope.dr.style.active"] - 0.05 and 0.05 < ope["ope.dr.style.unobserved"] < 0.5

    fresh = Workspace.open(ws.root)
    bandit = build_strategies(fresh, fresh.plugins)["style"]
    assert bandit.arms == ["concise", "friendly", "detailed", "formal", "bullets"]
    section = bandit._view(fresh.state.read("active").document["strategies"]["style"])
    assert sum(section["pulls"][:4]) == 120 and section["pulls"][4] == 0  # what was learned is kept
    reply = Runner(fresh, seed=0, allow_overrides=True).call(
        "answer", {"question": "How do I reset my password?", "conversation_id": "after-1"},
        overrides={"params": {"style": "bullets"}})
    assert reply["style"] == "bullets" and "\n- " in reply["answer"]
    assert arch.process(arch.submit_feedback("bullet points please")).plan.actions == []  # done once


def test_a_new_style_is_refused_while_the_log_is_too_thin_to_judge_it(ws, arch):
    """The new-arm change carries an off-policy gate: with fewer logged calls than it needs, the full tier
    fails, saying how many there are, and main stays as it was."""
    serve_and_reward(ws, 20, {"concise": 0.2, "friendly": 0.5, "detailed": 0.8, "formal": 0.2})
    before = main_snapshot(ws)
    job = run(arch, arch.submit_feedback("Could you answer with bullet points?"))
    assert job.state == "failed" and job.plan.rule == "new-reply-style"
    (full,) = [t for t in job.tiers if t["tier"] == "full"]
    (failure,) = [f for f in full["failures"] if f["id"] == "architect-ope-bullets"]
    assert "20 logged calls with a reward and a propensity" in failure["reason"] and "at least 100" in failure["reason"]
    assert main_snapshot(ws) == before


def test_length_complaint_is_a_patch_and_staging_keeps_it(ws, arch):
    ws.state.read("staging")  # staging exists, as under a running tuner
    job = run(arch, arch.submit_feedback("answers are too long"))
    assert job.state == "succeeded", job.error
    assert (job.version, job.bump, job.changed) == ("v0.1.1", "patch", ["state/active.state.json"])
    assert job.schema_diff is None  # state alone cannot change a tool schema
    assert ws.state.read("active").document["params"]["max_sentences"] == 2
    assert ws.state.read("staging").document["params"]["max_sentences"] == 2


def test_full_tier_over_budget_leaves_main_and_tags_untouched(ws, arch):
    budgets = json.loads((ws.root / "ci/budgets.json").read_text())
    budgets["tiers"]["full"]["metrics"]["accuracy"] = 1.01  # unreachable
    (ws.root / "ci/budgets.json").write_text(json.dumps(budgets))
    git(ws.root, "commit", "-qam", "stricter full tier")
    before = main_snapshot(ws)
    snapshot = tree_snapshot(ws.root / "state")

    job = run(arch, arch.submit_feedback("answers are too long"))
    assert job.state == "failed" and job.version is None
    assert job.error.field == "tiers.full" and "accuracy" in job.error.detail and job.error.step == "tiers"
    assert [(t["tier"], t["ok"]) for t in job.tiers] == [("micro", True), ("fast", True), ("full", False)]
    assert main_snapshot(ws) == before
    assert tree_snapshot(ws.root / "state") == snapshot
    assert not (ws.runtime_dir / "jobs" / job.id / "worktree").exists()
    assert ws.store.last_event("job.failed")["payload"]["job"] == job.id


def test_tuner_promotions_during_a_job_are_kept_by_its_merge(ws, arch):
    job = arch.jobs.get(arch.submit_feedback("answers are too long").id)
    arch._plan_and_apply(job)
    arch._test(job)
    # While the job was testing, the tuner promoted twice, once touching the same value.
    ws.state.update("staging", lambda d: {**d, "params": {**d["params"], "top_k": 4}})
    ws.state.promote(reason="tuner 1", author="test")
    ws.state.update("staging", lambda d: {**d, "params": {**d["params"], "max_sentences": 5, "w_answer": 0.4}})
    ws.state.promote(reason="tuner 2", author="test")
    arch._merge(job)

    assert job.state == "succeeded" and job.version == "v0.1.3"
    params = ws.state.read("active").document["params"]
    assert (params["top_k"], params["w_answer"], params["max_sentences"]) == (4, 0.4, 2)  # both kept; the job's value wins
    assert ws.state.read("staging").document["params"]["max_sentences"] == 2  # the next promotion keeps it
    assert [t for t in git(ws.root, "tag", "-l").split()] == ["v0.1.0", "v0.1.1", "v0.1.2", "v0.1.3"]
    assert [t["tier"] for t in job.tiers if t.get("after_merge")] == ["micro"]  # re-tested after bringing main in
    log = git(ws.root, "log", "--format=%s", "v0.1.2..v0.1.3")
    assert "Merge main into architect job" in log


def test_a_planner_that_finds_nothing_fails_the_job_with_the_fix(ws, arch):
    before = main_snapshot(ws)
    job = run(arch, arch.submit_feedback("lovely weather today"))
    assert job.state == "failed" and "nothing to change" in job.error.detail
    assert "playbook" in job.error.fix
    assert main_snapshot(ws) == before


def test_time_limit_fails_the_job_and_names_the_setting(ws):
    (ws.root / "ratchet.toml").write_text((ws.root / "ratchet.toml").read_text().replace(
        "[architect]\n", "[architect]\njob_timeout_seconds = 0.01\n"))
    from ratchet.core.workspace import Workspace

    fresh = Workspace.open(ws.root)
    arch = Architect(fresh)
    job = arch.submit_feedback("answers are too long")
    time.sleep(0.05)
    job = run(arch, job)
    assert job.state == "failed" and job.error.field == "architect.job_timeout_seconds"
    assert git(ws.root, "tag", "-l").split() == ["v0.1.0"]


def test_a_queued_job_s_clock_starts_when_it_runs(ws, arch):
    """Time spent queued behind other jobs does not count against a job's limit."""
    arch.config.job_timeout_seconds = 0.01
    job = arch.submit_feedback("answers are too long")
    time.sleep(0.05)  # queued past what would have been its deadline
    arch.config.job_timeout_seconds = 600
    job = run(arch, job)
    assert job.state == "succeeded", job.error


def test_jobs_survive_a_restart(ws):
    first = Architect(ws)
    queued = first.submit_feedback("answers are too long")
    stuck = first.submit_feedback("answers are too short")
    record = first.jobs.get(stuck.id)
    record.state = "planning"  # as if the process died while planning
    first.jobs.save(record)

    second = Architect(ws)
    second.recover()
    assert second.get(stuck.id).state == "failed" and "stopped while the job was planning" in second.get(stuck.id).error.detail
    job_id, what = second._queue.get_nowait()
    assert (job_id, what) == (queued.id, "run")
    assert run(second, queued).state == "succeeded"


def test_a_wake_up_that_reached_no_architect_becomes_a_job_at_start(ws):
    from ratchet.ops.triggerer import WAKE_EVENT

    report = {"breaches": [{"kpi": "reward_rate", "value": 0.2, "slo": 0.5}], "kpis": {}, "at": 123.5}
    ws.emit(WAKE_EVENT, report)  # the Triggerer woke nobody: no architect was listening
    arch = Architect(ws)
    arch.recover()
    (job,) = arch.list()
    assert job.source == "wake" and job.request["report"] == report
    Architect(ws).recover()  # handled once only
    assert len(arch.list()) == 1


# --- planners are plugins ----------------------------------------------------------------------------


class _ScriptedPlanner:
    name = "scripted"

    def plan(self, request, session):
        return Plan(summary="set top_k", actions=[SetState(pointer="/params/top_k", value=5)])


class _PlannerPlugin:
    @hookimpl
    def ratchet_register_planners(self, register):
        register(_ScriptedPlanner())

    @hookimpl(tryfirst=True)
    def ratchet_select_planner(self, workspace, available):
        assert "scripted" in available and "playbook" in available
        return "scripted"


def test_hook_ratchet_register_planners_and_select_planner_choose_a_third_party_planner(ws):
    ws.plugins.pm.register(_PlannerPlugin(), name="scripted-planner")
    arch = Architect(ws)
    assert select_planner(ws).name == "scripted"
    job = run(arch, arch.submit_feedback("anything at all"))
    assert job.state == "succeeded" and job.planner == "scripted" and job.bump == "patch"


def test_hook_ratchet_select_planner_first_party_defaults(ws):
    assert select_planner(ws).name == "playbook"
    ws.config.architect.model = "openai:gpt-4o-mini"
    assert select_planner(ws).name == "llm"
    ws.config.architect.planner = "nope"
    with pytest.raises(ConfigError) as err:
        select_planner(ws)
    assert err.value.field == "architect.planner" and "playbook" in err.value.fix


class _HangingPlanner:
    """Plans ``hang`` as a model that never answers would: it waits until released."""

    name = "hanging"

    def __init__(self):
        self.release, self.waiting = threading.Event(), threading.Event()

    def plan(self, request, session):
        if request.text == "hang":
            self.waiting.set()
            self.release.wait(120)
            raise UserError("released by the test", fix="none needed")
        return Plan(summary="set top_k", actions=[SetState(pointer="/params/top_k", value=5)])


def test_a_hung_job_does_not_hold_up_the_next(ws):
    """Jobs run on a pool ([architect] max_parallel_jobs): one waiting on its model leaves the others room."""
    planner = _HangingPlanner()

    class Plugin:
        @hookimpl
        def ratchet_register_planners(self, register):
            register(planner)

    ws.plugins.pm.register(Plugin(), name="hanging-planner")
    arch = Architect(ws, planner="hanging")
    assert arch.config.max_parallel_jobs == 2
    arch.start()
    try:
        hung = arch.submit_feedback("hang")
        assert planner.waiting.wait(60)
        second = arch.submit_feedback("answers are too long")
        deadline = time.monotonic() + 120
        while not arch.get(second.id).final and time.monotonic() < deadline:
            time.sleep(0.2)
        assert arch.get(second.id).state == "succeeded", arch.get(second.id).error
        assert arch.get(hung.id).state == "planning"
        assert git(ws.root, "tag", "-l").split() == ["v0.1.0", "v0.1.1"]
    finally:
        planner.release.set()
        arch.stop()


def test_duplicate_planner_names_are_refused(ws):
    from ratchet.core.errors import PluginError

    class Dupe:
        @hookimpl
        def ratchet_register_planners(self, register):
            register(_ScriptedPlanner())
            register(_ScriptedPlanner())

    ws.plugins.pm.register(Dupe(), name="dupe")
    with pytest.raises(PluginError, match="already registered"):
        select_planner(ws)


def test_job_session_steps_sent_together_apply_one_at_a_time(ws, arch):
    """A chat model's parallel tool calls reach the session from several threads at once: each change
    must land (no lost update of the state file, no half-written file read back)."""
    import threading

    from ratchet.architect.service import JobSession

    job = arch.open_job("four state changes at once, three times")
    session = JobSession(arch, job)
    for round in (1, 2, 3):  # a lost update does not happen every time: give it three chances
        changes = {"/params/top_k": 3 + round, "/params/min_score": 0.1 * round,
                   "/params/w_question": 0.5 + 0.1 * round, "/params/w_answer": 0.1 * round}
        errors = errors_at_once(lambda pointer, value: session.apply(
            {"kind": "set_state", "pointer": pointer, "value": value}), list(changes.items()))
        assert errors == []
        params = json.loads((session.worktree.path / "state/active.state.json").read_text())["params"]
        assert {f"/params/{k}": params[k] for k in ("top_k", "min_score", "w_question", "w_answer")} == changes
    assert len(arch.jobs.get(job.id).actions) == 12


def test_job_worktrees_made_and_removed_at_once_all_succeed(ws):
    """Jobs run in parallel ([architect] max_parallel_jobs): a second `git worktree add` or `branch -D`
    fails on the first one's lock files instead of waiting."""
    from ratchet.architect.worktree import JobWorktree

    head = ws.versions.head()

    def make_and_drop(i: int) -> None:
        wt = JobWorktree(ws, f"parallel{i:04d}")
        for _ in range(3):
            wt.create(head)
            wt.remove()

    errors = errors_at_once(make_and_drop, [(i,) for i in range(6)])
    assert errors == []
    assert git(ws.root, "branch", "--list", "ratchet/job-*") == ""
