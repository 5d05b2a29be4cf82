"""``ratchet demo``: the simulation's arithmetic (fast), and the whole story with real processes (slow):
patch versions, the drift absorbed by the tuner alone, the users' request, the architect's minor version
with the new style, the tuner learning it, and no process left."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ratchet.cli import cli
from ratchet.demo.report import recovery
from ratchet.demo.simulation import AFTER, BEFORE, NEW_STYLE, STYLES, Oracle, Preferences, Users


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains ``text`` (the demo's folder: every server names it)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in args and state != "Z":
            found.append((int(cmdline.parent.name), args))
    return found


def wait_until_gone(text: str, timeout: float = 15.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


# --- fast ----------------------------------------------------------------------------------------------


def test_demo_preferences_drift_and_oracle_regret():
    prefs = Preferences(drift_at=10.0)
    oracle = Oracle(prefs)
    assert prefs.best(0) == "concise" and prefs.best(10.0) == "detailed"
    assert oracle.expected(9.9) == BEFORE["concise"] and oracle.expected(10.0) == AFTER["detailed"]
    assert oracle.regret(5.0, "concise") == 0.0
    assert oracle.regret(15.0, "concise") == pytest.approx(AFTER["detailed"] - AFTER["concise"])
    # learning alone must not breach the demo's SLO (0.5); the old favourite after the drift must
    assert sum(BEFORE[s] for s in STYLES) / len(STYLES) > 0.55 and AFTER["concise"] < 0.45


def test_demo_oracle_counts_the_new_style_from_its_first_reply():
    """The users like bullet points best after the drift, but the oracle can serve only what the runner
    renders: the new style counts from the moment the runner first replies in it."""
    prefs = Preferences(drift_at=10.0, ask_at=20.0)
    oracle = Oracle(prefs)
    assert prefs.best(15.0, (*STYLES, NEW_STYLE)) == NEW_STYLE and AFTER[NEW_STYLE] - AFTER["detailed"] >= 0.05
    assert oracle.expected(30.0) == AFTER["detailed"] and oracle.regret(30.0, "detailed") == 0.0
    oracle.available(NEW_STYLE, 40.0)
    assert oracle.expected(39.9) == AFTER["detailed"] and oracle.expected(40.0) == AFTER[NEW_STYLE]
    assert oracle.regret(41.0, "detailed") == pytest.approx(AFTER[NEW_STYLE] - AFTER["detailed"])


def test_demo_recovery_is_the_end_of_the_first_span_near_the_oracle():
    from ratchet.demo.driver import Turn

    def turn(t, expected):
        return Turn(0, t, "x", 1.0, expected, 0.8, 0.8 - expected, 1.0)

    # 10 conversations a second: the old favourite (0.4) for 3 s, then exploring (0.5), then the best (0.8)
    turns = [turn(10 + i / 10, 0.4 if i < 30 else 0.5 if i < 50 else 0.8) for i in range(100)]
    # the first 2 s at 90% of the oracle (0.72) hold at most 5 exploring turns: 14.5 to 16.4
    assert recovery(turns, 10.0) == pytest.approx(16.4)
    assert recovery(turns[:60], 10.0) is None  # never near the oracle for a whole span


def test_demo_users_are_reproducible(ws_path):
    prefs = Preferences(drift_at=10.0)
    a, b = Users.from_workspace(ws_path, prefs, 7), Users.from_workspace(ws_path, prefs, 7)
    assert [a.question(n) for n in range(20)] == [b.question(n) for n in range(20)]
    rewards = [a.reward(n, 0.0, "concise") for n in range(400)]
    assert rewards == [b.reward(n, 0.0, "concise") for n in range(400)]
    assert 0.8 < sum(rewards) / len(rewards) < 0.97  # Bernoulli(0.9)
    assert sum(a.reward(n, 0.0, "detailed") for n in range(400)) < 50  # Bernoulli(0.05) before the drift
    assert sum(a.reward(n, 10.0, "detailed") for n in range(400)) > 320  # Bernoulli(0.9) after it
    assert sum(a.reward(n, 10.0, NEW_STYLE) for n in range(400)) > 380  # Bernoulli(0.98): the style users ask for


def test_demo_out_must_be_new_or_empty(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "full")])
    assert result.exit_code == 3, result.output
    assert "already exists and is not empty" in result.output and "choose a new folder" in result.output


# --- slow ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_runs_the_whole_story(tmp_path):
    out = tmp_path / "demo"
    ratchet = str(Path(sys.executable).with_name("ratchet"))
    proc = subprocess.run([ratchet, "demo", "--out", str(out), "--seed", "3", "--drift-at", "15", "--ask-after", "8",
                           "--recover", "10", "--max-seconds", "170"], capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    try:
        summary = json.loads((out / "summary.json").read_text())
        made = summary["versions_made"]
        assert summary["settings"]["strategy"] == "glr_thompson"
        assert made["tuner_patches"] >= 3 and all(v.startswith(("v0.1.", "v0.2.")) for v in made["tuner"])
        assert [v["bump"] for v in made["architect"]] == ["minor"], summary["versions"]

        # loop 1: the tuner absorbs the drift by itself, in patch versions, before anyone asks for anything
        drift = summary["drift"]
        assert drift["woke_the_architect"] is False and summary["recovered"] is True
        assert drift["at_seconds"] < drift["recovered_at_seconds"] < summary["new_style"]["asked_at_seconds"]
        assert drift["patch_versions_to_recovery"] and all(v.startswith("v0.1.") for v in drift["patch_versions_to_recovery"])
        reward = summary["reward"]
        assert reward["after_recovery"]["mean_reward"] > reward["drift_to_recovery"]["mean_reward"], reward
        assert reward["before_drift"]["mean_reward"] > reward["drift_to_recovery"]["mean_reward"], reward
        assert summary["regret"]["drift_to_recovery"] == drift["regret_to_recovery"] > 0

        # loop 2: the users' free text becomes a new style, a minor version, that the tuner then learns
        arch = summary["architect"]
        assert arch["source"] == "feedback" and arch["state"] == "succeeded" and arch["planner"] == "playbook"
        assert arch["version"] == "v0.2.0" and arch["plan"]["rule"] == "new-reply-style"
        assert [a["kind"] for a in arch["plan"]["actions"]] == ["render_template", "edit_config", "replace_text",
                                                               "replace_text", "add_test"]
        # gated off-policy: the existing styles' estimate under the change beside active's, the new one's share
        ope = arch["ope"]["metrics"]
        assert arch["ope"]["refused"] is None and ope["ope.dr.style"] >= ope["ope.dr.style.active"] - 0.05, ope
        assert 0 < ope["ope.dr.style.unobserved"] < 1 and "off-policy gate passed: style: dr" in proc.stdout
        assert arch["request"]["text"].startswith("Could you answer with bullet points?")
        assert summary["new_style"]["asked_at_seconds"] <= arch["tagged_at_seconds"] <= arch["served_at_seconds"]
        new = summary["new_style"]
        assert arch["served_at_seconds"] <= new["first_reply_at_seconds"] and new["share_last_window"] > 0
        assert reward["with_new_style"]["conversations"] > 0 and summary["regret"]["after_new_style"] is not None
        assert (out / "support-desk" / "data" / "styles" / "bullets.yaml").exists()  # the architect's style, merged
        assert "bullets" in (out / "support-desk" / "ratchet.toml").read_text()

        assert summary["failed_conversations"] == 0, summary["failures"]
        assert (out / "reward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "v0.2.0" in proc.stdout and "from the drift to recovery" in proc.stdout
    finally:
        assert wait_until_gone(str(out)) == []


@pytest.mark.slow
def test_demo_interrupted_leaves_no_process(tmp_path):
    out = tmp_path / "demo"
    ratchet = str(Path(sys.executable).with_name("ratchet"))
    proc = subprocess.Popen([ratchet, "demo", "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        status = out / "support-desk" / ".ratchet" / "demo" / "servers.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads(status.read_text()).get("up"):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        assert processes_mentioning(str(out))  # the servers are running
        time.sleep(3)  # the users are talking to them
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 130
        assert "interrupted" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert wait_until_gone(str(out)) == []


def test_demo_reports_the_architect_jobs_off_policy_gate():
    from ratchet.demo.report import ope_gate, ope_text

    job = {"tiers": [{"tier": "fast", "metrics": {}, "failures": []},
                     {"tier": "full", "metrics": {"accuracy": 1.0, "ope.dr.style": 0.81, "ope.dr.style.active": 0.8,
                                                  "ope.dr.style.unobserved": 0.12}, "failures": []}]}
    gate = ope_gate(job)
    assert gate == {"metrics": {"ope.dr.style": 0.81, "ope.dr.style.active": 0.8, "ope.dr.style.unobserved": 0.12},
                    "refused": None}
    assert ope_text(gate) == ("off-policy gate passed: style: dr estimate of the existing styles 0.810 vs active "
                              "0.800; 12% of its calls would go to the new style, never served, so not estimated")
    job["tiers"][1]["failures"] = [{"id": "architect-ope-bullets", "reason": "ope style: dr estimate of tested ..."}]
    assert ope_text(ope_gate(job)) == "off-policy gate refused: ope style: dr estimate of tested ..."
    assert ope_gate({"tiers": [{"metrics": {"accuracy": 1.0}}]}) is None and ope_text(None) is None


def test_demo_prints_the_dashboard_address():
    from types import SimpleNamespace

    from rich.console import Console

    from ratchet.demo import _print_servers

    console = Console(record=True, width=200)
    servers = SimpleNamespace(pids={"versions": 42}, addresses={"versions": "http://127.0.0.1:8704"})
    _print_servers(console, servers, 1.0)
    assert "dashboard: http://127.0.0.1:8704/" in console.export_text()


@pytest.mark.slow
def test_demo_keep_leaves_the_dashboard_up(tmp_path):
    """The keep path of ``ratchet demo --keep``: a process starts the demo's servers with ``keep`` and
    exits; the dashboard at the versions address it reported still answers, until the supervisor is
    stopped (the command it prints: ``kill PID``)."""
    import httpx

    root = tmp_path / "demo" / "support-desk"
    script = ("import json, sys; from pathlib import Path; "
              "from ratchet.demo.servers import Timescales, prepare_workspace, start_servers; "
              "root = Path(sys.argv[1]); prepare_workspace(root, Timescales()); "
              "s = start_servers(root, Timescales(), keep=True); print(json.dumps([s.pid, s.addresses]))")
    proc = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pid, addresses = json.loads(proc.stdout.strip().splitlines()[-1])
    try:
        page = httpx.get(addresses["versions"].rstrip("/") + "/", timeout=30)
        assert page.status_code == 200 and 'id="overview"' in page.text  # after its starter exited
        data = httpx.get(addresses["versions"].rstrip("/") + "/ui/data/overview", timeout=30).json()
        assert data["active"]["version"] == "v0.1.0" and data["versions_total"] == 1
    finally:
        import os

        os.kill(pid, signal.SIGTERM)
        assert wait_until_gone(str(root), timeout=30) == []


def test_demo_servers_get_this_checkout_s_code_by_an_absolute_pythonpath(tmp_path, monkeypatch):
    """The servers run in the workspace folder: PYTHONPATH=src (a checkout) must still name the checkout's
    code there, not whichever ratchet is installed."""
    import os

    from ratchet.demo.servers import server_env

    monkeypatch.chdir(tmp_path)
    env = server_env({"PYTHONPATH": f"src{os.pathsep}/opt/lib", "HOME": "/root"})
    assert env == {"PYTHONPATH": f"{tmp_path / 'src'}{os.pathsep}/opt/lib", "HOME": "/root"}
    assert server_env({"HOME": "/root"}) == {"HOME": "/root"}
