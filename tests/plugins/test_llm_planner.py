"""The LLM planner: a real langchain agent loop, driven by a scripted fake chat model making tool calls."""

from __future__ import annotations

import json

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage

from ratchet import hookimpl
from ratchet.architect.service import Architect
from ratchet.core.errors import ConfigError
from ratchet.plugins.planners.llm import LlmPlanner


class ScriptedChatModel(GenericFakeChatModel):
    """Replays scripted messages; records what the agent sent it (create_agent calls bind_tools)."""

    seen: list = []

    def bind_tools(self, tools, **kwargs):
        self.seen.append([t.name for t in tools])
        return self

    def _generate(self, messages, *args, **kwargs):
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def call(name: str, args: dict, i: int) -> AIMessage:
    return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call_{i}"}])


SCRIPT = [
    call("list_templates", {}, 1),
    call("show_template", {"name": "drift-bandit"}, 2),
    call("render_template", {"template": "drift-bandit", "data": {"strategy_name": "drift_style", "gamma": 0.97}}, 3),
    call("edit_config", {"append": {"workspace.plugins": "plugins/drift_style.py"},
                         "set": {"tuner.strategies[key=style].strategy": "drift_style"}}, 4),
    call("set_state", {"pointer": "/params/top_k", "value": 99}, 5),  # invalid: the model is told why
    call("add_test", {"tier": "micro", "case": {
        "id": "llm-refund", "tool": "answer", "args": {"question": "How long do I have to return an item?",
                                                        "conversation_id": "llm-1"},
        "expect": {"path": "entry_id", "equals": "refund-window"}}}, 6),
    call("run_tiers", {"tiers": ["micro"]}, 7),
    AIMessage(content="Switched the style bandit to discounted Thompson sampling, as preferences drift.\nDetails..."),
]


class ScriptedPlannerPlugin:
    def __init__(self, model):
        self.model = model

    @hookimpl
    def ratchet_register_planners(self, register):
        register(LlmPlanner(self.model, name="scripted-llm"))


def test_llm_planner_makes_real_tool_calls_that_become_a_tested_minor_version(ws):
    model = ScriptedChatModel(messages=iter(SCRIPT))
    model.seen = []
    ws.plugins.pm.register(ScriptedPlannerPlugin(model), name="scripted-llm-plugin")
    arch = Architect(ws, planner="scripted-llm")
    job = arch.process(arch.jobs.get(arch.submit_feedback("Customers' tastes have changed lately.").id))
    assert job.state == "needs_approval", job.error  # a model wrote code: it waits by default ([architect] approval)
    arch.approve(job.id)
    job = arch.process(arch.jobs.get(job.id), "merge")

    assert job.state == "succeeded", job.error
    assert job.planner == "scripted-llm" and job.version == "v0.2.0" and job.bump == "minor"
    assert job.plan.summary == "Switched the style bandit to discounted Thompson sampling, as preferences drift."
    assert [a.kind for a in job.actions] == ["render_template", "edit_config", "add_test"]  # the refused one is not
    assert set(job.changed) == {".copier-answers.drift-bandit.yml", "plugins/drift_style.py", "ratchet.toml",
                                "tests/micro/architect.yaml"}
    assert "gamma: 0.97" in (ws.root / ".copier-answers.drift-bandit.yml").read_text()

    # The model saw the tools, the feedback, and each tool's result, including the refusal and its fix.
    assert "render_template" in model.seen[0] and "run_tiers" in model.seen[0]
    last_prompt = model.seen[-1]
    assert "Ratchet workspace" in last_prompt[0].content and "tastes have changed" in last_prompt[1].content
    results = {m.tool_call_id: m.content for m in last_prompt if isinstance(m, ToolMessage)}
    assert "drift-bandit" in results["call_1"]
    refused = json.loads(results["call_5"])["error"]
    assert refused["error"] == "StateValidationError" and "top_k" in refused["field"]
    tiers = json.loads(results["call_7"])
    assert tiers[0]["tier"] == "micro" and tiers[0]["ok"] and tiers[0]["total"] == 9


def test_llm_planner_without_a_model_names_the_setting():
    with pytest.raises(ConfigError) as err:
        LlmPlanner(None).chat_model()
    assert err.value.field == "architect.model"


def test_llm_planner_with_an_unknown_provider_names_the_setting():
    with pytest.raises(ConfigError) as err:
        LlmPlanner("no-such-provider:some-model").chat_model()
    assert err.value.field == "architect.model"
