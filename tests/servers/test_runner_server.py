"""The runner over MCP, in process: tools, decisions, resources, overrides, hot reload."""

import json
import warnings

import anyio
import mcp.types as types
import pytest
from mcp import Client, MCPError

from helpers import with_style
from ratchet.runner.server import build_server
from ratchet.runner.service import Runner

pytestmark = pytest.mark.anyio

Q = {"question": "How long do I have to return an item?", "conversation_id": "c1"}


async def test_hook_ratchet_register_runner_tools_schema_from_type_hints(ws):
    async with Client(build_server(Runner(ws))) as c:
        (tool,) = (await c.list_tools()).tools
        assert tool.name == "answer"
        assert tool.input_schema["required"] == ["question", "conversation_id"]
        assert "run" not in tool.input_schema["properties"]  # the RunContext parameter is not exposed
        assert tool.output_schema is not None


async def test_runner_answer_logs_decision_before_reply(ws):
    async with Client(build_server(Runner(ws, seed=3))) as c:
        r = await c.call_tool("answer", Q)
        assert not r.is_error
        decisions = ws.store.decisions_for("c1")  # already durable when the reply arrived
        assert len(decisions) == 1 and decisions[0]["strategy"] == "style"
        assert decisions[0]["choice"] == r.structured_content["style"]
        assert decisions[0]["version"] == "v0.1.0" and decisions[0]["features"]["topic"]


async def test_runner_decisions_are_sticky_per_conversation(ws):
    runner = Runner(ws, seed=0)
    async with Client(build_server(runner)) as c:
        styles = {(await c.call_tool("answer", {**Q, "conversation_id": "same"})).structured_content["style"]
                  for _ in range(8)}
        assert len(styles) == 1
        many = {(await c.call_tool("answer", {**Q, "conversation_id": f"c{i}"})).structured_content["style"]
                for i in range(40)}
        assert len(many) > 1  # different conversations explore different arms
    # a new runner process joins the logged decision instead of deciding again
    again = Runner(ws, seed=99).call("answer", {**Q, "conversation_id": "same"})
    assert again["style"] == styles.pop()


async def test_runner_bad_arguments_are_tool_errors_naming_the_field(ws):
    async with Client(build_server(Runner(ws))) as c:
        r = await c.call_tool("answer", {"conversation_id": "c1"})
        assert r.is_error and "question" in r.content[0].text
        r = await c.call_tool("answer", {"question": "  ", "conversation_id": "c1"})
        assert r.is_error and "question must be a non-empty string" in r.content[0].text
        r = await c.call_tool("answer", {"question": 5, "conversation_id": "c1"})
        assert r.is_error and "question" in r.content[0].text
        r = await c.call_tool("nope", {})
        assert r.is_error
        r = await c.call_tool("answer", {**Q, "conversation_id": "c2", "colour": "red"})
        assert r.is_error and "colour" in r.content[0].text
        r = await c.call_tool("answer", {**Q, "conversation_id": ""})
        assert r.is_error and "conversation_id: is empty" in r.content[0].text
        (tool,) = (await c.list_tools()).tools
        assert tool.input_schema["additionalProperties"] is False
    assert ws.store.session("c2") is None and ws.store.session("") is None


async def test_runner_resources(ws):
    async with Client(build_server(Runner(ws))) as c:
        state = json.loads((await c.read_resource("state://active")).contents[0].text)
        assert state["version"] == "v0.1.0" and state["revision"] == 1
        assert state["state"]["params"]["style"] == "friendly"
        current = json.loads((await c.read_resource("version://current")).contents[0].text)
        assert current == {"version": "v0.1.0", "source": "active", "revision": 1}
        await c.call_tool("answer", Q)
        session = json.loads((await c.read_resource("session://c1")).contents[0].text)
        assert len(session["turns"]) == 1 and len(session["decisions"]) == 1 and session["feedback"] == []
        with pytest.raises(MCPError) as err:
            await c.read_resource("session://nobody")
        assert "no session 'nobody'" in err.value.message


async def test_runner_state_overrides_only_when_allowed(ws):
    meta = {"ratchet/state": {"params": {"style": "formal"}}}
    async with Client(build_server(Runner(ws))) as c:
        r = await c.call_tool("answer", Q, meta=meta)
        assert r.is_error and "--allow-test-overrides" in r.content[0].text
    async with Client(build_server(Runner(ws, allow_overrides=True))) as c:
        r = await c.call_tool("answer", Q, meta=meta)
        assert r.structured_content["style"] == "formal"


