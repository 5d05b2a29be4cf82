"""The runner templates, rendered into a copy of the default workspace and served for real: test tiers
through the runner's MCP tools, calls over an in-memory MCP client, feedback through the tuner."""

from __future__ import annotations

import sys

import pytest
from mcp import Client

from helpers import call_tool
from ratchet.core.errors import PluginError
from ratchet.core.workspace import Workspace
from ratchet.runner.server import build_server as runner_server
from ratchet.runner.service import Runner
from ratchet.tiers.harness import load_cases
from ratchet.tuner.server import build_server as tuner_server
from ratchet.tuner.service import Tuner
from template_helpers import arun_tier, load_module, render, wire

pytestmark = pytest.mark.anyio
VARIANTS = ["concise", "friendly", "expert"]


# --- support-desk ---------------------------------------------------------------------------------


async def test_support_desk_alone_passes_the_workspace_tiers(library, ws_path):
    """Without the scaffold's own runner and knowledge base, the template's render passes every tier."""
    for rel in ("plugins/support_desk.py", "data/kb.jsonl"):
        (ws_path / rel).unlink()
    files = render(library, "support-desk", ws_path)
    assert "tests/micro/support_desk.yaml" in files
    ws = Workspace.open(ws_path)
    for tier in ("micro", "fast", "full"):
        result = await arun_tier(ws, tier)
        assert result.failed == 0, (tier, result.failures)
    assert sum(c.id.startswith("support_desk-") for c in load_cases(ws, "micro", ws.plugins)) == 3
    async with Client(runner_server(Runner(ws, seed=0))) as c:
        is_error, out = await call_tool(c, "answer", {"question": "Where is my parcel?", "conversation_id": "s1"})
    assert not is_error and out["entry_id"] and out["style"] in ("concise", "friendly", "detailed", "formal")


def test_support_desk_without_the_sample_knowledge_base_needs_one(library, ws_path):
    (ws_path / "plugins" / "support_desk.py").unlink()
    (ws_path / "data" / "kb.jsonl").unlink()
    assert render(library, "support-desk", ws_path, {"sample_kb": False}) == [
        ".copier-answers.support_desk.yml", "plugins/support_desk.py"]
    with pytest.raises(PluginError) as err:
        Runner(Workspace.open(ws_path))
    assert "knowledge base not found" in str(err.value) and "kb.jsonl" in str(err.value)


# --- llm-chat -------------------------------------------------------------------------------------


@pytest.fixture
def chat_ws(library, ws_path, no_bytecode):
    """The default workspace plus the llm-chat runner and a bandit over its prompt variants, rendered
    from the bandit template with the variants as its arms."""
    render(library, "llm-chat", ws_path, {"model": "fake:Hello from the default model"})
    render(library, "bandit", ws_path, {"param": "prompt_variant", "arms": ", ".join(VARIANTS)})
    return wire(ws_path, plugins=["plugins/llm_chat.py", "plugins/prompt_variant_thompson.py"],
                add_strategies=[{"key": "prompt_variant", "strategy": "prompt_variant_thompson"}])


def fake_model(replies: list[str], seen: list | None = None):
    """langchain_core's GenericFakeChatModel replaying ``replies``; records the messages it was sent."""
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    class Recording(GenericFakeChatModel):
        def _generate(self, messages, *args, **kwargs):
            if seen is not None:
                seen.append(list(messages))
            return super()._generate(messages, *args, **kwargs)

    return Recording(messages=iter([AIMessage(content=r) for r in replies]))


