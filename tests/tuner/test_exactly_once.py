"""Exactly-once folding, whatever order concurrent appends commit in (SQLite, and PostgreSQL with
``RATCHET_TEST_STORE_URL``)."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from ratchet.core.documents import applied_seq
from ratchet.core.stores.hotpath import HotPath
from ratchet.core.workspace import Workspace
from ratchet.runner.service import Runner
from ratchet.tuner.service import Tuner


def served(ws, n: int) -> None:
    runner = Runner(ws, seed=1)
    for i in range(n):
        runner.call("answer", {"question": "where is my parcel?", "conversation_id": f"c{i}"})


def reward(tuner: Tuner, i: int) -> None:
    tuner.feedback("reward", {"conversation_id": f"c{i}", "value": 1, "event_id": f"e{i}"})


def test_fold_takes_an_append_that_commits_after_later_ones(ws, monkeypatch):
    """One append's commit is held open while five others are sent and the tuner folds; then it is
    released. On PostgreSQL the late append's ``seq`` is taken at INSERT but seen at COMMIT, so a fold
    that moved its watermark past the later appends skipped it for good (994 of 1,000 folded)."""
    served(ws, 6)
    tuner, store = Tuner(ws), ws.store
    held, release = threading.Event(), threading.Event()

    def hold_if_late():
        if threading.current_thread().name == "late":
            held.set()
            release.wait(10)

    # SQLite appends commit through SQLAlchemy; PostgreSQL's pipeline their INSERT and COMMIT (HotPath)
    sa.event.listen(store.engine, "commit", lambda _conn: hold_if_late())
    commit = HotPath._commit_feedback

    def hold_the_late_commit(conn, pipeline):
        pipeline.sync()  # the INSERT has run: its seq is taken, not yet visible
        hold_if_late()
        commit(conn, pipeline)

    monkeypatch.setattr(HotPath, "_commit_feedback", staticmethod(hold_the_late_commit))

    late = threading.Thread(target=reward, args=(tuner, 0), name="late")
    late.start()
    assert held.wait(10)
    # another process's tuner (a store of its own): only the database can order its appends after ours
    other = Tuner(Workspace.open(ws.root))
    others = [threading.Thread(target=reward, args=(other, i)) for i in range(1, 6)]
    for t in others:
        t.start()
    for t in others:  # committed, or waiting behind the held append
        t.join(0.3)
    # the fold runs meanwhile (on SQLite it waits too: one writer at a time, staging included)
    fold = threading.Thread(target=tuner.apply_pending)
    fold.start()
    fold.join(1.0)
    release.set()
    for t in [late, *others, fold]:
        t.join(10)
    tuner.apply_pending()

    staging = ws.state.read("staging").document
    assert len(store.feedback_since(0)) == 6
    assert sum(staging["strategies"]["style"]["pulls"]) == 6  # every event folded, none twice
    assert applied_seq(staging) == store.last_feedback_seq()
