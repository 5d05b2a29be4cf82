"""The test harness (ratchet.tiers.harness) and ci/budgets.json (ratchet.tiers.budgets), against a small MCPServer."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from ratchet import hookimpl
from ratchet.core.errors import ConfigError, NotFoundError, PluginError, TestsFailedError, UserError
from ratchet.tiers.budgets import LatencyBudget, TierBudget, load_budgets
from ratchet.tiers.harness import Case, ensure_ok, load_cases, run_tier, run_tiers, summary_key, write_summary


class Probe:
    """What the test server saw: every call's conversation id and the most calls in flight at once."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.inflight = 0
        self.max_inflight = 0


def build_server(probe: Probe | None = None, delay: float = 0.0) -> MCPServer:
    probe = probe or Probe()
    srv = MCPServer("tiers-test", log_level="WARNING")

    @srv.tool()
    async def answer(question: str, conversation_id: str, ctx: Context) -> dict[str, Any]:
        state = (ctx.request_context.meta or {}).get("ratchet/state") or {}
        style = state.get("params", {}).get("style", "friendly")
        probe.calls.append(conversation_id)
        probe.inflight += 1
        probe.max_inflight = max(probe.max_inflight, probe.inflight)
        try:
            await anyio.sleep(delay)
        finally:
            probe.inflight -= 1
        return {"answer": f"[{style}] {question}", "style": style, "score": 0.5,
                "tags": ["refund", "returns"], "meta": {"conversation": conversation_id}}

    @srv.tool()
    def broken(question: str) -> str:
        raise ToolError("knowledge base offline")

    @srv.tool()
    def double(n: int) -> int:  # a non-object return arrives as {"result": n}
        return 2 * n

    return srv


def case(id: str = "c", tool: str = "answer", **kw: Any) -> Case:
    kw.setdefault("args", {"question": "q?", "conversation_id": id})
    kw.setdefault("expect", {"path": "style", "equals": "friendly"})
    return Case.model_validate({"id": id, "tool": tool, **kw})


def run(target: Any, cases: list[Case], **kw: Any):
    kw.setdefault("tier", "micro")
    return anyio.run(lambda: run_tier(target, cases, **kw))


def budget(**kw: Any) -> TierBudget:
    base = {"max_seconds": 20, "min_pass_rate": 1.0, "latency_ms": LatencyBudget(p50=1000, p95=2000), "metrics": {}}
    return TierBudget(**{**base, **kw})


def write_cases(ws, tier: str, name: str, cases: list[dict] | str) -> Path:
    path = ws.root / "tests" / tier / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cases if isinstance(cases, str) else json.dumps(cases), encoding="utf-8")  # JSON is YAML
    return path


def only_cases(ws, tier: str, cases: list[dict]) -> None:
    for old in (ws.root / "tests" / tier).glob("*.yaml"):
        old.unlink()
    write_cases(ws, tier, "cases.yaml", cases)


# ---------------------------------------------------------------------------------- loading


def test_hook_ratchet_collect_cases_after_sorted_yaml_files(ws):
    write_cases(ws, "micro", "zz-extra.yaml", [{"id": "extra-1", "tool": "answer", "args": {},
                                               "expect": {"contains": "x"}}])

    class Contributor:
        @hookimpl
        def ratchet_collect_cases(self, tier, workspace):
            assert workspace is ws
            return [{"id": f"hook-{tier}", "tool": "answer", "expect": {"equals": 1}}] if tier == "micro" else None

    ws.plugins.register(Contributor(), "contributor")
    cases = load_cases(ws, "micro", ws.plugins)
    ids = [c.id for c in cases]
    assert ids[0] == "micro-kb-question-entry" and ids[-2:] == ["extra-1", "hook-micro"]
    assert cases[-2]._source == "tests/micro/zz-extra.yaml" and cases[-1]._source == "hook ratchet_collect_cases"
    assert {c._tier for c in cases} == {"micro"}
    full = load_cases(ws, "full", ws.plugins)
    metric = next(c for c in full if c.is_metric)
    assert (metric.cases_from, metric.expect.spec, metric.expect.min) == ("retrieval", "accuracy", 0.9)
    assert "hook-full" not in [c.id for c in full]


