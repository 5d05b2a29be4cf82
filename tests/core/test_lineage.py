"""Versions are made in recoverable steps: a process killed (SIGKILL) at any chosen point leaves
something the next start finishes or undoes, with nothing lost, no duplicate version and an honest
record; a stale ``index.lock`` from a killed git is cleared."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import git
from ratchet.core.documents import ACTIVE_PATH, dumps
from ratchet.core.errors import GitError
from ratchet.core.lineage import Lineage
from ratchet.core.workspace import Workspace

# A child process that makes a version and SIGKILLs itself when it reaches the step named in argv[2].
PROMOTE_AND_DIE = """
import os, signal, sys
from ratchet.core.workspace import Workspace
from ratchet.core.versions import VersionStore
from ratchet.core.stores.coordination import Coordination

root, where = sys.argv[1], sys.argv[2]
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
real_swap = Coordination.swap
def swap(self, name, *a, **k):
    if name == "active":
        die()
    return real_swap(self, name, *a, **k)
if where == "before-tag":
    VersionStore.tag = die
elif where == "before-fast-forward":
    VersionStore.fast_forward = die
elif where == "before-active-moves":
    Coordination.swap = swap
ws = Workspace.open(root)
ws.state.update("staging", lambda d: {**d, "params": {**d["params"], "style": "formal"}})
ws.state.promote(reason="child", author="test")
"""

# An Architect that runs one job (a length complaint: a patch) and dies at the step in argv[2].
MERGE_AND_DIE = """
import os, signal, sys
from ratchet.architect.service import Architect
from ratchet.core.versions import VersionStore
from ratchet.core.workspace import Workspace

root, where = sys.argv[1], sys.argv[2]
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
setattr(VersionStore, {"before-tag": "tag", "before-fast-forward": "fast_forward"}[where], die)
arch = Architect(Workspace.open(root))
job = arch.submit_feedback("answers are too long")
print(job.id, flush=True)
arch.process(arch.jobs.get(job.id))
"""


def run_child(script: str, ws, where: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", script, str(ws.root), where], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]  # it died where it was told to
    return proc


def label_holds(ws) -> None:
    """What the store serves as active is exactly the file its version's tag holds."""
    active = ws.state.read("active")
    assert dumps(active.document) == ws.versions.read_file(active.version, ACTIVE_PATH)
    assert active.commit == ws.versions.get(active.version).commit


def tags(ws) -> list[str]:
    return git(ws.root, "tag").split()


def test_killed_before_its_tag_a_promotion_is_undone(ws):
    head = git(ws.root, "rev-parse", "HEAD").strip()
    run_child(PROMOTE_AND_DIE, ws, "before-tag")
    fresh = Workspace.open(ws.root)
    label_holds(fresh)
    assert fresh.state.read("active").version == "v0.1.0"
    with Lineage(fresh).turn() as turn:  # the next start
        pass
    intents = fresh.store.coordination
    assert tags(fresh) == ["v0.1.0"] and git(ws.root, "rev-parse", "HEAD").strip() == head
    assert git(ws.root, "status", "--porcelain") == ""
    assert intents.open_intents() == []
    again = fresh.state.promote(reason="again", author="test")  # staging kept the change: nothing lost
    assert again.name == "v0.1.1" and tags(fresh) == ["v0.1.0", "v0.1.1"]
    assert json.loads(fresh.versions.read_file("v0.1.1", ACTIVE_PATH))["params"]["style"] == "formal"
    assert turn is not None


@pytest.mark.parametrize("where", ["before-fast-forward", "before-active-moves"])
def test_killed_after_its_tag_a_promotion_is_finished_at_the_next_start(ws, where):
    run_child(PROMOTE_AND_DIE, ws, where)
    fresh = Workspace.open(ws.root)
    label_holds(fresh)  # still v0.1.0's state, labelled v0.1.0, until the version is finished
    assert tags(fresh) == ["v0.1.0", "v0.1.1"]
    with Lineage(fresh).turn() as turn:
        pass
    assert turn is not None
    active = fresh.state.read("active")
    assert active.version == "v0.1.1" and active.document["params"]["style"] == "formal"
    label_holds(fresh)
    assert git(ws.root, "rev-parse", "HEAD").strip() == fresh.versions.get("v0.1.1").commit
    assert git(ws.root, "status", "--porcelain") == ""
    assert fresh.state.read("active").commit == fresh.versions.get("v0.1.1").commit
    fresh.state.update("staging", lambda d: {**d, "params": {**d["params"], "style": "concise"}})
    nxt = fresh.state.promote(reason="next", author="test")  # no second v0.1.1: the lineage goes on
    assert nxt.name == "v0.1.2" and tags(fresh) == ["v0.1.0", "v0.1.1", "v0.1.2"]
    assert git(ws.root, "rev-parse", "v0.1.2^").strip() == fresh.versions.get("v0.1.1").commit


