"""Ranking recovery of the Bradley–Terry preference strategy.

20 variants with true log-strengths drawn from N(0, 1) per seed; comparisons between uniformly random
pairs with outcomes drawn from the Bradley–Terry model, folded in through ``Preference.apply`` (no
servers). After 200, 1,000 and 5,000 comparisons (one stream per seed) it records Kendall tau and
Spearman rho between fitted and true strengths, top-1 accuracy (fitted best = true best), the mean
standard error, and 95% coverage of the centred strengths by theta +- 1.96 se. For context, Kendall tau
of ranking by raw win rate. Prints a markdown table and writes ``bench/results/preference.json``.

    python bench/preference.py               # 20 seeds
    python bench/preference.py --seeds 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from ratchet.core.strategy import FeedbackEvent
from ratchet.plugins.tuner_strategies.preference import Preference

ITEMS = 20
CHECKPOINTS = (200, 1000, 5000)


def run_seed(seed: int) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal(ITEMS)
    names = [f"v{i}" for i in range(ITEMS)]
    st = Preference("bench", Preference.Config(variants=names))
    section, done, out = st.initial_state(), 0, {}
    for n in CHECKPOINTS:
        events = []
        for t in range(done, n):
            i, j = rng.choice(ITEMS, 2, replace=False)
            if rng.random() >= 1 / (1 + np.exp(truth[j] - truth[i])):
                i, j = j, i
            events.append(FeedbackEvent(event_id=str(t), tool="prefer_variants",
                                        payload={"winner": names[i], "loser": names[j]}))
        section, done = st.apply(section, events), n
        fit = section["fit"]
        assert fit["n"] == n  # checkpoints are multiples of refit_every: the fit is current
        theta, se = np.asarray(fit["theta"]), np.asarray(fit["se"])
        k = st.kpis(section)
        win_rate = [k["win_rate"][v] if k["win_rate"][v] is not None else 0.5 for v in names]
        centred = truth - truth.mean()
        out[n] = {
            "kendall_tau": float(kendalltau(theta, truth).statistic),
            "spearman": float(spearmanr(theta, truth).statistic),
            "top1": float(np.argmax(theta) == np.argmax(truth)),
            "mean_se": float(se.mean()),
            "coverage95": float(np.mean(np.abs(theta - centred) <= 1.96 * se)),
            "win_rate_tau": float(kendalltau(win_rate, truth).statistic),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "preference.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    runs = [run_seed(seed) for seed in range(args.seeds)]
    wall = time.perf_counter() - t0
    metrics = list(runs[0][CHECKPOINTS[0]])
    summary = {n: {m: {"mean": float(np.mean([r[n][m] for r in runs])), "sd": float(np.std([r[n][m] for r in runs]))}
                   for m in metrics} for n in CHECKPOINTS}
    print(f"Bradley–Terry ({ITEMS} variants, log-strengths ~ N(0, 1), {args.seeds} seeds, uniform random pairs; "
          f"mean ± sd)\n")
    print("| comparisons | Kendall τ | Spearman ρ | top-1 | mean se | 95% coverage | win-rate τ |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in CHECKPOINTS:
        s = summary[n]
        print(f"| {n:,} | {s['kendall_tau']['mean']:.3f} ± {s['kendall_tau']['sd']:.3f} "
              f"| {s['spearman']['mean']:.3f} ± {s['spearman']['sd']:.3f} | {s['top1']['mean']:.2f} "
              f"| {s['mean_se']['mean']:.3f} | {s['coverage95']['mean']:.2f} "
              f"| {s['win_rate_tau']['mean']:.3f} ± {s['win_rate_tau']['sd']:.3f} |")
    print(f"\nwall time {wall:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"items": ITEMS, "seeds": args.seeds, "checkpoints": list(CHECKPOINTS),
                                    "wall_seconds": wall, "summary": {str(n): summary[n] for n in CHECKPOINTS},
                                    "per_seed": [{str(n): r[n] for n in CHECKPOINTS} for r in runs]}, indent=1))


if __name__ == "__main__":
    main()
