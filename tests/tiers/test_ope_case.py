"""The ``ope`` case kind: a tier refuses a state whose off-policy estimate is worse than active's."""

from __future__ import annotations

import json

import pytest

from helpers import commit_all, git, serve_and_reward
from ratchet.core.workspace import Workspace
from ratchet.tiers.harness import load_cases, run_tiers

RATES = {"concise": 0.1, "friendly": 0.1, "detailed": 0.9, "formal": 0.1}


def prefer(ws_root, style: str, path: str = "state/active.state.json") -> None:
    """Make the state file's bandit all but certain that ``style`` is best."""
    file = ws_root / path
    doc = json.loads(file.read_text())
    sec = doc["strategies"]["style"]
    for i, arm in enumerate(sec["arms"]):
        sec["pulls"][i] = 500
        sec["alpha"][i], sec["beta"][i] = (450.0, 50.0) if arm == style else (50.0, 450.0)
        sec["reward_sum"][i] = sec["alpha"][i] - 1
    file.write_text(json.dumps(doc, indent=2))


def ope_tier(ws, **fields) -> None:
    folder = ws.root / "tests" / "full"
    for old in folder.glob("*.yaml"):
        old.unlink()
    (folder / "ope.yaml").write_text(json.dumps([{"id": "not-worse", "ope": fields}]))


@pytest.fixture
def logged(ws):
    """160 calls logged by the initial (uniform) Thompson state, rewarded: 'detailed' is the good style."""
    return serve_and_reward(ws, 160, RATES)


def run_full(ws):
    (result,) = run_tiers(ws, "full", "http://127.0.0.1:9/unused-no-call-is-made")
    return result


def test_ope_case_refuses_a_worse_state(ws, logged):
    prefer(ws.root, "concise")
    ope_tier(ws, estimator="dr", margin=0.05, min_samples=100)
    result = run_full(ws)
    assert not result.ok and result.failed == 1
    reason = result.failures[0]["reason"]
    assert reason.startswith("ope style: dr estimate of tested") and "below active's" in reason
    assert "margin 0.05 (160 logged calls)" in reason
    assert result.metrics["ope.dr.style"] < result.metrics["ope.dr.style.active"] - 0.05
    # a gate: it fails the tier by itself, whatever the pass rate of the other cases
    assert "tiers.full.ope: gate 'not-worse' failed" in " ".join(result.violations)
    ope_tier(ws, estimator="dr", margin=0.05, min_samples=100, gate=False)
    assert not any(".ope: gate" in v for v in run_full(ws).violations)


def test_ope_case_passes_a_better_state_and_records_both_estimates(ws, logged):
    prefer(ws.root, "detailed")
    ope_tier(ws, estimator="snips", margin=0.0, min_samples=100)
    result = run_full(ws)
    assert result.failed == 0 and result.passed == 1, result.failures  # (its budget wants other cases too)
    assert result.metrics["ope.snips.style"] == pytest.approx(0.9, abs=0.1)
    assert result.metrics["ope.snips.style.active"] == pytest.approx(sum(logged) / len(logged), abs=0.1)


def test_ope_case_too_few_samples_says_so(ws, logged):
    ope_tier(ws, min_samples=1000)
    reason = run_full(ws).failures[0]["reason"]
    assert "160 logged calls with a reward and a propensity" in reason and "at least 1000" in reason
    assert "(min_samples 1000)" in reason and "Fix: widen the window" in reason
    ope_tier(ws, min_samples=100, last=50)  # the window counts too
    assert "50 logged calls" in run_full(ws).failures[0]["reason"]


def test_ope_case_candidate_file_and_validation(ws, logged):
    (ws.root / "state" / "candidate.json").write_text((ws.root / "state" / "active.state.json").read_text())
    prefer(ws.root, "concise", "state/candidate.json")
    ope_tier(ws, candidate="state/candidate.json", margin=0.05)
    assert "dr estimate of state/candidate.json" in run_full(ws).failures[0]["reason"]
    (case,) = load_cases(ws, "full")
    assert case.ope.estimator == "dr" and case.tool is None and not case.is_call


def test_ope_case_in_a_worktree_reads_the_main_workspace_log(ws, logged, tmp_path):
    """An Architect job tests its change in a git worktree whose own store is empty: the log is main's."""
    commit_all(ws.root)
    wt_path = tmp_path / "job"
    git(ws.root, "worktree", "add", "-q", "-b", "job", str(wt_path))
    wt = Workspace.open(wt_path)
    prefer(wt_path, "concise")
    ope_tier(wt, margin=0.05)
    result = run_full(wt)
    assert "below active's" in result.failures[0]["reason"] and "(160 logged calls)" in result.failures[0]["reason"]


