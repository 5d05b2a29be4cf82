"""The examples of "Use Ratchet from your code" (docs/examples/), each run against real servers.

The TypeScript example needs node and npm: it installs the MCP SDK from npm into a cache folder
(``RATCHET_NODE_CACHE``, default ``~/.cache/ratchet-tests/node``) and skips, saying why, where either is
missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ServerProcess, point_workspace_at
from openai_script import ScriptedOpenAI, answer, call, calls
from ratchet.client import Ratchet

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
TS_SDK = "@modelcontextprotocol/sdk@1.32.2"  # the TypeScript SDK v1: protocol 2025-11-25, resources/subscribe


def run_example(*args: str, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_python_client_example(ws):
    with ServerProcess("runner", ws.root) as runner, ServerProcess("tuner", ws.root) as tuner:
        point_workspace_at(ws.root, runner, tuner)
        out = run_example(sys.executable, str(EXAMPLES / "client_python.py"), str(ws.root)).stdout
    assert "answer: " in out and "You can return most items within 30 days" in out  # in whichever style
    assert "refused: value -" in out
    assert "changed: version://current" in out and "serving: v0.1.1" in out and "turns in py-1: 1" in out


def node_sdk() -> Path:
    """A folder with the TypeScript MCP SDK installed (once per cache folder)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to run the TypeScript example (CI has them)")
    cache = Path(os.environ.get("RATCHET_NODE_CACHE", Path.home() / ".cache" / "ratchet-tests" / "node"))
    if not (cache / "node_modules" / "@modelcontextprotocol" / "sdk" / "package.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        run_example("npm", "install", "--no-audit", "--no-fund", "--prefix", str(cache), TS_SDK)
    return cache


def test_typescript_sdk_example_is_notified_of_a_promotion(ws):
    """Issue 14: a 2025-11-25 client (the TS SDK v1) subscribes with resources/subscribe and hears the
    promotion."""
    folder = node_sdk()
    shutil.copy(EXAMPLES / "client.mjs", folder / "client.mjs")  # ESM resolves packages from its own folder
    with ServerProcess("runner", ws.root) as runner, ServerProcess("tuner", ws.root) as tuner:
        node = subprocess.Popen(["node", "client.mjs", runner.url], cwd=folder, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            lines = []
            for line in node.stdout:
                lines.append(json.loads(line))
                if "subscribed" in lines[-1]:
                    with Ratchet(runner.url, tuner.url) as rt:
                        rt.send("reward", conversation_id="ts-1", value=1.0)
                        assert rt.promote()["promoted"]
            assert node.wait(timeout=30) == 0, node.stderr.read()
        finally:
            if node.poll() is None:
                node.kill()
                node.wait()
    assert lines[0]["answer"]["entry_id"] == "refund-window" and lines[1] == {"version": "v0.1.0"}
    assert lines[-1] == {"updated": "version://current", "version": "v0.1.1"}


def test_langchain_agent_example_calls_the_runner_tool(ws, monkeypatch):
    script = [calls(call("answer", {"question": "Can I return shoes?", "conversation_id": "agent-1"})),
              answer("Yes: within 30 days.")]
    with ServerProcess("runner", ws.root) as runner, ScriptedOpenAI(script) as model:
        env = {**os.environ, "OPENAI_BASE_URL": model.base_url, "OPENAI_API_KEY": "sk-test"}
        out = run_example(sys.executable, str(EXAMPLES / "langchain_agent.py"), runner.url, "openai:gpt-4o-mini",
                          "Can I return shoes?", env=env).stdout
    assert out.strip() == "Yes: within 30 days."
    offered = model.requests[0]["tools"][0]["function"]
    assert offered["name"] == "answer" and offered["parameters"]["properties"]["question"]["description"]
    tool_reply = next(m for m in model.requests[1]["messages"] if m["role"] == "tool")
    assert "refund-window" in tool_reply["content"]  # the runner really answered
    assert len(ws.store.session("agent-1")["turns"]) == 1