async def test_runner_pinned_version(ws):
    ws.state.update("staging", with_style("concise"))
    ws.state.promote(reason="t", author="test")
    runner = Runner(ws, source="v0.1.0", explore=False)
    assert runner.snapshot.source == "pinned" and runner.snapshot.params["style"] == "friendly"
    ws.state.pin("v0.1.0")
    assert Runner(ws).snapshot.version == "v0.1.0"


async def test_runner_hot_reload_notifies_and_serves_new_state(ws):
    runner = Runner(ws, explore=False)
    async with Client(build_server(runner)) as c:
        async with c.listen(resource_subscriptions=["state://active"]) as events:
            ws.state.update("staging", lambda d: {**d, "params": {**d["params"], "max_sentences": 1}})
            await anyio.to_thread.run_sync(lambda: ws.state.promote(reason="t", author="test"))
            with anyio.fail_after(10):  # well within 1 s normally: bench/servers.py measures the latency
                async for event in events:
                    assert event.uri == "state://active"
                    break
        state = json.loads((await c.read_resource("state://active")).contents[0].text)
        assert state["version"] == "v0.1.1" and state["state"]["params"]["max_sentences"] == 1


async def test_runner_notifies_2025_11_25_clients_through_resources_subscribe(ws):
    """Issue 14: resources/subscribe answered -32601 on protocol 2025-11-25; no update after a promotion."""
    updated, got = [], anyio.Event()

    async def on_message(message):
        if isinstance(message, types.ResourceUpdatedNotification):
            updated.append(message.params.uri)
            got.set()

    async with Client(build_server(Runner(ws, explore=False)), mode="legacy", message_handler=on_message) as c:
        assert c.protocol_version == "2025-11-25" and c.server_capabilities.resources.subscribe
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the SDK marks subscribe_resource deprecated (2026-07-28 removed it)
            await c.subscribe_resource("version://current")
        ws.state.update("staging", with_style("concise"))
        await anyio.to_thread.run_sync(lambda: ws.state.promote(reason="t", author="test"))
        with anyio.fail_after(10):
            await got.wait()
        assert updated == ["version://current"]  # only what it subscribed to
        current = json.loads((await c.read_resource("version://current")).contents[0].text)
        assert current["version"] == "v0.1.1"


async def test_hook_ratchet_extract_features_reach_decide_and_the_log(ws):
    seen = []

    class Spy:
        from ratchet import hookimpl

        @hookimpl
        def ratchet_extract_features(self, tool, arguments):
            return {"shouting": arguments["question"].isupper()}

    ws.plugins.register(Spy(), "spy")
    runner = Runner(ws, seed=1)
    strategy = runner.strategies["style"]
    original = strategy.decide
    strategy.decide = lambda section, context, rng: seen.append(context["features"]) or original(section, context, rng)
    runner.call("answer", {"question": "WHERE IS ORDER 123456", "conversation_id": "f1"})
    assert seen[0] == {"shouting": True, "question_length": 4, "has_order_number": True}
    logged = ws.store.decisions_for("f1")[0]["features"]
    assert logged["shouting"] is True and logged["has_order_number"] is True and "topic" in logged


async def test_a_store_failure_is_a_tool_error_that_says_so_and_to_retry(ws, monkeypatch):
    """Issue 12: infrastructure errors reached clients as a bare "Error executing tool answer"."""
    import sqlite3

    def locked(*_args, **_kw):
        raise sqlite3.OperationalError("database is locked")

    runner = Runner(ws, seed=1)
    async with Client(build_server(runner)) as c:
        monkeypatch.setattr(ws.store._hot, "write_turns", locked)
        r = await c.call_tool("answer", {**Q, "conversation_id": "locked-1"})
        assert r.is_error
        text = r.content[0].text
        assert "the store is unavailable (database is locked); nothing was stored" in text and "retry" in text
        monkeypatch.undo()
        assert not (await c.call_tool("answer", {**Q, "conversation_id": "locked-2"})).is_error
    assert ws.store.session("locked-1") is None and ws.store.session("locked-2") is not None


