"""Per-minute rollups of the feedback and call logs, kept in the store, so the overview of a long history
reads a few thousand rows instead of millions (and on SQLite never parses a million JSON payloads).

``refresh`` adds every whole minute that ended more than :data:`SETTLE` seconds ago and is not rolled up
yet, in one ``INSERT ... SELECT ... GROUP BY`` per log and window of at most :data:`CHUNK` seconds (one
transaction each, so a first catch-up over a long history never holds the write lock for long). A minute
is written once; the mark (``rolled_until``) says how far the rollup goes, and the series read the logs
themselves from there on. Rows are placed by their ``ts``: a row that commits more than ``SETTLE``
seconds after its ``ts`` was stamped, into a minute already rolled up, is left out of the rollup (the
logs stamp ``ts`` just before they commit).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ratchet.core.stores.schema import dashboard_rollup as rollup
from ratchet.core.stores.schema import dashboard_rollup_mark as marks
from ratchet.core.stores.schema import feedback, turns

if TYPE_CHECKING:
    from ratchet.core.stores.sql import Store

BASE = 60  # seconds per rolled-up bucket; every chart width from a minute up is a multiple of it
SETTLE = 30  # seconds a minute must have ended before it is rolled up
CHUNK = 6 * 3600  # seconds of log per transaction



def bucket_of(store: Store, ts, width: int):
    """``floor(ts / width)``: ``floor`` on PostgreSQL; on SQLite a cast to integer (it truncates, the same
    for positive times; SQLite's ``floor`` needs its optional math functions)."""
    if store.engine.dialect.name == "postgresql":
        return sa.cast(sa.func.floor(ts / width), sa.BigInteger)
    return sa.cast(ts / width, sa.Integer)


def rolled_until(store: Store) -> float | None:
    with store.reader.connect() as conn:
        return conn.execute(sa.select(marks.c.rolled_until).where(marks.c.name == "all")).scalar()


def refresh(store: Store, now: float | None = None) -> float | None:
    """Roll up what has settled; returns how far the rollup goes (None: nothing logged yet)."""
    now = time.time() if now is None else now
    target = (now - SETTLE) // BASE * BASE
    mark = rolled_until(store)
    while mark is None or mark < target:
        following = _next_row(store, mark)  # skip the stretches where nothing was logged
        if following is None or following >= target:
            if mark is None:
                return None
            start = upto = target
        else:
            start = following // BASE * BASE if mark is None else max(mark, following // BASE * BASE)
            upto = min(start + CHUNK, target)
        with store.engine.begin() as conn:
            store._lock(conn, "dashboard-rollup")
            found = conn.execute(sa.select(marks.c.rolled_until).where(marks.c.name == "all")).scalar()
            if found is not None and found >= upto:  # another process rolled it up meanwhile
                mark = found
                continue
            if start < upto:
                _roll(store, conn, start if found is None else max(start, found), upto)
            if found is None:
                conn.execute(marks.insert().values(name="all", rolled_until=upto))
            else:
                conn.execute(marks.update().where(marks.c.name == "all").values(rolled_until=upto))
        mark = upto
    return mark


def _next_row(store: Store, after: float | None) -> float | None:
    """The ``ts`` of the first row of either log at or after ``after`` (index reads)."""
    with store.reader.connect() as conn:
        found = [conn.execute(sa.select(sa.func.min(t.c.ts)).where(t.c.ts >= after) if after is not None
                              else sa.select(sa.func.min(t.c.ts))).scalar() for t in (feedback, turns)]
    found = [f for f in found if f is not None]
    return min(found) if found else None


def _roll(store: Store, conn, start: float, end: float) -> None:
    f, t = feedback.c, turns.c
    value = f.payload[("args", "value")].as_float()
    b = bucket_of(store, f.ts, BASE)
    rewards = (sa.select(sa.literal("reward"), b * BASE, sa.func.count(value), sa.func.sum(value),
                         sa.literal(None, sa.Integer), sa.literal(None, sa.Float), sa.literal(None, sa.Integer))
               .where(f.tool == "reward", f.ts >= start, f.ts < end).group_by(b))
    c = bucket_of(store, t.ts, BASE)
    calls = (sa.select(sa.literal("calls"), c * BASE, sa.func.count(), sa.literal(None, sa.Float),
                       sa.func.count(t.error), sa.func.sum(t.latency_ms), sa.func.count(t.latency_ms))
             .where(t.ts >= start, t.ts < end).group_by(c))
    cols = ["series", "bucket", "n", "total", "errors", "latency_sum", "latency_n"]
    conn.execute(rollup.insert().from_select(cols, rewards))
    conn.execute(rollup.insert().from_select(cols, calls))


def rolled_series(store: Store, name: str, start: float, end: float, width: int) -> list[tuple]:
    """``(t, n, total, errors, latency_sum, latency_n)`` per bucket of ``width`` (a multiple of
    :data:`BASE`) from the rollup, for minutes in ``[start, end)``."""
    if end <= start:
        return []
    r = rollup.c
    b = bucket_of(store, r.bucket, width).label("b")
    q = (sa.select(b, sa.func.sum(r.n), sa.func.sum(r.total), sa.func.sum(r.errors), sa.func.sum(r.latency_sum),
                   sa.func.sum(r.latency_n))
         .where(r.series == name, r.bucket >= start, r.bucket < end).group_by(b).order_by(b))
    with store.reader.connect() as conn:
        return [(row[0] * width, *row[1:]) for row in conn.execute(q)]
