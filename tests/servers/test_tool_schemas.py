"""Issue 14: every tool's schemas are portable and described, and argument errors read in one style.

Portable: no JSON-Schema type arrays (``type: ["string", "null"]``), which Gemini-style schema subsets
and the MCP Inspector's --strict reject. Described: every property of every input schema has a
description, as does every tool.
"""

import pytest
from mcp import Client

from helpers import call_tool
from ratchet.plugins.tuner_strategies import bandits, cmaes, preference, rules
from ratchet.runner.server import build_server as runner_server
from ratchet.runner.service import Runner
from ratchet.tuner.server import build_server as tuner_server
from ratchet.tuner.service import Tuner

pytestmark = pytest.mark.anyio


def problems(schema, where: str, *, described: bool = True) -> list[str]:
    """What makes ``schema`` unportable or undocumented, each with its path."""
    found = []
    if isinstance(schema.get("type"), list):
        found.append(f"{where}: type array {schema['type']}")
    for name, prop in (schema.get("properties") or {}).items():
        if described and not prop.get("description"):
            found.append(f"{where}.{name}: no description")
        found += problems(prop, f"{where}.{name}", described=described)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += problems(schema[key], f"{where}.{key}", described=described)
    for key in ("anyOf", "oneOf", "allOf"):
        for n, sub in enumerate(schema.get(key) or []):
            found += problems(sub, f"{where}.{key}[{n}]", described=False)
    for name, sub in (schema.get("$defs") or {}).items():
        found += problems(sub, f"{where}.$defs.{name}", described=described)
    return found


def feedback_tools():
    """The feedback tools of every first-party strategy family, by ``tool#n`` (with the strategy's name)."""
    arms = ["a", "b"]
    made = [cls("k", cls.Config(arms=arms, **({"features": ["x"]} if issubclass(cls, bandits._LinearBandit) else {})))
            for cls in bandits.BANDITS]
    made.append(rules.Rules("k", rules.Rules.Config(features=["x"], actions={"escalated": {"style": "formal"}})))
    made.append(preference.Preference("k", preference.Preference.Config(variants=arms)))
    tools = [(s.name, t) for s in made for t in s.feedback_tools()] + [("cmaes", t) for t in cmaes.score_tools("x")]
    return {f"{t.name}#{n}": (strategy, t) for n, (strategy, t) in enumerate(tools)}


@pytest.mark.parametrize("name", sorted(feedback_tools()))
def test_every_strategy_feedback_tool_is_portable_and_described(name):
    strategy, tool = feedback_tools()[name]
    assert tool.description and f"({strategy})" not in tool.description  # a tool serves any strategy it feeds
    assert problems(tool.input_schema, name) == []


async def test_every_served_tool_is_portable_and_described(ws):
    for server in (runner_server(Runner(ws)), tuner_server(Tuner(ws))):
        async with Client(server) as c:
            for tool in (await c.list_tools()).tools:
                assert tool.description and "\n " not in tool.description, tool.name  # no docstring indentation
                assert problems(tool.input_schema, tool.name) == []
                assert problems(tool.output_schema or {}, f"{tool.name} output", described=False) == []
    async with Client(runner_server(Runner(ws))) as c:
        (answer,) = (await c.list_tools()).tools
        assert "conversation" in answer.input_schema["properties"]["conversation_id"]["description"]
        assert set(answer.output_schema["properties"]) == {"answer", "entry_id", "score", "style", "fallback"}
        assert problems(answer.output_schema, "answer output") == []  # the result's fields are described too


@pytest.mark.parametrize("args, expected", [
    ({"conversation_id": "c1"}, "question: required\n  Fix: pass question (the customer's question"),
    ({"question": None, "conversation_id": "c1"}, "question: must not be null\n  Fix: pass question as string"),
    ({"question": 5, "conversation_id": "c1"}, "question: input should be a valid string\n  Fix: pass question"),
    ({"question": "hi", "conversation_id": "c1", "conversation": "x"}, "conversation: unknown argument\n  Fix: did "
     "you mean 'conversation_id'?"),
])
async def test_runner_argument_errors_in_the_project_style(ws, args, expected):
    async with Client(runner_server(Runner(ws))) as c:
        is_error, text = await call_tool(c, "answer", args)
    assert is_error and text.startswith(f"Error executing tool answer: {expected}"), text
    assert "pydantic" not in text and "validation error" not in text


async def test_tuner_null_arguments_in_the_project_style(ws):
    Runner(ws, seed=1).call("answer", {"question": "where is my parcel?", "conversation_id": "c0"})
    async with Client(tuner_server(Tuner(ws))) as c:
        is_error, text = await call_tool(c, "reward", {"conversation_id": None, "value": 1})
        assert is_error and "conversation_id: must not be null" in text and "required property" not in text, text
        assert "Fix: send conversation_id as a string" in text
        is_error, text = await call_tool(c, "promote", {"reason": None})
        assert is_error and text.startswith("Error executing tool promote: reason: must not be null"), text
        # an optional argument sent as null is "not given", as JSON clients mean it: nothing is lost
        is_error, ack = await call_tool(c, "reward", {"conversation_id": "c0", "value": 1, "event_id": None})
        assert not is_error and ack["accepted"] == 1, ack
        is_error, ack = await call_tool(c, "reward_batch", {"events": [{"conversation_id": "c0", "value": 0,
                                                                        "event_id": None}]})
        assert not is_error and ack["accepted"] == 1, ack


async def test_tuner_tools_declare_what_they_return_and_return_all_of_it(ws):
    """Every tuner tool has an output schema with described fields, and its structured result carries
    everything its text result does (a TypedDict that misses a key would drop it silently)."""
    import json

    import jsonschema

    Runner(ws, seed=1).call("answer", {"question": "where is my parcel?", "conversation_id": "c0"})
    async with Client(tuner_server(Tuner(ws))) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        for name, tool in tools.items():
            assert (tool.output_schema or {}).get("properties"), f"{name}: no output schema"
            assert problems(tool.output_schema, f"{name} output") == []
        calls = [("reward", {"conversation_id": "c0", "value": 1}),
                 ("reward_batch", {"events": [{"conversation_id": "c0", "value": 0}]}),
                 ("status", {}), ("promote", {"reason": "test"}), ("promote", {"reason": "again"}),
                 ("rebuild_staging", {}), ("status", {})]
        for name, args in calls:
            r = await c.call_tool(name, args)
            assert not r.is_error, (name, r.content[0].text)
            jsonschema.validate(r.structured_content, tools[name].output_schema)
            assert r.structured_content == json.loads(r.content[0].text), name
