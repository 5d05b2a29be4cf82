"""Series for the Strategies page, aggregated in the store per time bucket (as :mod:`series` does for the
overview): each strategy's reward per choice, and the runner's latency p95.

- Reward per choice: ``reward`` feedback carries the decisions the tuner joined when it took the event
  (``payload.decisions.conversation_id.KEY.choice``), so the mean reward of each of a strategy's named
  choices (a bandit's arms) per bucket is one ``GROUP BY`` over the feedback log, no join. Strategies
  whose choices are not names (a CMA-ES point, a rule's params) have no such series.
- Latency p95: per bucket, the two closest ranks of the calls' latencies (window functions, on SQLite
  and PostgreSQL) interpolated as the Triggerer does (:func:`ratchet.ops.triggerer._p95`).

Bounded: each log is read from the newest row back for at most :data:`SCAN` rows; a longer history is
shown from where that reading stopped (the answer's ``since``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ratchet.core.stores.schema import feedback, turns
from ratchet.versions.dashboard.series import REWARD_TOOL
from ratchet.versions.dashboard.rollup import bucket_of

if TYPE_CHECKING:
    from ratchet.core.stores.sql import Store

SCAN = 50_000  # rows read per log at most (about 0.3 s each on SQLite: bench/dashboard_strategies.py)
CHOICES = 12  # choices drawn per strategy at most (the most rewarded)


def since(store: Store, table, start: float, end: float) -> float:
    """``start``, or later: the ``ts`` of the :data:`SCAN`-th newest row of ``table`` in ``[start, end]``."""
    q = (sa.select(table.c.ts).where(table.c.ts >= start, table.c.ts <= end).order_by(table.c.ts.desc())
         .offset(SCAN - 1).limit(1))
    with store.reader.connect() as conn:
        found = conn.execute(q).scalar()
    return max(start, found) if found is not None else start


def reward_by_choice(store: Store, key: str, start: float, end: float, width: int) -> dict[str, Any]:
    """``{since, choices, buckets: [{t, n, mean, by: {choice: {n, mean}}}]}``: strategy ``key``'s rewards
    per bucket of ``width`` seconds, in total and per named choice (the :data:`CHOICES` most rewarded)."""
    start = since(store, feedback, start // width * width, end)
    f = feedback.c
    value = f.payload[("args", "value")].as_float()
    choice = f.payload[("decisions", "conversation_id", key, "choice")].as_string().label("choice")
    bucket = bucket_of(store, f.ts, width).label("b")
    q = (sa.select(bucket, choice, sa.func.count(value), sa.func.sum(value))
         .where(f.tool == REWARD_TOOL, f.ts >= start, f.ts <= end, choice.is_not(None)).group_by(bucket, choice))
    with store.reader.connect() as conn:
        rows = conn.execute(q).all()
    totals: dict[str, int] = {}
    for _, c, n, _ in rows:
        totals[c] = totals.get(c, 0) + n
    shown = sorted(totals, key=lambda c: (-totals[c], c))[:CHOICES]
    buckets: dict[int, dict[str, Any]] = {}
    for b, c, n, total in rows:
        if not n:
            continue
        have = buckets.setdefault(b, {"t": b * width, "n": 0, "sum": 0.0, "by": {}})
        have["n"] += n
        have["sum"] += float(total)
        if c in shown:
            have["by"][c] = {"n": n, "mean": float(total) / n}
    out = [{"t": v["t"], "n": v["n"], "mean": v["sum"] / v["n"], "by": v["by"]} for _, v in sorted(buckets.items())]
    return {"since": start, "choices": sorted(shown), "buckets": out}


def latency_p95(store: Store, start: float, end: float, width: int) -> dict[str, Any]:
    """``{since, buckets: [{t, n, p95}]}``: the p95 of the runner's call latencies (ms) per bucket."""
    start = since(store, turns, start // width * width, end)
    t = turns.c
    bucket = bucket_of(store, t.ts, width).label("b")
    ranked = (sa.select(bucket, t.latency_ms.label("ms"),
                        sa.func.row_number().over(partition_by=bucket, order_by=t.latency_ms).label("rn"),
                        sa.func.count().over(partition_by=bucket).label("n"))
              .where(t.ts >= start, t.ts <= end, t.latency_ms.is_not(None)).subquery())
    low = (ranked.c.n - 1) * 95 // 100  # integer division on both databases: the rank below the p95
    q = (sa.select(ranked.c.b, ranked.c.n, ranked.c.rn, ranked.c.ms)
         .where(ranked.c.rn >= low + 1, ranked.c.rn <= low + 2).order_by(ranked.c.b, ranked.c.rn))
    with store.reader.connect() as conn:
        rows = conn.execute(q).all()
    found: dict[int, tuple[int, list[float]]] = {}
    for b, n, _, ms in rows:
        found.setdefault(b, (n, []))[1].append(float(ms))
    out = []
    for b, (n, values) in sorted(found.items()):
        rank = (n - 1) * 0.95
        lo = (n - 1) * 95 // 100
        high = values[1] if len(values) > 1 else values[0]
        out.append({"t": b * width, "n": n, "p95": values[0] + (high - values[0]) * (rank - lo)})
    return {"since": start, "buckets": out}
