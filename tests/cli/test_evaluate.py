"""``ratchet evaluate``: off-policy estimates of a candidate over the workspace's decision log."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from helpers import serve_and_reward
from ratchet.cli import cli

GOOD = {"concise": 0.1, "friendly": 0.1, "detailed": 0.9, "formal": 0.1}


def evaluate(ws_path, *args, code=0):
    result = CliRunner().invoke(cli, ["evaluate", "-w", str(ws_path), *map(str, args)], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def estimates(ws_path, *args):
    return json.loads(evaluate(ws_path, *args, "--json").output)["strategies"]["style"]


@pytest.fixture
def logged(ws, ws_path):
    return serve_and_reward(ws, 160, GOOD)


def test_evaluate_the_logging_policy_itself_matches_what_was_observed(ws_path, logged):
    out = estimates(ws_path, "--state", "active")
    assert out["n"] == 160 and out["skipped"] == 0
    assert out["observed"]["value"] == pytest.approx(sum(logged) / len(logged))
    for name in ("ips", "snips", "dr"):
        e = out["estimates"][name]
        assert e["low"] <= e["value"] <= e["high"] and e["n"] == 160 and e["ci"] == "normal"
        assert e["value"] == pytest.approx(out["observed"]["value"], abs=0.1)


def test_evaluate_staging_that_learned_the_best_style_estimates_it_better(ws_path, logged):
    out = estimates(ws_path)  # staging by default
    observed = out["observed"]["value"]
    for name in ("snips", "dr"):
        assert out["estimates"][name]["value"] > observed + 0.2, name
        assert out["estimates"][name]["value"] == pytest.approx(0.9, abs=0.15)
    table = evaluate(ws_path).output
    for word in ("ips", "snips", "dr", "observed (logged policy)", "95% CI", "staging on style: 160 logged calls"):
        assert word in table


def test_evaluate_another_strategy_and_other_parameters(ws_path, logged):
    out = estimates(ws_path, "--strategy", "ucb1")  # adopts what active learned: nothing yet, so untried arms
    assert out["n"] == 160 and out["estimates"]["ips"]["value"] == pytest.approx(out["observed"]["value"], abs=0.15)
    label = json.loads(evaluate(ws_path, "--param", "prior=[1, 9]", "--json").output)["candidate"]
    assert label == "glr_thompson prior=[1, 9]"


def test_evaluate_windows(ws, ws_path, logged):
    assert estimates(ws_path, "--last", 50)["n"] == 50
    assert estimates(ws_path, "--since", "v0.1.0")["n"] == 160
    result = evaluate(ws_path, "--since", "v9.0.0", code=3)
    assert "0 logged calls" in result.output and "--last" in result.output


def test_evaluate_refuses_bad_input_with_the_field_and_fix(ws_path, logged, tmp_path):
    assert "--param: 'gamma'" in evaluate(ws_path, "--param", "gamma", code=3).output
    assert "--state cannot be combined" in evaluate(ws_path, "--state", "active", "--strategy", "ucb1", code=3).output
    assert "unknown strategy 'nope'" in evaluate(ws_path, "--strategy", "nope", code=6).output
    assert "no file" in evaluate(ws_path, "--state", tmp_path / "missing.json", code=3).output
    assert "min-samples" not in evaluate(ws_path, "--min-samples", 500, code=3).output  # names the window
    assert "at least 500" in evaluate(ws_path, "--min-samples", 500, code=3).output
