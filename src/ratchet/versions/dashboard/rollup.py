"""Per-minute rollups of the feedback and call logs, kept in the store, so the overview of a long history
reads a few thousand rows instead of millions (and on SQLite never parses a million JSON payloads).

``refresh`` adds every whole minute that ended more than :data:`SETTLE` seconds ago and is not rolled up
yet, in one ``INSERT ... SELECT ... GROUP BY`` per log and window of at most :data:`CHUNK` seconds (one
transaction each, under the store's lock :data:`LOCK`, so a first catch-up over a long history never holds
SQLite's write lock for long). The mark (``rolled_until``) says how far the rollup goes; the series read the
logs themselves from there on. The Versions server refreshes from a thread of its own (:class:`Builder`):
a request never writes, nor waits for a catch-up (:func:`status` says how far it is).

Rows are placed by their ``ts``. A row that commits after its minute was rolled up (stamped more than
``SETTLE`` seconds before it committed) is found by its insertion id (``seq``): each refresh looks at the
rows inserted since the refresh before the last one, and sums again every rolled-up minute such a row
falls in. Looking two refreshes back covers PostgreSQL, where a ``seq`` taken first may commit after a
later one: a row is missed only if its transaction stays open across two refreshes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ratchet.core.stores.schema import dashboard_rollup as rollup
from ratchet.core.stores.schema import dashboard_rollup_mark as marks
from ratchet.core.stores.schema import feedback, turns

if TYPE_CHECKING:
    from ratchet.core.stores.sql import Store

BASE = 60  # seconds per rolled-up bucket; every chart width from a minute up is a multiple of it
SETTLE = 30  # seconds a minute must have ended before it is rolled up
CHUNK = 3600  # seconds of log per transaction: on SQLite the servers' appends wait for one (0.2 s for 40,000 rows)
EVERY = 10.0  # seconds between the Builder's refreshes: under SETTLE, so a prompt row is never taken as late
BEHIND = 600.0  # seconds: a rollup further behind than this is still being built (the logs' tail is too long)
LOCK = "dashboard-rollup"  # the store lock (Store.lock) every refresh holds
LOGS = {"reward": feedback, "calls": turns}

log = logging.getLogger(__name__)


def bucket_of(store: Store, ts, width: int):
    """``floor(ts / width)``: ``floor`` on PostgreSQL; on SQLite a cast to integer (it truncates, the same
    for positive times; SQLite's ``floor`` needs its optional math functions)."""
    if store.engine.dialect.name == "postgresql":
        return sa.cast(sa.func.floor(ts / width), sa.BigInteger)
    return sa.cast(ts / width, sa.Integer)


def _mark(conn, name: str) -> float | None:
    return conn.execute(sa.select(marks.c.rolled_until).where(marks.c.name == name)).scalar()


def _set_mark(conn, name: str, value: float) -> None:
    if conn.execute(marks.update().where(marks.c.name == name).values(rolled_until=value)).rowcount == 0:
        conn.execute(marks.insert().values(name=name, rolled_until=value))


def rolled_until(store: Store) -> float | None:
    with store.reader.connect() as conn:
        return _mark(conn, "all")


def status(store: Store, now: float, first: float | None) -> dict[str, Any]:
    """How far the rollup is: ``{building, percent, rolled_until}``. It is building while it lags more than
    :data:`BEHIND` behind ``now`` (``first``: the first logged row, :func:`series.first_activity`)."""
    mark = rolled_until(store)
    covered = mark if mark is not None else first
    if first is None or covered >= now - BEHIND:
        return {"building": False, "percent": 100, "rolled_until": mark}
    target = (now - SETTLE) // BASE * BASE
    percent = int(100 * (covered - first) / (target - first)) if target > first else 0
    return {"building": True, "percent": max(0, min(percent, 99)), "rolled_until": mark}


def refresh(store: Store, now: float | None = None, stop: threading.Event | None = None) -> float | None:
    """Sum again the minutes late rows fell in, then roll up what has settled; returns how far the rollup
    goes (None: nothing logged yet). ``stop``: give up between two transactions once it is set."""
    now = time.time() if now is None else now
    target = (now - SETTLE) // BASE * BASE
    _resum_late(store)
    mark = rolled_until(store)
    while (mark is None or mark < target) and not (stop and stop.is_set()):
        following = _next_row(store, mark)  # skip the stretches where nothing was logged
        if following is None or following >= target:
            if mark is None:
                return None
            start = upto = target
        else:
            start = following // BASE * BASE if mark is None else max(mark, following // BASE * BASE)
            upto = min(start + CHUNK, target)
        with store.locked(LOCK) as conn:
            found = _mark(conn, "all")
            if found is not None and found >= upto:  # another process rolled it up meanwhile
                mark = found
                continue
            if start < upto:
                for name in LOGS:
                    _roll(store, conn, name, start if found is None else max(start, found), upto)
            _set_mark(conn, "all", upto)
        mark = upto
    return mark


def _resum_late(store: Store) -> None:
    """Sum again the rolled-up minutes of rows inserted since two refreshes ago (see the module docstring).
    Marks per log: ``scan:LOG`` (the ``seq`` to look from) and ``seen:LOG`` (the last refresh's top)."""
    with store.locked(LOCK) as conn:
        mark = _mark(conn, "all")
        for name, log_table in LOGS.items():
            top = conn.execute(sa.select(sa.func.max(log_table.c.seq))).scalar() or 0
            scan_from, seen = _mark(conn, f"scan:{name}"), _mark(conn, f"seen:{name}")
            if mark is not None and scan_from is not None:
                c = log_table.c
                minute = bucket_of(store, c.ts, BASE)
                late = conn.execute(sa.select(minute).distinct()
                                    .where(c.seq > scan_from, c.ts < mark).order_by(minute)).scalars().all()
                for i in range(0, len(late), 500):  # stay under SQLite's parameter limit
                    _resum(store, conn, name, [m * BASE for m in late[i:i + 500]])
            _set_mark(conn, f"scan:{name}", seen if seen is not None else top)
            _set_mark(conn, f"seen:{name}", top)


def _resum(store: Store, conn, name: str, minutes: list[int]) -> None:
    conn.execute(rollup.delete().where(rollup.c.series == name, rollup.c.bucket.in_(minutes)))
    table = LOGS[name]
    conn.execute(rollup.insert().from_select(COLUMNS, _summary(store, name, minutes[0], minutes[-1] + BASE).where(
        bucket_of(store, table.c.ts, BASE).in_([m // BASE for m in minutes]))))


def _next_row(store: Store, after: float | None) -> float | None:
    """The ``ts`` of the first row of either log at or after ``after`` (index reads)."""
    with store.reader.connect() as conn:
        found = [conn.execute(sa.select(sa.func.min(t.c.ts)).where(t.c.ts >= after) if after is not None
                              else sa.select(sa.func.min(t.c.ts))).scalar() for t in LOGS.values()]
    found = [f for f in found if f is not None]
    return min(found) if found else None


COLUMNS = ["series", "bucket", "n", "total", "errors", "latency_sum", "latency_n"]


def _summary(store: Store, name: str, start: float, end: float):
    """The SELECT of ``name``'s rows per minute in ``[start, end)``, in :data:`COLUMNS`' order."""
    if name == "reward":
        f = feedback.c
        value = f.payload[("args", "value")].as_float()
        b = bucket_of(store, f.ts, BASE)
        return (sa.select(sa.literal("reward"), b * BASE, sa.func.count(value), sa.func.sum(value),
                          sa.literal(None, sa.Integer), sa.literal(None, sa.Float), sa.literal(None, sa.Integer))
                .where(f.tool == "reward", f.ts >= start, f.ts < end).group_by(b))
    t = turns.c
    c = bucket_of(store, t.ts, BASE)
    return (sa.select(sa.literal("calls"), c * BASE, sa.func.count(), sa.literal(None, sa.Float),
                      sa.func.count(t.error), sa.func.sum(t.latency_ms), sa.func.count(t.latency_ms))
            .where(t.ts >= start, t.ts < end).group_by(c))


def _roll(store: Store, conn, name: str, start: float, end: float) -> None:
    conn.execute(rollup.insert().from_select(COLUMNS, _summary(store, name, start, end)))


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


class Builder:
    """Keeps the rollup current from a thread of the Versions server: a first catch-up over a long history
    (half a minute for a million rows of each log on SQLite) happens here, never in a request."""

    def __init__(self, store: Store, every: float = EVERY):
        self.store, self.every = store, every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-rollup", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                refresh(self.store, stop=self._stop)
            except Exception:  # noqa: BLE001 -- a store hiccup: the next round tries again; the pages read on
                log.exception("dashboard rollup: refresh failed; trying again in %.0f s", self.every)
            self._stop.wait(self.every)
