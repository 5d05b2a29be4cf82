"""What every process of a workspace, on any host, must agree on: it lives in the store.

* **Documents.** The ``staging`` and ``active`` state documents with their revisions. A write is
  compare-and-swap, a conditional ``UPDATE ... WHERE revision = :expected``; the active row also holds
  the version that holds it and that version's commit, so a reader never gets a state under a label
  that does not hold it. ``state/active.state.json`` stays what git commits and tags.
* **Pins.** The version runners serve instead of active, for every host at once.
* **Leases.** A named lease (a row with a holder and an expiry) gives one process at a time the right to
  make versions; a holder that dies loses it when it expires, and another process takes over.
* **Intents.** A version is made in recoverable steps: the intent is recorded, the git work is done
  idempotently, the completion is recorded. A start finds the intents a crash left open and finishes
  or undoes them (:mod:`ratchet.core.lineage`).
* **Changes.** Each write of a document bumps its revision; :meth:`Coordination.revisions` is the cheap
  query runners poll, and on PostgreSQL a change of active or of the pin also sends
  ``NOTIFY ratchet_state`` so a runner that listens (:meth:`Coordination.listen`) reloads at once.

The same code runs on SQLite (one host) and PostgreSQL (many hosts).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ratchet.core.errors import ConflictError
from ratchet.core.stores.schema import NOTIFY_CHANNEL, documents, intents, leases, settings

if TYPE_CHECKING:
    from ratchet.core.stores.sql import Store

@dataclass(frozen=True)
class DocumentRow:
    name: str
    revision: int
    body: bytes
    sha256: str
    version: str | None
    commit: str | None


@dataclass(frozen=True)
class Intent:
    id: str
    kind: str
    version: str
    state: str
    payload: dict[str, Any]
    note: str | None
    created_at: float


def holder_id() -> str:
    """This process, as a lease holder: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """A held lease, renewed in the background until released (or until this process dies)."""

    def __init__(self, coordination: Coordination, name: str, holder: str, ttl: float):
        self.coordination, self.name, self.holder, self.ttl = coordination, name, holder, ttl
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{name}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if not self.coordination._claim(self.name, self.holder, self.ttl):
                return  # lost (expired while this process stalled); the next write's fence says so

    def held(self) -> bool:
        """Whether this holder still holds the lease (a version maker checks before its commit point)."""
        return self.coordination.lease_holder(self.name) == self.holder

    def release(self) -> None:
        self._stop.set()
        self._thread.join(self.ttl)
        with self.coordination.store.engine.begin() as conn:
            conn.execute(leases.delete().where(leases.c.name == self.name, leases.c.holder == self.holder))


