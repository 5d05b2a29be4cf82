"""Off-policy estimators: hand-computed cases, refusals, and unbiasedness on a simulated problem."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ratchet.core.ope import OPEError, LoggedCall, evaluate

ARMS = ["a", "b"]


def always(arm):
    return lambda features: {arm: 1.0}


def test_hand_computed_ips_snips_dr():
    calls = [LoggedCall("a", 0.5, 1.0), LoggedCall("b", 0.5, 0.0), LoggedCall("a", 0.25, 1.0),
             LoggedCall("b", 0.75, 1.0)]
    ev = evaluate(calls, ARMS, always("a"))
    ips, snips, dr = ev.estimates["ips"], ev.estimates["snips"], ev.estimates["dr"]
    # weights w = [2, 0, 4, 0]
    assert ips.value == pytest.approx(1.5)
    se = math.sqrt(11 / 3) / 2  # sd of [2, 0, 4, 0] over sqrt(4)
    assert (ips.low, ips.high) == pytest.approx((1.5 - 1.959964 * se, 1.5 + 1.959964 * se))
    assert ips.ess == pytest.approx(36 / 20) and ips.n == 4 and ips.ci == "normal"
    assert snips.value == pytest.approx(1.0) and (snips.low, snips.high) == pytest.approx((1.0, 1.0))
    # DR, 2 folds (even, odd calls): the even calls are scored with q = [0.5, 0.5] fitted on the odd ones
    # (arm a unseen there: the overall mean), the odd ones with q = [1, 1]: values [1.5, 1, 2.5, 1]
    assert dr.value == pytest.approx(1.5)
    assert ev.observed.value == pytest.approx(0.75) and ev.n == 4 and ev.skipped == 0


def test_candidate_equal_to_the_logging_policy_gets_the_observed_mean():
    rng = np.random.default_rng(0)
    calls = [LoggedCall(a, 0.5, float(rng.random() < (0.3 if a == "a" else 0.7)))
             for a in rng.choice(ARMS, 200)]
    ev = evaluate(calls, ARMS, lambda f: {"a": 0.5, "b": 0.5})
    for name in ("ips", "snips"):
        assert ev.estimates[name].value == pytest.approx(ev.observed.value)
        assert ev.estimates[name].ess == pytest.approx(200)
    assert ev.estimates["dr"].value == pytest.approx(ev.observed.value, abs=0.03)  # plus the model's mean error


def test_calls_without_propensity_are_skipped_and_counted():
    calls = [LoggedCall("a", None, 1.0)] * 3 + [LoggedCall("a", 0.5, 1.0), LoggedCall("b", 0.5, 0.0)]
    ev = evaluate(calls, ARMS, always("a"))
    assert ev.n == 2 and ev.skipped == 3


def test_too_few_samples_says_how_many_and_how_to_fix():
    with pytest.raises(OPEError) as err:
        evaluate([LoggedCall("a", 0.5, 1.0)] * 5 + [LoggedCall("a", None, 1.0)], ARMS, always("a"), min_samples=10)
    assert "5 logged calls" in err.value.message and "1 without a propensity" in err.value.message
    assert err.value.field == "window" and "--last" in err.value.fix


def test_deterministic_logging_refuses_a_different_candidate():
    calls = [LoggedCall("a", 1.0, 1.0)] * 20
    with pytest.raises(OPEError) as err:
        evaluate(calls, ARMS, always("b"))
    assert "did not explore" in err.value.message and "thompson" in err.value.fix
    # the same policy can still be compared with itself
    assert evaluate(calls, ARMS, always("a")).estimates["ips"].value == pytest.approx(1.0)


def test_partly_deterministic_logging_warns():
    calls = [LoggedCall("a", 1.0, 1.0)] * 20 + [LoggedCall("b", 0.5, 0.0)] * 20 + [LoggedCall("a", 0.5, 1.0)] * 20
    ev = evaluate(calls, ARMS, lambda f: {"a": 0.5, "b": 0.5})
    assert ev.unsupported == pytest.approx(1 / 6) and "could not make" in ev.warnings[0]


def test_estimators_are_unbiased_and_cover_on_a_known_problem():
    """Two contexts, three arms, a stochastic logging policy and a different candidate: over many
    simulated logs the mean estimate is the true value (within 3 standard errors) and the 95%
    intervals cover it about 95% of the time."""
    arms = ["x", "y", "z"]
    means = {"c0": np.array([0.2, 0.5, 0.8]), "c1": np.array([0.7, 0.4, 0.1])}
    logging = {"c0": np.array([0.5, 0.3, 0.2]), "c1": np.array([0.2, 0.3, 0.5])}
    candidate = {"c0": np.array([0.1, 0.2, 0.7]), "c1": np.array([0.6, 0.3, 0.1])}
    truth = 0.5 * sum(float(candidate[c] @ means[c]) for c in means)
    rng = np.random.default_rng(42)
    reps, n = 200, 200
    found = {"ips": [], "snips": [], "dr": []}
    covered = dict.fromkeys(found, 0)
    for _ in range(reps):
        calls = []
        for _ in range(n):
            c = "c0" if rng.random() < 0.5 else "c1"
            k = int(rng.choice(3, p=logging[c]))
            calls.append(LoggedCall(arms[k], float(logging[c][k]), float(rng.random() < means[c][k]), {"ctx": c}))
        ev = evaluate(calls, arms, lambda f: dict(zip(arms, candidate[f["ctx"]])))
        for name, e in ev.estimates.items():
            found[name].append(e.value)
            covered[name] += e.low <= truth <= e.high
    for name, values in found.items():
        values = np.asarray(values)
        assert abs(values.mean() - truth) < 3 * values.std() / math.sqrt(reps), name
        assert 0.9 <= covered[name] / reps <= 0.99, (name, covered[name])


def test_low_effective_sample_size_warns():
    calls = [LoggedCall("a", 0.95, 1.0)] * 95 + [LoggedCall("b", 0.05, 0.0)] * 5
    ev = evaluate(calls, ARMS, always("b"))
    assert ev.estimates["ips"].ess == pytest.approx(5) and "effective sample size 5 of 100" in ev.warnings[0]


def test_a_strategy_without_choice_probabilities_cannot_be_evaluated(ws):
    from ratchet.core.evaluation import Candidate, evaluate_candidate
    from ratchet.core.strategy import Strategy, StrategyConfig

    class Continuous(Strategy):  # keeps the contract's default choice_probabilities (None), like CMA-ES
        name, family = "continuous", "test"
        initial_state = state_schema = feedback_tools = lambda self: {}
        decide = apply = lambda self, *a: None

    st = Continuous("style", StrategyConfig())
    with pytest.raises(OPEError) as err:
        evaluate_candidate(ws, Candidate("c", {}, {"style": st}), "style", [LoggedCall("a", 0.5, 1.0)] * 3)
    assert "cannot give its choice probabilities" in err.value.message and "bandit" in err.value.fix


# --- choices no logged call made (a new arm) -----------------------------------------------------------


def _uniform_log(n=400, seed=1):
    """a earns 0.3, b 0.7; logged by a uniform policy over a and b."""
    rng = np.random.default_rng(seed)
    return [LoggedCall(a, 0.5, float(rng.random() < (0.3 if a == "a" else 0.7))) for a in rng.choice(ARMS, n)]


def test_a_new_choice_is_reported_and_not_counted_as_good_or_bad():
    """A candidate that keeps the logging policy but sends 20% of the calls to a never-logged arm c: the
    estimates are of its other choices (renormalised: the logging policy itself), c's share is reported."""
    calls = _uniform_log()
    plain = evaluate(calls, ARMS, lambda f: {"a": 0.5, "b": 0.5})
    with_c = evaluate(calls, [*ARMS, "c"], lambda f: {"a": 0.4, "b": 0.4, "c": 0.2})
    for name in ("ips", "snips", "dr"):
        assert with_c.estimates[name].value == pytest.approx(plain.estimates[name].value)
    assert with_c.unobserved == pytest.approx(0.2) and with_c.unobserved_choices == {"c": pytest.approx(0.2)}
    assert with_c.new_only == 0 and with_c.n == 400 and "20.0% of the candidate's probability" in with_c.warnings[0]
    assert plain.unobserved == 0 and plain.unobserved_choices == {}
    assert with_c.to_dict()["unobserved_choices"] == {"c": pytest.approx(0.2)}


