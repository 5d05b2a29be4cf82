"""The overview's time series, aggregated in the store (SQL) into time buckets, never in the browser.

A bucket of ``width`` seconds holds the rows with ``floor(ts / width) * width`` as its start. Whole minutes
come from the per-minute rollup (:mod:`ratchet.versions.dashboard.rollup`), the rest (the last minutes, or
every row when a bucket is under a minute) from the logs, by ``ts`` index range; each answer has one row
per non-empty bucket, so its size depends on the number of buckets, not on the rows behind them. Reading
never refreshes the rollup (the Versions server's :class:`~ratchet.versions.dashboard.rollup.Builder` does);
while it is being built, the caller passes ``logs_from`` so that the logs are read for the last minutes
only, not for everything the rollup does not cover yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ratchet.core.stores.schema import events, feedback, turns
from ratchet.versions.dashboard import rollup

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


def first_activity(store: Store) -> float | None:
    """The time of the first feedback event or call (two index reads), or None on an empty store."""
    with store.reader.connect() as conn:
        found = [conn.execute(sa.select(sa.func.min(t.c.ts))).scalar() for t in (feedback, turns)]
    found = [t for t in found if t is not None]
    return min(found) if found else None


UNSET: Any = object()


def _split(store: Store, start: float, end: float, width: int, rolled: float | None,
           logs_from: float | None) -> tuple[float, float]:
    """``(split, logs)``: the rollup is read up to ``split``, the logs from ``logs`` on (``logs_from`` if it
    is later). ``split`` is ``start`` when ``width`` is under a minute (or not a multiple of one), else the
    end of what is rolled up (``rolled``; :func:`rollup.rolled_until` when UNSET)."""
    rolled = rollup.rolled_until(store) if rolled is UNSET else rolled
    if width % rollup.BASE or rolled is None:
        split = start
    else:  # whole rolled-up minutes only: a minute that ends after `end` holds rows past it
        split = max(min(rolled, end // rollup.BASE * rollup.BASE), start)
    return split, split if logs_from is None else max(split, logs_from)


def _merge(rows: list[tuple]) -> list[list]:
    """Sum rows of the same bucket (the rollup's and the logs' halves of one bucket), in time order."""
    merged: dict[float, list] = {}
    for t, *values in rows:
        have = merged.setdefault(t, [t] + [None] * len(values))
        for k, v in enumerate(values, 1):
            if v is not None:
                have[k] = v if have[k] is None else have[k] + v
    return [merged[t] for t in sorted(merged)]


def reward_series(store: Store, start: float, end: float, width: int, *, rolled: float | None = UNSET,
                  logs_from: float | None = None) -> list[dict[str, Any]]:
    """``[{t, count, mean}]`` of ``reward`` feedback per bucket of ``width`` seconds in ``[start, end]``;
    ``t`` is the bucket's start (Unix seconds); ``start`` is taken down to a bucket's start. Whole minutes
    come from the rollup (up to ``rolled``, read from the store unless given), the rest from the log, from
    ``logs_from`` on if given."""
    start = start // width * width
    split, logs = _split(store, start, end, width, rolled, logs_from)
    rows = [(t, n, total) for t, n, total, *_ in rollup.rolled_series(store, "reward", start, split, width)]
    f = feedback.c
    value = f.payload[("args", "value")].as_float()
    bucket = rollup.bucket_of(store, f.ts, width).label("b")
    q = (sa.select(bucket, sa.func.count(value), sa.func.sum(value))
         .where(f.tool == REWARD_TOOL, f.ts >= logs, f.ts <= end).group_by(bucket))
    with store.reader.connect() as conn:
        rows += [(b * width, n, total) for b, n, total in conn.execute(q)]
    return [{"t": t, "count": n, "mean": float(total) / n if n else None} for t, n, total in _merge(rows) if n]


def call_series(store: Store, start: float, end: float, width: int, *, rolled: float | None = UNSET,
                logs_from: float | None = None) -> list[dict[str, Any]]:
    """``[{t, calls, errors, error_rate, latency_mean_ms}]`` of the runner's calls per bucket (as
    :func:`reward_series`)."""
    start = start // width * width
    split, logs = _split(store, start, end, width, rolled, logs_from)
    rows = [(t, n, errors, lat, lat_n) for t, n, _, errors, lat, lat_n
            in rollup.rolled_series(store, "calls", start, split, width)]
    t = turns.c
    bucket = rollup.bucket_of(store, t.ts, width).label("b")
    q = (sa.select(bucket, sa.func.count(), sa.func.count(t.error), sa.func.sum(t.latency_ms),
                   sa.func.count(t.latency_ms))
         .where(t.ts >= logs, t.ts <= end).group_by(bucket))
    with store.reader.connect() as conn:
        rows += [(b * width, *rest) for b, *rest in conn.execute(q)]
    return [{"t": ts, "calls": n, "errors": e, "error_rate": e / n if n else None,
             "latency_mean_ms": float(lat) / lat_n if lat_n else None} for ts, n, e, lat, lat_n in _merge(rows) if n]


def wakeups(store: Store, start: float, end: float, limit: int = 500, after_seq: int = 0) -> list[dict[str, Any]]:
    """The Triggerer's wake-ups in ``[start, end]`` logged after event ``after_seq``, newest last (at most
    ``limit``, the newest): when, which KPIs breached, and the event's ``seq`` (a poll's cursor)."""
    e = events.c
    q = (sa.select(e.seq, e.ts, e.payload).where(e.kind == WAKE_EVENT, e.ts >= start, e.ts <= end, e.seq > after_seq)
         .order_by(e.seq.desc()).limit(limit))
    with store.reader.connect() as conn:
        rows = conn.execute(q).all()
    return [{"t": payload.get("at", ts), "breaches": [b.get("kpi") for b in payload.get("breaches", [])], "seq": seq}
            for seq, ts, payload in reversed(rows)]
