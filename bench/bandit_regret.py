"""Regret of the bandit strategies on standard Bernoulli problems, against the Lai-Robbins bound.

Problems (horizon T, 50 fixed seeds 0..49 by default; the same seed draws the same rewards for every policy):

- ``bern9``: 9 arms 0.1 ... 0.9; ``bern2``: 2 arms 0.45 / 0.55 (stationary);
- ``bern9_reversed``: the 9 arms' means reversed at T/2; ``bern3_reversed``: 0.2 / 0.5 / 0.8 reversed at T/2
  (abrupt changes);
- ``bern3_drift``: 0.2 / 0.5 / 0.8 moving linearly to 0.8 / 0.5 / 0.2 over the run (slow drift);
- ``ctx2``: contextual, a binary feature ``x`` drawn uniformly; arm rates x=0: 0.7 / 0.3, x=1: 0.3 / 0.7;
  ``ctx2_flip``: the same, the rates swapping at T/2. Linear policies get ``features = ["x"]``; the others
  cannot see the context.

Every policy runs with its class defaults; VARIANTS add rows with other settings on the problems that
chose those defaults. Feedback is applied after every event (batch 1) or every 50
events (promotion every 50). Regret is the cumulative *expected* regret (sum of mu* - mu_choice). Prints
markdown tables (mean ± standard error) and writes ``bench/results/bandit_regret.json``.

    python bench/bandit_regret.py                 # 50 seeds, horizon 10000
    python bench/bandit_regret.py --seeds 20 --problems bern3_reversed bern9
    python bench/bandit_regret.py --quick         # 3 seeds, horizon 2000
    python bench/bandit_regret.py --merge --problems ctx2 --policies lin_ucb   # redo some rows, keep the rest
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from ratchet.plugins.tuner_strategies.bandits import BANDITS, kl_bernoulli, simulate, simulate_contextual

PROBLEMS = {  # the means at step 0 (bench/servers.py reads these too)
    "bern9": np.linspace(0.1, 0.9, 9),
    "bern2": np.array([0.45, 0.55]),
    "bern9_reversed": np.linspace(0.1, 0.9, 9),  # means reversed at horizon / 2
    "bern3_reversed": np.array([0.2, 0.5, 0.8]),  # means reversed at horizon / 2
    "bern3_drift": np.array([0.2, 0.5, 0.8]),  # moving linearly to the reverse by the last step
}
REVERSED = ("bern9_reversed", "bern3_reversed")
CTX = np.array([[0.7, 0.3], [0.3, 0.7]])  # CTX[x][arm]
CONTEXTUAL = {"ctx2": (CTX, None), "ctx2_flip": (CTX, CTX[:, ::-1])}  # rates from the start, after T/2
STATIONARY = ("bern9", "bern2")
BATCHES = (1, 50)
POLICIES = {cls.name: cls for cls in BANDITS}
LINEAR = ("lin_ucb", "lin_thompson")
_GLR_CHOICE = ("bern9", "bern2", "bern3_reversed", "bern3_drift")
VARIANTS = {  # label: (policy, settings, problems)
    "glr_thompson:delta=0.1": ("glr_thompson", {"delta": 0.1}, _GLR_CHOICE),
    "glr_thompson:delta=0.001": ("glr_thompson", {"delta": 0.001}, _GLR_CHOICE),
    "glr_thompson:window=2000": ("glr_thompson", {"window": 2000}, _GLR_CHOICE),
    "glr_thompson:restart=local": ("glr_thompson", {"restart": "local"}, _GLR_CHOICE),
    "lin_ucb:gamma=0.999": ("lin_ucb", {"gamma": 0.999}, tuple(CONTEXTUAL)),
    "lin_thompson:gamma=0.999": ("lin_thompson", {"gamma": 0.999}, tuple(CONTEXTUAL)),
}


def make(name: str, k: int, features: list[str] | None = None):
    """The policy (or variant) with its class defaults; linear ones get ``features`` (none: intercept only)."""
    policy, settings, _ = VARIANTS.get(name, (name, {}, ()))
    cls = POLICIES[policy]
    extra = {"features": features} if features and policy in LINEAR else {}
    return cls("bench", cls.Config(arms=[f"arm{i}" for i in range(k)], **extra, **settings))


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
    t0 = time.perf_counter()
    if problem in CONTEXTUAL:
        before, after = CONTEXTUAL[problem]
        change = {"change_at": horizon // 2, "new_means": after} if after is not None else {}
        regret = simulate_contextual(make(name, before.shape[1], ["x"]), before, horizon, seed, batch=batch,
                                     features=["x"], **change)
    else:
        means = PROBLEMS[problem]
        change = {"change_at": horizon // 2, "new_means": means[::-1]} if problem in REVERSED else {}
        if problem == "bern3_drift":
            change = {"end_means": means[::-1]}
        regret = simulate(make(name, len(means)), means, horizon, seed, batch=batch, **change)
    return (name, problem, batch), [float(regret[c - 1]) for c in checkpoints(horizon)], time.perf_counter() - t0


def merged(old: dict, new: dict) -> dict:
    """``new``'s rows over ``old``'s: a row is replaced when this run redid its (policy, problem, batch)."""
    if old["horizon"] != new["horizon"]:
        raise SystemExit(f"--merge: {old['horizon']=} differs from this run's {new['horizon']}; "
                         "use the same --horizon or another --out")
    redone = {(r["policy"], r["problem"], r["batch"]) for r in new["results"]}
    kept = [{"seeds": old["seeds"], **r} for r in old["results"]
            if (r["policy"], r["problem"], r["batch"]) not in redone]
    out = {**old, "results": kept + new["results"], "seeds": old["seeds"],
           "wall_seconds": old.get("wall_seconds", 0.0) + new["wall_seconds"]}
    for key in ("problems", "contextual", "variants", "lai_robbins", "seconds_per_run"):
        out[key] = {**old.get(key, {}), **new[key]}
    out["reversed"] = sorted(set(old.get("reversed", [])) | set(new["reversed"]))
    return out


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
    ap.add_argument("--policies", nargs="*", default=[*POLICIES, *VARIANTS], choices=[*POLICIES, *VARIANTS])
    problems_all = [*PROBLEMS, *CONTEXTUAL]
    ap.add_argument("--problems", nargs="*", default=problems_all, choices=problems_all)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bandit_regret.json")
    ap.add_argument("--merge", action="store_true", help="keep the rows of --out that this run does not redo "
                    "(same horizon only); each row records its number of seeds")
    args = ap.parse_args()
    seeds, horizon = (3, 2000) if args.quick else (args.seeds, args.horizon)

    runs = {n: [p for p in args.problems if n in POLICIES or p in VARIANTS[n][2]] for n in args.policies}
    tasks = [(n, p, b, s, horizon) for n in args.policies for p in runs[n] for b in BATCHES for s in range(seeds)]
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
    bounds = {p: lai_robbins(PROBLEMS[p], horizon) for p in STATIONARY if p in args.problems}

    rows = []
    for (name, problem, batch), cs in sorted(curves.items()):
        a = np.asarray(cs)
        final = a[:, -1]
        se = final.std(ddof=1) / math.sqrt(len(final)) if len(final) > 1 else float("nan")
        rows.append({"policy": name, "problem": problem, "batch": batch, "seeds": len(final),
                     "mean_regret": float(final.mean()),
                     "se": float(se), "ci95": float(tq * se), "median_regret": float(np.median(final)),
                     "max_regret": float(final.max()), "mean_curve": a.mean(axis=0).tolist()})

    def row(name, problem, batch):
        return next((r for r in rows if (r["policy"], r["problem"], r["batch"]) == (name, problem, batch)), None)

    def cell(r):
        return f"{r['mean_regret']:.1f} ± {r['se']:.1f}" if r else "—"

    print(f"\nMean cumulative regret at T={horizon} (± standard error, {seeds} seeds); wall {wall:.0f} s")
    for batch in BATCHES:
        print(f"\nbatch {batch}\n")
        print("| policy | " + " | ".join(args.problems) + " | s/run |")
        print("|---" * (len(args.problems) + 2) + "|")
        for name in args.policies:
            cells = [cell(row(name, p, batch)) for p in args.problems]
            print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(secs[name]):.2f} |")
        print("| Lai-Robbins bound | " + " | ".join(f"{bounds[p]:.1f}" if p in bounds else "n/a"
                                                  for p in args.problems) + " | |")

    if "bern9" in args.problems:
        # Kaufmann et al. (2012) Fig. 1 style: regret against log t on bern9, batch 1, with the bound's slope
        print("\nbern9, batch 1: mean regret at log-spaced t (bound = Lai-Robbins constant * log t)\n")
        shown = [c for c in cps if c in (10, 100, 1000) or c == cps[-1] or c in cps[::3]]
        print("| policy | " + " | ".join(f"t={c}" for c in shown) + " |")
        print("|---" * (len(shown) + 1) + "|")
        for name in (n for n in args.policies if row(n, "bern9", 1)):
            r = row(name, "bern9", 1)
            print(f"| {name} | " + " | ".join(f"{r['mean_curve'][cps.index(c)]:.1f}" for c in shown) + " |")
        lr = bounds["bern9"] / math.log(horizon)
        print("| Lai-Robbins | " + " | ".join(f"{lr * math.log(c):.1f}" for c in shown) + " |")

    data = {
        "horizon": horizon, "seeds": seeds, "batches": list(BATCHES), "wall_seconds": wall,
        "problems": {p: PROBLEMS[p].tolist() for p in args.problems if p in PROBLEMS},
        "contextual": {p: [m.tolist() for m in CONTEXTUAL[p] if m is not None] for p in args.problems
                       if p in CONTEXTUAL},
        "variants": {n: {"policy": v[0], "settings": v[1]} for n, v in VARIANTS.items() if n in args.policies},
        "change_at": horizon // 2, "reversed": [p for p in REVERSED if p in args.problems],
        "drift": "bern3_drift: linear from the means to their reverse over the horizon",
        "lai_robbins": bounds, "checkpoints": cps,
        "seconds_per_run": {n: float(np.mean(v)) for n, v in secs.items()},
        "results": rows,
    }
    if args.merge and args.out.exists():
        data = merged(json.loads(args.out.read_text()), data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