def test_ope_case_refuses_a_candidate_the_log_cannot_judge(ws, logged):
    """A candidate that all but always plays what the log rarely holds has a tiny effective sample size."""
    prefer(ws.root, "detailed")
    ope_tier(ws, margin=1.0, min_ess=200)  # any estimate passes the margin; the ESS floor does not
    reason = run_full(ws).failures[0]["reason"]
    assert "effective sample size of" in reason and "(min_ess 200)" in reason and "Fix: log more calls" in reason


def test_tuner_promotion_records_the_estimate_in_the_versions_api(ws, logged):
    """An ope case in the micro tier judges the staging document the tuner promotes; its estimates are kept
    in the version's eval summary and shown by the Versions API."""
    import anyio
    from fastapi.testclient import TestClient

    from ratchet.tuner.service import Tuner
    from ratchet.versions.app import create_app

    (ws.root / "tests" / "micro" / "ope.yaml").write_text(
        "- id: ope-not-worse\n  ope: {estimator: dr, margin: 0.02, min_samples: 100}\n")
    outcome = anyio.run(Tuner(ws).promote)
    assert outcome["promoted"] and outcome["version"] == "v0.1.1", outcome
    client = TestClient(create_app(ws))
    ope = client.get("/versions/v0.1.1").json()["ope"]
    assert ope["ope.dr.style"] == pytest.approx(0.9, abs=0.15)  # staging learned that 'detailed' is best
    assert ope["ope.dr.style.active"] == pytest.approx(sum(logged) / len(logged), abs=0.1)
    assert client.get("/versions/v0.1.1/evals").json()["ope"] == ope
    assert client.get("/versions/v0.1.0").json()["ope"] == {}


def new_arm_worktree(ws, tmp_path, arm: str = "bullets") -> Workspace:
    """An Architect-like job's worktree whose style bandit has one more arm, never served."""
    commit_all(ws.root)
    wt_path = tmp_path / "job"
    git(ws.root, "worktree", "add", "-q", "-b", "job", str(wt_path))
    toml = wt_path / "ratchet.toml"
    toml.write_text(toml.read_text().replace('"detailed", "formal"]', f'"detailed", "formal", "{arm}"]'))
    schema = wt_path / "state" / "schema.json"
    schema.write_text(schema.read_text().replace('"detailed", "formal"]', f'"detailed", "formal", "{arm}"]'))
    return Workspace.open(wt_path)


def test_ope_case_judges_a_new_arm_on_the_traffic_it_leaves_to_the_existing_arms(ws, logged, tmp_path):
    """The new arm was never served, so nothing says what it earns: its share is reported, not counted, and
    the rest of the candidate (the active state's arms) is not worse than active: the case passes."""
    wt = new_arm_worktree(ws, tmp_path)
    ope_tier(wt, estimator="dr", margin=0.05, min_samples=100)
    result = run_full(wt)
    assert result.failed == 0 and result.passed == 1, result.failures
    share = result.metrics["ope.dr.style.unobserved"]
    assert 0.1 < share < 0.3  # a fresh Beta(1, 1) arm among four with 40 calls each wins about a fifth of the draws
    assert result.metrics["ope.dr.style"] == pytest.approx(result.metrics["ope.dr.style.active"], abs=0.05)
    assert "ope.dr.style.active.unobserved" not in result.metrics


def test_ope_case_refuses_a_new_arm_that_comes_with_worse_old_arms(ws, logged, tmp_path):
    wt = new_arm_worktree(ws, tmp_path)
    prefer(wt.root, "concise")
    ope_tier(wt, estimator="dr", margin=0.05, min_samples=100)
    result = run_full(wt)
    reason = result.failures[0]["reason"]
    assert not result.ok and "below active's" in reason, reason
    assert "of its probability is on choices no logged call made (bullets), not estimated)" in reason
    assert result.metrics["ope.dr.style"] < result.metrics["ope.dr.style.active"] - 0.05
    ope_tier(wt, estimator="dr", margin=1.0, min_samples=100, min_ess=0, max_unobserved=0.0)  # a cap on the share
    assert "> max_unobserved 0" in run_full(wt).failures[0]["reason"]