GOOD = {"id": "a", "tool": "answer", "args": {"question": "q"}, "expect": {"path": "answer", "equals": "x"}}


@pytest.mark.parametrize(
    ("cases", "field", "words"),
    [
        ([GOOD, {**GOOD}], "id", ["duplicate id", "'a'"]),
        ([{**GOOD, "expect": {"equals": "x", "regex": "x"}}], "expect", ["exactly one", "equals, regex"]),
        ([{**GOOD, "expect": {"path": "answer"}}], "expect", ["exactly one", "found none"]),
        ([{**GOOD, "expected": {"equals": 1}}], "expected", ["unknown key", "did you mean 'expect'"]),
        ([{**GOOD, "expect": {"equal": "x"}}], "expect.equal", ["unknown expectation", "did you mean 'equals'"]),
        ([{**GOOD, "expect": {"regex": "(unclosed"}}], "expect.regex", ["invalid regex"]),
        ([{**GOOD, "expect": {"schema": {"type": "nonsense"}}}], "expect.schema", ["invalid JSON Schema"]),
        ([{**GOOD, "expect": {"metric": "accuracy", "min": 0.5}}], "cases_from", ["needs cases_from"]),
        ([{**GOOD, "expect": {"metric": "accuracy"}, "cases_from": "g"}], "expect.min", ["needs min"]),
        ([{**GOOD, "expect": {"equals": 1, "min": 0.5}}], "expect.min", ["only to a metric"]),
        ([{**GOOD, "expect": {"metric": "accuracy", "min": 0.5}, "cases_from": "nope"}], "cases_from",
         ["names no group"]),
        ([{**GOOD, "args": ["q"]}], "args", ["valid dictionary"]),
        ([{k: v for k, v in GOOD.items() if k != "tool"}], "tool", ["needs the tool"]),
        ([{**GOOD, "ope": {"margin": 0.1}}], "tool", ["ope case makes no call", "tool, expect"]),
        ([{"id": "a", "ope": {"estimator": "mean"}}], "ope.estimator", ["'ips', 'snips' or 'dr'"]),
        ([{"id": "a"}], "expect", ["needs expect (or ope)"]),
    ],
)
def test_case_errors_name_file_case_and_field(ws, cases, field, words):
    only_cases(ws, "fast", cases)
    with pytest.raises(UserError) as err:
        load_cases(ws, "fast")
    message = str(err.value)
    assert err.value.field == field, message
    assert "tests/fast/cases.yaml: case 'a'" in message
    assert err.value.fix
    for word in words:
        assert word in message + err.value.fix, message


def test_file_level_errors(ws):
    only_cases(ws, "micro", "- id: a\n  tool: [unclosed\n")
    with pytest.raises(UserError, match=r"cases\.yaml is not valid YAML at line \d+"):
        load_cases(ws, "micro")
    only_cases(ws, "micro", "{id: a}")
    with pytest.raises(UserError, match="must be a list of cases"):
        load_cases(ws, "micro")
    only_cases(ws, "micro", "")
    with pytest.raises(NotFoundError, match="has no cases"):
        load_cases(ws, "micro")
    with pytest.raises(UserError) as err:
        load_cases(ws, "smoke")
    assert err.value.field == "tier" and "micro, fast, full" in err.value.fix


# ---------------------------------------------------------------------------------- expectations


