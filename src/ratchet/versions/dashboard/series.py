"""The overview's time series, aggregated in the store (SQL) into time buckets, never in the browser.

A bucket is ``floor(ts / width)``: ``floor`` on PostgreSQL, and on SQLite a cast to integer (which
truncates, the same for the positive Unix times the logs hold; SQLite's ``floor`` needs its optional math
functions). Each query reads one index range and returns one row per non-empty bucket, so the answer's size
depends on the number of buckets, not on the number of rows behind them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ratchet.core.stores.schema import events, feedback, turns

if TYPE_CHECKING:
    from ratchet.core.stores.sql import Store

REWARD_TOOL = "reward"  # as the Triggerer reads the reward rate: the mean `value` of `reward` feedback
WAKE_EVENT = "trigger.wake"
# bucket widths in seconds, from a second to a week: the smallest that gives at most `buckets` points
WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800,
          604800)


def bucket_width(span: float, buckets: int) -> int:
    """The smallest width of :data:`WIDTHS` that covers ``span`` seconds in at most ``buckets`` buckets."""
    for width in WIDTHS:
        if span / width <= buckets:
            return width
    return WIDTHS[-1]


def _bucket(store: Store, ts: sa.ColumnElement, width: int) -> sa.ColumnElement:
    if store.engine.dialect.name == "postgresql":
        return sa.cast(sa.func.floor(ts / width), sa.BigInteger)
    return sa.cast(ts / width, sa.Integer)


def first_activity(store: Store) -> float | None:
    """The time of the first feedback event or call (two index reads), or None on an empty store."""
    with store.reader.connect() as conn:
        found = [conn.execute(sa.select(sa.func.min(t.c.ts))).scalar() for t in (feedback, turns)]
    found = [t for t in found if t is not None]
    return min(found) if found else None


def reward_series(store: Store, start: float, end: float, width: int) -> list[dict[str, Any]]:
    """``[{t, count, mean}]`` of ``reward`` feedback per bucket of ``width`` seconds in ``[start, end]``;
    ``t`` is the bucket's start (Unix seconds)."""
    f = feedback.c
    value = f.payload[("args", "value")].as_float()
    bucket = _bucket(store, f.ts, width).label("b")
    q = (sa.select(bucket, sa.func.count(value), sa.func.avg(value))
         .where(f.tool == REWARD_TOOL, f.ts >= start, f.ts <= end).group_by(bucket).order_by(bucket))
    with store.reader.connect() as conn:
        return [{"t": b * width, "count": n, "mean": float(mean) if n else None} for b, n, mean in conn.execute(q)]


def call_series(store: Store, start: float, end: float, width: int) -> list[dict[str, Any]]:
    """``[{t, calls, errors, error_rate, latency_mean_ms}]`` of the runner's calls per bucket."""
    t = turns.c
    bucket = _bucket(store, t.ts, width).label("b")
    q = (sa.select(bucket, sa.func.count(), sa.func.count(t.error), sa.func.avg(t.latency_ms))
         .where(t.ts >= start, t.ts <= end).group_by(bucket).order_by(bucket))
    with store.reader.connect() as conn:
        return [{"t": b * width, "calls": n, "errors": e, "error_rate": e / n if n else None,
                 "latency_mean_ms": float(lat) if lat is not None else None} for b, n, e, lat in conn.execute(q)]


def wakeups(store: Store, start: float, end: float, limit: int = 500) -> list[dict[str, Any]]:
    """The Triggerer's wake-ups in ``[start, end]``, newest last: when, and which KPIs breached."""
    e = events.c
    q = (sa.select(e.ts, e.payload).where(e.kind == WAKE_EVENT, e.ts >= start, e.ts <= end)
         .order_by(e.seq.desc()).limit(limit))
    with store.reader.connect() as conn:
        rows = conn.execute(q).all()
    return [{"t": payload.get("at", ts), "breaches": [b.get("kpi") for b in payload.get("breaches", [])]}
            for ts, payload in reversed(rows)]
