"""Two hosts: two clones of one bare git remote that share nothing else but the store (the test's
PostgreSQL schema with ``RATCHET_TEST_STORE_URL``, else one SQLite file). Either host's tuner makes the
next version on top of the other's; a runner on one serves what the other promoted; the versions lease
passes to the other host when its holder dies."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from helpers import git
from ratchet.core.documents import ACTIVE_PATH, dumps
from ratchet.core.workspace import Workspace
from ratchet.runner.service import Runner
from ratchet.tuner.service import Tuner


def two_hosts(ws_path, tmp_path, monkeypatch) -> tuple[Workspace, Workspace, object]:
    """Host A (the workspace), a bare remote made from it, host B cloned from the remote."""
    if not os.environ.get("RATCHET_STORE_URL"):
        monkeypatch.setenv("RATCHET_STORE_URL", f"sqlite:///{tmp_path / 'shared.db'}")
    toml = ws_path / "ratchet.toml"
    toml.write_text(toml.read_text().replace("[workspace]\n", '[workspace]\nremote = "origin"\n', 1))
    git(ws_path, "commit", "-qam", "versions go to origin")
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(ws_path), str(remote))
    git(ws_path, "remote", "add", "origin", str(remote))
    git(ws_path, "fetch", "-q", "origin")
    git(ws_path, "branch", "-q", "--set-upstream-to=origin/main")
    git(tmp_path, "clone", "-q", str(remote), str(tmp_path / "b"))
    return Workspace.open(ws_path), Workspace.open(tmp_path / "b"), remote


def serve_and_reward(runner: Runner, tuner: Tuner, prefix: str, n: int = 5) -> None:
    for i in range(n):
        runner.call("answer", {"question": "where is my parcel?", "conversation_id": f"{prefix}{i}"})
        tuner.feedback("reward", {"conversation_id": f"{prefix}{i}", "value": 1, "event_id": f"{prefix}{i}"})
    tuner.apply_pending()


def promote(tuner: Tuner) -> dict:
    return anyio.run(tuner.promote)


def test_two_hosts_make_one_linear_history_and_serve_each_others_versions(ws_path, tmp_path, monkeypatch):
    a, b, remote = two_hosts(ws_path, tmp_path, monkeypatch)
    runner_b, tuner_a, tuner_b = Runner(b, seed=1), Tuner(a), Tuner(b)

    serve_and_reward(runner_b, tuner_a, "a")
    first = promote(tuner_a)
    assert first["promoted"] and first["version"] == "v0.1.1"
    assert runner_b.reload_if_changed() and runner_b.snapshot.version == "v0.1.1"  # B serves A's promotion
    assert dumps(runner_b.snapshot.document) == a.versions.read_file("v0.1.1", ACTIVE_PATH)

    serve_and_reward(runner_b, tuner_b, "b")
    second = promote(tuner_b)  # B fetches v0.1.1 first and builds on it
    assert second["promoted"] and second["version"] == "v0.1.2"
    serve_and_reward(runner_b, tuner_a, "c")
    third = promote(tuner_a)
    assert third["promoted"] and third["version"] == "v0.1.3"

    tags = git(remote, "tag").split()
    assert tags == ["v0.1.0", "v0.1.1", "v0.1.2", "v0.1.3"]
    for older, newer in zip(tags, tags[1:]):  # one lineage: every tag descends from the one before
        assert git(remote, "merge-base", "--is-ancestor", older, newer) == ""
    assert git(remote, "rev-parse", "main").strip() == git(remote, "rev-parse", "v0.1.3^{commit}").strip()
    assert runner_b.reload_if_changed() and runner_b.snapshot.version == "v0.1.3"
    staged = a.state.read("staging").document["strategies"]["style"]
    assert sum(staged["pulls"]) == 15  # every acknowledged reward folded once, whichever host folded it


def test_the_versions_lease_passes_to_the_other_host_when_its_holder_dies(ws_path, tmp_path, monkeypatch):
    a, b, _remote = two_hosts(ws_path, tmp_path, monkeypatch)
    runner_b, tuner_b = Runner(b, seed=1), Tuner(b)
    serve_and_reward(runner_b, tuner_b, "b")
    dead = a.store.coordination.acquire("versions", ttl=1.0)  # host A takes the turn, then dies
    dead._stop.set()
    busy = promote(tuner_b)
    assert not busy["promoted"] and "another process is making a version" in busy["reason"]
    deadline = time.monotonic() + 10
    while not (outcome := promote(tuner_b))["promoted"]:
        assert time.monotonic() < deadline, outcome
        time.sleep(0.2)
    assert outcome["version"] == "v0.1.1"


def test_a_host_with_main_diverged_from_the_remote_refuses_to_make_versions(ws_path, tmp_path, monkeypatch):
    a, b, _remote = two_hosts(ws_path, tmp_path, monkeypatch)
    (b.root / "notes.txt").write_text("a commit nobody else has\n")
    git(b.root, "add", "notes.txt")
    git(b.root, "commit", "-qm", "local only")
    runner, tuner_a, tuner_b = Runner(a, seed=1), Tuner(a), Tuner(b)
    serve_and_reward(runner, tuner_a, "a")
    assert promote(tuner_a)["promoted"]
    serve_and_reward(runner, tuner_b, "b")
    from ratchet.core.errors import GitError

    with pytest.raises(GitError, match="have diverged"):
        promote(tuner_b)
    assert b.state.read("active").version == "v0.1.1"  # nothing B did reached the store


def test_a_runner_on_postgresql_hears_a_promotion_without_waiting_for_its_poll(ws_path, tmp_path, monkeypatch):
    import threading

    a, b, _remote = two_hosts(ws_path, tmp_path, monkeypatch)
    if a.store.engine.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; on SQLite runners poll (the other tests)")
    runner_b, tuner_a = Runner(b, seed=1), Tuner(a)
    serve_and_reward(runner_b, tuner_a, "a")
    runner_b.wait_for_change(0.5)  # starts the listener
    heard = []
    listener = threading.Thread(target=lambda: heard.append(runner_b.wait_for_change(60)))
    listener.start()
    assert promote(tuner_a)["promoted"]
    listener.join(60)
    runner_b.close()
    assert heard == [True]  # announced by NOTIFY, not the 60 s timeout
    assert runner_b.reload_if_changed() and runner_b.snapshot.version == "v0.1.1"


@pytest.mark.slow
def test_soak_two_hosts_with_tuners_killed_at_random_loses_nothing(tmp_path, monkeypatch):
    """bench/two_hosts.py, small: real servers (runner on B, tuners on A and B), 4 clients, tuner
    processes SIGKILLed every ~2 s. Every acknowledged event is in the active state once; one lineage."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("two_hosts_bench", Path(__file__).parents[2] / "bench" / "two_hosts.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    url = os.environ.get("RATCHET_STORE_URL") or f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("RATCHET_STORE_URL", url)
    out = bench.run(url, tmp_path, pairs=240, clients=4, kill_every=2.0, every_events=40)
    assert out["client_errors"] == 0 and out["kills"] >= 2, out
    assert out["acked"] == out["logged"] == out["applied_to_active"] >= 240, out
    assert out["skipped"] == 0 and out["linear_history"] and out["versions"] >= 3, out
    assert out["b_serves_n"] >= 1 and out["failover_next_version_s"], out
