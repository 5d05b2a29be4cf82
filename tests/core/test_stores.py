import os
import threading

import pytest
import sqlalchemy as sa

from ratchet.core.stores.objects import ObjectStore
from ratchet.core.stores.schema import sessions
from ratchet.core.stores.sql import Store


def store_url(tmp_path) -> str:
    """This test's PostgreSQL schema (``RATCHET_TEST_STORE_URL``), or a new SQLite file."""
    return os.environ.get("RATCHET_STORE_URL") or f"sqlite:///{tmp_path / 'r.db'}"


@pytest.fixture
def store(tmp_path):
    s = Store(store_url(tmp_path))
    yield s
    s.close()


def test_store_feedback_is_idempotent_by_event_id(store):
    first = store.append_feedback([{"event_id": "e1", "tool": "reward", "payload": {"value": 1}}])
    again = store.append_feedback([{"event_id": "e1", "tool": "reward", "payload": {"value": 0}}])
    assert first[0]["duplicate"] is False and again[0]["duplicate"] is True
    assert first[0]["seq"] == again[0]["seq"]
    rows = store.feedback_since(0)
    assert len(rows) == 1 and rows[0]["payload"] == {"value": 1}


def test_store_feedback_batch_with_duplicates_inside(store):
    out = store.append_feedback([
        {"event_id": "a", "tool": "reward", "payload": {}},
        {"event_id": "b", "tool": "reward", "payload": {}},
        {"event_id": "a", "tool": "reward", "payload": {}},
    ])
    assert [o["duplicate"] for o in out] == [False, False, True]
    assert store.last_feedback_seq() == 2


def test_store_large_batch_keeps_its_order_and_finds_duplicates(store):
    """A batch large enough for PostgreSQL's COPY path: seqs follow the batch's order, and repeats (of
    the log or inside the batch) are reported as duplicates with the first seq."""
    store.append_feedback([{"event_id": "old", "tool": "reward", "payload": {"v": 0}}])
    items = [{"event_id": f"e{i}", "tool": "reward", "payload": {"v": i, "s": "ü"}, "conversation_id": f"c{i}"}
             for i in range(200)]
    items[50] = {"event_id": "old", "tool": "reward", "payload": {"v": -1}}
    items[120] = {"event_id": "e7", "tool": "reward", "payload": {"v": -1}}
    out = store.append_feedback(items)
    fresh = [o for o in out if not o["duplicate"]]
    assert [o["event_id"] for o in out if o["duplicate"]] == ["old", "e7"]
    assert len(fresh) == 198 and [o["seq"] for o in fresh] == sorted(o["seq"] for o in fresh)
    assert out[50]["seq"] == 1 and out[120]["seq"] == out[7]["seq"]
    rows = store.feedback_since(1)
    assert [r["event_id"] for r in rows] == [o["event_id"] for o in fresh]
    assert rows[0]["payload"] == {"v": 0, "s": "ü"} and rows[0]["conversation_id"] == "c0"