@pytest.mark.parametrize(
    ("expect", "ok"),
    [
        ({"path": "style", "equals": "friendly"}, True),
        ({"path": "style", "equals": "formal"}, False),
        ({"path": "answer", "contains": "refund"}, True),
        ({"path": "answer", "contains": "warranty"}, False),
        ({"path": "tags", "contains": "returns"}, True),
        ({"path": "tags.1", "equals": "returns"}, True),
        ({"path": "answer", "regex": r"^\[friendly\] .*refund"}, True),
        ({"path": "answer", "regex": r"^\[formal\]"}, False),
        ({"path": "score", "regex": "0.5"}, False),  # not a string
        ({"schema": {"type": "object", "required": ["answer", "score"]}}, True),
        ({"schema": {"type": "object", "properties": {"score": {"type": "string"}}}}, False),
        ({"path": "meta.conversation", "equals": "c"}, True),
        ({"path": "meta.missing", "equals": "c"}, False),
    ],
)
def test_expectation_kinds(expect, ok):
    result = run(build_server(), [case(args={"question": "my refund?", "conversation_id": "c"}, expect=expect)])
    assert (result.passed, result.failed) == ((1, 0) if ok else (0, 1)), result.failures
    if not ok:
        assert result.failures[0]["id"] == "c" and result.failures[0]["reason"]


def test_failure_reasons_are_readable():
    cases = [
        case("eq", expect={"path": "style", "equals": "formal"}),
        case("schema", expect={"schema": {"properties": {"score": {"type": "string"}}}}),
        case("path", expect={"path": "meta.missing", "equals": 1}),
        case("wrapped", tool="double", args={"n": 21}, expect={"equals": 42}),
    ]
    reasons = {f["id"]: f["reason"] for f in run(build_server(), cases).failures}
    assert reasons == {
        "eq": "'friendly' != 'formal'",
        "schema": "schema: 0.5 is not of type 'string' at score",
        "path": "path 'meta.missing': no 'missing' in {'conversation': 'path'}",
    }


def test_metric_over_a_group():
    grouped = [case(f"g{i}", group="retrieval", expect={"path": "style", "equals": "friendly" if i < 3 else "x"})
               for i in range(4)]
    other = case("other", expect={"path": "style", "equals": "nope"})  # not in the group: does not count
    for floor, passes in ((0.75, True), (0.8, False)):
        metric = case("acc", cases_from="retrieval", args={}, expect={"metric": "accuracy", "min": floor})
        result = run(build_server(), [metric, *grouped, other])  # listed first, still evaluated last
        assert result.metrics == {"accuracy": 0.75, "accuracy.retrieval": 0.75}
        assert result.total == 6
        failed = {f["id"] for f in result.failures}
        assert failed == ({"g3", "other"} if passes else {"g3", "other", "acc"})
    assert "accuracy 0.750 < 0.8 over 4 cases" in next(f["reason"] for f in result.failures if f["id"] == "acc")


def test_state_overrides_reach_the_tool():
    cases = [
        case("formal", state={"params": {"style": "formal"}}, expect={"path": "style", "equals": "formal"}),
        case("default", expect={"path": "answer", "regex": r"^\[friendly\]"}),
    ]
    result = run(build_server(), cases)
    assert result.failed == 0, result.failures


def test_error_results_fail_the_case():
    cases = [
        case("broken", tool="broken", args={"question": "q"}, expect={"equals": "x"}),
        case("unknown", tool="nope", args={}, expect={"equals": "x"}),
        case("bad-args", tool="double", args={"n": "many"}, expect={"equals": 2}),
    ]
    result = run(build_server(), cases)
    reasons = {f["id"]: f["reason"] for f in result.failures}
    assert "knowledge base offline" in reasons["broken"]
    assert "Unknown tool: nope" in reasons["unknown"]
    assert "validation error" in reasons["bad-args"]
    assert (result.passed, result.pass_rate, result.ok) == (0, 0.0, False)


def test_shards_run_every_case_exactly_once_concurrently():
    probe = Probe()
    cases = [case(f"c{i}") for i in range(10)]
    result = run(build_server(probe, delay=0.05), cases, shards=3)
    assert sorted(probe.calls) == sorted(f"c{i}" for i in range(10))
    assert probe.max_inflight == 3
    assert (result.passed, result.total, result.ok) == (10, 10, True)
    assert result.seconds < 10 * 0.05  # really ran in parallel
    assert 40 <= result.latency_ms["p50"] <= result.latency_ms["p95"]


# ---------------------------------------------------------------------------------- budgets


