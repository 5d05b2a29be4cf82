"""The Batcher: concurrent requests served in batches, each caller answered with its own result only
after its batch ran, one bad request failing only its own caller."""

import threading

import pytest

from ratchet.core.stores.batching import Batcher


def test_a_lone_caller_runs_at_once_in_a_batch_of_one():
    batches = []
    b = Batcher(lambda reqs: batches.append(list(reqs)) or [r * 2 for r in reqs])
    assert b.submit(3) == 6 and b.submit(4) == 8
    assert batches == [[3], [4]]


def test_requests_that_queue_during_a_batch_are_served_together_in_the_next():
    first_running, release = threading.Event(), threading.Event()
    batches, served = [], []

    def run(reqs):
        batches.append(list(reqs))
        if reqs == ["first"]:
            first_running.set()
            assert release.wait(10)
        served.extend(reqs)  # "committed" before any caller of the batch returns
        return [f"{r}!" for r in reqs]

    b = Batcher(run)
    results, seen_at_return = {}, {}

    def call(req):
        results[req] = b.submit(req)
        seen_at_return[req] = req in served

    leader = threading.Thread(target=call, args=("first",))
    leader.start()
    assert first_running.wait(10)
    followers = [threading.Thread(target=call, args=(f"r{i}",)) for i in range(8)]
    for t in followers:
        t.start()
    while len(b._queue) < 9:  # all eight queued behind the leader
        threading.Event().wait(0.001)
    release.set()
    for t in [leader, *followers]:
        t.join(10)
    assert batches[0] == ["first"] and sorted(batches[1]) == sorted(f"r{i}" for i in range(8))
    assert results == {"first": "first!", **{f"r{i}": f"r{i}!" for i in range(8)}}
    assert all(seen_at_return.values())


def test_a_failing_batch_is_retried_alone_so_one_bad_request_fails_only_its_caller():
    gate, batches = threading.Event(), []

    def run(reqs):
        batches.append(list(reqs))
        if reqs == ["hold"]:
            assert gate.wait(10)
        if "bad" in reqs:
            raise ValueError("bad request")
        return list(reqs)

    b = Batcher(run)
    outcome = {}

    def call(req):
        try:
            outcome[req] = b.submit(req)
        except ValueError as exc:
            outcome[req] = exc

    threads = [threading.Thread(target=call, args=(r,)) for r in ("hold", "ok1", "bad", "ok2")]
    threads[0].start()
    while not batches:
        threading.Event().wait(0.001)
    for t in threads[1:]:
        t.start()
    while len(b._queue) < 4:
        threading.Event().wait(0.001)
    gate.set()
    for t in threads:
        t.join(10)
    assert outcome["ok1"] == "ok1" and outcome["ok2"] == "ok2" and outcome["hold"] == "hold"
    assert isinstance(outcome["bad"], ValueError)
    assert sorted(batches[1]) == ["bad", "ok1", "ok2"]  # together first, then alone
    assert sorted(map(tuple, batches[2:])) == [("bad",), ("ok1",), ("ok2",)]


def test_many_threads_each_get_their_own_answer():
    b = Batcher(lambda reqs: [r + 1 for r in reqs], max_batch=7)
    out = [None] * 400

    def call(i):
        out[i] = b.submit(i)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(400)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert out == [i + 1 for i in range(400)] and not b._queue


def test_an_interrupted_batch_tells_every_caller_it_was_not_served():
    b = Batcher(lambda reqs: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        b.submit("x")
    assert not b._queue  # the next caller leads at once
    b._run = lambda reqs: list(reqs)
    assert b.submit("y") == "y"
