"""The test harness: load a tier's cases, call the runner over MCP in shards, check, compare with budgets.

A case (``tests/<tier>/*.yaml`` or the ``ratchet_collect_cases`` hook) calls one tool with ``args`` and
optional ``state`` overrides, then checks the structured result (or the value at ``expect.path``) with
exactly one expectation: ``equals``, ``contains``, ``regex``, ``schema``, ``metric`` or a plugin's kind.
A ``metric`` case makes no call: it passes when ``accuracy`` (the pass fraction of the cases whose
``group`` is its ``cases_from``) is at least ``min``. An ``ope`` case makes no call either: it estimates
off-policy, from the decision log, the mean reward of the state under test and of the active state, and
passes unless the first is below the second by more than ``margin`` (:mod:`ratchet.tiers.ope_case`).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import time
from collections import deque
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import anyio
import jsonschema
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, model_validator

from ratchet.core import auth
from ratchet.core.errors import NotFoundError, RatchetError, TestsFailedError, UserError, config_error
from ratchet.tiers.budgets import Budgets, TierBudget, load_budgets
from ratchet.tiers.ope_case import OPECheck, run_ope_case

if TYPE_CHECKING:
    from ratchet.core.plugins import Plugins
    from ratchet.core.workspace import Workspace

TIERS = ("micro", "fast", "full")
STATE_META_KEY = "ratchet/state"
METRICS = ("accuracy",)
Check = Callable[[Any, Any], "str | None"]


# --- expectations -----------------------------------------------------------------------------------


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _equals(value: Any, spec: Any) -> str | None:
    return None if value == spec else f"{_short(value)} != {_short(spec)}"


def _contains(value: Any, spec: Any) -> str | None:
    ok = (isinstance(value, str) and isinstance(spec, str) and spec in value) or (
        isinstance(value, list) and spec in value)
    return None if ok else f"{_short(spec)} not in {_short(value)}"


def _regex(value: Any, spec: str) -> str | None:
    ok = isinstance(value, str) and re.search(spec, value) is not None
    return None if ok else f"{spec!r} does not match {_short(value)}"


def _schema(value: Any, spec: Any) -> str | None:
    try:
        jsonschema.validate(value, spec)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return f"schema: {exc.message} at {where}"
    return None


BUILTIN_CHECKS: dict[str, Check | None] = {
    "equals": _equals, "contains": _contains, "regex": _regex, "schema": _schema,
    "metric": None,  # aggregated by run_tier after the calls, not checked per result
}


def _validate_expectation(name: Any, check: Any) -> tuple[str, Check]:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"expectation name {name!r} must be an identifier")
    if name in BUILTIN_CHECKS or name in ("path", "min"):
        raise ValueError(f"expectation {name!r} is built in; pick another name")
    if not callable(check):
        raise TypeError(f"expectation {name!r}: check must be callable(result, spec), got {type(check).__name__}")
    return name, check


def expectations(plugins: Plugins | None = None) -> dict[str, Check | None]:
    """The built-in expectation kinds plus those registered through ``ratchet_register_expectations``."""
    kinds = dict(BUILTIN_CHECKS)
    if plugins is not None:
        found = plugins.collect("ratchet_register_expectations", _validate_expectation, key=lambda item: item[0])
        kinds.update({name: check for name, (_plugin, (_name, check)) in found.items()})
    return kinds


# --- cases ------------------------------------------------------------------------------------------


class _Invalid(ValueError):
    """A validation failure that knows its field and fix (pydantic keeps it in the error's ctx)."""

    def __init__(self, message: str, *, field: str, fix: str):
        super().__init__(message)
        self.field, self.fix = field, fix


class Expect(BaseModel):
    """``path`` and ``min`` plus exactly one kind key; extra keys are allowed because plugins add kinds."""

    model_config = ConfigDict(extra="allow")
    path: str | None = None
    min: float | None = Field(default=None, ge=0, le=1)
    _check: Check | None = PrivateAttr(default=None)

    @property
    def kind(self) -> str:
        return next(iter(self.model_extra or {}))

    @property
    def spec(self) -> Any:
        return (self.model_extra or {})[self.kind]

    @model_validator(mode="after")
    def _exactly_one_kind(self, info: ValidationInfo) -> Expect:
        kinds = (info.context or {}).get("kinds") or BUILTIN_CHECKS
        found = list(self.model_extra or {})
        for key in found:
            if key not in kinds:
                close = difflib.get_close_matches(key, [*kinds, "path", "min"], n=1)
                raise _Invalid(f"unknown expectation {key!r}", field=f"expect.{key}",
                               fix=f"did you mean {close[0]!r}?" if close else
                               f"use one of {', '.join(kinds)}, or load the plugin that registers {key!r}")
        if len(found) != 1:
            raise _Invalid(f"expect needs exactly one of {', '.join(kinds)}; found {', '.join(found) or 'none'}",
                           field="expect", fix="write one case per check" if found else "add e.g. equals: ...")
        kind, spec = found[0], self.model_extra[found[0]]
        if kind == "metric":
            if spec not in METRICS:
                raise _Invalid(f"unknown metric {spec!r}", field="expect.metric",
                               fix=f"use one of {', '.join(METRICS)}")
            if self.min is None:
                raise _Invalid("a metric expectation needs min", field="expect.min",
                               fix="add min: the lowest acceptable value, 0..1")
            if self.path is not None:
                raise _Invalid("a metric expectation has no path", field="expect.path", fix="remove path")
        elif self.min is not None:
            raise _Invalid("min applies only to a metric expectation", field="expect.min", fix="remove min")
        if kind == "regex":
            try:
                re.compile(spec)
            except (re.error, TypeError) as exc:
                raise _Invalid(f"invalid regex {spec!r}: {exc}", field="expect.regex",
                               fix="fix the pattern; single-quote it in YAML so backslashes survive") from None
        if kind == "schema":
            try:
                jsonschema.validators.validator_for(spec).check_schema(spec)
            except (jsonschema.SchemaError, TypeError, AttributeError) as exc:
                raise _Invalid(f"invalid JSON Schema: {getattr(exc, 'message', exc)}", field="expect.schema",
                               fix="fix the schema (see https://json-schema.org)") from None
        self._check = kinds[kind]
        return self


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    tool: str | None = Field(default=None, min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    state: dict[str, Any] | None = Field(default=None, description="overrides, e.g. {params: {style: formal}}")
    group: str | None = None
    cases_from: str | None = Field(default=None, description="the group a metric case aggregates")
    expect: Expect | None = None
    ope: OPECheck | None = Field(default=None, description="an off-policy evaluation gate instead of a call")
    _source: str = PrivateAttr(default="")
    _tier: str | None = PrivateAttr(default=None)

    @property
    def is_metric(self) -> bool:
        return self.expect is not None and self.expect.kind == "metric"

    @property
    def is_call(self) -> bool:
        return self.ope is None and not self.is_metric

    @model_validator(mode="after")
    def _metric_needs_group(self) -> Case:
        if self.ope is not None:
            extra = [k for k in ("tool", "expect", "state", "group", "cases_from") if getattr(self, k) is not None]
            extra += ["args"] if self.args else []
            if extra:
                raise _Invalid(f"an ope case makes no call; it cannot have {', '.join(extra)}", field=extra[0],
                               fix=f"remove {', '.join(extra)}, or make it a separate case")
            return self
        if self.expect is None:
            raise _Invalid("a case needs expect (or ope)", field="expect", fix="add e.g. expect: {equals: ...}")
        if self.tool is None and not self.is_metric:
            raise _Invalid("a case needs the tool it calls", field="tool", fix="add tool: <runner tool name>")
        if self.is_metric and not self.cases_from:
            raise _Invalid("a metric case needs cases_from", field="cases_from",
                           fix="set cases_from to the group whose pass fraction it measures")
        if self.cases_from and not self.is_metric:
            raise _Invalid("cases_from applies only to metric cases", field="cases_from",
                           fix="remove cases_from, or use expect: {metric: accuracy, min: ...}")
        if self.is_metric and self.group:
            raise _Invalid("a metric case cannot be in a group", field="group", fix="remove group")
        return self


CASE_KEYS = list(Case.model_fields)


def _case_error(exc: ValidationError, where: str) -> UserError:
    cause = (exc.errors()[0].get("ctx") or {}).get("error")
    if isinstance(cause, _Invalid):
        return UserError(f"{where}: {cause}", field=cause.field, fix=cause.fix)
    return config_error(exc, where, Case, error=UserError, known=CASE_KEYS, assign=": ")


def _check_tier(tier: str) -> None:
    if tier not in TIERS:
        raise UserError(f"unknown tier {tier!r}", field="tier", fix=f"use one of {', '.join(TIERS)}")


def _read_yaml(path, rel: str) -> list[Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{rel} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}", field=rel,
                        fix=f"fix the YAML syntax{at}") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise UserError(f"{rel} must be a list of cases, not a {type(data).__name__}", field=rel,
                        fix="start each case with '- id: ...'")
    return data


def load_cases(workspace: Workspace, tier: str, plugins: Plugins | None = None) -> list[Case]:
    """The tier's cases: ``tests/<tier>/*.yaml`` sorted by name, then the ``ratchet_collect_cases`` hook's."""
    _check_tier(tier)
    kinds = expectations(plugins)
    folder = workspace.root / "tests" / tier
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")) if folder.is_dir() else []
    raw: list[tuple[str, int, Any]] = []
    for path in files:
        rel = path.relative_to(workspace.root).as_posix()
        raw += [(rel, i, item) for i, item in enumerate(_read_yaml(path, rel))]
    if plugins is not None:
        for contributed in plugins.call("ratchet_collect_cases", tier=tier, workspace=workspace):
            if not isinstance(contributed, list):
                raise UserError(f"ratchet_collect_cases returned a {type(contributed).__name__}, not a list",
                                field="ratchet_collect_cases", fix="return a list of case dicts, or None")
            raw += [("hook ratchet_collect_cases", i, item) for i, item in enumerate(contributed)]

    cases: list[Case] = []
    seen: dict[str, str] = {}
    for source, index, item in raw:
        named = isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
        where = f"{source}: case {item['id']!r}" if named else f"{source}: case #{index + 1}"
        if not isinstance(item, dict):
            raise UserError(f"{where} is a {type(item).__name__}, not a mapping", field="(case)",
                            fix="write each case as a mapping with id, tool, args and expect")
        try:
            case = Case.model_validate(item, context={"kinds": kinds})
        except ValidationError as exc:
            raise _case_error(exc, where) from None
        if case.id in seen:
            raise UserError(f"{where}: duplicate id (first defined in {seen[case.id]})", field="id",
                            fix="give every case in a tier a unique id")
        seen[case.id] = source
        case._source, case._tier = source, tier
        cases.append(case)

    groups = sorted({c.group for c in cases if c.group})
    for case in cases:
        if case.cases_from and case.cases_from not in groups:
            raise UserError(f"{case._source}: case {case.id!r}: cases_from {case.cases_from!r} names no group "
                            f"in tier {tier!r}", field="cases_from",
                            fix=f"set group: {case.cases_from} on the cases it measures"
                            + (f", or use one of {', '.join(groups)}" if groups else ""))
    if not cases:
        raise NotFoundError(f"tier {tier!r} has no cases", field=f"tests/{tier}",
                            fix=f"add YAML case files under tests/{tier}/")
    return cases


# --- running ----------------------------------------------------------------------------------------


class TierResult(BaseModel):
    tier: str
    passed: int
    failed: int
    total: int
    pass_rate: float
    latency_ms: dict[str, float]
    metrics: dict[str, float]
    seconds: float
    budget_ok: bool
    violations: list[str]
    failures: list[dict[str, str]]
    ok: bool = Field(description="budget_ok when a budget was given, else no case failed")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _resolve(value: Any, path: str | None) -> Any:
    for part in path.split(".") if path else []:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            raise LookupError(f"path {path!r}: no {part!r} in {_short(value)}")
    return value


def _text(result: Any) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


def _value(result: Any) -> Any:
    data = result.structured_content
    if data is None:  # a tool annotated with bare `dict` (or none) sends its JSON only as text
        text = _text(result)
        try:
            return json.loads(text)
        except ValueError:
            return text
    if isinstance(data, dict) and list(data) == ["result"]:  # the SDK wraps non-object returns
        return data["result"]
    return data


def _evaluate(case: Case, result: Any) -> str | None:
    try:
        value = _resolve(_value(result), case.expect.path)
    except LookupError as exc:
        return str(exc)
    try:
        return case.expect._check(value, case.expect.spec)
    except Exception as exc:  # noqa: BLE001 -- a broken plugin check fails its case, not the run
        return f"expectation {case.expect.kind!r} raised {type(exc).__name__}: {exc}"


def _describe(target: Any) -> str:
    return target if isinstance(target, str) else f"in-process server {getattr(target, 'name', target)!r}"


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def _worker(target: Any, queue: deque[Case], outcomes: dict[str, tuple[str | None, float]],
                  timeout: float, token: str | None = None) -> None:
    from mcp import Client, MCPError

    connect = auth.mcp_target(target, token) if isinstance(target, str) else target
    async with contextlib.AsyncExitStack() as stack:
        try:
            client = await stack.enter_async_context(Client(connect, read_timeout_seconds=timeout))
            # The client lists tools before its first call; do it now so that no case's latency includes it.
            await client.list_tools()
        except Exception as exc:  # noqa: BLE001 -- any connect failure gets the same advice
            leaf = _leaf(exc)
            raise UserError(f"cannot reach the runner at {_describe(target)}: {type(leaf).__name__}: {leaf}",
                            field="url", fix="start the runner (`ratchet serve`) or pass its URL, e.g. "
                            "--url http://127.0.0.1:8701/mcp") from exc
        while queue:  # one event loop: popleft never races
            case = queue.popleft()
            meta = {STATE_META_KEY: case.state} if case.state is not None else None
            start = time.perf_counter()
            try:
                result = await client.call_tool(case.tool, case.args, meta=meta)
            except Exception as exc:  # noqa: BLE001 -- a protocol error or timeout fails this case only
                why = (f"MCP error {exc.code}: {exc.message}" if isinstance(exc, MCPError)
                       else f"{type(exc).__name__}: {exc}")
                outcomes[case.id] = (why, (time.perf_counter() - start) * 1000)
                continue
            ms = (time.perf_counter() - start) * 1000
            reason = (_text(result) or "the tool returned an error") if result.is_error else _evaluate(case, result)
            outcomes[case.id] = (reason, ms)


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _violations(result: TierResult, budget: TierBudget) -> list[str]:
    key = f"tiers.{result.tier}"
    out = []
    if result.seconds > budget.max_seconds:
        out.append(f"{key}.max_seconds: {result.seconds:.1f} s > {budget.max_seconds:g} s")
    if result.pass_rate < budget.min_pass_rate:
        out.append(f"{key}.min_pass_rate: {result.pass_rate:.3f} < {budget.min_pass_rate:g} "
                   f"({result.passed}/{result.total} passed)")
    for q in ("p50", "p95"):
        got, limit = result.latency_ms[q], getattr(budget.latency_ms, q)
        if got > limit:
            out.append(f"{key}.latency_ms.{q}: {got:.1f} ms > {limit:g} ms")
    for name, floor in budget.metrics.items():
        got = result.metrics.get(name)
        if got is None:
            out.append(f"{key}.metrics.{name}: not measured (no metric case in the tier computes {name!r})")
        elif got < floor:
            out.append(f"{key}.metrics.{name}: {got:.3f} < {floor:g}")
    return out


async def run_tier(target: Any, cases: list[Case], *, shards: int = 4, budgets: TierBudget | None = None,
                   tier: str | None = None, call_timeout: float = 60.0, token: str | None = None,
                   workspace: Workspace | None = None, document: dict[str, Any] | None = None) -> TierResult:
    """Run ``cases`` against ``target`` (an ``MCPServer`` or a streamable-HTTP URL, to which each call
    carries ``token`` when given) with ``shards`` workers.

    ``tier`` defaults to the tier the cases were loaded from. Metric cases are evaluated after the calls,
    ``ope`` cases against ``workspace`` (the one under test; ``document`` is its state under test when
    that is not its work tree's state file).
    """
    if shards < 1:
        raise UserError(f"shards must be at least 1, got {shards}", field="shards", fix="pass --shards 1 or more")
    tier = tier or next((c._tier for c in cases if c._tier), None) or "adhoc"
    calls = [c for c in cases if c.is_call]
    queue = deque(calls)
    outcomes: dict[str, tuple[str | None, float]] = {}
    start = time.perf_counter()
    if calls:
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(min(shards, len(calls))):
                    tg.start_soon(_worker, target, queue, outcomes, call_timeout, token)
        except BaseExceptionGroup as group:  # anyio wraps even a single failure
            leaf = _leaf(group)
            if isinstance(leaf, RatchetError):
                raise leaf from group
            raise

    reasons = {c.id: outcomes[c.id][0] for c in calls}
    metrics: dict[str, float] = {}
    for case in (c for c in cases if c.is_metric):
        members = [c.id for c in calls if c.group == case.cases_from]
        if not members:
            reasons[case.id] = f"no cases in group {case.cases_from!r}"
            continue
        name, value = case.expect.spec, round(sum(reasons[i] is None for i in members) / len(members), 4)
        metrics[f"{name}.{case.cases_from}"] = value
        metrics[name] = min(value, metrics.get(name, value))  # a floor on the bare name holds for every group
        reasons[case.id] = None if value >= case.expect.min else (
            f"{name} {value:.3f} < {case.expect.min:g} over {len(members)} cases of group {case.cases_from!r}")
    for case in (c for c in cases if c.ope is not None):
        if workspace is None:
            reasons[case.id] = "an ope case needs the workspace under test (run it through run_tiers)"
            continue
        reasons[case.id], found = await anyio.to_thread.run_sync(run_ope_case, workspace, case.ope, document)
        metrics.update(found)
    seconds = time.perf_counter() - start

    latencies = [ms for _, ms in outcomes.values()]
    passed = sum(reasons[c.id] is None for c in cases)
    result = TierResult(
        tier=tier, passed=passed, failed=len(cases) - passed, total=len(cases),
        pass_rate=round(passed / len(cases), 4) if cases else 0.0,  # an empty tier must not pass a budget
        latency_ms={"p50": round(percentile(latencies, 0.5), 2), "p95": round(percentile(latencies, 0.95), 2)},
        metrics=metrics, seconds=round(seconds, 3), budget_ok=True, violations=[],
        failures=[{"id": c.id, "reason": reasons[c.id]} for c in cases if reasons[c.id] is not None], ok=True,
    )
    result.violations = _violations(result, budgets) if budgets is not None else []
    if budgets is not None:  # a refused change must not pass on the strength of the other cases' pass rate
        result.violations += [f"tiers.{tier}.ope: gate {c.id!r} failed (an ope case with gate: true fails its "
                              "tier whatever min_pass_rate)" for c in cases
                              if c.ope is not None and c.ope.gate and reasons[c.id] is not None]
    result.budget_ok = not result.violations
    result.ok = result.budget_ok if budgets is not None else result.failed == 0
    return result


def run_tiers(workspace: Workspace, tiers: str | list[str], target: Any, shards: int = 4,
              budgets: Budgets | None = None, fail_fast: bool = False) -> list[TierResult]:
    """Load and run each tier in order (sync). ``budgets`` defaults to the workspace's ``ci/budgets.json``;
    ``fail_fast`` stops after the first tier that fails or misses its budget."""
    tiers = [tiers] if isinstance(tiers, str) else list(tiers)
    budgets = budgets if budgets is not None else load_budgets(workspace)
    # Load every tier first so that a bad case file fails before any call is made.
    loaded = [(t, load_cases(workspace, t, workspace.plugins)) for t in tiers]
    token = auth.load_token(workspace) if isinstance(target, str) else None

    async def main() -> list[TierResult]:
        results = []
        for t, cases in loaded:
            results.append(await run_tier(target, cases, shards=shards, budgets=budgets.tier(t), tier=t,
                                          token=token, workspace=workspace))
            if fail_fast and not results[-1].ok:
                break
        return results

    return anyio.run(main)


def ensure_ok(results: list[TierResult]) -> None:
    """Raise ``TestsFailedError`` naming each tier that failed or missed its budget."""
    bad = [r for r in results if not r.ok]
    if not bad:
        return
    lines = []
    for r in bad:
        lines.append(f"tier {r.tier}: {r.failed} of {r.total} cases failed")
        lines += [f"  {f['id']}: {f['reason']}" for f in r.failures[:10]]
        lines += [f"  budget {v}" for v in r.violations]
    raise TestsFailedError("\n".join(lines), field=f"tiers.{bad[0].tier}",
                           fix="fix the failing cases or the code under test; change ci/budgets.json only on purpose")


# --- summaries --------------------------------------------------------------------------------------


def summary_key(commit: str, key_suffix: str = "") -> str:
    return f"evals/{commit}{key_suffix}/summary.json"


def write_summary(workspace: Workspace, results: list[TierResult], commit: str | None = None,
                  key_suffix: str = "") -> dict[str, Any]:
    """Merge ``results`` into ``evals/{commit}{key_suffix}/summary.json`` (one entry per tier); return it."""
    commit = commit or workspace.versions.head()
    if not commit:
        raise UserError("the workspace has no commit to file test results under", field="commit",
                        fix="commit the workspace first, or pass a commit")
    key = summary_key(commit, key_suffix)
    summary = workspace.objects.get_json(key) or {}
    tiers = {**summary.get("tiers", {}), **{r.tier: r.to_dict() for r in results}}
    summary = {
        **summary,
        "commit": commit,
        "tiers": tiers,
        # the off-policy estimates of the tiers' ope cases, e.g. {"ope.dr.style": 0.61, "ope.dr.style.active": ...}
        "ope": {k: v for t in tiers.values() for k, v in (t.get("metrics") or {}).items() if k.startswith("ope.")},
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    workspace.objects.put_json(key, summary)
    return summary
