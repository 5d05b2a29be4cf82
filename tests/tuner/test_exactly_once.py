"""Exactly-once folding, whatever order concurrent appends commit in (SQLite, and PostgreSQL with
``RATCHET_TEST_STORE_URL``)."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from ratchet.core.documents import applied_seq
from ratchet.runner.service import Runner
from ratchet.tuner.service import Tuner


def served(ws, n: int) -> None:
    runner = Runner(ws, seed=1)
    for i in range(n):
        runner.call("answer", {"question": "where is my parcel?", "conversation_id": f"c{i}"})


def reward(tuner: Tuner, i: int) -> None:
    tuner.feedback("reward", {"conversation_id": f"c{i}", "value": 1, "event_id": f"e{i}"})


def test_fold_takes_an_append_that_commits_after_later_ones(ws):
    """One append's commit is held open while five others are sent and the tuner folds; then it is
    released. On PostgreSQL the late append's ``seq`` is taken at INSERT but seen at COMMIT, so a fold
    that moved its watermark past the later appends skipped it for good (994 of 1,000 folded)."""
    served(ws, 6)
    tuner, store = Tuner(ws), ws.store
    held, release = threading.Event(), threading.Event()

    @sa.event.listens_for(store.engine, "commit")
    def hold_the_late_commit(_conn):
        if threading.current_thread().name == "late":
            held.set()
            release.wait(10)

    late = threading.Thread(target=reward, args=(tuner, 0), name="late")
    late.start()
    assert held.wait(10)
    others = [threading.Thread(target=reward, args=(tuner, i)) for i in range(1, 6)]
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