async def test_llm_chat_serves_variants_learns_from_rewards_and_keeps_history(chat_ws, monkeypatch):
    module = load_module(chat_ws.root / "plugins" / "llm_chat.py")
    seen: list = []
    monkeypatch.setattr(module, "make_model", lambda model: fake_model([f"reply {i}" for i in range(40)], seen))
    runner, tuner = Runner(chat_ws, seed=3), Tuner(chat_ws)
    async with Client(runner_server(runner)) as rc, Client(tuner_server(tuner)) as tc:
        tools = {t.name: t for t in (await rc.list_tools()).tools}
        assert set(tools) == {"answer", "chat"}
        assert tools["chat"].input_schema["required"] == ["message", "conversation_id"]
        assert tools["chat"].description.startswith("Chat with the store's support assistant.")
        assert set(tools["chat"].output_schema["properties"]) == {"reply", "variant", "model"}  # typed result
        assert all(p.get("description") for p in tools["chat"].output_schema["properties"].values())
        variants = []
        for i in range(12):
            is_error, out = await call_tool(rc, "chat", {"message": f"Hello {i}?", "conversation_id": f"c{i}"})
            assert not is_error, out
            assert out["reply"] == f"reply {i}" and out["model"] == "fake:Hello from the default model"
            variants.append(out["variant"])
            # the decision is logged before the reply: feedback can join it at once
            is_error, ack = await call_tool(tc, "reward", {"conversation_id": f"c{i}",
                                                          "value": 1.0 if out["variant"] == "expert" else 0.0})
            assert not is_error, ack
        assert set(variants) <= set(VARIANTS) and len(set(variants)) > 1
        # the system prompt is the variant's, from data/llm_chat_prompts.yaml
        prompts = module.load_prompts(chat_ws.root / "data" / "llm_chat_prompts.yaml")
        assert seen[0][0].content == prompts[variants[0]] and seen[0][-1].content == "Hello 0?"
        # a second turn of c0 carries the first one (history from the store), and keeps its variant
        is_error, again = await call_tool(rc, "chat", {"message": "And then?", "conversation_id": "c0"})
        assert not is_error and again["variant"] == variants[0]
        assert [m.content for m in seen[-1][1:]] == ["Hello 0?", "reply 0", "And then?"]
    tuner.apply_pending()
    section = chat_ws.state.read("staging").document["strategies"]["prompt_variant"]
    assert section["policy"] == "prompt_variant_thompson" and sum(section["pulls"]) == 12
    assert section["reward_sum"][VARIANTS.index("expert")] == variants.count("expert")
    decision = chat_ws.store.decisions_for("c1")
    assert {d["strategy"] for d in decision} == {"style", "prompt_variant"}
    assert chat_ws.store.decisions_for("c1")[0]["features"]["message_length"] == 2


async def test_llm_chat_micro_tier_runs_offline_on_fake_models(chat_ws):
    result = await arun_tier(chat_ws, "micro")
    assert result.failed == 0, result.failures
    assert sum(c["id"].startswith("llm_chat-") for c in result.failures) == 0


async def test_llm_chat_bad_calls_are_tool_errors(chat_ws):
    async with Client(runner_server(Runner(chat_ws, allow_overrides=True))) as c:
        is_error, text = await call_tool(c, "chat", {"message": "  ", "conversation_id": "x"})
        assert is_error and "message must be a non-empty string" in text
        r = await c.call_tool("chat", {"message": "hi", "conversation_id": "y"},
                              meta={"ratchet/state": {"params": {"prompt_variant": "pirate"}}})
        assert r.is_error and "unknown prompt variant 'pirate'" in r.content[0].text
        assert "concise, friendly, expert" in r.content[0].text


def test_llm_chat_default_model_is_built_by_init_chat_model(library, ws_path, no_bytecode, monkeypatch):
    """The real code path: the template's model string goes to langchain's init_chat_model."""
    import langchain.chat_models

    calls = []
    monkeypatch.setattr(langchain.chat_models, "init_chat_model",
                        lambda model, **kw: calls.append((model, kw)) or fake_model(["from init_chat_model"]))
    render(library, "llm-chat", ws_path, {"model": "openai:gpt-4o-mini", "temperature": 0.0, "history_turns": 0})
    ws = wire(ws_path, plugins=["plugins/llm_chat.py"])
    out = Runner(ws).call("chat", {"message": "hi", "conversation_id": "c1"})
    assert out == {"reply": "from init_chat_model", "variant": "concise", "model": "openai:gpt-4o-mini"}
    assert calls == [("openai:gpt-4o-mini", {"temperature": 0.0})]


