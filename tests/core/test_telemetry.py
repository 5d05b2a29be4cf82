"""Telemetry: spans as JSON lines in the object store, trace context across MCP, trace ids with turns and
feedback, and ``ratchet trace``. Every test uses local providers (``install_global=False``) and no network."""

import json
import sys

import anyio
import pytest
from click.testing import CliRunner
from mcp import Client
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ratchet.cli import cli
from ratchet.core import telemetry
from ratchet.core.errors import ConfigError
from ratchet.runner.service import Runner
from ratchet.tuner.service import Tuner

Q = {"question": "How long do I have to return an item?", "conversation_id": "c1"}


@pytest.fixture
def mem(ws):
    """Local providers with an in-memory span exporter, made current for the test, shut down after."""
    exporter = InMemorySpanExporter()
    tel = telemetry.setup("runner", ws, install_global=False, span_exporter=exporter)
    yield tel, exporter
    tel.shutdown()


def _hex(span) -> str:
    return format(span.context.trace_id, "032x")


def test_spans_are_json_lines_in_the_object_store_with_ratchet_attributes(ws):
    tel = telemetry.setup("runner", ws, install_global=False)
    try:
        assert tel.exporter == "jsonl" and telemetry.current() is tel
        Runner(ws, seed=0).call("answer", Q)
        with telemetry.span("custom.work", **{telemetry.CONVERSATION_ID: "c1", "skipped": None}):
            pass
        tel.flush()
    finally:
        tel.shutdown()
    assert telemetry.current() is not tel  # back to the global (no-op) providers
    lines = ws.objects.get_bytes(telemetry.telemetry_key("runner", "spans")).decode().splitlines()
    spans = {s["name"]: s for s in map(json.loads, lines)}  # one JSON document a line
    call = spans["ratchet.runner.call"]
    assert call["attributes"]["ratchet.conversation_id"] == "c1"
    assert call["attributes"]["ratchet.version"] == "v0.1.0"
    assert call["attributes"]["ratchet.tool"] == "answer"
    (decision,) = [e for e in call["events"] if e["name"] == "ratchet.decision"]
    assert decision["attributes"]["ratchet.strategy"] == "style" and decision["attributes"]["ratchet.choice"]
    assert call["resource"]["attributes"]["service.name"] == "ratchet-runner"
    assert call["resource"]["attributes"]["ratchet.workspace"] == ws.name
    assert spans["custom.work"]["attributes"] == {"ratchet.conversation_id": "c1"}
    # the turn and its decisions carry the call span's trace id
    turn = ws.store.session("c1")["turns"][0]
    assert "0x" + turn["trace_id"] == call["context"]["trace_id"]
    assert ws.store.decisions_for("c1")[0]["trace_id"] == turn["trace_id"]
    # metrics: exported at shutdown as one JSON line
    metrics = json.loads(ws.objects.get_bytes(telemetry.telemetry_key("runner", "metrics")).decode().splitlines()[-1])
    names = {m["name"] for rm in metrics["resource_metrics"] for sm in rm["scope_metrics"] for m in sm["metrics"]}
    assert {"ratchet.runner.calls", "ratchet.runner.latency"} <= names


def test_span_lines_are_what_the_sdk_writes_with_the_resource_encoded_once(ws, mem):
    tel, exporter = mem
    with tel.tracer.start_as_current_span("outer", attributes={"a": 1}) as outer:
        with tel.tracer.start_as_current_span("inner", links=[trace.Link(outer.get_span_context(), {"l": "x"})]) as s:
            s.add_event("e", {"k": [1, 2]})
            s.set_status(trace.Status(trace.StatusCode.ERROR, "broke"))
    lines = telemetry.JsonLinesSpanExporter(ws.objects, "runner")
    for span in exporter.get_finished_spans():
        assert json.loads(lines._line(span)) == json.loads(span.to_json())
    assert len(lines._resources) == 1


def test_no_telemetry_setup_still_records_turns_without_trace_id(ws):
    assert not isinstance(trace.get_tracer_provider(), __import__("opentelemetry.sdk.trace").sdk.trace.TracerProvider)
    Runner(ws, seed=0).call("answer", Q)
    assert ws.store.session("c1")["turns"][0]["trace_id"] is None


@pytest.mark.anyio
async def test_trace_context_crosses_an_mcp_call_into_turns_and_feedback(ws, mem):
    from ratchet.runner.server import build_server as runner_server
    from ratchet.tuner.server import build_server as tuner_server

    tel, exporter = mem
    async with Client(runner_server(Runner(ws, seed=0))) as c:
        with tel.tracer.start_as_current_span("client.turn") as client_span:
            r = await c.call_tool("answer", Q)
        assert not r.is_error
    client_trace = format(client_span.get_span_context().trace_id, "032x")
    assert ws.store.session("c1")["turns"][0]["trace_id"] == client_trace
    assert ws.store.decisions_for("c1")[0]["trace_id"] == client_trace
    call = next(s for s in exporter.get_finished_spans() if s.name == "ratchet.runner.call")
    assert _hex(call) == client_trace

    async with Client(tuner_server(Tuner(ws), worker="none")) as c:
        with tel.tracer.start_as_current_span("client.feedback") as fb_span:
            r = await c.call_tool("reward", {"conversation_id": "c1", "value": 1, "event_id": "e1"})
        assert not r.is_error
    (row,) = ws.store.feedback_for("c1")
    assert row["trace_id"] == format(fb_span.get_span_context().trace_id, "032x") != client_trace