def test_pass_rate_and_metric_floor_violations():
    cases = [case("a"), case("b", expect={"path": "style", "equals": "x"}, group="g"),
             case("acc", cases_from="g", args={}, expect={"metric": "accuracy", "min": 0.0})]
    result = run(build_server(), cases, budgets=budget(min_pass_rate=0.9, metrics={"accuracy": 0.5, "recall": 0.1}))
    assert result.passed == 2 and not result.budget_ok and not result.ok
    assert result.violations == [
        "tiers.micro.min_pass_rate: 0.667 < 0.9 (2/3 passed)",
        "tiers.micro.metrics.accuracy: 0.000 < 0.5",
        "tiers.micro.metrics.recall: not measured (no metric case in the tier computes 'recall')",
    ]
    # A budget that tolerates failures passes the tier (ok) even with a failed case.
    lenient = run(build_server(), cases, budgets=budget(min_pass_rate=0.5, metrics={"accuracy": 0.0}))
    assert lenient.budget_ok and lenient.ok and lenient.failed == 1


def test_latency_and_time_violations():
    tight = budget(max_seconds=0.05, latency_ms=LatencyBudget(p50=100, p95=150))
    result = run(build_server(delay=0.2), [case(f"s{i}") for i in range(2)], budgets=tight)
    assert result.failed == 0 and not result.budget_ok
    keys = [v.split(":")[0] for v in result.violations]
    assert keys == ["tiers.micro.max_seconds", "tiers.micro.latency_ms.p50", "tiers.micro.latency_ms.p95"]
    assert result.violations[2].endswith(" ms > 150 ms") and result.latency_ms["p95"] >= 200
    with pytest.raises(TestsFailedError) as err:
        ensure_ok([result])
    assert "tiers.micro.latency_ms.p95" in str(err.value) and err.value.exit_code == 8
    ensure_ok([run(build_server(), [case()], budgets=budget())])  # no raise


def test_budgets_file_loads(ws):
    budgets = load_budgets(ws)
    assert budgets.tier("full").metrics == {"accuracy": 0.9}
    assert budgets.slo.latency_p95_ms == 250


@pytest.mark.parametrize(
    ("edit", "field", "fix_words"),
    [
        (lambda b: b["tiers"]["fast"].update(min_pass_rate=1.5), "tiers.fast.min_pass_rate", "less than or equal to 1"),
        (lambda b: b["tiers"]["micro"]["latency_ms"].update(median=9), "tiers.micro.latency_ms.median", "p50, p95"),
        (lambda b: b["tiers"]["micro"].update(max_second=9), "tiers.micro.max_second", "'max_seconds'"),
        (lambda b: b["tiers"]["full"].pop("metrics"), "tiers.full.metrics", "add"),
        (lambda b: b["tiers"].pop("micro"), "tiers.micro", "add"),
        (lambda b: b["slo"].update(error_rate_max="low"), "slo.error_rate_max", "valid number"),
        (lambda b: b["tiers"]["fast"]["latency_ms"].update(p50=5000), "tiers.fast.latency_ms", "above p95"),
    ],
)
def test_budgets_errors_name_the_key(ws, edit, field, fix_words):
    path = ws.root / "ci" / "budgets.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as err:
        load_budgets(ws)
    assert err.value.field == field and "budgets.json" in str(err.value)
    assert fix_words in err.value.fix


def test_budgets_file_missing_or_malformed(ws):
    path = ws.root / "ci" / "budgets.json"
    path.write_text('{"tiers": {,}')
    with pytest.raises(ConfigError, match="not valid JSON") as err:
        load_budgets(ws)
    assert "line 1" in err.value.fix
    path.unlink()
    with pytest.raises(NotFoundError, match="does not exist"):
        load_budgets(ws)


# ---------------------------------------------------------------------------------- summary, run_tiers, plugins


