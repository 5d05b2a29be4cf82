"""The runner's per-call statements, run on the DBAPI connection directly.

For every call a runner reads the decisions its conversation already has (when the conversation is
new to the process) and writes the turn with its decisions. Through SQLAlchemy's execution layer
each statement costs about 60 µs of Python (events, parameter and result processing) against about
10 µs in the driver; under 32 concurrent clients that was a large share of a runner's CPU. So these
statements are compiled once per dialect from the schema's own tables (one source of truth for
columns and types) and executed with the driver's cursor; JSON is encoded and decoded here the way
SQLAlchemy's ``JSON`` type does it. Everything else in the store goes through SQLAlchemy.

Both work on many conversations at once: :mod:`~ratchet.core.stores.batching` hands them the
requests of concurrent callers.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ratchet.core.stores.schema import decisions, sessions, turns

compact_json = json.JSONEncoder(separators=(",", ":")).encode  # JSON text as stored: no spaces
TURN_COLUMNS = tuple(c.name for c in turns.columns if not c.primary_key)  # seq is the database's
DECISION_COLUMNS = tuple(c.name for c in decisions.columns if not c.primary_key)
_JSON = {c.name for t in (turns, decisions) for c in t.columns if isinstance(c.type, sa.JSON)}


class HotPath:
    """Compiled statements of one engine, each kind run on a connection of its own.

    Kept connections: the batches come one at a time (the Batcher's leader), so a lock per connection
    is all the sharing needs, and a kept connection spares the pool's checkout (and on PostgreSQL its
    ping) for every batch. A connection that fails is dropped and the next batch opens a new one.
    """

    def __init__(self, engine: sa.Engine, session_upsert: sa.Insert):
        self.engine = engine
        self._kept: dict[str, Any] = {}
        self._locks = {"read": threading.Lock(), "write": threading.Lock(), "feedback": threading.Lock()}
        self.sqlite = engine.dialect.name == "sqlite"
        # named parameters on both drivers: sqlite3 takes :name, psycopg %(name)s
        dialect = type(engine.dialect)(paramstyle="named") if self.sqlite else engine.dialect

        def sql(stmt, keys=None) -> str:
            return str(stmt.compile(dialect=dialect, column_keys=keys))

        self._upsert = sql(session_upsert, ["conversation_id", "created_at", "updated_at", "turns"])
        self._turn = sql(sa.insert(turns).inline(), list(TURN_COLUMNS))
        self._decision = sql(sa.insert(decisions).inline(), list(DECISION_COLUMNS))
        c = decisions.c
        if self.sqlite:  # one parameter for any number of ids: a JSON array
            where = c.conversation_id.in_(sa.select(sa.column("value")).select_from(
                sa.func.json_each(sa.bindparam("ids"))).scalar_subquery())
        else:
            where = c.conversation_id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String)))
        self._latest = sql(sa.select(c.conversation_id, c.strategy, c.choice, c.propensity, c.sticky, c.info,
                                     c.features).where(where).order_by(c.seq))

    def write_turns(self, sessions_rows: list[dict[str, Any]], turn_rows: list[dict[str, Any]],
                    decision_rows: list[dict[str, Any]]) -> None:
        """Upsert the sessions and insert the turns and decisions in one transaction."""
        with self._connection("write") as conn:
            cur = conn.cursor()
            try:
                if self.sqlite:
                    cur.execute("BEGIN IMMEDIATE")  # the write lock up front (see sql.py)
                cur.executemany(self._upsert, sessions_rows)
                cur.executemany(self._turn, [_encode(row, TURN_COLUMNS) for row in turn_rows])
                if decision_rows:
                    cur.executemany(self._decision, [_encode(row, DECISION_COLUMNS) for row in decision_rows])
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                cur.close()

    def latest_decisions(self, ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """What :meth:`Store.latest_decisions` returns, in one query."""
        param = json.dumps(ids) if self.sqlite else ids
        loads = json.loads if self.sqlite else _same  # psycopg decodes JSON columns itself
        out: dict[str, dict[str, dict[str, Any]]] = {}
        with self._connection("read") as conn:
            cur = conn.cursor()
            try:
                cur.execute(self._latest, {"ids": param})
                rows = cur.fetchall()
            finally:
                cur.close()
            if not self.sqlite:
                conn.rollback()  # end the read's transaction: hold no snapshot between batches
        for cid, strategy, choice, propensity, sticky, info, feats in rows:
            out.setdefault(cid, {})[strategy] = {
                "strategy": strategy, "choice": _load(choice, loads), "propensity": propensity,
                "sticky": bool(sticky), "info": _load(info, loads) or {}, "features": _load(feats, loads) or {}}
        return out

    def append_feedback(self, rows: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
        """PostgreSQL: append feedback rows in their order in one round trip (the advisory lock, one
        ``INSERT ... SELECT FROM unnest``, the commit, pipelined). Through SQLAlchemy the same work took
        about 0.9 ms for one event against 0.16 ms here. Returns ``(inserted, existing)``: the ``seq``
        of each new event and of each one already logged."""
        columns = {"event_id": [], "ts": [], "tool": [], "conversation_id": [], "payload": [], "trace_id": []}
        for row in rows:
            for name, values in columns.items():
                values.append(row[name] if name != "payload" else row["payload_json"] or compact_json(row["payload"]))
        with self._connection("feedback") as conn:
            pg = conn.driver_connection
            with pg.pipeline() as pipeline:
                pg.execute(_FEEDBACK_LOCK)
                cur = pg.execute(_FEEDBACK_INSERT, columns)
                self._commit_feedback(pg, pipeline)
            inserted = dict(cur.fetchall())
            missing = [eid for eid in columns["event_id"] if eid not in inserted]
            existing = dict(pg.execute(_FEEDBACK_SEQS, {"ids": missing}).fetchall()) if missing else {}
            pg.rollback()  # end the lookup's transaction (a no-op without one)
        return inserted, existing

    @staticmethod
    def _commit_feedback(conn, pipeline) -> None:
        """Commit an append (queued in ``pipeline``); a separate step so a test can hold it open."""
        conn.commit()

    @contextlib.contextmanager
    def _connection(self, kind: str) -> Iterator[Any]:
        with self._locks[kind]:
            conn = self._kept.pop(kind, None) or self.engine.raw_connection()
            try:
                yield conn
            except BaseException:
                conn.invalidate()  # broken or not, start the next batch on a fresh connection
                raise
            self._kept[kind] = conn

    def close(self) -> None:
        """Give the kept connections back (before the engine is disposed)."""
        for kind, lock in self._locks.items():
            with lock:
                conn = self._kept.pop(kind, None)
                if conn is not None:
                    conn.close()


# "commit in seq order" (see sql.py): the same lock key as Store.lock(conn, "feedback")
_FEEDBACK_LOCK = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':ratchet.feedback'))"
_FEEDBACK_INSERT = (
    "INSERT INTO feedback (event_id, ts, tool, conversation_id, payload, trace_id) "
    "SELECT e, t, tool, c, p::json, tr FROM unnest(%(event_id)s::text[], %(ts)s::float8[], %(tool)s::text[], "
    "%(conversation_id)s::text[], %(payload)s::text[], %(trace_id)s::text[]) WITH ORDINALITY AS u(e, t, tool, c, p, tr, n) "
    "ORDER BY n ON CONFLICT (event_id) DO NOTHING RETURNING event_id, seq")
_FEEDBACK_SEQS = "SELECT event_id, seq FROM feedback WHERE event_id = ANY(%(ids)s::text[])"


def _encode(row: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    # JSON None is stored as JSON null, as SQLAlchemy's JSON type does (none_as_null=False)
    return {k: json.dumps(row.get(k)) if k in _JSON else row.get(k) for k in columns}


def _load(value: Any, loads) -> Any:
    return None if value is None else loads(value)


def _same(value: Any) -> Any:
    return value
