"""The embedded store: sessions, turns, the decision log, the feedback log, events and jobs.

SQLAlchemy Core tables, so the same schema serves SQLite (the default, in WAL mode, nothing to install)
and PostgreSQL (scale-out). Feedback is idempotent by ``event_id``: appending an event that is already
there is a no-op that reports a duplicate. Every append commits before it returns, so what a server
acknowledged survives the process being killed (``sync = "full"`` also survives a power cut).

Feedback appends commit in ``seq`` order, so the log a reader sees is always a prefix of what it will
see later, and the tuner's fold watermark (the last ``seq`` applied) never passes an event that is
still to come. SQLite gets this from ``BEGIN IMMEDIATE`` (one writer at a time). On PostgreSQL a
``seq`` is taken at INSERT but becomes visible at COMMIT, so two appends could become visible out of
order; each append therefore takes a transaction-scoped advisory lock first, which orders appends the
same way (readers are not blocked).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event

from ratchet.core.errors import UserError
from ratchet.core.stores.batching import Batcher
from ratchet.core.stores.hotpath import HotPath, compact_json
from ratchet.core.stores.schema import decisions, events, feedback, jobs, metadata, sessions, turns

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

# Connections kept open: a server runs sync tools on up to 40 threads (anyio's default), each of which may
# read at once; a smaller pool opens and closes a connection for every call beyond it.
POOL_SIZE = 40
LOCK_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # Store.lock's names
COPY_FROM = 64  # PostgreSQL: batches of at least this many events are appended with COPY


def _use_wal(cur, attempts: int = 200) -> None:
    """Switch the database to WAL (a setting kept in the file, so only its first opener changes it).

    Switching needs an exclusive lock and SQLite answers "database is locked" at once, without waiting
    for ``busy_timeout``, when another connection is switching too: processes that open a new store
    together (``ratchet up`` on a fresh workspace) retry for up to about 2 s.
    """
    import sqlite3

    for attempt in range(attempts):
        try:
            if cur.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01)


def _sqlite_pragmas(engine: sa.Engine, sync: str) -> None:
    @sa_event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=10000")
        _use_wal(cur)
        cur.execute(f"PRAGMA synchronous={sync.upper()}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @sa_event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("ratchet_read"):
            return  # reads run as autocommit SELECTs: in WAL mode they never wait for a writer
        # IMMEDIATE takes the write lock up front, so concurrent writers wait (busy_timeout) instead of
        # failing when a read transaction tries to upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _payload_text(row: dict[str, Any]) -> str:
    return row["payload_json"] or compact_json(row["payload"])


class Store:
    """One database of the store, opened by SQLAlchemy URL."""

    def __init__(self, url: str, *, sync: str = "normal"):
        self.url = url
        if url.startswith("sqlite"):
            # Every write is an explicit BEGIN IMMEDIATE ... COMMIT and reads hold no transaction, so
            # nothing needs rolling back when a connection returns to the pool.
            self.engine = sa.create_engine(url, connect_args={"check_same_thread": False},
                                           pool_reset_on_return=None, pool_size=POOL_SIZE)
            _sqlite_pragmas(self.engine, sync)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        self.reader = self.engine.execution_options(ratchet_read=True)
        with self.engine.begin() as conn:
            # processes opening a fresh PostgreSQL database together would race on CREATE TABLE
            self.lock(conn, "schema")
            metadata.create_all(conn)

    @cached_property
    def coordination(self):
        """The documents, pins, leases and intents every process agrees on."""
        from ratchet.core.stores.coordination import Coordination

        return Coordination(self)

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> Store:
        url = workspace.store_url
        if url.startswith("sqlite:///") and ":memory:" not in url:
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        return cls(url, sync=workspace.config.store.sync)

    def lock(self, conn, name: str) -> None:
        """Hold the store-wide lock ``name`` until ``conn``'s write transaction ends (commit or rollback).

        Processes that share the store serialise work on ``name`` with it: who comes second waits. On
        PostgreSQL it is a transaction-scoped advisory lock of this schema (``pg_advisory_xact_lock``): only
        holders of the same name wait for each other, readers never do. On SQLite every write transaction
        (``BEGIN IMMEDIATE``) already holds the database's one write lock, so any two write transactions
        exclude each other, whatever their names. ``name``: letters, digits, ``.``, ``-`` and ``_``."""
        if not isinstance(name, str) or not LOCK_NAME.fullmatch(name):
            raise UserError(f"lock name {name!r} is not a name", field="name",
                            fix="use 1 to 64 letters, digits, '.', '-' or '_', e.g. 'dashboard-rollup'")
        if self.engine.dialect.name == "postgresql":
            key = sa.func.hashtext(sa.func.current_schema() + f":ratchet.{name}")
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))

    @contextmanager
    def locked(self, name: str) -> Iterator[sa.Connection]:
        """A write transaction holding the lock ``name`` (see :meth:`lock`); it commits when the block ends,
        rolls back if it raises."""
        with self.engine.begin() as conn:
            self.lock(conn, name)
            yield conn

    def _insert(self, table: sa.Table):
        """The dialect's INSERT, which has ON CONFLICT (SQLite and PostgreSQL share the syntax)."""
        if self.engine.dialect.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        elif self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:  # pragma: no cover
            raise NotImplementedError(self.engine.dialect.name)
        return insert(table)

    # --- feedback log ---

    def append_feedback(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append feedback events in one transaction. Each item: tool, payload, and optionally event_id,
        conversation_id, trace_id, and payload_json (the payload's JSON text, when the caller has it).
        Returns one ``{event_id, seq, duplicate}`` per item, in order."""
        now = time.time()
        rows = []
        for item in items:
            rows.append({"event_id": item.get("event_id") or uuid.uuid4().hex, "ts": item.get("ts") or now,
                         "tool": item["tool"], "conversation_id": item.get("conversation_id"),
                         "payload": item["payload"], "trace_id": item.get("trace_id"),
                         "payload_json": item.get("payload_json")})
        if not rows:
            return []
        if self.engine.dialect.name != "sqlite" and len(rows) < COPY_FROM:
            inserted, existing = self._feedback_appends.submit(rows)
        else:
            with self.engine.begin() as conn:
                if self.engine.dialect.name == "sqlite":
                    inserted, existing = self._append_sqlite(conn, rows)
                else:
                    self.lock(conn, "feedback")  # commit in seq order (see the module docstring)
                    inserted = self._append_copy(conn, rows)
                    existing = self._seqs(conn, [r["event_id"] for r in rows if r["event_id"] not in inserted])
        out, seen = [], set()
        for r in rows:
            eid = r["event_id"]
            duplicate = eid not in inserted or eid in seen  # already logged, or twice in this batch
            seen.add(eid)
            out.append({"event_id": eid, "seq": inserted.get(eid) or existing[eid], "duplicate": duplicate})
        return out

    @cached_property
    def _feedback_appends(self) -> Batcher:
        """PostgreSQL, small appends: concurrent callers' events in one transaction (group commit).
        Each request gets ``(inserted, existing)`` of its own: an event two requests of a batch both
        carry counts as inserted for the first only, as if they had come one after the other."""
        def run(requests: list[list[dict[str, Any]]]) -> list[tuple[dict[str, int], dict[str, int]]]:
            inserted, existing = self._hot.append_feedback([row for rows in requests for row in rows])
            known, claimed, out = {**existing, **inserted}, set(), []
            for rows in requests:
                mine = {}
                for row in rows:
                    eid = row["event_id"]
                    if eid in inserted and eid not in claimed:
                        claimed.add(eid)
                        mine[eid] = inserted[eid]
                out.append((mine, known))
            return out

        return Batcher(run)

    @staticmethod
    def _seqs(conn, event_ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(event_ids), 500):  # stay under SQLite's parameter limit
            sel = sa.select(feedback.c.event_id, feedback.c.seq).where(
                feedback.c.event_id.in_(event_ids[start:start + 500]))
            found.update({eid: seq for eid, seq in conn.execute(sel)})
        return found

    @staticmethod
    def _append_copy(conn, rows: list[dict[str, Any]]) -> dict[str, int]:
        """PostgreSQL, a large batch: ``COPY`` into a temporary table, then one ``INSERT ... SELECT`` in
        the batch's order (several times faster than a multi-row ``INSERT`` whose thousands of
        parameters the driver must rewrite)."""
        cur = conn.connection.driver_connection.cursor()
        try:
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS ratchet_feedback_in (ord int, event_id text, ts float8, "
                        "tool text, conversation_id text, payload text, trace_id text) ON COMMIT DELETE ROWS")
            with cur.copy("COPY ratchet_feedback_in FROM STDIN") as copy:
                for i, r in enumerate(rows):
                    copy.write_row((i, r["event_id"], r["ts"], r["tool"], r["conversation_id"],
                                    _payload_text(r), r["trace_id"]))
            cur.execute("INSERT INTO feedback (event_id, ts, tool, conversation_id, payload, trace_id) "
                        "SELECT event_id, ts, tool, conversation_id, payload::json, trace_id FROM ratchet_feedback_in "
                        "ORDER BY ord ON CONFLICT (event_id) DO NOTHING RETURNING event_id, seq")
            return dict(cur.fetchall())
        finally:
            cur.close()

    def _append_sqlite(self, conn, rows: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
        """The driver's executemany (a C loop), ~4x faster than multi-row INSERT ... RETURNING here.

        Sequence numbers are derived, not returned: inside BEGIN IMMEDIATE this is the only writer, and
        ``seq`` is SQLite's rowid, so the new rows get consecutive numbers after the current maximum.
        """
        existing = self._seqs(conn, list({r["event_id"] for r in rows}))
        fresh, seen = [], set(existing)
        for r in rows:
            if r["event_id"] not in seen:
                seen.add(r["event_id"])
                fresh.append((r["event_id"], r["ts"], r["tool"], r["conversation_id"],
                              _payload_text(r), r["trace_id"]))
        inserted: dict[str, int] = {}
        if fresh:
            cursor = conn.connection.driver_connection.cursor()
            try:
                start = cursor.execute("SELECT coalesce(max(seq), 0) FROM feedback").fetchone()[0] + 1
                cursor.executemany("INSERT INTO feedback (event_id, ts, tool, conversation_id, payload, trace_id) "
                                   "VALUES (?, ?, ?, ?, ?, ?)", fresh)
            finally:
                cursor.close()
            inserted = {row[0]: start + i for i, row in enumerate(fresh)}
        return inserted, existing

    def feedback_since(self, seq: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        c = feedback.c
        cols = (c.seq, c.event_id, c.ts, c.tool, c.conversation_id, c.payload, c.trace_id)
        q = sa.select(*cols).where(c.seq > seq).order_by(c.seq)
        if limit:
            q = q.limit(limit)
        with self.reader.connect() as conn:  # tuples, not row mappings: this is the tuner's hot path
            return [{"seq": r[0], "event_id": r[1], "ts": r[2], "tool": r[3], "conversation_id": r[4],
                     "payload": r[5], "trace_id": r[6]} for r in conn.execute(q)]

    def feedback_for(self, conversation_id: str) -> list[dict[str, Any]]:
        q = sa.select(feedback).where(feedback.c.conversation_id == conversation_id).order_by(feedback.c.seq)
        with self.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def last_feedback_seq(self) -> int:
        with self.reader.connect() as conn:
            return conn.execute(sa.select(sa.func.coalesce(sa.func.max(feedback.c.seq), 0))).scalar_one()

    # --- sessions, turns and decisions ---

    def record_turn(self, *, conversation_id: str, tool: str, arguments: dict[str, Any],
                    result: Any = None, error: str | None = None, version: str | None = None,
                    latency_ms: float | None = None, trace_id: str | None = None,
                    decisions_: list[dict[str, Any]] = (), features: dict[str, Any] | None = None) -> None:
        """Write one call and the decisions it used; return once they are committed (before the reply
        leaves). Concurrent calls share a transaction (:mod:`~ratchet.core.stores.batching`)."""
        turn = {"conversation_id": conversation_id, "ts": time.time(), "tool": tool, "arguments": arguments,
                "result": result, "error": error, "version": version, "latency_ms": latency_ms,
                "trace_id": trace_id}
        made = [{"conversation_id": conversation_id, "ts": turn["ts"], "version": version, "features": features,
                 "trace_id": trace_id, **d} for d in decisions_]
        self._turns.submit((turn, made))

    @cached_property
    def _turns(self) -> Batcher:
        return Batcher(self._write_turns)

    def _write_turns(self, items: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> list[None]:
        """Many calls' turns and decisions in one transaction; a conversation's session row once."""
        touched: dict[str, dict[str, Any]] = {}
        for turn, _ in items:
            row = touched.setdefault(turn["conversation_id"], {"conversation_id": turn["conversation_id"],
                                                              "created_at": turn["ts"], "turns": 0})
            row["updated_at"] = turn["ts"]
            row["turns"] += 1
        self._hot.write_turns(list(touched.values()), [turn for turn, _ in items],
                              [d for _, ds in items for d in ds])
        return [None] * len(items)

    @cached_property
    def _hot(self) -> HotPath:
        upsert = self._insert(sessions)
        upsert = upsert.on_conflict_do_update(index_elements=["conversation_id"], set_={
            "updated_at": upsert.excluded.updated_at, "turns": sessions.c.turns + upsert.excluded.turns})
        return HotPath(self.engine, upsert)

    def decisions_for(self, conversation_id: str) -> list[dict[str, Any]]:
        q = sa.select(decisions).where(decisions.c.conversation_id == conversation_id).order_by(decisions.c.seq)
        with self.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def decisions_in_force(self, conversation_id: str) -> dict[str, dict[str, Any]]:
        """``latest_decisions`` of one conversation. Concurrent callers share one query: a runner asks
        this for every conversation it has not served yet."""
        return self._decision_reads.submit(conversation_id)

    @cached_property
    def _decision_reads(self) -> Batcher:
        def run(ids: list[str]) -> list[dict[str, dict[str, Any]]]:
            found = self._hot.latest_decisions(ids)
            return [found.get(cid, {}) for cid in ids]

        return Batcher(run)

    def latest_decisions(self, conversation_ids: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
        """``{conversation_id: {strategy: decision}}`` (the latest per strategy) for many conversations.

        A decision is ``{strategy, choice, propensity, sticky, info, features}``: a ``Decision`` plus the
        features the runner logged for that call.
        """
        return self._hot.latest_decisions(list(dict.fromkeys(conversation_ids)))

    def rewarded_decisions(self, strategy: str, *, limit: int | None = None, versions: Iterable[str] | None = None,
                           tools: Iterable[str] = ("reward",)) -> list[dict[str, Any]]:
        """Reward events (of ``tools``: ``reward`` by default) joined with ``strategy``'s decision in their
        conversation (the one the tuner joined when it acknowledged the event; the version is the latest
        logged decision's), newest first: ``{seq, value, choice, propensity, features, version}``.

        ``versions`` keeps only decisions served by those versions; ``limit`` counts rewards. For
        off-policy evaluation (:mod:`ratchet.core.ope`).
        """
        d, f = decisions.c, feedback.c
        # the conversation's latest decision of ``strategy``, looked up per reward by the conversation_id
        # index: reading the newest ``limit`` rewards costs ``limit`` lookups, not a pass over every decision
        mine = decisions.alias("mine")
        latest = (sa.select(sa.func.max(mine.c.seq))
                  .where(mine.c.conversation_id == f.conversation_id, mine.c.strategy == strategy)
                  .scalar_subquery())
        q = (sa.select(f.seq, f.payload, d.choice, d.propensity, d.features, d.version)
             .select_from(feedback.join(decisions, d.seq == latest))
             .where(f.tool.in_(list(tools))).order_by(f.seq.desc()))
        if versions is not None:
            q = q.where(d.version.in_(list(versions)))
        if limit:
            q = q.limit(limit)
        with self.reader.connect() as conn:
            rows = conn.execute(q).all()
        out = []
        for seq, payload, choice, propensity, features, version in rows:
            payload = json.loads(payload) if isinstance(payload, str) else payload
            payload = payload if isinstance(payload, dict) else {}
            # the decision the tuner joined at acknowledgement, when the event carries it
            joined = ((payload.get("decisions") or {}).get("conversation_id") or {}).get(strategy)
            if isinstance(joined, dict):
                choice, propensity = joined.get("choice"), joined.get("propensity")
                features = joined.get("features", features)
            out.append({"seq": seq, "value": (payload.get("args") or {}).get("value"), "choice": choice,
                        "propensity": propensity, "features": features or {}, "version": version})
        return out

    def session(self, conversation_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            row = conn.execute(sa.select(sessions).where(sessions.c.conversation_id == conversation_id)).first()
            if row is None:
                return None
            t = conn.execute(sa.select(turns).where(turns.c.conversation_id == conversation_id)
                             .order_by(turns.c.seq)).all()
        return {**row._mapping, "turns": [dict(r._mapping) for r in t]}

    # --- events and jobs ---

    def append_event(self, kind: str, payload: dict[str, Any]) -> int:
        with self.engine.begin() as conn:
            return conn.execute(events.insert().values(ts=time.time(), kind=kind, payload=payload)).inserted_primary_key[0]

    def last_event(self, kind: str) -> dict[str, Any] | None:
        q = sa.select(events).where(events.c.kind == kind).order_by(events.c.seq.desc()).limit(1)
        with self.reader.connect() as conn:
            row = conn.execute(q).first()
        return dict(row._mapping) if row else None

    def events_since(self, seq: int = 0, kind: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(events).where(events.c.seq > seq).order_by(events.c.seq)
        if kind:
            q = q.where(events.c.kind == kind)
        with self.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def put_job(self, job_id: str, state: str, payload: dict[str, Any]) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            updated = conn.execute(jobs.update().where(jobs.c.id == job_id)
                                   .values(state=state, payload=payload, updated_at=now)).rowcount
            if not updated:
                conn.execute(jobs.insert().values(id=job_id, state=state, payload=payload,
                                                  created_at=now, updated_at=now))

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        return dict(row._mapping) if row else None

    def list_jobs(self, state: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(jobs).order_by(jobs.c.created_at)
        if state:
            q = q.where(jobs.c.state == state)
        with self.reader.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def close(self) -> None:
        if "_hot" in self.__dict__:
            self._hot.close()
        self.engine.dispose()

