"""Regret of the bandit strategies on standard Bernoulli problems, against the Lai-Robbins bound.

Problems: 9 arms (0.1 ... 0.9), 2 arms (0.45 / 0.55), and the 9-arm problem whose means reverse at
horizon/2. Feedback is applied after every event (batch 1) or every 50 events (promotion every 50).
Regret is the cumulative *expected* regret (sum of mu* - mu_choice). Prints markdown tables and writes
``bench/results/bandit_regret.json``.

    python bench/bandit_regret.py                 # 50 seeds, horizon 10000
    python bench/bandit_regret.py --seeds 20
    python bench/bandit_regret.py --quick         # 3 seeds, horizon 2000
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from ratchet.plugins.tuner_strategies.bandits import BANDITS, kl_bernoulli, simulate

PROBLEMS = {
    "bern9": np.linspace(0.1, 0.9, 9),
    "bern2": np.array([0.45, 0.55]),
    "bern9_reversed": np.linspace(0.1, 0.9, 9),  # means reversed at horizon / 2
}
BATCHES = (1, 50)
POLICIES = {cls.name: cls for cls in BANDITS}


def make(name: str, k: int):
    cls = POLICIES[name]
    return cls("bench", cls.Config(arms=[f"arm{i}" for i in range(k)]))  # defaults; linear: intercept only


def checkpoints(horizon: int) -> list[int]:
    """Log-spaced steps (1-based) at which regret is recorded, for a Kaufmann et al. style log-t plot."""
    pts = {int(round(x)) for x in np.logspace(1, math.log10(horizon), 13)}
    return sorted(p for p in pts if 1 <= p <= horizon)


def lai_robbins(means: np.ndarray, horizon: int) -> float:
    """sum over suboptimal arms of (mu* - mu_a) / KL(mu_a, mu*) * log T."""
    best = means.max()
    sub = means[means < best]
    return float(np.sum((best - sub) / kl_bernoulli(sub, best)) * math.log(horizon))


def run_one(task: tuple[str, str, int, int, int]) -> tuple[tuple[str, str, int], list[float], float]:
    name, problem, batch, seed, horizon = task
    means = PROBLEMS[problem]
    change = {"change_at": horizon // 2, "new_means": means[::-1]} if problem == "bern9_reversed" else {}
    t0 = time.perf_counter()
    regret = simulate(make(name, len(means)), means, horizon, seed, batch=batch, **change)
    return (name, problem, batch), [float(regret[c - 1]) for c in checkpoints(horizon)], time.perf_counter() - t0


def t_quantile(n: int) -> float:
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, n - 1))
    except Exception:  # noqa: BLE001 -- scipy is optional here
        return 1.96


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--horizon", type=int, default=10000)
    ap.add_argument("--quick", action="store_true", help="3 seeds, horizon 2000")
    ap.add_argument("--procs", type=int, default=2, help="worker processes (at most 2 are used)")
    ap.add_argument("--policies", nargs="*", default=list(POLICIES), choices=list(POLICIES))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bandit_regret.json")
    args = ap.parse_args()
    seeds, horizon = (3, 2000) if args.quick else (args.seeds, args.horizon)

    tasks = [(n, p, b, s, horizon) for n in args.policies for p in PROBLEMS for b in BATCHES for s in range(seeds)]
    t0 = time.perf_counter()
    with mp.Pool(max(1, min(2, args.procs))) as pool:
        results = pool.map(run_one, tasks, chunksize=4)
    wall = time.perf_counter() - t0

    curves: dict[tuple, list[list[float]]] = {}
    secs: dict[str, list[float]] = {}
    for key, curve, dt in results:
        curves.setdefault(key, []).append(curve)
        secs.setdefault(key[0], []).append(dt)
    tq = t_quantile(seeds)
    cps = checkpoints(horizon)
    bounds = {p: lai_robbins(m, horizon) for p, m in PROBLEMS.items() if p != "bern9_reversed"}

    rows = []
    for (name, problem, batch), cs in sorted(curves.items()):
        a = np.asarray(cs)
        final = a[:, -1]
        ci = tq * final.std(ddof=1) / math.sqrt(len(final)) if len(final) > 1 else float("nan")
        rows.append({"policy": name, "problem": problem, "batch": batch, "mean_regret": float(final.mean()),
                     "ci95": float(ci), "median_regret": float(np.median(final)),
                     "mean_curve": a.mean(axis=0).tolist()})

    def cell(name, problem, batch):
        r = next(r for r in rows if (r["policy"], r["problem"], r["batch"]) == (name, problem, batch))
        return f"{r['mean_regret']:.1f} ± {r['ci95']:.1f}"

    cols = [(p, b) for p in PROBLEMS for b in BATCHES]
    print(f"\nMean cumulative regret at T={horizon} (± 95% CI, {seeds} seeds); wall {wall:.0f} s\n")
    print("| policy | " + " | ".join(f"{p} b={b}" for p, b in cols) + " | s/run |")
    print("|---" * (len(cols) + 2) + "|")
    for name in args.policies:
        print(f"| {name} | " + " | ".join(cell(name, p, b) for p, b in cols) + f" | {np.mean(secs[name]):.2f} |")
    print("| Lai-Robbins bound | " + " | ".join(f"{bounds[p]:.1f}" if p in bounds else "n/a" for p, _ in cols) + " | |")

    # Kaufmann et al. (2012) Fig. 1 style: regret against log t on bern9, batch 1, with the bound's slope
    print("\nbern9, batch 1: mean regret at log-spaced t (bound = Lai-Robbins constant * log t)\n")
    shown = [c for c in cps if c in (10, 100, 1000) or c == cps[-1] or c in cps[::3]]
    print("| policy | " + " | ".join(f"t={c}" for c in shown) + " |")
    print("|---" * (len(shown) + 1) + "|")
    for name in args.policies:
        r = next(r for r in rows if (r["policy"], r["problem"], r["batch"]) == (name, "bern9", 1))
        print(f"| {name} | " + " | ".join(f"{r['mean_curve'][cps.index(c)]:.1f}" for c in shown) + " |")
    lr = bounds["bern9"] / math.log(horizon)
    print("| Lai-Robbins | " + " | ".join(f"{lr * math.log(c):.1f}" for c in shown) + " |")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "horizon": horizon, "seeds": seeds, "batches": list(BATCHES), "wall_seconds": wall,
        "problems": {p: m.tolist() for p, m in PROBLEMS.items()}, "change_at": horizon // 2,
        "lai_robbins": bounds, "checkpoints": cps,
        "seconds_per_run": {n: float(np.mean(v)) for n, v in secs.items()},
        "results": rows,
    }, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
