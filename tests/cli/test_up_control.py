"""``ratchet up status|logs|down`` from another terminal, against a real ``ratchet up``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import ratchet
from ratchet.cli import cli

SRC = str(Path(ratchet.__file__).resolve().parents[1])


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_up_status_logs_down_when_nothing_runs(ws_path):
    status = run("up", "status", "-w", ws_path)
    assert status.exit_code == 6 and "ratchet up is not running" in status.output and "Fix:" in status.output
    for args in (["-w", ws_path, "up", "status"], ["up", "-w", ws_path, "status"]):  # -w anywhere
        assert f"ratchet up is not running for {ws_path}" in run(*args).output
    assert run("up", "down", "-w", ws_path).output.endswith("nothing to stop.\n")
    logs = run("up", "logs", "-w", ws_path)
    assert logs.exit_code == 6 and "no logs" in logs.output
    (ws_path / ".ratchet" / "run").mkdir(parents=True)
    (ws_path / ".ratchet" / "run" / "up.json").write_text(json.dumps({"pid": 2 ** 22 + 1, "components": []}))
    assert run("up", "status", "-w", ws_path).exit_code == 6  # a record whose process is gone is stale
    bogus = run("up", "logs", "bogus", "-w", ws_path)
    assert bogus.exit_code == 3 and "unknown component(s) ['bogus']" in bogus.output


@pytest.mark.slow
def test_up_status_logs_and_down_from_another_terminal(ws_path, tmp_path):
    toml = ws_path / "ratchet.toml"
    toml.write_text(re.sub(r"(?m)^port = \d+$", "port = 0", toml.read_text()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    with (tmp_path / "up.err").open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ratchet", "up", "--only", "runner,versions", "-w",
                                 str(ws_path)], stdout=subprocess.DEVNULL, stderr=err, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:
            result = run("up", "status", "--json", "-w", ws_path)
            if result.exit_code == 0 and json.loads(result.output)["up"]:
                break
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "up.err").read_text()
            time.sleep(0.2)
        status = json.loads(result.output)
        assert status["pid"] == proc.pid
        comps = {c["name"]: c for c in status["components"]}
        assert list(comps) == ["runner", "versions"] and all(c["state"] == "running" for c in comps.values())
        recorded = json.loads((ws_path / ".ratchet" / "run" / "versions.json").read_text())
        assert recorded["url"] == comps["versions"]["address"]  # what `ratchet jobs` & co. read
        table = run("up", "status", "-w", ws_path)
        assert table.exit_code == 0 and str(comps["runner"]["pid"]) in table.output and "running" in table.output

        logs = run("up", "logs", "versions", "-n", "3", "-w", ws_path)
        assert logs.exit_code == 0 and f"versions | ratchet versions listening on {recorded['url']}" in logs.output
        assert "runner |" not in logs.output

        second = run("up", "-w", ws_path)
        assert second.exit_code == 3 and f"already running for {ws_path} (pid {proc.pid})" in second.output

        down = run("up", "down", "-w", ws_path)
        assert down.exit_code == 0 and f"Stopped ratchet up (pid {proc.pid}) and its runner, versions." in down.output
        assert proc.wait(timeout=30) == 0
        assert not (ws_path / ".ratchet" / "run" / "up.json").exists()
        assert not (ws_path / ".ratchet" / "run" / "versions.json").exists()
        assert run("up", "status", "-w", ws_path).exit_code == 6
        assert re.search(r"(?m)^runner +\| ratchet runner listening on", run("up", "logs", "-w", ws_path).output)  # logs outlive it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