class Coordination:
    """The shared documents, pins, leases and intents of one store."""

    def __init__(self, store: Store):
        self.store = store
        self.engine = store.engine
        self.postgres = self.engine.dialect.name == "postgresql"
        self.channel = NOTIFY_CHANNEL
        if self.postgres:  # channels are per database: workspaces in other schemas must not wake ours
            with self.engine.connect() as conn:
                schema = conn.execute(sa.select(sa.func.current_schema())).scalar()
            if schema and schema != "public":
                self.channel = f"{NOTIFY_CHANNEL}_{schema}"[:63]

    # --- documents ---

    def document(self, name: str) -> DocumentRow | None:
        with self.store.reader.connect() as conn:
            row = conn.execute(sa.select(documents).where(documents.c.name == name)).first()
        return _document(row)

    def revisions(self) -> dict[str, tuple[int, str | None]]:
        """``{name: (revision, version)}``: what a runner polls to see that it must reload."""
        q = sa.select(documents.c.name, documents.c.revision, documents.c.version)
        with self.store.reader.connect() as conn:
            found = {name: (revision, version) for name, revision, version in conn.execute(q)}
            pin = conn.execute(sa.select(settings.c.value).where(settings.c.name == "pin")).scalar()
        found["pin"] = (0, pin)
        return found

    def seed(self, name: str, body: bytes, *, version: str | None = None, commit: str | None = None) -> DocumentRow:
        """Create the document if no process has yet (the first start on a store); returns what is there."""
        insert = self.store._insert(documents).on_conflict_do_nothing(index_elements=["name"])
        with self.engine.begin() as conn:
            conn.execute(insert.values(name=name, revision=1, body=body, sha256=_sha(body), version=version,
                                       commit=commit, updated_at=time.time()))
        found = self.document(name)
        assert found is not None
        return found

    def swap(self, name: str, body: bytes, expected_revision: int | None, *, version: str | None = None,
             commit: str | None = None) -> DocumentRow:
        """Compare-and-swap: replace ``name`` if its revision is still ``expected_revision`` (``None``:
        whatever it is). Raises :class:`ConflictError` when another writer won."""
        c = documents.c
        where = [c.name == name]
        if expected_revision is not None:
            where.append(c.revision == expected_revision)
        sha = _sha(body)
        values: dict[str, Any] = {"body": body, "sha256": sha, "revision": c.revision + 1,
                                  "updated_at": time.time()}
        if name == "active":
            values |= {"version": version, "commit": commit}
        with self.engine.begin() as conn:
            row = conn.execute(documents.update().where(*where).values(**values).returning(c.revision)).first()
            if row is None:
                current = conn.execute(sa.select(c.revision).where(c.name == name)).scalar()
                raise ConflictError(f"{name} state is at revision {current}, not {expected_revision}",
                                    field=name, fix="read it again and retry your change")
            if name == "active":  # what runners serve; staging changes are polled by the few who watch it
                self._notify(conn, name)
        return DocumentRow(name, row[0], body, sha, values.get("version"), values.get("commit"))

    def _notify(self, conn, what: str) -> None:
        if self.postgres:  # delivered at commit, to every listening runner on every host
            conn.execute(sa.select(sa.func.pg_notify(self.channel, what)))

    def listen(self, on_change: Callable[[str], None], stop: threading.Event) -> None:
        """Call ``on_change(name)`` for each document change until ``stop`` is set (PostgreSQL only;
        returns at once on SQLite, where runners poll :meth:`revisions`)."""
        if not self.postgres:
            return
        import psycopg

        url = self.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f'LISTEN "{self.channel}"')
                    while not stop.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=1):
                            on_change(note.payload)
            except psycopg.Error:
                stop.wait(1.0)  # the poll is the safety net meanwhile

    # --- pins ---

    def pin(self, version: str | None) -> None:
        upsert = self.store._insert(settings).values(name="pin", value=version)
        upsert = upsert.on_conflict_do_update(index_elements=["name"], set_={"value": version})
        with self.engine.begin() as conn:
            conn.execute(upsert)
            self._notify(conn, "pin")

    def pinned(self) -> str | None:
        with self.store.reader.connect() as conn:
            return conn.execute(sa.select(settings.c.value).where(settings.c.name == "pin")).scalar()

    # --- leases ---

    def acquire(self, name: str, *, ttl: float = 5.0) -> Lease | None:
        """The lease ``name`` if no live holder has it (None otherwise); release it when done."""
        holder = holder_id()
        return Lease(self, name, holder, ttl) if self._claim(name, holder, ttl) else None

    @contextmanager
    def leased(self, name: str, *, wait: float = 0.0, ttl: float = 5.0) -> Iterator[Lease | None]:
        """``with coordination.leased("versions", wait=30) as lease:`` (None if not had in ``wait`` s)."""
        deadline = time.monotonic() + wait
        while (lease := self.acquire(name, ttl=ttl)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            yield lease
        finally:
            if lease is not None:
                lease.release()

    def _claim(self, name: str, holder: str, ttl: float) -> bool:
        now = time.time()
        upsert = self.store._insert(leases).values(name=name, holder=holder, expires_at=now + ttl)
        upsert = upsert.on_conflict_do_update(
            index_elements=["name"], set_={"holder": holder, "expires_at": now + ttl},
            where=sa.or_(leases.c.expires_at < now, leases.c.holder == holder))
        with self.engine.begin() as conn:
            conn.execute(upsert)
            current = conn.execute(sa.select(leases.c.holder).where(leases.c.name == name)).scalar()
        return current == holder

    def lease_holder(self, name: str) -> str | None:
        q = sa.select(leases.c.holder).where(leases.c.name == name, leases.c.expires_at >= time.time())
        with self.store.reader.connect() as conn:
            return conn.execute(q).scalar()

    # --- intents ---

    def open_intent(self, kind: str, version: str, payload: dict[str, Any]) -> Intent:
        now = time.time()
        intent = Intent(uuid.uuid4().hex, kind, version, "open", payload, None, now)
        with self.engine.begin() as conn:
            conn.execute(intents.insert().values(id=intent.id, kind=kind, version=version, state="open",
                                                 payload=payload, created_at=now, updated_at=now))
        return intent

    def close_intent(self, intent_id: str, state: str, note: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(intents.update().where(intents.c.id == intent_id)
                         .values(state=state, note=note, updated_at=time.time()))

    def open_intents(self) -> list[Intent]:
        q = sa.select(intents).where(intents.c.state == "open").order_by(intents.c.created_at)
        with self.store.reader.connect() as conn:
            return [_intent(r) for r in conn.execute(q)]

    def intent(self, intent_id: str) -> Intent | None:
        with self.store.reader.connect() as conn:
            row = conn.execute(sa.select(intents).where(intents.c.id == intent_id)).first()
        return _intent(row) if row is not None else None


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _document(row) -> DocumentRow | None:
    if row is None:
        return None
    m = row._mapping
    return DocumentRow(m["name"], m["revision"], bytes(m["body"]), m["sha256"], m["version"], m["commit"])


def _intent(row) -> Intent:
    m = row._mapping
    return Intent(m["id"], m["kind"], m["version"], m["state"], m["payload"], m["note"], m["created_at"])
