"""End to end with real processes: streamable HTTP on 127.0.0.1, stdio, SIGKILL, concurrent load."""

import json
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from helpers import ServerProcess, git, with_style
from ratchet.core.documents import applied_seq
from ratchet.runner.service import Runner

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

Q = "How long do I have to return an item?"


async def current_version(client) -> str:
    return json.loads((await client.read_resource("version://current")).contents[0].text)["version"]


async def test_e2e_answer_reward_promote_over_http(ws):
    with ServerProcess("runner", ws.root) as runner, ServerProcess("tuner", ws.root) as tuner:
        async with Client(runner.url) as r, Client(tuner.url) as t:
            answer = await r.call_tool("answer", {"question": Q, "conversation_id": "e2e-1"})
            assert not answer.is_error and answer.structured_content["entry_id"] == "refund-window"
            ack = await t.call_tool("reward", {"conversation_id": "e2e-1", "value": 1.0, "event_id": "ev-1"})
            assert ack.structured_content["accepted"] == 1
            outcome = (await t.call_tool("promote")).structured_content
            assert outcome["promoted"] and outcome["version"] == "v0.1.1", outcome
            assert git(ws.root, "tag").split() == ["v0.1.0", "v0.1.1"]
            with anyio.fail_after(10):  # served well within 1 s normally (bench/servers.py measures it)
                while await current_version(r) != "v0.1.1":
                    await anyio.sleep(0.02)
            state = json.loads((await r.read_resource("state://active")).contents[0].text)
            chosen = answer.structured_content["style"]
            section = state["state"]["strategies"]["style"]
            assert section["alpha"][section["arms"].index(chosen)] == 2.0  # the reward is in the served state
            session = json.loads((await r.read_resource("session://e2e-1")).contents[0].text)
            assert session["feedback"][0]["event_id"] == "ev-1"


async def test_e2e_stdio_runner(ws):
    ratchet = str(Path(sys.executable).with_name("ratchet"))
    params = StdioServerParameters(command=ratchet, args=["serve", "runner", "--transport", "stdio", "-w", str(ws.root)])
    async with Client(params) as c:
        r = await c.call_tool("answer", {"question": Q, "conversation_id": "stdio-1"})
        assert r.structured_content["entry_id"] == "refund-window"
        assert await current_version(c) == "v0.1.0"


def serve_conversations(ws, n, prefix):
    runner = Runner(ws, seed=5)
    for i in range(n):
        runner.call("answer", {"question": "where is my parcel?", "conversation_id": f"{prefix}{i}"})


async def wait_applied(ws, n, timeout=30.0):
    with anyio.fail_after(timeout):
        while applied_seq(ws.state.read("staging").document) < n:
            await anyio.sleep(0.05)


async def test_e2e_two_tuner_processes_lose_no_event(ws):
    n = 120
    serve_conversations(ws, n, "two-")
    with ServerProcess("tuner", ws.root) as a, ServerProcess("tuner", ws.root) as b:
        async with Client(a.url) as ca, Client(b.url) as cb:
            async def send(client, ids):
                for i in ids:
                    r = await client.call_tool("reward", {"conversation_id": f"two-{i}", "value": 1, "event_id": f"t{i}"})
                    assert not r.is_error, r.content[0].text

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, ca, range(0, n, 2))
                tg.start_soon(send, cb, range(1, n, 2))
            await wait_applied(ws, n)
    # each event folded exactly once, whichever process applied it; promotions may have happened meanwhile
    staging = ws.state.read("staging").document
    assert sum(staging["strategies"]["style"]["pulls"]) == n
    assert ws.store.last_feedback_seq() == n


async def test_e2e_sigkill_after_ack_loses_no_acknowledged_event(ws):
    n = 60
    serve_conversations(ws, n, "kill-")
    acked = []
    tuner = ServerProcess("tuner", ws.root)
    try:
        async with Client(tuner.url) as c:
            for i in range(n):
                r = await c.call_tool("reward", {"conversation_id": f"kill-{i}", "value": i % 2, "event_id": f"k{i}"})
                assert not r.is_error
                acked.append(r.structured_content["event_id"])
        tuner.kill()  # right after the last acknowledgement
    finally:
        tuner.stop()
    logged = {row["event_id"] for row in ws.store.feedback_since(0)}
    assert set(acked) <= logged
    with ServerProcess("tuner", ws.root):  # a new tuner folds whatever the dead one had not applied
        await wait_applied(ws, n)
    assert sum(ws.state.read("staging").document["strategies"]["style"]["pulls"]) == n


async def test_e2e_hot_reload_under_load_fails_no_call(ws):
    failures, calls, versions_seen = [], [0], set()

    async def load(url, k, stop):
        async with Client(url) as c:
            i = 0
            while not stop.is_set() and i < 2000:  # bounded
                r = await c.call_tool("answer", {"question": Q, "conversation_id": f"load-{k}-{i}"})
                calls[0] += 1
                if r.is_error:
                    failures.append(r.content[0].text)
                versions_seen.add(await current_version(c)) if i % 10 == 0 else None
                i += 1

    with ServerProcess("runner", ws.root) as runner:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for k in range(4):
                tg.start_soon(load, runner.url, k, stop)
            for style in ("concise", "formal", "detailed"):
                await anyio.sleep(0.6)
                ws.state.update("staging", with_style(style))
                await anyio.to_thread.run_sync(lambda: ws.state.promote(reason="load test", author="test"))
            await anyio.sleep(1.0)
            stop.set()
        async with Client(runner.url) as c:
            assert await current_version(c) == "v0.1.3"
    assert failures == [] and calls[0] > 100
    assert {"v0.1.0", "v0.1.3"} <= versions_seen
