"""The tuner core: durable feedback in, staging state updated, tested promotions out.

Feedback tools come from the configured strategies. An event is validated against its tool's JSON
Schema, joined to the runner's logged decision for its conversation, and appended to the feedback
log (idempotent by ``event_id``) before it is acknowledged. Applying is separate and repeatable:
the events after staging's ``applied_seq`` are folded in by each strategy's pure ``apply`` and the
result is written with compare-and-swap, so several tuner processes never apply an event twice or
lose one, and staging can always be rebuilt from active plus the log.

Feedback for a conversation with no logged decision is refused and not stored: the runner logs every
decision before it replies, so such feedback is a client error (a wrong id, or the wrong workspace)
and keeping it would only hide that.

A promotion runs the micro tier against the exact staging document, and on a pass makes it active,
commits it and tags a patch version whose metadata names the strategies, the events applied and the
micro-tier summary. Strategy code runs confined: it may write only under ``state/`` and ``.ratchet/``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ratchet.core import telemetry
from ratchet.core.admission import check_finite, check_id
from ratchet.core.confine import confined
from ratchet.core.documents import RESERVED_KEY, applied_seq
from ratchet.core.errors import (ConfigError, ConflictError, NotFoundError, PluginError, RatchetError,
                                 UncommittedError, UserError)
from ratchet.core.stores.sql import compact_json
from ratchet.core.strategy import Decision, FeedbackEvent, FeedbackTool, Strategy, build_strategies

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

APPLY_CHUNK = 50_000  # events folded per compare-and-swap


@dataclass
class Route:
    """A feedback tool and the strategies it feeds (one tool name may feed several strategies)."""

    tool: FeedbackTool
    keys: list[str] = field(default_factory=list)

    @property
    def event_tool(self) -> str:
        return self.tool.batch_of or self.tool.name


class Tuner:
    """Feedback, staging and promotions of one workspace."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.plugins = workspace.plugins
        self.strategies: dict[str, Strategy] = build_strategies(workspace, self.plugins)
        self._plugin_of = {name: plugin for name, (plugin, _cls) in self._registered().items()}
        self.routes = self._routes()
        self._validators: dict[str, Any] = {}
        self._section_validators: dict[str, Any] = {}
        self._apply_lock = threading.Lock()
        self._promote_lock = threading.Lock()
        self._prepare_lock = threading.Lock()
        self._test_runner = None
        self.last_error: str | None = None
        self.last_promotion: dict[str, Any] | None = None

    def _registered(self):
        from ratchet.core.strategy import registered_strategies

        return registered_strategies(self.plugins, self.workspace)

    def _routes(self) -> dict[str, Route]:
        routes: dict[str, Route] = {}
        for key, strategy in self.strategies.items():
            for tool in strategy.feedback_tools():
                route = routes.setdefault(tool.name, Route(tool))
                if route.tool.input_schema != tool.input_schema:
                    raise ConfigError(
                        f"strategies {route.keys[0]!r} and {key!r} both define feedback tool {tool.name!r} with "
                        f"different schemas", field="tuner.strategies",
                        fix="use strategies whose shared tools agree, or one strategy per feedback kind")
                route.keys.append(key)
        for reserved in ("promote", "status", "rebuild_staging"):
            if reserved in routes:
                raise ConfigError(f"a strategy defines a feedback tool named {reserved!r}, which the tuner uses",
                                  field="tuner.strategies", fix="rename the strategy's tool")
        return routes

    # --- feedback in ---

    def validate(self, tool: str, arguments: dict[str, Any]) -> Route:
        """Check ``arguments`` against the tool's JSON Schema; the error names the field."""
        import fastjsonschema

        route = self.routes.get(tool)
        if route is None:
            raise NotFoundError(f"unknown feedback tool {tool!r}", field="tool",
                                fix=f"use one of: {', '.join(sorted(self.routes))}")
        check = self._validators.get(tool)
        if check is None:  # compiled once: 20x faster than interpreting the schema per event
            check = self._validators[tool] = fastjsonschema.compile(route.tool.input_schema)
        try:
            check(arguments)
        except fastjsonschema.JsonSchemaValueException:
            self._explain(route, arguments)
        batch = route.tool.batch_of is not None
        items = arguments["events"] if batch else [arguments]
        for n, item in enumerate(items):  # what no schema can say: finite numbers, ids that fit the store
            prefix = f"events[{n}]" if batch else ""
            check_finite(item, prefix)
            for f in ("event_id", *route.tool.join):
                if item.get(f) is not None:
                    check_id(item[f], f"{prefix}.{f}" if prefix else f)
        return route

    @staticmethod
    def _explain(route: Route, arguments: dict[str, Any]) -> None:
        """Raise the most relevant schema error, with its path (slow, so only for invalid input)."""
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import best_match

        error = best_match(Draft202012Validator(route.tool.input_schema).iter_errors(arguments))
        where = _field_path(error) if error is not None else "(arguments)"
        if error is not None and error.validator == "type" and error.instance is None:
            raise UserError(f"{where}: must not be null", field=where,
                            fix=f"send {where} as a {error.validator_value} (see the tool's input schema)")
        raise UserError(f"{where}: {error.message if error is not None else 'invalid'}", field=where,
                        fix=f"send {where} as the tool's input schema says (see tools/list)")

    def feedback(self, tool: str, arguments: dict[str, Any], *, trace_id: str | None = None) -> dict[str, Any]:
        """Validate, join and durably append feedback. All events of a call are stored, or none is."""
        tel = telemetry.current()
        with tel.tracer.start_as_current_span(telemetry.TUNER_FEEDBACK, attributes={telemetry.TOOL: tool}) as span:
            if trace_id is None:  # this span's trace: the caller's, when the caller propagated one
                trace_id = telemetry.trace_id_hex(span)
            ack = self._feedback(tool, arguments, trace_id)
            span.set_attributes({telemetry.EVENTS_ACCEPTED: ack["accepted"],
                                 telemetry.EVENTS_DUPLICATE: ack["duplicates"]})
            if ack["conversation_id"] is not None:
                span.set_attribute(telemetry.CONVERSATION_ID, ack["conversation_id"])
            if ack["accepted"]:
                tel.feedback_events.add(ack["accepted"], {telemetry.TOOL: tool})
            del ack["conversation_id"]
            return ack

    def _feedback(self, tool: str, arguments: dict[str, Any], trace_id: str | None) -> dict[str, Any]:
        route = self.validate(tool, arguments)
        batch = route.tool.batch_of is not None
        items = arguments["events"] if batch else [arguments]
        fields = route.tool.join
        joined = self.workspace.store.latest_decisions(
            str(i[f]) for i in items for f in fields if i.get(f) is not None)
        rows = []
        encoded: dict[tuple, str] = {}  # a conversation's decisions, encoded once however many events it has
        for n, item in enumerate(items):
            # {join field: {strategy key: decision}} for the strategies this tool feeds
            decisions: dict[str, dict[str, Any]] = {}
            for f in fields:
                cid = item.get(f)
                found = {k: d for k, d in joined.get(str(cid), {}).items() if k in route.keys}
                if found:
                    decisions[f] = found
                elif route.tool.needs_decision:
                    where = f"events[{n}].{f}" if batch else f
                    raise NotFoundError(
                        f"{where}: unknown conversation {cid!r}: the runner logged no decision for it, so "
                        f"nothing was stored", field=where,
                        fix="send feedback only for conversation ids a runner of this workspace served")
            ids = tuple(str(item.get(f)) for f in fields)
            if ids not in encoded:
                encoded[ids] = compact_json(decisions)
            rows.append({"event_id": item.get("event_id"), "tool": route.event_tool,
                         "conversation_id": item.get(fields[0]) if fields else None,
                         "payload": {"args": item, "decisions": decisions}, "trace_id": trace_id,
                         "payload_json": f'{{"args":{compact_json(item)},"decisions":{encoded[ids]}}}'})
        acks = self.workspace.store.append_feedback(rows)
        duplicates = sum(a["duplicate"] for a in acks)
        ack = {"accepted": len(acks) - duplicates, "duplicates": duplicates,
               "last_seq": max((a["seq"] for a in acks), default=None)}
        if not batch:
            ack["event_id"] = acks[0]["event_id"]
        cids = {str(r["conversation_id"]) for r in rows if r["conversation_id"] is not None}
        ack["conversation_id"] = cids.pop() if len(cids) == 1 else None  # for the span; not returned
        return ack

    # --- staging ---

    def apply_pending(self) -> int:
        """Fold every logged event after staging's ``applied_seq`` into staging. Returns how many."""
        tel = telemetry.current()
        with tel.tracer.start_as_current_span(telemetry.TUNER_APPLY) as span:
            total = self._apply_pending()
            span.set_attribute(telemetry.EVENTS_APPLIED, total)
            if total:
                tel.events_applied.add(total)
            return total

    def _apply_pending(self) -> int:
        state, store = self.workspace.state, self.workspace.store
        total, conflicts = 0, 0
        with self._apply_lock:
            while True:
                staging = state.read("staging")
                rows = store.feedback_since(applied_seq(staging.document), limit=APPLY_CHUNK)
                if not rows:
                    self.last_error = None
                    return total
                document = self.fold(state.adopt_strategies(staging.document), rows)
                try:
                    state.write("staging", document, staging.revision)
                except ConflictError:  # another tuner applied first: re-read and fold what is left
                    conflicts += 1
                    if conflicts > 1000:
                        raise
                    continue
                total += len(rows)
                if len(rows) < APPLY_CHUNK:  # that was all of it: no need to look again
                    self.last_error = None
                    return total

    def fold(self, document: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
        """A new document: ``rows`` (feedback log rows, in order) applied by each strategy. Pure."""
        sections = dict(document.get("strategies") or {})
        for key, strategy in self.strategies.items():
            tools = {t.batch_of or t.name for t in strategy.feedback_tools()}
            events = [e for row in rows if row["tool"] in tools and (e := _event(row, key)) is not None]
            if not events:
                continue
            section = sections.get(key) or strategy.initial_state()
            sections[key] = self._apply(key, strategy, section, events)
        out = {**document, "strategies": sections}
        out[RESERVED_KEY] = {**(document.get(RESERVED_KEY) or {}), "applied_seq": rows[-1]["seq"]}
        return out

    def _apply(self, key: str, strategy: Strategy, section: dict[str, Any], events: list[FeedbackEvent]):
        import fastjsonschema

        ws = self.workspace
        plugin = self._plugin_of.get(strategy.name, strategy.name)
        try:
            with confined(ws.state_dir, ws.runtime_dir):
                new = strategy.apply(section, events)
        except Exception as exc:  # noqa: BLE001 -- name the strategy and its plugin
            self.last_error = f"{key}: {type(exc).__name__}: {exc}"
            raise PluginError(f"{type(exc).__name__}: {exc}", plugin=plugin, hook=f"{strategy.name}.apply",
                              fix="fix the strategy; the events stay in the log and are applied once it works "
                              "(or run rebuild_staging)") from exc
        check = self._section_validators.get(key)
        if check is None:
            check = self._section_validators[key] = fastjsonschema.compile(strategy.state_schema())
        try:
            check(new)
        except fastjsonschema.JsonSchemaValueException as exc:
            self.last_error = f"{key}: section violates its schema"
            raise PluginError(f"apply() returned a section that violates the strategy's schema: {exc.message}",
                              plugin=plugin, hook=f"{strategy.name}.apply", fix="fix the strategy's apply()") from None
        return new

    def rebuild_staging(self) -> dict[str, Any]:
        """Staging := active plus every logged event after active's ``applied_seq``."""
        state, store = self.workspace.state, self.workspace.store
        with self._apply_lock:
            for _ in range(1000):
                active, staging = state.read("active"), state.read("staging")
                document = state.adopt_strategies(dict(active.document))
                start = applied_seq(document)
                total = 0
                while rows := store.feedback_since(applied_seq(document), limit=APPLY_CHUNK):
                    document = self.fold(document, rows)
                    total += len(rows)
                try:
                    written = state.write("staging", document, staging.revision)
                except ConflictError:
                    continue
                return {"revision": written.revision, "from_seq": start, "events_applied": total,
                        "applied_seq": applied_seq(document)}
        raise ConflictError("staging kept changing while rebuilding", fix="retry later")

    # --- promotion ---

    def pending(self) -> dict[str, int]:
        state = self.workspace.state
        staging, active = state.read("staging"), state.read("active")
        last = self.workspace.store.last_feedback_seq()
        return {"staged": applied_seq(staging.document) - applied_seq(active.document),
                "unapplied": last - applied_seq(staging.document)}

    def due(self) -> bool:
        """Whether the promotion policy's event count is reached."""
        every = self.workspace.config.tuner.promotion.every_events
        if every <= 0:
            return False
        state = self.workspace.state
        return applied_seq(state.read("staging").document) - applied_seq(state.read("active").document) >= every

    async def tick(self, timed: bool = False) -> dict[str, Any] | None:
        """One pass of background work: fold new feedback into staging, then promote if the policy says
        so (``timed``: the every_seconds period has passed). Returns the promotion outcome, if any."""
        import anyio

        try:
            await anyio.to_thread.run_sync(self.apply_pending)
            due = await anyio.to_thread.run_sync(self.due)
            if due or (timed and (await anyio.to_thread.run_sync(self.pending))["staged"] > 0):
                return await self.promote(reason="every_events policy" if due else "every_seconds policy")
        except RatchetError as exc:  # reported by status(); the events stay in the log
            self.last_error = str(exc)
            self._save_worker_status()
            raise
        self._save_worker_status()
        return None

    def _save_worker_status(self) -> None:
        """Share the background worker's last error with the server process's ``status``."""
        import json

        from ratchet.core.fsutil import atomic_write

        atomic_write(self.workspace.runtime_dir / "tuner-worker.json",
                     json.dumps({"last_error": self.last_error, "at": time.time()}).encode(), durable=False)

    def _worker_error(self) -> str | None:
        import json

        try:
            return json.loads((self.workspace.runtime_dir / "tuner-worker.json").read_text())["last_error"]
        except (FileNotFoundError, ValueError, KeyError):
            return None

    async def promote(self, reason: str = "promotion policy") -> dict[str, Any]:
        """Run the micro tier on staging; on a pass make it active and tag a patch version."""
        from ratchet.core.lineage import Lineage, VersionMakerBusy

        if not self._promote_lock.acquire(blocking=False):
            return {"promoted": False, "reason": "a promotion is already running"}
        tel = telemetry.current()
        try:
            with tel.tracer.start_as_current_span(telemetry.TUNER_PROMOTE, attributes={"ratchet.reason": reason}) as span:
                # one version maker at a time, on any host: the store's versions lease, for the whole
                # promotion (micro tier included), so two tuners never test and tag the same staging
                try:
                    with Lineage(self.workspace).turn(wait=0) as turn:
                        outcome = await self._promote(reason, turn)
                except VersionMakerBusy as exc:
                    outcome = {"promoted": False, "reason": exc.message}
                span.set_attribute(telemetry.PROMOTED, outcome["promoted"])
                if outcome["promoted"]:
                    span.set_attributes({telemetry.VERSION: outcome["version"],
                                         telemetry.EVENTS_APPLIED: outcome["events_applied"]})
                else:
                    span.set_attribute("ratchet.skipped_reason", outcome["reason"])
                tel.promotions.add(1, {telemetry.PROMOTED: outcome["promoted"]})
                return outcome
        finally:
            self._promote_lock.release()

    async def _promote(self, reason: str, turn) -> dict[str, Any]:
        import anyio

        from ratchet.tiers.harness import write_summary

        state = self.workspace.state
        staging, active = state.read("staging"), state.read("active")
        if staging.document == active.document:
            return {"promoted": False, "reason": "staging equals active: nothing to promote"}
        try:  # before the micro tier: a tag now would claim behaviour its files do not hold
            await anyio.to_thread.run_sync(state.check_committed, "promote")
        except UncommittedError as exc:
            outcome = {"promoted": False, "uncommitted": exc.paths, "reason": f"{exc.message}; {exc.fix}"}
            self.workspace.emit("promotion.failed", outcome)
            return outcome
        micro = await self.run_micro(staging.document)
        if not micro.ok:
            outcome = {"promoted": False, "reason": "micro tier failed: " + "; ".join(
                micro.violations + [f"{f['id']}: {f['reason']}" for f in micro.failures][:5]),
                "micro": micro.to_dict()}
            self.workspace.emit("promotion.failed", outcome)
            return outcome
        events = applied_seq(staging.document) - applied_seq(active.document)
        extra = {"strategies": {k: s.name for k, s in self.strategies.items()}, "events_applied": events,
                 "applied_seq": applied_seq(staging.document), "micro": _micro_summary(micro)}
        version = await anyio.to_thread.run_sync(lambda: state.promote(
            document=staging.document, reason=reason, author="tuner", kind="tuner", extra=extra, turn=turn))
        write_summary(self.workspace, [micro], commit=version.commit)
        outcome = {"promoted": True, "version": version.name, "commit": version.commit,
                   "events_applied": events, "micro": _micro_summary(micro), "at": time.time()}
        self.workspace.emit("state.promoted", outcome)
        self.last_promotion = outcome
        return outcome

    def prepare(self) -> None:
        """Build the micro tier's runner and cases now (a server calls this at start), not at the first
        promotion."""
        from ratchet.runner.service import Runner
        from ratchet.tiers.harness import load_cases

        with self._prepare_lock:  # start-up and an early promote() may both ask
            if self._test_runner is None:
                runner = Runner(self.workspace, explore=False, record=False, allow_overrides=True,
                                document=self.workspace.state.read("staging").document)
                self._micro_cases = load_cases(self.workspace, "micro", self.plugins)
                self._test_runner = runner

    async def run_micro(self, document: dict[str, Any]):
        import anyio

        from ratchet.runner.server import build_server
        from ratchet.tiers.budgets import load_budgets
        from ratchet.tiers.harness import run_tier

        await anyio.to_thread.run_sync(self.prepare)
        self._test_runner.serve_document(document)
        budgets = load_budgets(self.workspace)
        return await run_tier(build_server(self._test_runner), self._micro_cases, shards=2,
                              budgets=budgets.tiers.micro, tier="micro", workspace=self.workspace,
                              document=document)

    # --- status ---

    def status(self) -> dict[str, Any]:
        state, store = self.workspace.state, self.workspace.store
        staging, active = state.read("staging"), state.read("active")
        last = store.last_event("state.promoted") if self.last_promotion is None else None
        strategies = {}
        for key, strategy in self.strategies.items():
            section = (staging.document.get("strategies") or {}).get(key) or strategy.initial_state()
            strategies[key] = {"strategy": strategy.name, "family": strategy.family,
                               "served": strategy.served(section), "kpis": strategy.kpis(section)}
        return {
            "staging": {"revision": staging.revision, "applied_seq": applied_seq(staging.document)},
            "active": {"revision": active.revision, "applied_seq": applied_seq(active.document),
                       "version": active.version},
            "pending_events": applied_seq(staging.document) - applied_seq(active.document),
            "unapplied_events": store.last_feedback_seq() - applied_seq(staging.document),
            "last_promotion": self.last_promotion or (last["payload"] if last else None),
            "policy": self.workspace.config.tuner.promotion.model_dump(),
            "strategies": strategies,
            "last_error": self.last_error or self._worker_error(),
        }


def _event(row: dict[str, Any], key: str) -> FeedbackEvent | None:
    """The event as strategy ``key`` sees it, or None if it joined none of that strategy's decisions.

    Built with ``model_construct``: the rows were validated on their way into the log, and validating
    again would cost ~30 us an event.
    """
    joined, features, first = {}, {}, None
    for field_name, by_key in row["payload"]["decisions"].items():
        d = by_key.get(key)
        if d is None:
            continue
        decision = Decision.model_construct(**{k: v for k, v in d.items() if k != "features"})
        joined[field_name] = decision
        if first is None:
            first, features = decision, d.get("features") or {}
    if not joined and row["payload"]["decisions"]:
        return None
    return FeedbackEvent.model_construct(
        event_id=row["event_id"], tool=row["tool"], conversation_id=row["conversation_id"],
        payload=row["payload"]["args"], decision=first, joined=joined, features=features, ts=row["ts"])


def _field_path(error) -> str:
    """``events[3].value`` style path of a jsonschema error (required-property errors name the property)."""
    parts = ""
    for p in error.absolute_path:
        parts += f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p))
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        parts = f"{parts}.{missing}" if parts else missing
    if error.validator == "additionalProperties" and "'" in error.message:
        extra = error.message.split("'")[1]
        parts = f"{parts}.{extra}" if parts else extra
    return parts or "(arguments)"


def _micro_summary(result) -> dict[str, Any]:
    d = result.to_dict()
    return {k: d.get(k) for k in ("passed", "failed", "pass_rate", "latency_ms", "seconds", "budget_ok")}
