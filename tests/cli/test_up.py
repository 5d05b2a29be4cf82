"""``ratchet up`` end to end: the real servers as processes, a kill -9, new code, Ctrl-C, no orphans."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest
from click.testing import CliRunner
from mcp import Client

from helpers import code_version
from ratchet.cli import cli

Q = "How long do I have to return an item?"
COMPONENTS = ["runner", "tuner", "architect", "versions", "triggerer"]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def group_members(pgids: set[int]) -> list[int]:
    """Live processes in any of these process groups (children, and whatever they started)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) in pgids:
            found.append(int(stat.parent.name))
    return found


def test_up_only_rejects_an_unknown_component(ws_path):
    result = CliRunner().invoke(cli, ["up", "-w", str(ws_path), "--only", "runner,bogus"])
    assert result.exit_code == 3
    assert "unknown component(s) ['bogus']" in result.output and "Fix: name some of runner, tuner" in result.output


class Up:
    """``python -m ratchet up`` on a workspace whose ports are all 0; ``status()`` reads its --json-status."""

    def __init__(self, root: Path, tmp: Path, components: list[str]):
        toml = root / "ratchet.toml"
        toml.write_text(re.sub(r"(?m)^port = \d+$", "port = 0", toml.read_text()))
        self.status_file = tmp / "up-status.json"
        self.out, self.err = tmp / "up.out", tmp / "up.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "ratchet", "up", "-w", str(root), "--only",
                                          ",".join(components), "--json-status", str(self.status_file)],
                                         stdout=out, stderr=err)

    def status(self) -> dict:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def components(self) -> dict[str, dict]:
        return {c["name"]: c for c in self.status().get("components", [])}

    def wait(self, predicate, what: str, timeout: float = 90.0) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"ratchet up exited early:\n{self.err.read_text()}"
            comps = self.components()
            if comps and predicate(comps):
                return comps
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.err.read_text()}")

    def wait_running(self, what: str = "every component running") -> dict[str, dict]:
        return self.wait(lambda c: self.status()["up"] and all(x["state"] == "running" for x in c.values()), what)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


async def answer(url: str, conversation_id: str) -> dict:
    async with Client(url) as c:
        r = await c.call_tool("answer", {"question": Q, "conversation_id": conversation_id})
        assert not r.is_error, r.content[0].text
        return r.structured_content


@pytest.mark.slow
def test_up_serves_restarts_reloads_code_and_stops_everything_on_ctrl_c(ws, tmp_path):
    up = Up(ws.root, tmp_path, COMPONENTS)
    try:
        comps = up.wait_running()
        assert list(comps) == COMPONENTS
        pgids = {c["pid"] for c in comps.values()}  # each child leads its own process group
        table = up.out.read_text()  # printed once everything is ready
        for name, c in comps.items():
            row = next(line for line in table.splitlines() if f" {name} " in line)
            assert str(c["pid"]) in row and (c["address"] or "-") in row

        runner_url = comps["runner"]["address"]
        assert anyio.run(answer, runner_url, "up-1")["entry_id"] == "refund-window"
        versions_url = comps["versions"]["address"]
        assert [v["version"] for v in httpx.get(f"{versions_url}/versions", timeout=10).json()["items"]] == ["v0.1.0"]
        architect_url = comps["architect"]["address"]
        assert httpx.get(f"{architect_url}/jobs", timeout=10).status_code == 200
        # the triggerer was told where the architect listens (its port is 0 in ratchet.toml)
        started = (ws.root / ".ratchet" / "logs" / "triggerer.log").read_text().splitlines()[0]
        assert f"--architect-url {architect_url}" in started

        # kill -9 one child: it comes back on the same address
        old = comps["runner"]["pid"]
        os.kill(old, signal.SIGKILL)
        comps = up.wait(lambda c: c["runner"]["pid"] != old and c["runner"]["state"] == "running", "runner restarted")
        assert comps["runner"]["address"] == runner_url and comps["runner"]["restarts"] == 1
        pgids.add(comps["runner"]["pid"])
        assert anyio.run(answer, runner_url, "up-2")["entry_id"] == "refund-window"

        # an architect minor version (code changed): the runner, tuner and versions are restarted to load it
        reloaded = ("runner", "tuner", "versions")
        before = {n: c["pid"] for n, c in comps.items()}
        plugin = ws.root / "plugins" / "support_desk.py"
        plugin.write_text(plugin.read_text() + "\n# new code from the architect\n")
        code_version(ws, ["plugins/support_desk.py"])
        comps = up.wait(lambda c: all(c[n]["pid"] != before[n] and c[n]["state"] == "running"
                                      for n in reloaded), "runner, tuner and versions reloaded")
        assert all(comps[n]["pid"] == before[n] for n in COMPONENTS if n not in reloaded)
        pgids |= {comps[n]["pid"] for n in reloaded}

        async def current_version() -> str:
            async with Client(runner_url) as c:
                return json.loads((await c.read_resource("version://current")).contents[0].text)["version"]

        assert anyio.run(current_version) == "v0.2.0"
        listed = httpx.get(f"{versions_url}/versions", timeout=10).json()["items"]
        assert sorted(v["version"] for v in listed) == ["v0.1.0", "v0.2.0"]

        # Ctrl-C: exit 0, and every child (and grandchild: the tuner's worker) is gone
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(timeout=60) == 0
        assert not any(alive(pid) for pid in pgids)
        assert group_members(pgids) == []
        assert all(c["state"] == "stopped" for c in up.components().values())
        err = up.err.read_text()
        assert "runner (pid" in err and "was killed by SIGKILL" in err and "v0.2.0 changed code" in err
        logs = ws.root / ".ratchet" / "logs"
        assert sorted(p.name for p in logs.iterdir()) == sorted(f"{n}.log" for n in COMPONENTS)
        assert (logs / "runner.log").read_text().count("--- ratchet up: starting runner") == 3
    finally:
        up.close()
