"""The runner core: serve runner tools with the active state, deciding and logging every call.

For each call the runner takes the current state snapshot, asks every configured strategy to decide
(sticky per conversation unless the strategy says otherwise), applies the decisions to the state's
``params``, calls the tool with a :class:`RunContext`, and writes the turn and its decisions to the
store before returning, so feedback sent right after the reply always joins.

Hot reload swaps the snapshot reference when the store's active document (or the pin) changes; a
call keeps the snapshot it started with, so nothing fails or mixes states during a reload. The active
document carries the version that holds it, so the label served is always that version's.

With ``require_signed`` (``ratchet serve runner --require-signed``) a state is served only if its
version's tag verifies against the allowed signers and the state is byte for byte the one that tag
holds: the runner refuses to start on anything else, and a reload to anything else keeps the
snapshot it has (and logs why).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import threading
import time
import typing
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ratchet.core import telemetry
from ratchet.core.admission import NOTHING_STORED, check_finite, check_id
from ratchet.core.documents import ACTIVE_PATH, RESERVED_KEY
from ratchet.core.errors import NotFoundError, SignatureError, UserError
from ratchet.core.signing import VERIFIED
from ratchet.core.strategy import Decision, Strategy, build_strategies
from ratchet.runner.context import RunContext

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

OVERRIDES_META_KEY = "ratchet/state"  # request _meta key carrying test-case state overrides
log = logging.getLogger("ratchet.runner")


@dataclass(frozen=True)
class ToolSpec:
    """A registered runner tool."""

    name: str
    fn: Callable[..., Any]
    description: str
    parameters: tuple[inspect.Parameter, ...]  # the tool's own parameters, RunContext excluded
    run_param: str | None  # name of the RunContext parameter, if the tool takes one
    returns: Any = inspect.Signature.empty
    plugin: str = ""


def _tool_spec(fn: Callable[..., Any], name: str | None = None, *, plugin: str = "") -> ToolSpec:
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    tool_name = name or getattr(fn, "__name__", None)
    if not tool_name or tool_name == "<lambda>":
        raise TypeError("a runner tool needs a name: register(fn, name='...')")
    hints = typing.get_type_hints(fn, include_extras=True)  # keeps Annotated[..., Field(description=...)]
    sig = inspect.signature(fn)
    run_param = next((p for p, h in hints.items() if h is RunContext), None)
    params = tuple(p for p in sig.parameters.values() if p.name != run_param)
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name!r}: *args/**kwargs cannot be described by a JSON Schema")
    params = tuple(p.replace(annotation=hints.get(p.name, p.annotation)) for p in params)
    return ToolSpec(tool_name, fn, inspect.getdoc(fn) or "", params, run_param,
                    hints.get("return", sig.return_annotation), plugin)


@dataclass(frozen=True)
class Snapshot:
    """The state a call is served with. Immutable: a reload makes a new one."""

    document: dict[str, Any]
    version: str | None
    revision: int
    source: str  # "active", "staging" or "pinned"
    sha256: str = ""

    @property
    def params(self) -> dict[str, Any]:
        return self.document.get("params", {})

    def section(self, key: str) -> dict[str, Any] | None:
        return (self.document.get("strategies") or {}).get(key)

    def to_dict(self) -> dict[str, Any]:
        doc = {k: v for k, v in self.document.items() if k != RESERVED_KEY}
        return {"version": self.version, "revision": self.revision, "source": self.source, "state": doc}


class _Draws:
    """Where decisions draw their random numbers (numpy Generators are not thread-safe).

    Unseeded (a server): a Generator per thread. One shared Generator behind a lock made 32 concurrent
    calls queue on that lock, its holder descheduled by the GIL mid-draw. Seeded (tests, simulations):
    one Generator behind a lock, so that the same calls make the same draws whichever threads serve them.
    """

    def __init__(self, seed: int | None):
        self._local = threading.local() if seed is None else None
        self._shared = np.random.default_rng(seed)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def generator(self) -> Iterator[np.random.Generator]:
        if self._local is None:
            with self._lock:
                yield self._shared
            return
        rng = getattr(self._local, "rng", None)
        if rng is None:
            with self._lock:  # spawned from the shared one: independent streams
                rng = self._local.rng = self._shared.spawn(1)[0]
        yield rng


@dataclass
class _Sticky:
    """A bounded LRU of the decisions in force per (conversation, strategy)."""

    capacity: int = 100_000
    items: OrderedDict = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key):
        with self.lock:
            value = self.items.get(key)
            if value is not None:
                self.items.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)


class Runner:
    """Serves a workspace's runner tools.

    :param source: ``"active"`` (default, or the pinned version if one is pinned), ``"staging"``, or a
        version name to serve that version's state.
    :param explore: strategies decide (explore) when True; when False every strategy serves its best
        choice (``Strategy.served``), which is what test tiers check.
    :param record: write turns and decisions to the store (off for test tiers).
    :param allow_overrides: honour state overrides from test cases (request meta ``ratchet/state``).
    :param require_signed: serve only versions whose tag verifies (raises :class:`SignatureError` at
        start; a reload keeps the current snapshot).
    """

    def __init__(self, workspace: Workspace, *, source: str = "active", explore: bool = True,
                 record: bool = True, allow_overrides: bool = False, seed: int | None = None,
                 document: dict[str, Any] | None = None, require_signed: bool = False):
        self.workspace = workspace
        self.require_signed = require_signed
        self.plugins = workspace.plugins
        self.source = source
        self.explore = explore
        self.record = record
        self.allow_overrides = allow_overrides
        self.tools = self._collect_tools()
        self.strategies: dict[str, Strategy] = build_strategies(workspace, self.plugins)
        self._draws = _Draws(seed)
        self._sticky = _Sticky()
        self._fixed_document = document
        self._snapshot = self._load()
        self._watch_key = self._change_key()
        self._listener: threading.Thread | None = None
        self._changed, self._stop_listening = threading.Event(), threading.Event()
        self._extracts_features = bool(self.plugins.pm.hook.ratchet_extract_features.get_hookimpls())

    # --- tools ---

    def _collect_tools(self) -> dict[str, ToolSpec]:
        found = self.plugins.collect("ratchet_register_runner_tools", _tool_spec, key=lambda spec: spec.name,
                                     workspace=self.workspace)
        tools = {}
        for name, (plugin, spec) in found.items():
            tools[name] = ToolSpec(**{**spec.__dict__, "plugin": plugin})
        if not tools:
            raise UserError("the workspace registers no runner tools",
                            fix="list a plugin module with ratchet_register_runner_tools in [workspace] plugins")
        return tools

    # --- state snapshots and hot reload ---

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _load(self) -> Snapshot:
        state = self.workspace.state
        if self._fixed_document is not None:
            return Snapshot(self._fixed_document, None, 0, "fixed")
        source = self.source
        if source == "active" and state.pinned():
            source = state.pinned()
        if source in ("active", "staging"):
            doc = state.read(source)  # active carries the version that holds it
            if self.require_signed:
                self._check_signed(doc.version, doc.sha256)
            return Snapshot(state.migrate(doc.document), doc.version, doc.revision, source, doc.sha256)
        version = self.workspace.versions.get(source).name
        if self.require_signed:
            self._check_signed(version, None)
        return Snapshot(state.at_version(version), version, 0, "pinned")

    def _check_signed(self, name: str | None, sha256: str | None) -> None:
        """Raise unless version ``name``'s tag verifies and (when ``sha256`` is given: the store's copy)
        the state to serve is the one the tag holds."""
        fix = ("tag versions with a key the allowed signers file lists ([versions] signing_key), roll back to "
               "a verified version, or serve without --require-signed")
        if name is None:
            raise SignatureError("the state to serve is not a version, and only signed versions may be served",
                                 field="version", fix="serve the active state or a pinned version")
        versions = self.workspace.versions
        status = versions.signature(versions.get(name))
        if status != VERIFIED:
            what = "has no signature" if status == "unsigned" else "does not verify against the allowed signers"
            raise SignatureError(f"version {name} is {status}: its tag {what}", field="version", fix=fix)
        if sha256 is not None and hashlib.sha256(versions.read_file(name, ACTIVE_PATH)).hexdigest() != sha256:
            raise SignatureError(f"the store's active state is not the one version {name}'s tag holds",
                                 field="version", fix=f"restore it with `ratchet rollback {name}`")

    def _change_key(self) -> tuple:
        """Cheap fingerprint of everything a reload depends on: the revisions of the store's documents
        and the pin (one indexed query; every host's runner sees the same)."""
        if self._fixed_document is not None:
            return ()
        return tuple(sorted(self.workspace.store.coordination.revisions().items()))

    def wait_for_change(self, timeout: float) -> bool:
        """Return True when the store announces a change of the state or the pin (PostgreSQL ``NOTIFY``,
        heard by a listener thread started on first use), False after ``timeout`` seconds (the poll)."""
        if self._listener is None:
            self._listener = threading.Thread(
                target=self.workspace.store.coordination.listen, args=(lambda _name: self._changed.set(),
                                                                       self._stop_listening),
                name="ratchet-state-listener", daemon=True)
            self._listener.start()
        announced = self._changed.wait(timeout)
        self._changed.clear()
        return announced

    def close(self) -> None:
        """Stop listening for changes (the next ``wait_for_change`` listens again)."""
        self._stop_listening.set()
        self._listener, self._stop_listening = None, threading.Event()

    def reload_if_changed(self) -> bool:
        """Swap in a new snapshot if the state or the tags changed. Returns True if it did."""
        key = self._change_key()
        if key == self._watch_key:
            return False
        try:
            new = self._load()
        except SignatureError as exc:  # keep serving the verified snapshot we have
            self._watch_key = key
            log.warning("runner: still serving %s: %s", self._snapshot.version, exc)
            return False
        self._watch_key = key
        changed = (new.sha256, new.version, new.source) != (self._snapshot.sha256, self._snapshot.version,
                                                           self._snapshot.source) or new.document != self._snapshot.document
        self._snapshot = new  # one reference assignment: calls in flight keep the one they took
        return changed

    def serve_document(self, document: dict[str, Any]) -> None:
        """Serve a given document from now on (test tiers run candidate states this way)."""
        self._fixed_document = document
        self._snapshot = Snapshot(document, None, 0, "fixed")

    # --- decisions ---

    def _decide(self, snap: Snapshot, conversation_id: str, context: dict[str, Any]) -> dict[str, Decision]:
        decisions: dict[str, Decision] = {}
        prior = None
        for key, strategy in self.strategies.items():
            section = snap.section(key) or strategy.initial_state()
            if not self.explore:
                decisions[key] = Decision(strategy=key, choice=strategy.served(section), propensity=1.0,
                                          sticky=False, info={"served": True})
                continue
            sticky = self._sticky.get((conversation_id, key))
            if sticky is None and self.record:
                if prior is None:
                    prior = self._prior_decisions(conversation_id)
                sticky = prior.get(key)
            if sticky is not None and sticky.sticky:
                decisions[key] = sticky
                continue
            with self._draws.generator() as rng:
                decision = strategy.decide(section, context, rng)
            decisions[key] = decision
            if decision.sticky:
                self._sticky.put((conversation_id, key), decision)
        return decisions

    def _prior_decisions(self, conversation_id: str) -> dict[str, Decision]:
        """Decisions of this conversation logged by earlier processes or replicas (latest per strategy)."""
        latest = self.workspace.store.decisions_in_force(conversation_id)
        found = {key: Decision(**{k: v for k, v in d.items() if k != "features"}) for key, d in latest.items()}
        for key, decision in found.items():
            self._sticky.put((conversation_id, key), decision)
        return found

    def params_for(self, snap: Snapshot, decisions: dict[str, Decision],
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        params = dict(snap.params)
        for key, decision in decisions.items():
            target = self.strategies[key].config.param
            if target:
                params[target] = decision.choice
            elif isinstance(decision.choice, dict):
                params.update(decision.choice)
        if overrides:
            params.update(overrides.get("params") or {})
        return params

    # --- calls ---

    def call(self, tool: str, arguments: dict[str, Any], *, overrides: dict[str, Any] | None = None,
             trace_id: str | None = None) -> Any:
        """Serve one call of ``tool``. Raises UserError (the caller's fault) or the tool's exception."""
        spec = self.tools.get(tool)
        if spec is None:
            raise NotFoundError(f"unknown runner tool {tool!r}", field="tool",
                                fix=f"use one of: {', '.join(sorted(self.tools))}")
        if overrides and not self.allow_overrides:
            raise UserError("this runner does not accept state overrides",
                            field=OVERRIDES_META_KEY, fix="start the runner with --allow-test-overrides")
        _admit(spec, arguments)
        snap = self._snapshot
        conversation_id = str(arguments.get("conversation_id") or f"anon-{time.time_ns()}")
        tel = telemetry.current()
        attributes = {telemetry.TOOL: tool, telemetry.CONVERSATION_ID: conversation_id}
        if snap.version:
            attributes[telemetry.VERSION] = snap.version
        with tel.tracer.start_as_current_span(telemetry.RUNNER_CALL, attributes=attributes) as span:
            features: dict[str, Any] = {}
            if self._extracts_features:
                for found in self.plugins.call("ratchet_extract_features", tool=tool, arguments=arguments,
                                               workspace=self.workspace):
                    features.update(found)
            context = {"tool": tool, "arguments": arguments, "conversation_id": conversation_id,
                       "features": features}
            decisions = self._decide(snap, conversation_id, context)
            if span.is_recording():
                for d in decisions.values():
                    span.add_event("ratchet.decision", _decision_attributes(d))
            if trace_id is None:  # this span's trace: the caller's, when the caller propagated one
                trace_id = telemetry.trace_id_hex(span)
            run = RunContext(conversation_id=conversation_id, params=self.params_for(snap, decisions, overrides),
                             decisions=decisions, version=snap.version, features=dict(features))
            kwargs = dict(arguments)
            if spec.run_param:
                kwargs[spec.run_param] = run
            started = time.perf_counter()
            result = error = None
            metric_attrs = {telemetry.TOOL: tool}
            try:
                result = spec.fn(**kwargs)
                return result
            except Exception as exc:  # noqa: BLE001 -- logged, then re-raised unchanged
                error = f"{type(exc).__name__}: {exc}"
                tel.runner_errors.add(1, metric_attrs)
                raise
            finally:
                latency_ms = (time.perf_counter() - started) * 1e3
                tel.runner_calls.add(1, metric_attrs)
                tel.runner_latency.record(latency_ms, metric_attrs)
                if self.record:
                    self.workspace.store.record_turn(
                        conversation_id=conversation_id, tool=tool, arguments=_jsonable(arguments),
                        result=_jsonable(result), error=error, version=snap.version,
                        latency_ms=latency_ms, trace_id=trace_id,
                        decisions_=[{"strategy": d.strategy, "choice": d.choice, "propensity": d.propensity,
                                     "sticky": d.sticky, "info": d.info} for d in decisions.values()],
                        features=_jsonable(run.features) or None)

    def session(self, conversation_id: str) -> dict[str, Any]:
        store = self.workspace.store
        session = store.session(conversation_id)
        if session is None:
            raise NotFoundError(f"no session {conversation_id!r}", field="conversation_id",
                                fix="call a runner tool with this conversation_id first")
        return {**session, "decisions": store.decisions_for(conversation_id),
                "feedback": store.feedback_for(conversation_id)}


def _admit(spec: ToolSpec, arguments: dict[str, Any]) -> None:
    """Refuse what the call must not carry, before anything is decided or stored: unknown arguments,
    non-finite numbers, a conversation id the store cannot hold."""
    known = [p.name for p in spec.parameters]
    for name in arguments:
        if name not in known:
            raise UserError(f"{name}: tool {spec.name!r} takes no argument {name!r}; {NOTHING_STORED}",
                            field=name, fix=f"send only the tool's arguments: {', '.join(known)}")
    check_finite(arguments, "")
    if arguments.get("conversation_id") is not None:
        check_id(arguments["conversation_id"], "conversation_id")


def _decision_attributes(d: Decision) -> dict[str, Any]:
    """A decision as span-event attributes (strategy key, choice as JSON unless a scalar, propensity)."""
    choice = d.choice if isinstance(d.choice, (str, bool, int, float)) else json.dumps(_jsonable(d.choice))
    attrs = {telemetry.STRATEGY: d.strategy, telemetry.CHOICE: choice, "ratchet.sticky": bool(d.sticky)}
    if d.propensity is not None:
        attrs[telemetry.PROPENSITY] = float(d.propensity)
    return attrs


def _jsonable(value: Any) -> Any:
    """Make a tool result storable as JSON (pydantic models, dataclasses and sets included)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    try:
        return json.loads(json.dumps(value, default=_default))
    except (TypeError, ValueError):
        return repr(value)


def _default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "__dataclass_fields__"):
        return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj).__name__)

