"""The conversations active in a time window (a chart's bucket): who called the runner or got feedback
then, one row per conversation, aggregated in the store.

Bounded: each log is read by its ``ts`` index from the window's start for at most :data:`SCAN` rows; a
window holding more is cut short there (the answer says where), so one click on a week-wide bucket of a
large store reads no more than a narrow one. Paginated by ``limit`` and ``offset`` over conversations in
order of their first event in the window.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ratchet.core.stores.schema import feedback, turns
from ratchet.versions.dashboard.series import REWARD_TOOL

if TYPE_CHECKING:
    from ratchet.core.stores.sql import Store

SCAN = 50_000  # rows read per log at most
LIMIT = 50  # conversations per page by default
MAX_LIMIT = 500


def _cut(conn, table, start: float, end: float) -> float | None:
    """The ``ts`` of the row after the first :data:`SCAN` of ``table`` in ``[start, end)``, or None when
    the window holds no more than that (an index read)."""
    q = (sa.select(table.c.ts).where(table.c.ts >= start, table.c.ts < end).order_by(table.c.ts)
         .offset(SCAN).limit(1))
    return conn.execute(q).scalar()


def conversations(store: Store, start: float, end: float, *, limit: int = LIMIT, offset: int = 0) -> dict[str, Any]:
    """``{items: [{conversation_id, first, last, calls, errors, rewards, reward_mean}], next_offset,
    until, cut}`` for the conversations with a call or feedback in ``[start, end)``; ``until`` is where
    the reading stopped (``end``, or earlier when ``cut``)."""
    t, f = turns.c, feedback.c
    with store.reader.connect() as conn:
        cuts = [c for c in (_cut(conn, turns, start, end), _cut(conn, feedback, start, end)) if c is not None]
        until = min([end, *cuts])
        value = f.payload[("args", "value")].as_float()
        is_reward = f.tool == REWARD_TOOL
        calls = sa.select(t.conversation_id.label("cid"), t.ts.label("ts"), sa.literal(1).label("call"),
                          sa.case((t.error.is_not(None), 1), else_=0).label("error"), sa.literal(0).label("reward"),
                          sa.literal(None, sa.Float).label("value")).where(t.ts >= start, t.ts < until)
        fed = sa.select(f.conversation_id, f.ts, sa.literal(0), sa.literal(0), sa.case((is_reward, 1), else_=0),
                        sa.case((is_reward, value), else_=None)).where(
            f.ts >= start, f.ts < until, f.conversation_id.is_not(None))
        u = sa.union_all(calls, fed).subquery()
        first = sa.func.min(u.c.ts)
        q = (sa.select(u.c.cid, first, sa.func.max(u.c.ts), sa.func.sum(u.c.call), sa.func.sum(u.c.error),
                       sa.func.sum(u.c.reward), sa.func.avg(u.c.value))
             .group_by(u.c.cid).order_by(first, u.c.cid).limit(limit + 1).offset(offset))
        rows = conn.execute(q).all()
    items = [{"conversation_id": cid, "first": lo, "last": hi, "calls": int(n or 0), "errors": int(e or 0),
              "rewards": int(r or 0), "reward_mean": float(mean) if mean is not None else None}
             for cid, lo, hi, n, e, r, mean in rows[:limit]]
    return {"start": start, "end": end, "until": until, "cut": until < end, "items": items, "offset": offset,
            "limit": limit, "next_offset": offset + limit if len(rows) > limit else None}