def test_a_stale_index_lock_from_a_killed_git_is_removed(ws, caplog):
    lock = ws.root / ".git" / "index.lock"
    lock.write_bytes(b"")  # what `git add` leaves when it is killed
    ws.state.update("staging", lambda d: {**d, "params": {**d["params"], "style": "formal"}})
    made = ws.state.promote(reason="after a crash", author="test")
    assert made.name == "v0.1.1" and not lock.exists()
    assert "left by a git process that was killed" in caplog.text
    assert git(ws.root, "status", "--porcelain") == ""


def test_an_index_lock_held_by_a_live_process_is_named_and_the_version_finished_later(ws):
    lock = ws.root / ".git" / "index.lock"
    ws.state.update("staging", lambda d: {**d, "params": {**d["params"], "style": "formal"}})
    with open(lock, "wb"):  # this test's process holds it, as a running git would
        with pytest.raises(GitError, match=r"held by a running process \(pid"):
            ws.state.promote(reason="x", author="test")
        label_holds(ws)
        assert ws.state.read("active").version == "v0.1.0"  # not served before main has it
    lock.unlink()
    with Lineage(ws).turn():
        pass
    assert ws.state.read("active").version == "v0.1.1"
    label_holds(ws)


def test_architect_killed_before_its_tag_fails_the_job_honestly(ws):
    from ratchet.architect.service import Architect

    head = git(ws.root, "rev-parse", "HEAD").strip()
    job_id = run_child(MERGE_AND_DIE, ws, "before-tag").stdout.split()[0]
    arch = Architect(Workspace.open(ws.root))
    arch.recover()
    job = arch.jobs.get(job_id)
    assert job.state == "failed" and "before its tag" in job.error.detail
    assert tags(arch.workspace) == ["v0.1.0"] and git(ws.root, "rev-parse", "HEAD").strip() == head


def test_architect_killed_between_tag_and_merge_finishes_the_job_at_restart(ws):
    from ratchet.architect.service import Architect

    job_id = run_child(MERGE_AND_DIE, ws, "before-fast-forward").stdout.split()[0]
    fresh = Workspace.open(ws.root)
    label_holds(fresh)
    arch = Architect(fresh)
    arch.recover()
    job = arch.jobs.get(job_id)
    assert job.state == "succeeded" and job.version == "v0.1.1", job.log
    assert "finished at the next start" in job.log[-1].message
    assert git(ws.root, "rev-parse", "HEAD").strip() == fresh.versions.get("v0.1.1").commit
    assert fresh.versions.get("v0.1.1").metadata["job"] == job_id
    active = fresh.state.read("active")
    assert active.version == "v0.1.1" and active.document["params"]["max_sentences"] == 2
    assert fresh.state.read("staging").document["params"]["max_sentences"] == 2  # the next promotion keeps it


def test_every_version_records_the_plugin_distributions_it_loads(ws_path, tmp_path, monkeypatch):
    """Issue 12: a tag holds everything that decides behaviour, installed plugin code included: each
    entry-point plugin's distribution and version are in its metadata (promotions and merges alike)."""
    from importlib import metadata

    from helpers import code_version, ratchet_distribution

    site = tmp_path / "site"
    info = site / "ratchet_extra_plugin-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ratchet-extra-plugin\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[ratchet]\nextra_plugin = ratchet_extra_plugin\n")
    (site / "ratchet_extra_plugin.py").write_text("# a plugin that implements no hook\n")
    monkeypatch.syspath_prepend(str(site))
    ours = ratchet_distribution()
    expected = {ours: metadata.version(ours), "ratchet-extra-plugin": "1.2.3"}

    ws = Workspace.open(ws_path)
    assert ws.plugins.distributions() == expected
    ws.state.update("staging", lambda d: {**d, "params": {**d["params"], "style": "formal"}})
    promoted = ws.state.promote(reason="x", author="test")
    (ws_path / "NOTES.md").write_text("new\n")
    merged = code_version(ws, ["NOTES.md"])
    for made in (promoted, merged):
        assert made.metadata["plugin_distributions"] == expected
        assert ws.versions.get(made.name).metadata["plugin_distributions"] == expected
