"""The store's tables (SQLAlchemy Core): one schema for SQLite and PostgreSQL.

The logs (sessions, turns, decisions, feedback, events, jobs) are written by :mod:`ratchet.core.stores.sql`;
the shared documents, pins, leases and intents by :mod:`ratchet.core.stores.coordination`; the
dashboard's per-minute rollups of the logs by :mod:`ratchet.versions.dashboard.rollup`.
"""

from __future__ import annotations

import sqlalchemy as sa

NOTIFY_CHANNEL = "ratchet_state"  # PostgreSQL NOTIFY channel of document changes

metadata = sa.MetaData()

sessions = sa.Table(
    "sessions", metadata,
    sa.Column("conversation_id", sa.String(200), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("turns", sa.Integer, nullable=False, default=0),
)

turns = sa.Table(
    "turns", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.String(200), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),  # the Triggerer aggregates by time window
    sa.Column("tool", sa.String(200), nullable=False),
    sa.Column("arguments", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("version", sa.String(64)),
    sa.Column("latency_ms", sa.Float),
    sa.Column("trace_id", sa.String(32)),
)

decisions = sa.Table(
    "decisions", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.String(200), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("version", sa.String(64)),
    sa.Column("strategy", sa.String(200), nullable=False),
    sa.Column("choice", sa.JSON),
    sa.Column("propensity", sa.Float),
    sa.Column("sticky", sa.Boolean, nullable=False, default=True),
    sa.Column("info", sa.JSON),
    sa.Column("features", sa.JSON),
    sa.Column("trace_id", sa.String(32)),
)

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(200), nullable=False, unique=True),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("tool", sa.String(200), nullable=False),
    sa.Column("conversation_id", sa.String(200), index=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("trace_id", sa.String(32)),
)

events = sa.Table(
    "events", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("kind", sa.String(200), nullable=False, index=True),
    sa.Column("payload", sa.JSON, nullable=False),
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(32), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
)


# --- coordination ---

documents = sa.Table(
    "documents", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),  # the canonical bytes (ratchet.core.state.dumps)
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("version", sa.String(64)),  # active: the version whose tag holds this document
    sa.Column("commit", sa.String(64)),
    sa.Column("updated_at", sa.Float, nullable=False),
)

settings = sa.Table(  # small shared values: the pin
    "settings", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.JSON),
)

leases = sa.Table(
    "leases", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

intents = sa.Table(
    "intents", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, index=True),  # open, done, undone
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# the dashboard's per-minute rollups of the feedback and call logs (ratchet.versions.dashboard.rollup)
dashboard_rollup = sa.Table(
    "dashboard_rollup", metadata,
    sa.Column("series", sa.String(16), primary_key=True),  # reward | calls
    sa.Column("bucket", sa.BigInteger, primary_key=True),  # the minute's start, Unix seconds
    sa.Column("n", sa.Integer, nullable=False),  # rewards with a value, or calls
    sa.Column("total", sa.Float),  # sum of the reward values
    sa.Column("errors", sa.Integer),
    sa.Column("latency_sum", sa.Float),
    sa.Column("latency_n", sa.Integer),
)
dashboard_rollup_mark = sa.Table(
    "dashboard_rollup_mark", metadata,
    sa.Column("name", sa.String(16), primary_key=True),
    sa.Column("rolled_until", sa.Float, nullable=False),
)