def test_store_same_event_from_concurrent_callers_is_new_to_exactly_one(store):
    """Concurrent appends share a transaction on PostgreSQL: an event id that several callers send at
    once is still inserted once, reported new to one caller and a duplicate, with its seq, to the rest."""
    barrier = threading.Barrier(8)
    acks, lock = [], threading.Lock()

    def send(n):
        barrier.wait()
        for i in range(20):
            ack = store.append_feedback([{"event_id": f"e{i}", "tool": "reward", "payload": {"by": n}},
                                         {"event_id": f"own-{n}-{i}", "tool": "reward", "payload": {}}])
            with lock:
                acks.extend(ack)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared = [a for a in acks if not a["event_id"].startswith("own-")]
    for i in range(20):
        mine = [a for a in shared if a["event_id"] == f"e{i}"]
        assert sum(not a["duplicate"] for a in mine) == 1 and len({a["seq"] for a in mine}) == 1
    assert not any(a["duplicate"] for a in acks if a["event_id"].startswith("own-"))
    rows = store.feedback_since(0)
    assert len(rows) == 20 + 8 * 20 and [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    assert {a["event_id"]: a["seq"] for a in acks} == {r["event_id"]: r["seq"] for r in rows}


def test_store_feedback_generates_ids(store):
    out = store.append_feedback([{"tool": "reward", "payload": {}} for _ in range(3)])
    assert len({o["event_id"] for o in out}) == 3


def test_store_fresh_database_opened_by_many_at_once(tmp_path):
    """Processes that start together on a new database all create the tables: none fails (PostgreSQL
    answered UniqueViolation to all but one)."""
    from helpers import errors_at_once  # here: the S3 test's worker processes import this module without tests/

    url = store_url(tmp_path)
    errors = errors_at_once(lambda: Store(url).close(), [()] * 8)
    assert errors == []


def test_store_concurrent_appends_lose_nothing(tmp_path):
    url = store_url(tmp_path)

    def worker(n):
        s = Store(url)
        for i in range(50):
            s.append_feedback([{"event_id": f"{n}-{i}", "tool": "reward", "payload": {"i": i}}])
        s.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Store(url).last_feedback_seq() == 200


def test_store_turns_decisions_sessions(store):
    store.record_turn(conversation_id="c1", tool="answer", arguments={"question": "q"}, result={"a": 1},
                      version="v0.1.0", decisions_=[{"strategy": "style", "choice": "concise", "propensity": 0.25,
                                                     "sticky": True, "info": {}}], features={"topic": "returns"})
    store.record_turn(conversation_id="c1", tool="answer", arguments={"question": "q2"}, result={"a": 2})
    session = store.session("c1")
    assert len(session["turns"]) == 2
    decisions = store.decisions_for("c1")
    assert decisions[0]["choice"] == "concise" and decisions[0]["features"] == {"topic": "returns"}
    assert store.session("nope") is None


def test_store_rewarded_decisions_join_each_reward_to_the_latest_decision_of_the_strategy(store):
    """Off-policy evaluation's rows: each reward with its conversation's latest decision of that strategy
    (not another strategy's, not an older one), newest reward first; ``limit`` counts rewards, and
    ``versions`` keeps the decisions served by those versions."""

    def call(cid: str, strategy: str, choice: str, version: str) -> None:
        store.record_turn(conversation_id=cid, tool="answer", arguments={}, result={}, version=version,
                          decisions_=[{"strategy": strategy, "choice": choice, "propensity": 0.5, "sticky": False,
                                       "info": {}}])

    call("a", "style", "concise", "v1")
    call("a", "style", "formal", "v2")  # the latest of style in a
    call("a", "tone", "warm", "v2")  # another strategy, later
    call("b", "style", "friendly", "v1")
    call("c", "tone", "cold", "v1")  # no decision of style: its reward is not style's
    store.append_feedback([{"tool": "reward", "conversation_id": cid, "payload": {"args": {"value": v}}}
                           for cid, v in [("a", 1.0), ("b", 0.0), ("c", 1.0), ("a", 0.5)]])
    store.append_feedback([{"tool": "score", "conversation_id": "a", "payload": {"args": {"value": 9}}}])
    rows = store.rewarded_decisions("style")
    assert [(r["choice"], r["value"], r["version"]) for r in rows] == [
        ("formal", 0.5, "v2"), ("friendly", 0.0, "v1"), ("formal", 1.0, "v2")]
    assert [r["value"] for r in store.rewarded_decisions("style", limit=2)] == [0.5, 0.0]
    assert [r["choice"] for r in store.rewarded_decisions("style", versions=["v1"])] == ["friendly"]
    assert [r["choice"] for r in store.rewarded_decisions("tone")] == ["warm", "cold", "warm"]


def test_concurrent_turns_share_transactions_and_lose_nothing(store):
    """32 threads at once (a runner under load): every turn and decision is there when its call returns,
    sessions count every turn, and JSON values come back as they went in."""
    returned = []

    def client(k):
        for i in range(10):
            cid = f"c{k % 4}"  # four conversations, each written by eight threads at once
            store.record_turn(conversation_id=cid, tool="answer", arguments={"k": k, "i": i}, result=None,
                              decisions_=[{"strategy": "s", "choice": {"arm": [k, i]}, "propensity": None,
                                           "sticky": k % 2 == 0, "info": {}}])
            returned.append((cid, k, i))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(returned) == 320
    with store.engine.connect() as conn:
        counted = dict(conn.execute(sa.select(sessions.c.conversation_id, sessions.c.turns)).all())
    assert counted == {f"c{c}": 80 for c in range(4)}
    for c in range(4):
        session = store.session(f"c{c}")
        assert len(session["turns"]) == 80
        assert {(t["arguments"]["k"], t["arguments"]["i"]) for t in session["turns"]} == {
            (k, i) for k in range(c, 32, 4) for i in range(10)}
        assert all(t["result"] is None for t in session["turns"])
        assert len(store.decisions_for(f"c{c}")) == 80
    latest = store.latest_decisions(["c0", "c1", "nobody"])
    assert set(latest) == {"c0", "c1"}
    assert latest["c1"]["s"]["sticky"] is False and latest["c0"]["s"]["sticky"] is True
    assert latest["c0"]["s"]["choice"]["arm"][0] % 4 == 0 and latest["c0"]["s"]["features"] == {}
    assert store.decisions_in_force("c1") == latest["c1"] and store.decisions_in_force("nobody") == {}


def test_one_bad_turn_fails_only_its_own_call(store, monkeypatch):
    """A batch that fails is written again call by call: the others still land."""
    real = store._hot.write_turns

    def refuse_bad(sessions, turns, decisions):
        if any(t["tool"] == "bad" for t in turns):
            raise ValueError("bad turn")
        return real(sessions, turns, decisions)

    monkeypatch.setattr(store._hot, "write_turns", refuse_bad)
    gate = threading.Event()
    held = store._turns._run

    def slow_first(items):
        gate.wait(10)
        return held(items)

    monkeypatch.setattr(store._turns, "_run", slow_first)
    errors = {}

    def call(cid, tool):
        try:
            store.record_turn(conversation_id=cid, tool=tool, arguments={})
        except ValueError as exc:
            errors[cid] = exc

    threads = [threading.Thread(target=call, args=(f"c{i}", "bad" if i == 2 else "answer")) for i in range(5)]
    for t in threads:
        t.start()
    while len(store._turns._queue) < 5:
        gate.wait(0.001)
    gate.set()
    for t in threads:
        t.join(10)
    assert list(errors) == ["c2"]
    assert [c for c in ("c0", "c1", "c2", "c3", "c4") if store.session(c)] == ["c0", "c1", "c3", "c4"]


def test_store_events_and_jobs(store):
    seq = store.append_event("state.promoted", {"version": "v0.1.1"})
    assert store.events_since(seq - 1)[0]["payload"] == {"version": "v0.1.1"}
    store.put_job("j1", "queued", {"text": "x"})
    store.put_job("j1", "planning", {"text": "x", "plan": []})
    assert store.get_job("j1")["state"] == "planning"
    assert [j["id"] for j in store.list_jobs("planning")] == ["j1"]
    assert store.get_job("nope") is None


def test_object_store_roundtrip(tmp_path):
    objects = ObjectStore(str(tmp_path / "objects"))
    objects.put_json("evals/abc/summary.json", {"passed": 3})
    assert objects.get_json("evals/abc/summary.json") == {"passed": 3}
    assert objects.get_json("evals/zzz/summary.json") is None
    objects.append_line("telemetry/spans.jsonl", '{"a": 1}')
    objects.append_line("telemetry/spans.jsonl", '{"a": 2}')
    assert objects.get_bytes("telemetry/spans.jsonl").count(b"\n") == 2
    assert objects.list("evals") == ["evals/abc/summary.json"]


def test_object_store_memory_url():
    objects = ObjectStore("memory://ratchet-test")
    objects.put_json("k.json", [1])
    assert objects.get_json("k.json") == [1]


def test_workspace_store_paths_are_relative_to_workspace(ws, monkeypatch):
    monkeypatch.delenv("RATCHET_STORE_URL", raising=False)
    assert ws.store.url == f"sqlite:///{ws.root}/.ratchet/ratchet.db"
    ws.objects.put_json("x.json", {})
    assert (ws.root / ".ratchet" / "objects" / "x.json").exists()


def test_store_url_from_the_environment_overrides_ratchet_toml(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("RATCHET_STORE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert ws.store.url == f"sqlite:///{tmp_path / 'elsewhere.db'}" and (tmp_path / "elsewhere.db").exists()


# Two processes write telemetry lines to the same S3 object store at once.
TELEMETRY_WRITER = """
import sys
from ratchet.core.stores.objects import ObjectStore
from ratchet.core.stores.schema import sessions
from ratchet.core.telemetry import telemetry_key
objects = ObjectStore(sys.argv[1], {"client_kwargs": {"endpoint_url": sys.argv[2]}})
for i in range(20):
    objects.append_line(telemetry_key("runner", "spans"), '{"i": %d}' % i)
"""


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 server on a free 127.0.0.1 port (stopped after the test) and a bucket."""
    import fsspec
    from moto.server import ThreadedMotoServer

    for var, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(var, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    fsspec.filesystem("s3", client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True).mkdir("bucket")
    yield endpoint
    server.stop()


def test_object_store_on_s3_keeps_every_line_of_concurrent_telemetry_writers(s3, ws_path):
    """Each process appends to its own telemetry keys: on S3 an append rewrites the object, and two
    processes on one key kept 30 of 40 lines."""
    import subprocess
    import sys

    url = "s3://bucket/ws"
    writers = [subprocess.Popen([sys.executable, "-c", TELEMETRY_WRITER, url, s3]) for _ in range(2)]
    assert [w.wait(60) for w in writers] == [0, 0]
    objects = ObjectStore(url, {"client_kwargs": {"endpoint_url": s3}})
    keys = objects.list("telemetry/runner")
    assert len(keys) == 2 and all(k.endswith("/spans.jsonl") for k in keys)
    assert sum(objects.get_bytes(k).count(b"\n") for k in keys) == 40
    objects.put_json("evals/abc/summary.json", {"passed": 3})
    assert objects.get_json("evals/abc/summary.json") == {"passed": 3}

    toml = ws_path / "ratchet.toml"  # and a workspace finds it through ratchet.toml
    toml.write_text(toml.read_text().replace(
        'objects = ".ratchet/objects"', f'objects = "{url}"\nobjects_options = {{client_kwargs = {{endpoint_url = "{s3}"}}}}'))
    from ratchet.core.workspace import Workspace

    assert Workspace.open(ws_path).objects.get_json("evals/abc/summary.json") == {"passed": 3}


# --- the store's lock API (Store.lock, Store.locked) ---


def _waits_for(store: Store, held: str, wanted: str, timeout: float = 1.5) -> bool:
    """Whether a second store (another process's, as far as the database knows) waits for ``wanted``
    while this one holds ``held``; the holder lets go after ``timeout`` seconds at most."""
    other = Store(store.url)
    got = threading.Event()
    try:
        with store.locked(held):
            def take():
                with other.locked(wanted):
                    got.set()

            taker = threading.Thread(target=take)
            taker.start()
            waited = not got.wait(timeout)
        taker.join(20)
        assert got.is_set()  # it gets the lock once the holder lets go
        return waited
    finally:
        other.close()


def test_store_lock_makes_a_second_holder_of_the_name_wait(store):
    assert _waits_for(store, "job-7", "job-7")


def test_store_lock_of_another_name(store):
    """On PostgreSQL names are separate advisory locks; on SQLite every write transaction holds the one
    write lock, so any two exclude each other (as the docstring says)."""
    assert _waits_for(store, "job-7", "job-8") is (store.engine.dialect.name == "sqlite")


def test_store_lock_ends_with_a_failed_transaction(store):
    with pytest.raises(RuntimeError), store.locked("job-7") as conn:
        conn.execute(sessions.insert().values(conversation_id="gone", created_at=1.0, updated_at=1.0))
        raise RuntimeError("boom")
    with store.reader.connect() as conn:  # rolled back
        assert conn.execute(sa.select(sessions.c.conversation_id)).all() == []
    other, got = Store(store.url), threading.Event()

    def take():
        with other.locked("job-7"):
            got.set()

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    try:
        assert got.wait(10)  # released with the transaction: another process takes it at once
        taker.join(10)  # its own transaction ends before its store is closed
    finally:
        other.close()


@pytest.mark.parametrize("name", ["", "two words", "x" * 65, "semi;colon", None])
def test_store_lock_refuses_a_bad_name(store, name):
    from ratchet.core.errors import UserError

    with pytest.raises(UserError) as err, store.locked(name):
        pass
    assert err.value.field == "name" and "dashboard-rollup" in err.value.fix
