"""Per-decision cost of the Thompson family's Monte Carlo propensity.

``decide`` with the default ``propensity_draws`` (256) against the same call with 0 (no propensity
logged), for each sampling policy on K = 4 and K = 9 arms with some data in the posterior. Reports the
median over repeated timings in microseconds and writes ``bench/results/propensity_cost.json``.

    python bench/propensity_cost.py
"""

from __future__ import annotations

import json
import statistics
import timeit
from pathlib import Path

import numpy as np

from ratchet.plugins.tuner_strategies import bandits as B

POLICIES = (B.ThompsonSampling, B.GaussianThompsonSampling, B.DiscountedThompson, B.GLRThompson, B.LinThompson)


def cost_us(st: B.BanditStrategy, section: dict, context: dict, repeat: int = 7, number: int = 300) -> float:
    rng = np.random.default_rng(0)
    times = timeit.repeat(lambda: st.decide(section, context, rng), repeat=repeat, number=number)
    return statistics.median(times) / number * 1e6


def main() -> None:
    rows = []
    context = {"features": {"x": 1.0}}
    for k in (4, 9):
        arms = [f"a{i}" for i in range(k)]
        for cls in POLICIES:
            extra = {"features": ["x"]} if cls is B.LinThompson else {}
            on = cls("k", cls.Config(arms=arms, **extra))
            off = cls("k", cls.Config(arms=arms, propensity_draws=0, **extra))
            means = np.linspace(0.1, 0.9, k)
            section = B.simulate(off, means, 500, seed=0, full=True).section  # a posterior with data
            with_p, without = cost_us(on, section, context), cost_us(off, section, context)
            rows.append({"policy": cls.name, "arms": k, "draws": on.config.propensity_draws,
                         "decide_us": round(with_p, 1), "decide_without_propensity_us": round(without, 1),
                         "propensity_us": round(with_p - without, 1)})
    print("| policy | K | decide (µs) | without propensity (µs) | propensity (µs) |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['policy']} | {r['arms']} | {r['decide_us']} | {r['decide_without_propensity_us']} "
              f"| {r['propensity_us']} |")
    out = Path(__file__).parent / "results" / "propensity_cost.json"
    out.write_text(json.dumps({"draws": 256, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
