"""The LLM planner through the real provider package: ``[architect] model = "openai:gpt-4o-mini"``,
langchain-openai and the openai client over HTTP, against a scripted OpenAI-compatible server on
127.0.0.1 (``openai_script``). Nothing touches the network."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from helpers import commit_all, git
from openai_script import ScriptedOpenAI, answer, call, calls, failure, slow
from ratchet.architect.service import Architect
from ratchet.core.errors import ConfigError
from ratchet.core.workspace import Workspace
from ratchet.plugins.planners.llm import LlmPlanner

MODEL = "openai:gpt-4o-mini"
DRIFT = "Customers' tastes have changed lately."
MAX_STEPS = 4


@pytest.fixture
def openai_ws(ws_path, monkeypatch):
    """The default workspace planning with an OpenAI model (at most MAX_STEPS model calls a job)."""
    config = ws_path / "ratchet.toml"
    config.write_text(config.read_text().replace("[architect]\n", f'[architect]\nmodel = "{MODEL}"\n'
                                                                  f"max_steps = {MAX_STEPS}\n"))
    commit_all(ws_path, "plan with an OpenAI model")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)  # it would win over OPENAI_BASE_URL
    return Workspace.open(ws_path)


def run_job(ws, monkeypatch, script, text=DRIFT):
    """Submit ``text`` and run its job with the model's replies scripted; returns the job and the server."""
    with ScriptedOpenAI(script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        arch = Architect(ws)
        job = arch.process(arch.jobs.get(arch.submit_feedback(text).id))
    return job, server


def main_snapshot(ws):
    return {"head": git(ws.root, "rev-parse", "HEAD"), "tags": git(ws.root, "tag", "-l"),
            "branches": git(ws.root, "branch", "--list", "main"),
            "active": (ws.root / "state/active.state.json").read_bytes()}


def tool_results(request: dict) -> dict[str, str]:
    """``{tool_call_id: content}`` of the tool results the model was sent in ``request``."""
    return {m["tool_call_id"]: m["content"] for m in request["messages"] if m["role"] == "tool"}


def test_llm_planner_over_http_turns_drift_feedback_into_a_minor_version_naming_the_model(openai_ws, monkeypatch):
    script = [
        calls(call("list_templates", {}, "c1")),
        calls(call("render_template", {"template": "drift-bandit",
                                       "data": {"strategy_name": "drift_style", "gamma": 0.97}}, "c2"),
              call("edit_config", {"append": {"workspace.plugins": "plugins/drift_style.py"},
                                   "set": {"tuner.strategies[key=style].strategy": "drift_style"}}, "c3"),
              call("set_state", {"pointer": "/params/top_k", "value": 99}, "c4"),  # refused: the model is told why
              call("add_test", {"tier": "micro", "case": {
                  "id": "llm-refund", "tool": "answer",
                  "args": {"question": "How long do I have to return an item?", "conversation_id": "llm-1"},
                  "expect": {"path": "entry_id", "equals": "refund-window"}}}, "c5")),
        calls(call("finish", {"summary": "Switched the style bandit to discounted Thompson sampling, as "
                                         "preferences drift."}, "c6")),
    ]
    job, server = run_job(openai_ws, monkeypatch, script)
    assert job.state == "needs_approval", job.error  # a model wrote code: it waits by default ([architect] approval)
    arch = Architect(openai_ws)
    arch.approve(job.id)
    job = arch.process(arch.jobs.get(job.id), "merge")

    assert job.state == "succeeded", job.error
    assert (job.planner, job.model, job.version, job.bump) == ("llm", MODEL, "v0.2.0", "minor")
    assert job.plan.summary == "Switched the style bandit to discounted Thompson sampling, as preferences drift."
    assert [a.kind for a in job.actions] == ["render_template", "edit_config", "add_test"]  # the refused one is not
    assert set(job.changed) == {".copier-answers.drift-bandit.yml", "plugins/drift_style.py", "ratchet.toml",
                                "tests/micro/architect.yaml"}
    version = openai_ws.versions.get("v0.2.0")
    assert version.metadata["author"] == "llm" and version.metadata["model"] == MODEL

    # What went over the wire: the tools with their schemas, the feedback, each result (refusals too).
    first = server.requests[0]
    assert first["model"] == "gpt-4o-mini" and "Ratchet workspace" in first["messages"][0]["content"]
    told = first["messages"][1]["content"]
    assert told.startswith(f"Feedback:\n{DRIFT}\n\n# The workspace\n")  # then the brief (tests/architect/test_brief.py)
    assert "PATCH" in told and "## Files" in told and "- runner.answer(" in told and "## KPIs now" in told
    tools = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert "finish" in tools and "run_tiers" in tools
    value = tools["set_state"]["parameters"]["properties"]["value"]
    assert value["description"] and {s["type"] for s in value["anyOf"]} >= {"string", "number", "object", "null"}
    add_test = tools["add_test"]["parameters"]["properties"]
    assert add_test["tier"]["enum"] == ["micro", "fast", "full"]
    assert {"id", "tool", "args", "expect"} <= set(add_test["case"]["properties"])
    assert all(p.get("description") for t in tools.values() for p in t["parameters"].get("properties", {}).values())
    results = tool_results(server.requests[2])
    refused = json.loads(results["c4"])["error"]
    assert refused["error"] == "StateValidationError" and "top_k" in refused["field"]
    assert json.loads(results["c2"]) and "drift-bandit" in tool_results(server.requests[1])["c1"]

    # The transcript: each model call with its tokens, each tool call with its arguments and result.
    assert [(e.kind, e.name) for e in job.transcript] == [
        ("model", "gpt-4o-mini-2024-07-18"), ("tool", "list_templates"),
        ("model", "gpt-4o-mini-2024-07-18"), ("tool", "render_template"), ("tool", "edit_config"),
        ("tool", "set_state"), ("tool", "add_test"),
        ("model", "gpt-4o-mini-2024-07-18"), ("tool", "finish")]
    assert job.transcript[0].tokens == {"input": 120, "output": 30, "total": 150}
    assert job.transcript[2].calls == ["render_template", "edit_config", "set_state", "add_test"]
    set_state = job.transcript[5]
    assert set_state.args == {"pointer": "/params/top_k", "value": 99} and not set_state.ok
    assert "StateValidationError" in set_state.text and all(e.ok for e in job.transcript if e is not set_state)


def test_llm_planner_parallel_tool_calls_all_land_in_the_commit(openai_ws, monkeypatch):
    """OpenAI models send several tool calls in one turn: every applied change is in the version."""
    changes = {"/params/top_k": 4, "/params/min_score": 0.1, "/params/w_question": 0.6, "/params/w_answer": 0.4}
    script = [
        calls(*[call("set_state", {"pointer": p, "value": v}, f"s{i}") for i, (p, v) in enumerate(changes.items())],
              call("finish", {"summary": "too early"}, "f1")),  # refused: sent with the others
        calls(call("finish", {"summary": "Retrieval weights retuned."}, "f2")),
    ]
    job, server = run_job(openai_ws, monkeypatch, script, text="Answers pick the wrong articles.")

    assert job.state == "succeeded", job.error
    assert (job.version, job.bump, job.plan.summary) == ("v0.1.1", "patch", "Retrieval weights retuned.")
    assert [a.pointer for a in job.actions] == list(changes)  # in the order the model sent them
    committed = json.loads(git(openai_ws.root, "show", "v0.1.1:state/active.state.json"))["params"]
    assert {f"/params/{k}": committed[k] for k in ("top_k", "min_score", "w_question", "w_answer")} == changes
    assert [e.name for e in job.transcript if e.kind == "tool"] == ["set_state"] * 4 + ["finish", "finish"]
    early = json.loads(tool_results(server.requests[1])["f1"])["error"]
    assert early["field"] == "finish" and "on its own" in early["fix"]


def test_llm_planner_invalid_tool_call_is_answered_and_the_retry_applies(openai_ws, monkeypatch):
    """A call with malformed (cut-off) arguments does not end the plan: the model is told and goes again."""
    script = [
        calls(call("set_state", '{"pointer": "/params/max_sentences", "val', "bad1")),
        calls(call("set_state", {"pointer": "/params/max_sentences", "value": 2}, "good1")),
        calls(call("finish", {"summary": "Answers are at most two sentences long."}, "f1")),
    ]
    job, server = run_job(openai_ws, monkeypatch, script, text="answers are too long")

    assert job.state == "succeeded", job.error
    assert job.version == "v0.1.1" and openai_ws.state.read("active").document["params"]["max_sentences"] == 2
    told = json.loads(tool_results(server.requests[1])["bad1"])["error"]
    assert "not valid JSON" in told["detail"] and told["field"] == "set_state" and "again" in told["fix"]
    invalid = job.transcript[1]
    assert (invalid.kind, invalid.name, invalid.call_id, invalid.ok) == ("invalid_call", "set_state", "bad1", False)
    assert invalid.args == '{"pointer": "/params/max_sentences", "val'
    assert [a.kind for a in job.actions] == ["set_state"]


def test_llm_planner_answer_without_finish_fails_and_leaves_main_as_it_was(openai_ws, monkeypatch, caplog):
    before = main_snapshot(openai_ws)
    script = [calls(call("set_state", {"pointer": "/params/tone", "value": "formal"}, "s1")),
              answer("I made the answers formal.")]
    with caplog.at_level(logging.INFO, logger="ratchet.architect"):
        job, server = run_job(openai_ws, monkeypatch, script, text="Be more formal.")

    assert job.state == "failed" and job.version is None
    assert "without calling finish" in job.error.detail and "I made the answers formal." in job.error.detail
    assert job.error.field == "architect.model" and "transcript" in job.error.fix
    assert main_snapshot(openai_ws) == before
    assert [a.kind for a in job.actions] == ["set_state"] and len(server.requests) == 2
    # the architect's console (the ratchet.architect logger) shows each step and each call
    lines = [r.getMessage() for r in caplog.records if r.name == "ratchet.architect"]
    assert any(f"job {job.id} plan: planner llm" in line for line in lines)
    assert any(f"job {job.id} tool set_state" in line for line in lines)
    assert any(f"job {job.id} failed: the model stopped without calling finish" in line for line in lines)


def test_llm_planner_runaway_agent_fails_naming_max_steps(openai_ws, monkeypatch):
    before = main_snapshot(openai_ws)
    forever = (calls(call("list_files", {}, f"l{i}")) for i in range(1000))
    job, server = run_job(openai_ws, monkeypatch, forever)

    assert job.state == "failed"
    assert job.error.field == "architect.max_steps" and f"limit of {MAX_STEPS} calls" in job.error.detail
    assert "max_steps" in job.error.fix
    assert len(server.requests) == MAX_STEPS
    assert [e.kind for e in job.transcript].count("model") == MAX_STEPS
    assert main_snapshot(openai_ws) == before


def test_llm_planner_model_call_that_fails_is_in_the_transcript(openai_ws, monkeypatch):
    before = main_snapshot(openai_ws)
    job, server = run_job(openai_ws, monkeypatch, [])  # the server answers 400: no reply scripted

    assert job.state == "failed" and "400" in job.error.detail
    [entry] = job.transcript
    assert (entry.kind, entry.name, entry.ok) == ("model", "gpt-4o-mini", False) and "no more replies" in entry.text
    assert main_snapshot(openai_ws) == before


def test_llm_job_transcript_is_shown_by_the_rest_api_and_jobs_show(openai_ws, monkeypatch):
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from ratchet.architect.app import create_app
    from ratchet.architect.client import ArchitectClient
    from ratchet.cli import cli

    script = [calls(call("read_file", {"path": "plugins/support_desk.py"}, "r1"),  # some 24,000 characters
                    call("read_file", {"path": "nope.txt"}, "r2")),
              answer("Nothing to do.")]
    with ScriptedOpenAI(script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        arch = Architect(openai_ws)
        job = arch.process(arch.jobs.get(arch.submit_feedback("Check the config.").id))
    http = TestClient(create_app(openai_ws, architect=arch))

    shown = http.get(f"/jobs/{job.id}").json()
    assert shown["model"] == MODEL and shown["state"] == "failed"
    entries = shown["transcript"]
    assert [(e["kind"], e["name"], e["ok"]) for e in entries] == [
        ("model", "gpt-4o-mini-2024-07-18", True), ("tool", "read_file", True), ("tool", "read_file", False),
        ("model", "gpt-4o-mini-2024-07-18", True)]
    assert entries[1]["args"] == {"path": "plugins/support_desk.py"}
    assert entries[1]["text"].endswith("more characters]") and len(entries[1]["text"]) < 2100  # cut to size
    assert len(tool_results(server.requests[1])["r1"]) > 20_000  # the model saw it whole
    assert "NotFoundError" in entries[2]["text"]
    assert entries[3]["text"] == "Nothing to do." and entries[3]["tokens"]["total"] == 150

    client = ArchitectClient("http://testserver")
    client.http = http
    monkeypatch.setattr("ratchet.cli.architect_client", lambda url, workspace_dir: client)
    monkeypatch.setenv("COLUMNS", "200")  # one line per call
    table = CliRunner().invoke(cli, ["jobs", "show", job.id, "--transcript"], catch_exceptions=False)
    assert table.exit_code == 0, table.output
    assert f"transcript of job {job.id} ({MODEL})" in table.output
    assert "read_file" in table.output and "Nothing to do." in table.output


def test_llm_planner_without_a_model_names_the_setting():
    with pytest.raises(ConfigError) as err:
        LlmPlanner(None).chat_model()
    assert err.value.field == "architect.model"


def test_llm_planner_with_an_unknown_provider_names_the_setting():
    with pytest.raises(ConfigError) as err:
        LlmPlanner("no-such-provider:some-model").chat_model()
    assert err.value.field == "architect.model"


# --- bounded in time ------------------------------------------------------------------------------------


def model_call_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ratchet-model-call" and t.is_alive()]


def test_llm_planner_model_that_does_not_answer_fails_the_job_at_its_time_limit(openai_ws, monkeypatch):
    """The job fails at its time limit, and the HTTP request ends with it: the time left reaches the
    provider's client as its timeout, so no model call is left running (even with the client's retries)."""
    from ratchet.architect.toolschemas import tool_schemas_at

    openai_ws.config.architect.job_timeout_seconds = 20
    # the brief's tool schemas made, and the provider's package imported, before the job's clock runs
    tool_schemas_at(openai_ws, git(openai_ws.root, "rev-parse", "HEAD").strip())
    LlmPlanner.from_config(openai_ws.config.architect).chat_model()
    before = main_snapshot(openai_ws)
    never = [slow(600, calls(call("list_files", {}, f"l{i}"))) for i in range(3)]  # the first try and 2 retries
    with ScriptedOpenAI(never) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        arch = Architect(openai_ws)
        started = time.monotonic()
        job = arch.process(arch.jobs.get(arch.submit_feedback(DRIFT).id))
        elapsed = time.monotonic() - started
        # The server still holds every reply back; only the client's own timeout ends the request.
        waited = 0.0
        while model_call_threads() and waited < 15:
            time.sleep(0.1)
            waited += 0.1
        assert model_call_threads() == []

    assert elapsed < 20 + 10  # the limit, and room for a loaded machine
    assert job.state == "failed" and job.error.field == "architect.job_timeout_seconds"
    assert "while planning: the model's call 1 did not answer within" in job.error.detail
    assert "job_timeout_seconds" in job.error.fix
    assert job.transcript[-1].kind == "model" and not job.transcript[-1].ok
    assert main_snapshot(openai_ws) == before


def test_llm_planner_time_limit_in_a_tool_is_not_sent_back_to_the_model(openai_ws, monkeypatch):
    """Past the time limit a step refuses; the job fails there, and the model is not asked to correct it."""
    before = main_snapshot(openai_ws)
    arch = Architect(openai_ws)
    job = arch.jobs.get(arch.submit_feedback("answers are too long").id)

    def then_out_of_time(body):
        job.deadline = time.time() - 1  # the job's own record, as its clock runs out during the model's call
        return calls(call("set_state", {"pointer": "/params/max_sentences", "value": 2}, "s1"))

    with ScriptedOpenAI([then_out_of_time, calls(call("finish", {"summary": "too late"}, "f1"))]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        job = arch.process(job)

    assert job.state == "failed" and job.error.field == "architect.job_timeout_seconds"
    assert "while applying" in job.error.detail and job.actions == []
    assert len(server.requests) == 1  # not told, so no second call
    assert main_snapshot(openai_ws) == before


# --- model configuration and model errors ---------------------------------------------------------------


def settings(ws, **values):
    """Set ``[architect]`` values on the open workspace (the planner is made from them per job)."""
    for key, value in values.items():
        setattr(ws.config.architect, key, value)
    return ws


def test_llm_planner_settings_reach_the_provider(openai_ws, monkeypatch):
    """base_url and the key's variable come from [architect]; temperature is sent only when set."""
    monkeypatch.setenv("PROXY_KEY", "sk-from-proxy-key")
    script = [calls(call("set_state", {"pointer": "/params/max_sentences", "value": 2}, "s1")),
              calls(call("finish", {"summary": "Two sentences."}, "f1"))]
    with ScriptedOpenAI(script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # not used: base_url wins
        settings(openai_ws, base_url=server.base_url, api_key_env="PROXY_KEY", model_retries=0)
        arch = Architect(openai_ws)
        job = arch.process(arch.jobs.get(arch.submit_feedback("answers are too long").id))
    assert job.state == "succeeded", job.error
    assert "temperature" not in server.requests[0]  # reasoning models reject it
    assert server.headers[0]["authorization"] == "Bearer sk-from-proxy-key"

    settings(openai_ws, temperature=0.2)
    job, server = run_job(openai_ws, monkeypatch, [answer("no")])
    assert server.requests[0]["temperature"] == 0.2


@pytest.mark.parametrize("provider, expected", [
    ("openai", {"base_url": "http://h:1/v1", "temperature": 0.2, "timeout": 10.0, "max_retries": 3,
                "api_key": "sk-k"}),
    ("anthropic", {"base_url": "http://h:1/v1", "temperature": 0.2, "timeout": 10.0, "max_retries": 3,
                   "api_key": "sk-k"}),
    # ChatOllama ignores timeout, max_retries and api_key: its httpx client takes the timeout (the whole
    # call's, as it does not retry) and the key as a bearer header
    ("ollama", {"base_url": "http://h:1/v1", "temperature": 0.2,
                "client_kwargs": {"timeout": 40.0, "headers": {"Authorization": "Bearer sk-k"}}}),
])
def test_llm_planner_builds_the_arguments_each_provider_takes(provider, expected, monkeypatch):
    """Each attempt gets its share of model_timeout_seconds (40 s over the first try and 3 retries)."""
    monkeypatch.setenv("THE_KEY", "sk-k")
    planner = LlmPlanner(f"{provider}:some-model", timeout=40, base_url="http://h:1/v1", api_key_env="THE_KEY",
                         temperature=0.2, retries=3)
    assert planner.client_settings(provider) == expected


def test_llm_planner_leaves_out_what_is_not_set():
    planner = LlmPlanner("ollama:llama3.1", timeout=None)
    assert planner.client_settings("ollama") == {}
    assert LlmPlanner("openai:gpt-4o", timeout=30).client_settings("openai") == {"timeout": 10.0}  # 2 retries
    assert LlmPlanner("openai:gpt-4o", timeout=30).per_request_attempts() == 3
    assert LlmPlanner("anthropic:claude-sonnet-4-5", timeout=30, retries=0).per_request_attempts() == 1
    assert LlmPlanner("ollama:llama3.1", timeout=30).per_request_attempts() is None


@pytest.mark.parametrize("provider, check", [
    ("openai", lambda m: (m.request_timeout, m.max_retries, m.openai_api_base) == (10.0, 3, "http://h:1/v1")),
    ("anthropic", lambda m: (m.default_request_timeout, m.max_retries, m.anthropic_api_url)
     == (10.0, 3, "http://h:1/v1")),
    ("ollama", lambda m: m._client._client.timeout.read == 40.0
     and m._client._client.headers["authorization"] == "Bearer sk-k"),
])
def test_llm_planner_arguments_reach_the_real_chat_model_class(provider, check, monkeypatch):
    pytest.importorskip(f"langchain_{provider}")
    monkeypatch.setenv("THE_KEY", "sk-k")
    planner = LlmPlanner(f"{provider}:some-model", timeout=40, base_url="http://h:1/v1", api_key_env="THE_KEY",
                         retries=3)
    model = planner.chat_model()
    assert check(model)


def test_llm_planner_401_names_the_key_variable(openai_ws, monkeypatch):
    before = main_snapshot(openai_ws)
    job, server = run_job(openai_ws, monkeypatch, [failure(401, "Incorrect API key provided", "invalid_request_error")])
    assert job.state == "failed" and job.error.field == "architect.api_key_env"
    assert "401" in job.error.detail and "OPENAI_API_KEY" in job.error.fix
    assert main_snapshot(openai_ws) == before


def test_llm_planner_500_names_the_model_and_the_retries(openai_ws, monkeypatch):
    settings(openai_ws, model_retries=0)
    before = main_snapshot(openai_ws)
    job, server = run_job(openai_ws, monkeypatch, [failure(500, "The server had an error")])
    assert job.state == "failed" and job.error.field == "architect.model"
    assert "500" in job.error.detail and "model_retries" in job.error.fix and len(server.requests) == 1
    assert main_snapshot(openai_ws) == before


def test_llm_planner_unreachable_base_url_names_it_and_the_cli_shows_it(openai_ws, monkeypatch):
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from ratchet.architect.app import create_app
    from ratchet.architect.client import ArchitectClient
    from ratchet.cli import cli

    with ScriptedOpenAI([]) as gone:
        closed = gone.base_url  # a port nothing listens on once the block ends
    settings(openai_ws, base_url=closed, model_retries=0)
    before = main_snapshot(openai_ws)
    arch = Architect(openai_ws)
    with TestClient(create_app(openai_ws, architect=arch)) as http:  # the workers run the job
        client = ArchitectClient("http://testserver")
        client.http = http
        monkeypatch.setattr("ratchet.cli.architect_client", lambda url, workspace_dir: client)
        result = CliRunner().invoke(cli, ["feedback", "answers are too long", "--timeout", "120"])
    assert result.exit_code == 3, result.output
    assert "could not reach" in result.output and closed in result.output
    assert "architect.base_url" in result.output and "Fix:" in result.output
    [job] = arch.list()
    assert job.error.field == "architect.base_url"
    assert main_snapshot(openai_ws) == before


def test_llm_planner_check_names_a_missing_key_without_calling_the_model(openai_ws, monkeypatch):
    from ratchet.architect.planners import select_planner

    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError) as err:
        select_planner(openai_ws).check()
    assert err.value.field == "architect.model" and "OPENAI_API_KEY" in err.value.message
    settings(openai_ws, api_key_env="MY_KEY")
    with pytest.raises(ConfigError) as err:
        select_planner(openai_ws).check()
    assert err.value.field == "architect.api_key_env" and "MY_KEY" in err.value.fix


def test_llm_planner_check_names_a_missing_provider_package():
    with pytest.raises(ConfigError) as err:
        LlmPlanner("anthropic:claude-sonnet-4-5").check()  # langchain-anthropic is not installed here
    assert err.value.field == "architect.model" and "pip install langchain-anthropic" in err.value.fix


def test_serve_architect_refuses_to_start_without_the_model_s_key(openai_ws, monkeypatch):
    from click.testing import CliRunner

    from ratchet.cli import cli

    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setattr("ratchet.rest.serve_app", lambda *a, **k: pytest.fail("the architect started"))
    result = CliRunner().invoke(cli, ["serve", "architect", "-w", str(openai_ws.root)])
    assert result.exit_code == 3 and "OPENAI_API_KEY" in result.output and "architect.model" in result.output
