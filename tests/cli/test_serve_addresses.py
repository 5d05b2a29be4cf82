"""``ratchet serve`` binds before it says it listens, records where it listens, and the commands that talk
to a server find it there (port 0 included); ``ratchet jobs`` reads past jobs without a server."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import ratchet
from ratchet.cli import cli

SRC = str(Path(ratchet.__file__).resolve().parents[1])


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}


class Serving:
    """``ratchet serve KIND ...`` as a process whose stderr goes to a file; ``url`` once it listens."""

    def __init__(self, tmp: Path, kind: str, *args: str):
        self.err = tmp / f"{kind}.err"
        with self.err.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "ratchet", "serve", kind, *args], stderr=err,
                                         stdout=subprocess.DEVNULL, env=env())

    def listening(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"listening on (\S+)", self.err.read_text())
            if m:
                return m.group(1)
            assert self.proc.poll() is None, self.err.read_text()
            time.sleep(0.05)
        raise AssertionError(f"not listening after {timeout} s:\n{self.err.read_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def test_serve_on_a_taken_port_fails_naming_the_port_and_never_says_it_listens(ws_path, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Serving(tmp_path, "versions", "--port", str(port), "-w", str(ws_path))
        assert server.proc.wait(timeout=60) == 3
    err = server.err.read_text()
    assert "listening on" not in err
    assert f"versions: port {port} on 127.0.0.1 is already in use" in err
    assert "Fix:" in err and "--port 0" in err
    assert not (ws_path / ".ratchet" / "run" / "versions.json").exists()


def set_port_zero(root: Path, section: str) -> None:
    toml = root / "ratchet.toml"
    text = toml.read_text()
    start = text.index(f"[{section}]")
    end = text.index("\n[", start + 1)
    toml.write_text(text[:start] + re.sub(r"(?m)^port = \d+$", "port = 0", text[start:end], count=1) + text[end:])


@pytest.mark.slow
def test_port_zero_architect_is_found_by_feedback_and_forgotten_when_it_stops(ws_path, tmp_path):
    set_port_zero(ws_path, "architect")
    record = ws_path / ".ratchet" / "run" / "architect.json"
    architect = Serving(tmp_path, "architect", "-w", str(ws_path))
    try:
        url = architect.listening()
        assert json.loads(record.read_text())["url"] == url and not url.endswith(":0")
        sent = CliRunner().invoke(cli, ["feedback", "the answers are too long", "--no-follow", "-w", str(ws_path)])
        assert sent.exit_code == 0, sent.output
        job_id = sent.output.strip()
    finally:
        architect.stop()
    assert not record.exists()  # a clean stop removes the record
    listed = CliRunner().invoke(cli, ["jobs", "--json", "-w", str(ws_path)])  # no Architect running
    assert listed.exit_code == 0, listed.output
    assert [j["id"] for j in json.loads(listed.output)["items"]] == [job_id]


@pytest.mark.slow
def test_a_killed_servers_record_is_stale(ws_path, tmp_path):
    set_port_zero(ws_path, "architect")
    architect = Serving(tmp_path, "architect", "-w", str(ws_path))
    try:
        architect.listening()
    finally:
        architect.stop(signal.SIGKILL)  # no chance to remove its record
    assert (ws_path / ".ratchet" / "run" / "architect.json").exists()
    result = CliRunner().invoke(cli, ["feedback", "hello", "--no-follow", "-w", str(ws_path)])
    assert result.exit_code == 3
    assert "no architect is running for this workspace" in result.output and "ratchet up" in result.output


def test_jobs_lists_and_shows_past_jobs_from_the_store_without_an_architect(ws):
    from ratchet.architect.jobs import JobStore, new_job

    job = new_job("feedback", {"text": "shorter please"}, timeout=60)
    JobStore(ws.store).save(job)
    listed = CliRunner().invoke(cli, ["jobs", "-w", str(ws.root)])
    assert listed.exit_code == 0, listed.output
    assert job.id in listed.output and "queued" in listed.output
    shown = CliRunner().invoke(cli, ["jobs", "show", job.id, "-w", str(ws.root)])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    iso = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
    assert re.match(iso, data["created"]) and re.match(iso, data["deadline"])
    assert all(re.match(iso, e["at"]) for e in data["log"])
    bad = CliRunner().invoke(cli, ["jobs", "--state", "done", "-w", str(ws.root)])
    assert bad.exit_code == 3 and "unknown job state 'done'" in bad.output and "Fix:" in bad.output