def test_summary_is_written_and_merged(ws):
    head = ws.versions.head()
    micro = run(build_server(), [case()], tier="micro")
    fast = run(build_server(), [case(), case("x", expect={"equals": 0})], tier="fast")
    write_summary(ws, [micro])
    summary = write_summary(ws, [fast])
    stored = ws.objects.get_json(f"evals/{head}/summary.json")
    assert stored == summary and stored["commit"] == head and stored["updated"]
    assert set(stored["tiers"]) == {"micro", "fast"}
    assert stored["tiers"]["fast"]["failed"] == 1 and stored["tiers"]["micro"] == micro.to_dict()
    rerun = run(build_server(), [case(), case("y")], tier="micro")
    stored = write_summary(ws, [rerun])
    assert stored["tiers"]["micro"]["total"] == 2 and stored["tiers"]["fast"]["total"] == 2
    write_summary(ws, [micro], commit="abc123", key_suffix="-dirty")
    assert ws.objects.get_json(summary_key("abc123", "-dirty"))["tiers"].keys() == {"micro"}


def test_run_tiers_uses_the_workspace(ws):
    only_cases(ws, "micro", [
        {"id": "m1", "tool": "answer", "args": {"question": "q", "conversation_id": "m1"},
         "state": {"params": {"style": "concise"}}, "expect": {"path": "answer", "regex": r"^\[concise\]"}},
        {"id": "m2", "tool": "answer", "args": {"question": "q", "conversation_id": "m2"},
         "expect": {"path": "style", "equals": "friendly"}},
    ])
    (result,) = run_tiers(ws, "micro", build_server(), shards=2)
    assert (result.tier, result.passed, result.budget_ok) == ("micro", 2, True), result


def test_hook_ratchet_register_expectations_registered_kind_works(ws):
    class StartsWith:
        @hookimpl
        def ratchet_register_expectations(self, register):
            register("startswith", lambda result, spec: None if str(result).startswith(spec) else "wrong start")

    ws.plugins.register(StartsWith(), "startswith-plugin")
    only_cases(ws, "micro", [
        {"id": "yes", "tool": "answer", "args": {"question": "q", "conversation_id": "1"},
         "expect": {"path": "answer", "startswith": "[friendly]"}},
        {"id": "no", "tool": "answer", "args": {"question": "q", "conversation_id": "2"},
         "expect": {"path": "answer", "startswith": "[formal]"}},
    ])
    with pytest.raises(UserError, match="unknown expectation 'startswith'"):
        load_cases(ws, "micro")  # without plugins only the built-in kinds exist
    result = anyio.run(lambda: run_tier(build_server(), load_cases(ws, "micro", ws.plugins)))
    assert result.tier == "micro"
    assert result.failures == [{"id": "no", "reason": "wrong start"}]


def test_bad_expectation_registrations_name_the_plugin(ws):
    class Clash:
        @hookimpl
        def ratchet_register_expectations(self, register):
            register("equals", lambda r, s: None)

    ws.plugins.register(Clash(), "clash")
    only_cases(ws, "micro", [GOOD])
    with pytest.raises(PluginError, match=r"(?s)'clash'.*ratchet_register_expectations.*built in"):
        load_cases(ws, "micro", ws.plugins)


# ---------------------------------------------------------------------------------- over HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_streamable_http_url_target():
    srv = build_server()
    port = _free_port()

    async def main():
        server = uvicorn.Server(uvicorn.Config(srv.streamable_http_app(), host="127.0.0.1", port=port,
                                               log_level="warning"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)
        try:
            cases = [case("formal", state={"params": {"style": "formal"}},
                          expect={"path": "style", "equals": "formal"}),
                     case("plain"), case("err", tool="broken", args={"question": "q"}, expect={"equals": 1})]
            return await run_tier(f"http://127.0.0.1:{port}/mcp", cases, shards=2, tier="fast")
        finally:
            server.should_exit = True
            await task

    result = anyio.run(main)
    assert result.passed == 2 and [f["id"] for f in result.failures] == ["err"]


def test_unreachable_url_says_how_to_fix():
    url = f"http://127.0.0.1:{_free_port()}/mcp"  # nothing listens there
    with pytest.raises(UserError, match=f"cannot reach the runner at {url}") as err:
        run(url, [case()])
    assert "--url" in err.value.fix