def test_llm_chat_without_langchain_names_the_extra(library, ws_path, no_bytecode, monkeypatch):
    render(library, "llm-chat", ws_path)
    ws = wire(ws_path, plugins=["plugins/llm_chat.py"])
    monkeypatch.setitem(sys.modules, "langchain_core.messages", None)  # as if not installed
    with pytest.raises(PluginError) as err:
        Runner(ws)
    assert "pip install 'ratchet-agents[llm]'" in str(err.value) and "llm_chat.py" in str(err.value)


# --- tool-router ----------------------------------------------------------------------------------


ROUTER_RULES = {"key": "routing", "strategy": "rules", "min_support": 15, "holdout": 0.0, "refit_every": 20,
                "features": ["request_length", "has_order_number", "mentions_refund", "mentions_cancel",
                             "mentions_broken", "mentions_urgent"],
                "outcomes": ["resolved", "escalated"], "actions": {"escalated": {"route": "human"}}}
REQUESTS = ["Do you ship to Canada?", "How do I change my password?", "What payment methods do you accept?",
            "I want a refund for order #{n}, it arrived broken", "Refund order #{n} now please",
            "Can I cancel my subscription?", "Where is order #{n}? It has not arrived"]


@pytest.fixture
def router_ws(library, ws_path, no_bytecode):
    render(library, "tool-router", ws_path)
    return wire(ws_path, plugins=["plugins/tool_router.py"], add_strategies=[ROUTER_RULES])


def outcome(request: str, route: str) -> str:
    """The hidden truth: refund requests with an order number end in an escalation unless a human has them."""
    refund = "refund" in request.lower() and "#" in request
    return "escalated" if refund and route != "human" else "resolved"


async def test_tool_router_learns_to_route_escalations_to_a_human(router_ws):
    runner, tuner = Runner(router_ws, seed=5), Tuner(router_ws)
    labels = []
    async with Client(runner_server(runner)) as rc, Client(tuner_server(tuner)) as tc:
        for i in range(90):
            request = REQUESTS[i % len(REQUESTS)].format(n=100000 + i)
            is_error, out = await call_tool(rc, "route", {"request": request, "conversation_id": f"r{i}"})
            assert not is_error and out["route"] == "faq"  # no rules yet: the default route
            labels.append({"conversation_id": f"r{i}", "outcome": outcome(request, out["route"])})
        is_error, ack = await call_tool(tc, "label_batch", {"events": labels})
        assert not is_error and ack["accepted"] == 90
        is_error, promoted = await call_tool(tc, "promote")
        assert not is_error and promoted["promoted"], promoted
        _, status = await call_tool(tc, "status")
    active = status["strategies"]["routing"]["kpis"]["active"]
    assert len(active) == 1 and "mentions_refund = true" in active[0]["text"] and active[0]["confidence"] == 1.0
    runner.reload_if_changed()
    routed = {r: runner.call("route", {"request": r.format(n=7777), "conversation_id": f"after-{k}"})
              for k, r in enumerate(REQUESTS)}
    assert {r: out["route"] for r, out in routed.items()} == {
        r: ("human" if "refund" in r.lower() else "faq") for r in REQUESTS}
    assert routed[REQUESTS[3]]["handoff"] is True
    async with Client(runner_server(runner)) as rc:  # over MCP: the typed result keeps what a route adds
        (tool,) = [t for t in (await rc.list_tools()).tools if t.name == "route"]
        assert {"route", "reply"} <= set(tool.output_schema["required"])
        assert tool.output_schema.get("additionalProperties") is True
        is_error, out = await call_tool(rc, "route", {"request": REQUESTS[3].format(n=1), "conversation_id": "m1"})
        assert not is_error and out["route"] == "human" and out["handoff"] is True, out


async def test_tool_router_micro_tier_and_routes(router_ws):
    result = await arun_tier(router_ws, "micro")
    assert result.failed == 0, result.failures
    runner = Runner(router_ws, allow_overrides=True)
    ticket = runner.call("route", {"request": "My order broke", "conversation_id": "t1"},
                         overrides={"params": {"route": "ticket"}})
    assert ticket["route"] == "ticket" and ticket["ticket"].startswith("T-")
    with pytest.raises(ValueError, match="unknown route 'nowhere'; the routes are: faq, ticket, human"):
        runner.call("route", {"request": "x", "conversation_id": "t2"}, overrides={"params": {"route": "nowhere"}})
