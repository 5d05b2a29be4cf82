"""Coverage of the off-policy estimates' 95% intervals in the demo's simulated world.

Each seeded trial: the demo's simulated users (``ratchet.demo.simulation``: hidden preferences over four
reply styles, before the drift) are served by Thompson sampling, the workspace's default policy, with
its logged Monte Carlo propensities; active learns from the rewards in promotions of 50 events, as the
tuner does. From the ``--calls`` logged calls IPS, SNIPS and DR estimate three candidates built from the
final state: ``staging`` (Thompson sampling with everything learned), ``ucb1`` and ``exp3`` (each
adopting that state). Then each candidate's true reward is measured two ways: its expected reward per
call under the hidden preferences (exact for UCB1 and EXP3, 200,000 posterior draws for Thompson), and
the mean reward of ``--online`` calls it serves to fresh simulated users with its state frozen. A trial
counts as covered when the interval holds the true value. Coverage is also reported over the trials whose
effective sample size reaches the ``ope`` case kind's default ``min_ess`` (30), the ones a tier would judge. Prints a table and writes
``bench/results/ope_coverage.json``.

    python bench/ope_coverage.py                 # 100 trials, 1000 logged calls each
    python bench/ope_coverage.py --trials 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ratchet.core.ope import ESTIMATORS, LoggedCall, evaluate
from ratchet.core.strategy import FeedbackEvent
from ratchet.demo.simulation import STYLES, Preferences, Users
from ratchet.plugins.tuner_strategies import bandits as B

PROMOTE_EVERY = 50
TRUTH_DRAWS = 200_000
MIN_ESS = 30  # the ope case kind's default min_ess: below it a tier refuses to answer


def candidates(final: dict) -> dict[str, tuple[B.BanditStrategy, dict]]:
    arms = list(STYLES)
    ts = B.ThompsonSampling("style", B.ThompsonConfig(arms=arms))
    out = {"staging (thompson)": (ts, final)}
    for cls in (B.UCB1, B.Exp3):
        st = cls("style", cls.Config(arms=arms))
        out[cls.name] = (st, st.adopt("thompson", final) or st.initial_state())
    return out


def expected_reward(st: B.BanditStrategy, section: dict, means: np.ndarray, rng: np.random.Generator) -> float:
    if isinstance(st, B.PosteriorSampling):
        wins = st._draw(st._posterior_params(section, {}), rng, TRUTH_DRAWS).argmax(axis=1)
        return float(means[wins].mean())
    p = st.choice_probabilities(section, {}, rng)
    return float(sum(p[a] * means[i] for i, a in enumerate(st.arms)))


def trial(seed: int, calls: int, online: int) -> dict:
    prefs = Preferences(drift_at=float("inf"))
    table = prefs.at(0.0)
    means = np.array([table[s] for s in STYLES])
    users = Users(prefs, ["where is my parcel?"], seed=seed)
    logger = B.ThompsonSampling("style", B.ThompsonConfig(arms=list(STYLES)))
    rng = np.random.default_rng(seed)
    active, pending, logged = logger.initial_state(), [], []
    for n in range(calls):
        d = logger.decide(active, {}, rng)
        r = users.reward(n, 0.0, d.choice)
        logged.append(LoggedCall(d.choice, d.propensity, r))
        pending.append(FeedbackEvent(event_id=str(n), tool="reward", payload={"value": r}, decision=d))
        if len(pending) == PROMOTE_EVERY:
            active, pending = logger.apply(active, pending), []
    final = logger.apply(active, pending)
    out = {}
    fresh = Users(prefs, ["where is my parcel?"], seed=10_000 + seed)
    for name, (st, section) in candidates(final).items():
        ev = evaluate(logged, list(STYLES), lambda f, st=st, section=section: st.choice_probabilities(section, f, rng))
        quiet = type(st)("style", st.config.model_copy(update={"propensity_draws": 0})) \
            if isinstance(st, B.PosteriorSampling) else st
        served = [fresh.reward(n, 0.0, quiet.decide(section, {}, rng).choice) for n in range(online)]
        out[name] = {"expected": expected_reward(st, section, means, rng), "online": float(np.mean(served)),
                     "observed": ev.observed.value, "ess": ev.estimates["ips"].ess,
                     **{k: [e.value, e.low, e.high] for k, e in ev.estimates.items()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--calls", type=int, default=1000, help="logged calls per trial")
    ap.add_argument("--online", type=int, default=2000, help="calls each candidate serves to measure its reward")
    args = ap.parse_args()
    started = time.perf_counter()
    trials = [trial(seed, args.calls, args.online) for seed in range(args.trials)]
    names = list(trials[0])
    summary = {}
    for name in names:
        rows = [t[name] for t in trials]
        summary[name] = {"expected_mean": float(np.mean([r["expected"] for r in rows])),
                         "observed_mean": float(np.mean([r["observed"] for r in rows])),
                         "ess_mean": float(np.mean([r["ess"] for r in rows]))}
        for k in ESTIMATORS:
            v = np.array([r[k] for r in rows])
            answered = np.array([r["ess"] >= MIN_ESS for r in rows])
            summary[name]["answered"] = int(answered.sum())
            for truth in ("expected", "online"):
                t = np.array([r[truth] for r in rows])
                hit = (v[:, 1] <= t) & (t <= v[:, 2])
                summary[name][f"{k}_covers_{truth}"] = float(np.mean(hit))
                summary[name][f"{k}_covers_{truth}_answered"] = float(np.mean(hit[answered])) if answered.any() else None
            e = np.array([r["expected"] for r in rows])
            summary[name][f"{k}_bias"] = float(np.mean(v[:, 0] - e))
            summary[name][f"{k}_width"] = float(np.mean(v[:, 2] - v[:, 1]))
    seconds = time.perf_counter() - started
    print(f"{args.trials} trials, {args.calls} logged calls each, {seconds:.0f} s\n")
    print(f"| candidate | true reward | estimator | covers expected | covers online | bias | CI width | mean ESS "
          f"| trials with ESS >= {MIN_ESS} | covers expected there |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in summary.items():
        for k in ESTIMATORS:
            there = s[f"{k}_covers_expected_answered"]
            print(f"| {name} | {s['expected_mean']:.3f} | {k} | {s[f'{k}_covers_expected']:.0%} "
                  f"| {s[f'{k}_covers_online']:.0%} | {s[f'{k}_bias']:+.4f} | {s[f'{k}_width']:.3f} "
                  f"| {s['ess_mean']:.0f} | {s['answered']} | {'-' if there is None else f'{there:.0%}'} |")
    out = Path(__file__).parent / "results" / "ope_coverage.json"
    out.write_text(json.dumps({"trials": args.trials, "calls": args.calls, "online": args.online,
                               "promote_every": PROMOTE_EVERY, "min_ess": MIN_ESS, "interval": "95%, normal approximation",
                               "seconds": round(seconds, 1), "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
