"""`ratchet serve architect` as a real process, driven by `ratchet feedback`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpers import ServerProcess, git

pytestmark = pytest.mark.slow
RATCHET = str(Path(sys.executable).with_name("ratchet"))


def feedback(ws_path: Path, url: str, text: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([RATCHET, "feedback", text, "--url", url, "-w", str(ws_path), *extra],
                          capture_output=True, text=True, timeout=300)


def test_feedback_command_follows_the_job_to_its_version(ws_path):
    with ServerProcess("architect", ws_path) as server:
        url = f"http://127.0.0.1:{server.port}"
        done = feedback(ws_path, url, "The answers are too long")
        assert done.returncode == 0, done.stderr
        assert "set_state" in done.stdout and "v0.1.1 (patch)" in done.stdout
        assert git(ws_path, "tag", "-l").split() == ["v0.1.0", "v0.1.1"]

        job = json.loads(feedback(ws_path, url, "lovely weather", "--json").stdout)
        assert job["state"] == "failed" and "nothing to change" in job["error"]["detail"]
        listed = httpx.get(f"{url}/jobs").json()
        assert listed["total"] == 2
        table = subprocess.run([RATCHET, "jobs", "--url", url], capture_output=True, text=True, timeout=60)
        assert table.returncode == 0 and job["id"] in table.stdout and "succeeded" in table.stdout
        shown = subprocess.run([RATCHET, "jobs", "show", job["id"], "--url", url], capture_output=True, text=True,
                               timeout=60)
        assert json.loads(shown.stdout)["state"] == "failed"
        refused = subprocess.run([RATCHET, "jobs", "approve", job["id"], "--url", url], capture_output=True,
                                 text=True, timeout=60)
        assert refused.returncode == 5 and "not waiting for approval" in refused.stderr  # a conflict

    # Jobs survive a restart of the server.
    with ServerProcess("architect", ws_path) as server:
        assert httpx.get(f"http://127.0.0.1:{server.port}/jobs").json()["total"] == 2


def test_feedback_command_exit_code_when_tests_fail(ws_path):
    budgets = json.loads((ws_path / "ci/budgets.json").read_text())
    budgets["tiers"]["full"]["metrics"]["accuracy"] = 1.01
    (ws_path / "ci/budgets.json").write_text(json.dumps(budgets))
    git(ws_path, "commit", "-qam", "unreachable full tier")
    with ServerProcess("architect", ws_path) as server:
        done = feedback(ws_path, f"http://127.0.0.1:{server.port}", "The answers are too long")
    assert done.returncode == 8
    assert "tiers.full" in done.stderr or "accuracy" in done.stderr
    assert git(ws_path, "tag", "-l").split() == ["v0.1.0"]
