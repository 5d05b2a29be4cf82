"""The dashboard's Strategies page and a chart bucket's conversations on a big store.

    .venv/bin/python bench/dashboard_strategies.py [--calls 1000000] [--repeat 5] [--store-url URL] [--reuse DIR]

Makes a default workspace (strategy ``style``: Thompson sampling over 4 arms) and writes ``--calls``
runner calls (turns with a latency), as many decisions (with propensities) and as many ``reward`` events
carrying the joined decision, spread over the last 24 hours, straight into the store (SQLite by default,
or ``--store-url``; ``--reuse DIR`` times a workspace an earlier run filled, printed on stderr). Then times, in process, cold (first) and warm (median of ``--repeat``):

- the Strategies page's series (``views.strategy_kpis``: reward per choice and latency p95 per bucket,
  each reading at most the newest 50,000 rows of its log),
- the page's beliefs and KPI tables (``views.strategies``),
- the conversations of a 1-minute, a 1-hour and a 24-hour bucket (``activity.conversations``: at most
  50,000 rows read per log),
- the off-policy estimates on the last 5,000 calls (``estimates.estimates``; then the cache's answer).

Prints a markdown table and writes bench/results/dashboard_strategies.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DAY = 86_400.0
ARMS = ["concise", "friendly", "detailed", "formal"]
MEANS = {"concise": 0.3, "friendly": 0.5, "detailed": 0.4, "formal": 0.7}


def fill_store(store, calls: int, start: float, batch: int = 50_000) -> None:
    """Per call: a turn, the decision of ``style`` and a reward that carries it (as the tuner stores it)."""
    from ratchet.core.stores.schema import decisions, feedback, turns

    rng = random.Random(0)
    step = DAY / calls
    for first in range(0, calls, batch):
        rows_t, rows_d, rows_f = [], [], []
        for i in range(first, min(first + batch, calls)):
            ts, cid = start + i * step, f"c{i}"
            arm = ARMS[rng.randrange(4)] if rng.random() < 0.4 else "formal"
            p = 0.1 + 0.6 * (arm == "formal")  # explores: every arm has a positive propensity
            value = 1.0 if rng.random() < MEANS[arm] else 0.0
            rows_t.append({"conversation_id": cid, "ts": ts, "tool": "answer", "arguments": {}, "version": "v0.1.0",
                           "latency_ms": rng.lognormvariate(3.0, 0.5), "error": "boom" if rng.random() < 0.01 else None})
            rows_d.append({"conversation_id": cid, "ts": ts, "version": "v0.1.0", "strategy": "style", "choice": arm,
                           "propensity": p, "sticky": True, "info": {}, "features": {}})
            rows_f.append({"event_id": f"e{i}", "ts": ts + 1, "tool": "reward", "conversation_id": cid, "payload": {
                "args": {"conversation_id": cid, "value": value},
                "decisions": {"conversation_id": {"style": {"choice": arm, "propensity": p, "features": {}}}}}})
        with store.engine.begin() as conn:
            conn.execute(turns.insert(), rows_t)
            conn.execute(decisions.insert(), rows_d)
            conn.execute(feedback.insert(), rows_f)


def timed(fn, repeat: int) -> dict[str, float]:
    t0 = time.perf_counter()
    fn()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return {"cold_s": round(cold, 3), "warm_median_s": round(statistics.median(warm), 3) if warm else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--store-url", default=None)
    parser.add_argument("--reuse", type=Path, default=None, help="a workspace an earlier run filled")
    args = parser.parse_args()

    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins
    from ratchet.core.workspace import Workspace
    from ratchet.versions.dashboard import activity, estimates, views

    if args.store_url:
        os.environ["RATCHET_STORE_URL"] = args.store_url
    if args.reuse:
        ws, filled = Workspace.open(args.reuse), None
        first = ws.store.engine.connect().exec_driver_sql("SELECT min(ts), count(*) FROM turns").one()
        now, args.calls = first[0] + DAY, first[1]
    else:
        root = Path(tempfile.mkdtemp(prefix="ratchet-bench-strategies-")) / "ws"
        create_workspace(root, plugins=load_plugins(), author="bench")
        ws = Workspace.open(root)
        now = time.time()
        t0 = time.perf_counter()
        fill_store(ws.store, args.calls, now - DAY)
        filled = round(time.perf_counter() - t0, 1)
        print(f"filled {args.calls} calls, decisions and rewards in {filled:.0f} s into {root}", file=sys.stderr)

    mid = now - DAY / 2
    cache = estimates.Cache()
    rows = {
        "strategies page series (reward per choice, latency p95)": timed(lambda: views.strategy_kpis(ws), args.repeat),
        "strategies page beliefs and tables": timed(lambda: views.strategies(ws), args.repeat),
        "conversations of a 1-minute bucket (first page)": timed(
            lambda: activity.conversations(ws.store, mid, mid + 60), args.repeat),
        "conversations of a 1-hour bucket (first page)": timed(
            lambda: activity.conversations(ws.store, mid, mid + 3600), args.repeat),
        "conversations of a 24-hour bucket (first page, cut at 50,000 rows)": timed(
            lambda: activity.conversations(ws.store, now - DAY, now), args.repeat),
        "off-policy estimates, last 5,000 calls, 6 candidates": timed(
            lambda: estimates.estimates(ws, "style", 5000), 0),
        "off-policy estimates, cached": timed(lambda: cache.get(ws, "style", 5000), args.repeat),
    }
    kinds = {k: v for k, v in rows.items()}
    print(f"\n| {args.calls:,} calls, store {ws.store.engine.dialect.name} | cold s | warm median s |")
    print("| --- | --- | --- |")
    for name, r in kinds.items():
        print(f"| {name} | {r['cold_s']} | {r['warm_median_s'] if r['warm_median_s'] is not None else ''} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dashboard_strategies.json").write_text(json.dumps(
        {"calls": args.calls, "store": ws.store.engine.dialect.name, "fill_seconds": filled,
         "timings": rows, "machine": {"cpus": os.cpu_count()}}, indent=2) + "\n")


if __name__ == "__main__":
    main()
