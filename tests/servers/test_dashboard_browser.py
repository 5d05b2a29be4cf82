"""The dashboard in a real browser (issue 16's "done means"): headless Chromium (Debian's package) driven by
Playwright, against ``ratchet serve versions`` and ``ratchet serve architect`` as real processes on a
workspace this test makes (versions, rewards, a wake-up, an agent's job waiting for approval).

Each page loads with no console error and shows that workspace's data; the overview's chart updates when
the tuner promotes; approve is refused without the token and moves the job on with it. Screenshots of
each page go to ``$RATCHET_SCREENSHOTS`` (``docs/screenshots`` for the docs page) or a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from helpers import ServerProcess, git
from ratchet.core import auth

pytestmark = pytest.mark.slow
TOKEN = "browser-test-token-0123456789abcdef"
CHROMIUM = "/usr/bin/chromium"


def chromium() -> str:
    exe = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if exe:
        return exe
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; CI installs it with apt-get install chromium (.ci/run)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


def wait_for(what, predicate, timeout: float = 120.0, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("RATCHET_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def workspace(ws_path, monkeypatch):
    """The workspace the browser looks at: three versions, rewards over the last minutes, and 30 runner
    calls rewarded through the tuner (decisions with propensities, for the strategies page)."""
    from test_dashboard import make_versions, rewarded_calls, rewards

    from ratchet.core.workspace import Workspace

    monkeypatch.setenv(auth.TOKEN_ENV, TOKEN)  # the servers this test starts inherit it
    budgets_path = ws_path / "ci/budgets.json"
    budgets = json.loads(budgets_path.read_text())
    for tier in budgets["tiers"].values():  # a shared, loaded machine: this test is about the dashboard
        tier["latency_ms"], tier["max_seconds"] = {"p50": 60_000, "p95": 60_000}, 3600
    budgets_path.write_text(json.dumps(budgets, indent=2))
    git(ws_path, "commit", "-qam", "budgets for a loaded machine")
    ws = Workspace.open(ws_path)
    make_versions(ws)
    now = time.time()
    rewards(ws, [(now - 600 + 6 * i, 1.0 if i % 3 else 0.0) for i in range(100)])
    rewarded_calls(ws, 30)
    return ws


def wake_up(ws) -> None:
    """A wake-up as the Triggerer records it. Emitted once the Architect runs: one that starts later
    reads the wake-ups it missed and acts on them (a real job, which this test does not want)."""
    ws.emit("trigger.wake", {"at": time.time() - 120, "breaches": [{"kpi": "reward_rate", "value": 0.4, "slo": 0.5}]})


def waiting_job(architect: str) -> str:
    """An agent's job through the Architect's API: a new file (a minor change), released, tested, and
    held in needs_approval (the default gate for an agent's code)."""
    client = httpx.Client(base_url=architect, headers=auth.header(TOKEN), timeout=30)
    jid = client.post("/jobs", json={"title": "explain refund timing"}).json()["id"]
    put = client.put(f"/jobs/{jid}/files/notes/refunds.md", json={"content": "Refunds take five days.\n"})
    assert put.status_code == 200, put.text
    assert client.post(f"/jobs/{jid}/release").status_code == 202
    job = wait_for("the job to wait for approval",
                   lambda: (j := client.get(f"/jobs/{jid}").json())["state"] in ("needs_approval", "failed") and j)
    assert job["state"] == "needs_approval", job["error"]
    return jid


def test_dashboard_in_chromium(workspace, screenshots):
    from playwright.sync_api import expect, sync_playwright

    from test_versions_api import promote_through_tuner

    ws = workspace
    with ServerProcess("architect", ws.root) as arch_server:
        architect = f"http://127.0.0.1:{arch_server.port}"
        jid = waiting_job(architect)
        wake_up(ws)
        with ServerProcess("versions", ws.root, "--architect-url", architect) as versions_server, \
                sync_playwright() as pw:
            base = f"http://127.0.0.1:{versions_server.port}"
            browser = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def visit(path: str, shot: str, ready: str | None = None) -> None:
                page.goto(base + path)
                if ready:  # e.g. the tool schemas, which a version's first read builds in a fresh process
                    expect(page.locator(ready)).to_be_visible(timeout=180_000)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(screenshots / f"{shot}.png"), full_page=True)
                assert errors == [], f"{path}: {errors}"

            # a token server: the browser logs in once, then reads every page with its session cookie
            page.goto(base + "/")
            expect(page).to_have_url(base + "/login?next=/")
            page.fill("input[name=token]", TOKEN)
            page.click("form[action='/login'] button")
            expect(page.locator("#active-version")).to_have_text("v0.1.2")

            # overview: the chart drew the versions, the reward and the wake-up, from the store
            chart = page.locator("#reward-chart")
            expect(chart).to_have_attribute("data-versions", "4")
            expect(page.locator("#wakeups tbody tr")).to_have_count(1)
            expect(page.locator("#latest-versions tbody tr").first).to_contain_text("v0.2.0")
            assert page.locator("#reward-chart canvas").count() == 1
            visit("/", "overview")

            # live: a promotion by the tuner shows up without a reload
            updates = int(chart.get_attribute("data-updates"))
            with ThreadPoolExecutor(1) as pool:  # off Playwright's event loop: the tuner runs its own
                made = pool.submit(promote_through_tuner, ws).result()
            expect(page.locator("#active-version")).to_have_text(made, timeout=20_000)
            expect(chart).to_have_attribute("data-versions", "5")
            assert int(chart.get_attribute("data-updates")) > updates
            page.screenshot(path=str(screenshots / "overview-live.png"), full_page=True)

            # a click on a bucket of the chart lists that bucket's conversations, each linked to its story
            d = page.evaluate("fetch('/ui/data/overview').then((r) => r.json())")
            bucket = d["reward"][len(d["reward"]) // 2]  # amid the rewards: its neighbours have rewards too
            over = page.locator("#reward-chart .u-over")
            box = over.bounding_box()
            x = (bucket["t"] + d["width"] / 2 - d["start"]) / (d["now"] - d["start"]) * box["width"]
            over.click(position={"x": x, "y": box["height"] * 0.5})
            expect(page).to_have_url(re.compile(r"/ui/conversations\?start=[0-9.]+&end=[0-9.]+$"))
            listed = page.locator("#window-conversations tbody tr a")
            expect(listed.first).to_be_visible()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(screenshots / "conversations-window.png"), full_page=True)
            assert errors == [], errors
            clicked = listed.first.inner_text()
            listed.first.click()
            expect(page.locator("#story")).to_contain_text("reward")
            expect(page.locator("h2").first).to_contain_text(clicked)

            visit("/ui/versions", "versions")
            expect(page.locator("#versions tbody tr")).to_have_count(5)
            visit("/ui/versions?kind=architect", "versions-architect")
            expect(page.locator("#versions tbody tr")).to_have_count(1)
            visit("/ui/versions/v0.1.1", "version", ready="#tools-diff[data-loaded=yes]")
            expect(page.locator("#reason")).to_have_text("formal replies")
            expect(page.locator("#state-diff")).to_contain_text("/params/style")
            expect(page.locator("#tools-diff")).to_contain_text("no tool changed")
            visit(f"/ui/versions/{made}", "version-evals", ready="#tools-diff[data-loaded=yes]")
            expect(page.locator("#evals")).to_contain_text("micro")
            visit("/ui/strategies", "strategies", ready="#strategy-charts[data-loaded=yes]")
            arms = page.locator("#strategy-style svg.belief.intervals g.item")
            expect(arms).to_have_count(4)  # each arm's posterior mean and interval, drawn
            expect(page.locator("#strategy-style .strategy-chart canvas")).to_have_count(1)
            assert int(page.locator("#strategy-style .strategy-chart").get_attribute("data-choices")) >= 1
            expect(page.locator("#latency-chart canvas")).to_have_count(1)
            page.click("#strategy-style a.estimates-link")
            expect(page.locator("#estimates-drawing svg g.item").first).to_be_visible(timeout=60_000)
            expect(page.locator("#estimates tbody tr").first).to_contain_text("active state (glr_thompson)")
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(screenshots / "estimates.png"), full_page=True)
            assert errors == [], errors
            visit("/ui/conversations?id=c1", "conversation")
            expect(page.locator("#story")).to_contain_text("reward")
            visit("/ui/jobs", "jobs")
            expect(page.locator("#jobs")).to_contain_text(jid)
            visit(f"/ui/jobs/{jid}", "job")
            expect(page.locator("#job-state")).to_have_text("needs_approval")
            expect(page.locator("#steps")).to_contain_text("release")

            # approve without the token: refused, the job still waits
            approve = page.locator("button[data-action$='/approve']")
            approve.click()
            expect(page.locator(".actions .result")).to_contain_text("401")
            assert httpx.get(f"{architect}/jobs/{jid}", headers=auth.header(TOKEN)).json()["state"] == "needs_approval"
            # with the token typed in the token box: the Architect takes it and merges
            page.fill("#token", TOKEN)
            approve.click()
            expect(page.locator(".actions .result")).to_contain_text("job is now testing")
            done = wait_for("the approved job to finish", lambda: (j := httpx.get(
                f"{architect}/jobs/{jid}", headers=auth.header(TOKEN)).json())["state"] in ("succeeded", "failed") and j)
            assert done["state"] == "succeeded" and done["version"], done["error"]
            page.goto(f"{base}/ui/jobs/{jid}")
            expect(page.locator("#job-state")).to_have_text("succeeded")
            assert done["version"] in git(ws.root, "tag", "-l").split()
            page.screenshot(path=str(screenshots / "job-approved.png"), full_page=True)
            browser.close()