def test_runner_draws_per_thread_unless_seeded_and_then_the_same_whichever_threads_serve():
    """Unseeded (a server), each thread draws from a Generator of its own: a shared one behind a lock made
    concurrent calls queue. Seeded, one stream: the same calls draw the same numbers on any threads."""
    import threading

    import numpy as np

    from ratchet.runner.service import _Draws

    def draw_on_threads(draws, n: int = 3) -> list:
        got, together = [], threading.Barrier(n)

        def draw():
            with draws.generator() as rng:
                got.append((id(rng), rng.random()))
            together.wait()  # every thread alive at once: their generators too

        threads = [threading.Thread(target=draw) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return got

    unseeded = draw_on_threads(_Draws(None))
    assert len({g for g, _ in unseeded}) == 3 and len({x for _, x in unseeded}) == 3
    seeded = draw_on_threads(_Draws(7))
    assert len({g for g, _ in seeded}) == 1
    assert sorted(x for _, x in seeded) == sorted(np.random.default_rng(7).random(3))


def promote_signed(ws_path, key, signers, style):
    """Promote ``style`` as a version whose tag is signed with ``key`` (None: unsigned); its name."""
    from helpers import sign_versions
    from ratchet.core.workspace import Workspace

    sign_versions(ws_path, key, signers)
    maker = Workspace.open(ws_path)
    maker.state.update("staging", with_style(style))
    return maker.state.promote(reason=style, author="test").name


async def test_runner_require_signed_refuses_to_start_on_an_unsigned_or_unverified_version(ws_path, ssh_keys):
    from ratchet.core.errors import SignatureError
    from ratchet.core.workspace import Workspace

    keys = ssh_keys
    with pytest.raises(SignatureError, match="version v0.1.0 is unsigned: its tag has no signature") as raised:
        Runner(Workspace.open(ws_path), require_signed=True)
    assert raised.value.exit_code == 7 and "--require-signed" in raised.value.fix
    assert promote_signed(ws_path, keys["stranger"], keys["signers"], "formal") == "v0.1.1"
    with pytest.raises(SignatureError, match="version v0.1.1 is unverified: its tag does not verify"):
        Runner(Workspace.open(ws_path), require_signed=True)
    assert promote_signed(ws_path, keys["trusted"], keys["signers"], "concise") == "v0.1.2"
    ws = Workspace.open(ws_path)
    runner = Runner(ws, require_signed=True, explore=False)
    assert runner.snapshot.version == "v0.1.2" and runner.snapshot.params["style"] == "concise"
    assert runner.call("answer", Q)["answer"]
    assert Runner(ws, source="v0.1.2", require_signed=True).snapshot.source == "pinned"
    with pytest.raises(SignatureError, match="v0.1.1 is unverified"):
        Runner(ws, source="v0.1.1", require_signed=True)  # a pinned version is checked too


async def test_runner_require_signed_keeps_its_verified_snapshot_on_reload(ws_path, ssh_keys, caplog):
    from ratchet.core.documents import dumps
    from ratchet.core.workspace import Workspace

    keys = ssh_keys
    promote_signed(ws_path, keys["trusted"], keys["signers"], "concise")
    ws = Workspace.open(ws_path)
    runner = Runner(ws, require_signed=True, explore=False)
    assert runner.snapshot.version == "v0.1.1"
    for key, made, style in ((keys["stranger"], "v0.1.2", "formal"), (None, "v0.1.3", "friendly")):
        assert promote_signed(ws_path, key, keys["signers"], style) == made
        assert runner.reload_if_changed() is False
        assert runner.snapshot.version == "v0.1.1" and runner.snapshot.params["style"] == "concise"
        assert f"still serving v0.1.1: version {made} is" in caplog.text
    assert promote_signed(ws_path, keys["trusted"], keys["signers"], "detailed") == "v0.1.4"
    assert runner.reload_if_changed() is True and runner.snapshot.version == "v0.1.4"
    # the store's active state changed behind the tag's back: not what v0.1.4's signature vouches for
    active = ws.state.read("active")
    forged = {**active.document, "params": {**active.document["params"], "style": "formal"}}
    ws.store.coordination.swap("active", dumps(forged), active.revision, version="v0.1.4", commit=active.commit)
    assert runner.reload_if_changed() is False and runner.snapshot.params["style"] == "detailed"
    assert "the store's active state is not the one version v0.1.4's tag holds" in caplog.text
