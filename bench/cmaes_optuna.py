"""The CMA-ES and Optuna strategies against calling pycma / Optuna directly.

CMA-ES: evaluations until a candidate reaches f < 1e-3 on the 10-D sphere sum((x-1)^2) and the 10-D
Rosenbrock function, on [-5, 5]^10 from x0 = 0 with sigma0 = 0.2 of the range (2.0), pycma's default
popsize (10). "Strategy" runs decide -> score (-f) -> apply after every event, in process, no servers;
"pycma" runs ``es.ask()``/``es.tell()`` with the same options and pycma's own seeding. Runs that do
not reach the target within ``--max-evals`` count as failures (Rosenbrock has a local minimum). Also
the wall time of a tell round trip: the ``apply`` of a generation's last score (load the pickle, tell,
ask, store), against an ordinary ``apply`` of one score.

Optuna: best f found after 500 evaluations on the 5-D sphere sum(x^2) on [-5, 5]^5. "Strategy" is the
strategy (pool 8, so 8 trials pending, TPE with the constant liar; and pool 1, sequential) applying
after every event, the study in memory; "Optuna" is ``study.ask``/``study.tell`` one at a time with the
same sampler settings (multivariate TPE, constant liar).

Prints markdown tables and writes ``bench/results/cmaes_optuna.json``.

    python bench/cmaes_optuna.py                       # 20 CMA seeds per function, 5 Optuna seeds
    python bench/cmaes_optuna.py --cma-seeds 5 --optuna-seeds 2 --optuna-evals 200   # quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

from ratchet.core.strategy import FeedbackEvent
from ratchet.plugins.tuner_strategies.cmaes import CMAES, _cma
from ratchet.plugins.tuner_strategies.optuna_tpe import OptunaTPE, _optuna

DIM = 10
TARGET = 1e-3
NAMES = [f"x{i}" for i in range(DIM)]


def sphere(x: np.ndarray) -> float:
    return float(np.sum((x - 1.0) ** 2))


def rosenbrock(x: np.ndarray) -> float:
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


FUNCTIONS = {"sphere": sphere, "rosenbrock": rosenbrock}


def cma_strategy(task: tuple[str, int, int]) -> dict:
    fname, seed, max_evals = task
    f = FUNCTIONS[fname]
    st = CMAES("bench", CMAES.Config(dimensions={n: {"low": -5.0, "high": 5.0, "x0": 0.0} for n in NAMES},
                                     sigma0=0.2, seed=seed))
    section, rng = st.initial_state(), np.random.default_rng(seed)
    tell_ms, plain_ms = [], []
    for n in range(1, max_evals + 1):
        d = st.decide(section, {}, rng)
        y = f(np.array([d.choice[k] for k in NAMES]))
        generation = section["generation"]
        t0 = time.perf_counter()
        section = st.apply(section, [FeedbackEvent(event_id=str(n), tool="score", payload={"value": -y},
                                                   decision=d, ts=float(n))])
        (tell_ms if section["generation"] != generation else plain_ms).append((time.perf_counter() - t0) * 1e3)
        if y < TARGET:
            return {"evals": n, "tell_ms": statistics.median(tell_ms), "apply_ms": statistics.median(plain_ms),
                    "state_kb": len(json.dumps(section)) / 1024}
    return {"evals": None, "tell_ms": statistics.median(tell_ms), "apply_ms": statistics.median(plain_ms),
            "state_kb": len(json.dumps(section)) / 1024}


def cma_direct(task: tuple[str, int, int]) -> dict:
    fname, seed, max_evals = task
    f = FUNCTIONS[fname]
    es = _cma().CMAEvolutionStrategy([0.0] * DIM, 0.2, {
        "bounds": [-5.0, 5.0], "CMA_stds": [10.0] * DIM, "seed": seed + 1, "verbose": -9, "verb_log": 0})
    n = 0
    while n < max_evals:
        xs = es.ask()
        ys = [f(np.asarray(x)) for x in xs]
        for y in ys:
            n += 1
            if y < TARGET:
                return {"evals": n}
        es.tell(xs, ys)
    return {"evals": None}


def optuna_strategy(task: tuple[int, int, int]) -> float:
    seed, evals, pool = task
    space = {f"x{i}": {"type": "float", "low": -5.0, "high": 5.0} for i in range(5)}
    st = OptunaTPE("bench", OptunaTPE.Config(space=space, seed=seed, pool=pool))
    section, rng, best = st.initial_state(), np.random.default_rng(seed), float("inf")
    for n in range(evals):
        d = st.decide(section, {}, rng)
        y = float(sum(v * v for v in d.choice.values()))
        best = min(best, y)
        section = st.apply(section, [FeedbackEvent(event_id=str(n), tool="score", payload={"value": -y},
                                                   decision=d, ts=float(n))])
    return best


def optuna_direct(task: tuple[int, int, int]) -> float:
    seed, evals, _ = task
    optuna = _optuna()
    dist = {f"x{i}": optuna.distributions.FloatDistribution(-5.0, 5.0) for i in range(5)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for _ in range(evals):
        trial = study.ask(dist)
        study.tell(trial, float(sum(v * v for v in trial.params.values())))
    return float(study.best_value)


def _run(task):
    kind, args = task
    t0 = time.perf_counter()
    out = {"cma_strategy": cma_strategy, "cma_direct": cma_direct, "optuna_strategy": optuna_strategy,
           "optuna_direct": optuna_direct}[kind](args)
    return kind, args, out, time.perf_counter() - t0


def _median(values):
    return statistics.median(values) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cma-seeds", type=int, default=20)
    ap.add_argument("--rosenbrock-seeds", type=int, default=None, help="default: --cma-seeds")
    ap.add_argument("--max-evals", type=int, default=30000)
    ap.add_argument("--optuna-seeds", type=int, default=5)
    ap.add_argument("--optuna-evals", type=int, default=500)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cmaes_optuna.json")
    args = ap.parse_args()
    seeds = {"sphere": args.cma_seeds, "rosenbrock": args.rosenbrock_seeds or args.cma_seeds}
    tasks = [(kind, (fname, seed, args.max_evals)) for fname in FUNCTIONS for seed in range(seeds[fname])
             for kind in ("cma_strategy", "cma_direct")]
    tasks += [(kind, (seed, args.optuna_evals, pool)) for seed in range(args.optuna_seeds)
              for kind, pool in (("optuna_strategy", 8), ("optuna_strategy", 1), ("optuna_direct", 0))]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(max(1, min(args.procs, 2))) as pool:
        results = pool.map(_run, tasks, chunksize=1)
    wall = time.perf_counter() - t0

    cma: dict = {}
    for fname in FUNCTIONS:
        row = {}
        for kind in ("cma_strategy", "cma_direct"):
            runs = [(out, dt) for k, a, out, dt in results if k == kind and a[0] == fname]
            evals = [o["evals"] for o, _ in runs if o["evals"] is not None]
            row[kind] = {"seeds": len(runs), "reached": len(evals), "median_evals": _median(evals),
                         "mean_evals": statistics.fmean(evals) if evals else None,
                         "evals": [o["evals"] for o, _ in runs],
                         "seconds_per_run": statistics.fmean(dt for _, dt in runs)}
            if kind == "cma_strategy":
                row[kind].update({k: _median([o[k] for o, _ in runs]) for k in ("tell_ms", "apply_ms", "state_kb")})
        s, d = row["cma_strategy"]["median_evals"], row["cma_direct"]["median_evals"]
        row["ratio"] = s / d if s and d else None
        cma[fname] = row
    opt: dict = {}
    for label, kind, pool_size in (("strategy, pool 8", "optuna_strategy", 8),
                                   ("strategy, pool 1", "optuna_strategy", 1), ("Optuna directly", "optuna_direct", 0)):
        runs = [(out, dt) for k, a, out, dt in results if k == kind and a[2] == pool_size]
        opt[label] = {"median_best": _median([o for o, _ in runs]), "best": [o for o, _ in runs],
                      "seconds_per_run": statistics.fmean(dt for _, dt in runs)}

    print(f"\n### CMA-ES, 10-D, evaluations to f < {TARGET:g} (max {args.max_evals})\n")
    print("| function | seeds | strategy: reached, median evals | pycma: reached, median evals | ratio (goal <= 1.1) "
          "| tell round trip ms | other apply ms | section KB |")
    print("|---|---|---|---|---|---|---|---|")
    for fname, row in cma.items():
        s, d = row["cma_strategy"], row["cma_direct"]
        print(f"| {fname} | {s['seeds']} | {s['reached']}/{s['seeds']}, {s['median_evals']} | "
              f"{d['reached']}/{d['seeds']}, {d['median_evals']} | "
              f"{row['ratio']:.3f} | {s['tell_ms']:.2f} | {s['apply_ms']:.3f} | {s['state_kb']:.1f} |"
              if row["ratio"] else f"| {fname} | {s['seeds']} | {s['reached']} | {d['reached']} | n/a | | | |")
    print(f"\n### Optuna TPE, 5-D sphere, best f after {args.optuna_evals} evaluations ({args.optuna_seeds} seeds)\n")
    print("| run | median best f | seconds per run |")
    print("|---|---|---|")
    for label, row in opt.items():
        print(f"| {label} | {row['median_best']:.4g} | {row['seconds_per_run']:.1f} |")
    print(f"\nwall time {wall:.0f} s, {min(args.procs, 2)} processes")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "cmaes": cma, "optuna": opt, "target": TARGET, "dim": DIM, "max_evals": args.max_evals,
        "optuna_evals": args.optuna_evals, "seeds": seeds, "optuna_seeds": args.optuna_seeds,
        "pycma": _cma().__version__, "optuna_version": _optuna().__version__, "python": platform.python_version(),
        "wall_seconds": round(wall, 1)}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