def test_feedback_apply_and_promote_spans_and_trace_ids(ws, mem):
    tel, exporter = mem
    Runner(ws, seed=0).call("answer", Q)
    tuner = Tuner(ws)
    ack = tuner.feedback("reward", {"conversation_id": "c1", "value": 1, "event_id": "e1"})
    assert ack == {"accepted": 1, "duplicates": 0, "last_seq": 1, "event_id": "e1"}  # unchanged shape
    batch = tuner.feedback("reward_batch", {"events": [{"conversation_id": "c1", "value": 0, "event_id": "e2"},
                                                       {"conversation_id": "c1", "value": 1, "event_id": "e1"}]})
    assert batch == {"accepted": 1, "duplicates": 1, "last_seq": 2}
    assert tuner.apply_pending() == 2
    outcome = anyio.run(tuner.promote)
    assert outcome["promoted"]
    spans = exporter.get_finished_spans()
    feedback = [s for s in spans if s.name == "ratchet.tuner.feedback"]
    assert [s.attributes["ratchet.events.accepted"] for s in feedback] == [1, 1]
    assert feedback[0].attributes["ratchet.conversation_id"] == "c1"
    assert [r["trace_id"] for r in ws.store.feedback_for("c1")] == [_hex(feedback[0]), _hex(feedback[1])]
    (applied,) = [s for s in spans if s.name == "ratchet.tuner.apply_pending"]
    assert applied.attributes["ratchet.events.applied"] == 2
    (promoted,) = [s for s in spans if s.name == "ratchet.tuner.promote"]
    assert promoted.attributes["ratchet.promoted"] is True
    assert promoted.attributes["ratchet.version"] == outcome["version"]
    assert promoted.attributes["ratchet.events.applied"] == 2


@pytest.fixture
def run():
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "240"})


def test_ratchet_trace_tells_the_story_of_a_conversation(ws, ws_path, run):
    tel = telemetry.setup("runner", ws, install_global=False)  # so the story has spans too
    try:
        Runner(ws, seed=0).call("answer", Q)
        tuner = Tuner(ws)
        tuner.feedback("reward", {"conversation_id": "c1", "value": 1, "event_id": "evt-promoted"})
        tuner.apply_pending()
        outcome = anyio.run(tuner.promote)
        assert outcome["promoted"]
        tuner.feedback("reward", {"conversation_id": "c1", "value": 0, "event_id": "evt-later"})
    finally:
        tel.shutdown()

    result = run("trace", "c1", "-w", ws_path, "--json")
    assert result.exit_code == 0, result.output
    story = json.loads(result.output)
    (call,) = story["calls"]
    assert call["tool"] == "answer" and call["version"] == "v0.1.0" and call["latency_ms"] > 0
    assert call["arguments"]["question"] == Q["question"] and len(call["trace_id"]) == 32
    (decision,) = story["decisions"]
    assert decision["strategy"] == "style" and decision["choice"] and "propensity" in decision
    assert [(f["event_id"], f["version"]) for f in story["feedback"]] == [("evt-promoted", outcome["version"]),
                                                                        ("evt-later", "pending")]
    assert {s["name"] for s in story["spans"]} >= {"ratchet.runner.call", "ratchet.tuner.feedback"}

    table = run("trace", "c1", "-w", ws_path).output
    for text in ("calls of c1", "answer", "How long do I have", call["trace_id"], "decisions of c1", "style",
                 decision["choice"], "feedback on c1", "evt-promoted", outcome["version"], "evt-later", "pending",
                 "ratchet.runner.call"):
        assert text in table, text


def test_ratchet_trace_unknown_conversation_is_not_found(ws_path, run):
    result = run("trace", "nobody", "-w", ws_path)
    assert result.exit_code == 6
    assert "no conversation 'nobody'" in result.output and "Fix:" in result.output


def test_otlp_endpoint_without_the_exporter_package_is_a_clear_error(ws, monkeypatch):
    monkeypatch.setenv(telemetry.OTLP_ENV, "http://127.0.0.1:4318")
    for mod in ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                "opentelemetry.exporter.otlp.proto.http.metric_exporter"):
        monkeypatch.setitem(sys.modules, mod, None)  # import fails as if the package were missing
    with pytest.raises(ConfigError) as err:
        telemetry.setup("runner", ws, install_global=False)
    assert "opentelemetry-exporter-otlp-proto-http" in str(err.value) and "ratchet-agents[otlp]" in str(err.value)
    assert err.value.field == "OTEL_EXPORTER_OTLP_ENDPOINT"
    assert telemetry.current().component is None  # nothing was installed