def test_a_new_choice_does_not_hide_that_the_rest_got_worse():
    """Adding c and moving the rest of the traffic to the worse arm a: the estimate on the logged choices
    falls to a's reward (0.3), well below the logging policy's (0.5)."""
    calls = _uniform_log()
    worse = evaluate(calls, [*ARMS, "c"], lambda f: {"a": 0.7, "b": 0.1, "c": 0.2})
    truth = (0.7 * 0.3 + 0.1 * 0.7) / 0.8
    for name in ("ips", "snips", "dr"):
        e = worse.estimates[name]
        assert e.low < truth < e.high and e.high < 0.5, (name, e)
    assert worse.unobserved == pytest.approx(0.2)


def test_a_candidate_making_only_new_choices_cannot_be_judged():
    calls = _uniform_log(50)
    with pytest.raises(OPEError) as err:
        evaluate(calls, [*ARMS, "c"], always("c"))
    assert "50 of 50 logged calls the candidate would only make choices no logged call made (c)" in err.value.message
    assert err.value.field == "candidate" and "let the tuner try them" in err.value.fix
    # contexts where it makes only new choices are left out and counted; the others are judged
    ctx = [LoggedCall(c.choice, c.propensity, c.reward, {"vip": i % 2 == 0}) for i, c in enumerate(calls)]
    ev = evaluate(ctx, [*ARMS, "c"], lambda f: {"c": 1.0} if f["vip"] else {"b": 1.0})
    assert ev.new_only == 25 and ev.n == 25 and ev.unobserved == pytest.approx(0.5)
