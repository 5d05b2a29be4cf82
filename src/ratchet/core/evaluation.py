"""Off-policy evaluation of a workspace's candidates over its decision log.

The glue between the store (logged decisions joined with their rewards), the configured strategies and
the estimators of :mod:`ratchet.core.ope`. A candidate is a state document served by the configured
strategies (``active``, ``staging`` or a file), or another strategy or other parameters for one strategy
key, starting from what the active state learned (its section, handed to the new strategy's ``adopt``
when the strategy changes). Its probability of each choice in each logged context comes from
``Strategy.choice_probabilities`` with that state, the same way ``decide`` would choose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ratchet.core.documents import RESERVED_KEY
from ratchet.core.errors import NotFoundError, UserError
from ratchet.core.ope import Evaluation, LoggedCall, OPEError, evaluate
from ratchet.core.strategy import Strategy, build_strategies, choice_key, registered_strategies
from ratchet.core.versions import precedence

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace


@dataclass(frozen=True)
class Candidate:
    """What is evaluated: a state document and the strategies that would serve it."""

    label: str
    document: dict[str, Any]
    strategies: dict[str, Strategy]

    def section(self, key: str) -> dict[str, Any]:
        found = (self.document.get("strategies") or {}).get(key)
        return found if found is not None else self.strategies[key].initial_state()


def state_candidate(workspace: Workspace, which: str, label: str | None = None) -> Candidate:
    """``active``, ``staging`` or the path of a state document, served by the configured strategies."""
    if which in ("active", "staging"):
        document = workspace.state.read(which).document
    else:
        path = Path(which)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"state: no file {which!r}", field="state",
                            fix="name 'active', 'staging' or an existing state JSON file") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"state: {which} is not JSON: {exc}", field="state",
                            fix="pass a state document such as state/active.state.json") from None
        workspace.state.validate(document, source=str(path))
        document = workspace.state.migrate(document)
    return Candidate(label or which, document, build_strategies(workspace, workspace.plugins))


def strategy_candidate(workspace: Workspace, name: str, params: dict[str, Any], key: str | None = None) -> Candidate:
    """Strategy ``name`` with ``params`` over the configured options for ``key`` (the only configured key by
    default), starting from the active state's section."""
    entries = {e.key: e for e in workspace.config.tuner.strategies}
    if key is None:
        if len(entries) != 1:
            raise UserError("key: the workspace configures several strategies; say which one to replace",
                            field="key", fix=f"pass --key with one of: {', '.join(entries) or '(none)'}")
        key = next(iter(entries))
    if key not in entries:
        raise NotFoundError(f"key: no strategy {key!r} in ratchet.toml", field="key",
                            fix=f"use one of: {', '.join(entries) or '(none)'}")
    available = registered_strategies(workspace.plugins, workspace)
    if name not in available:
        raise NotFoundError(f"strategy: unknown strategy {name!r}", field="strategy",
                            fix=f"use one of: {', '.join(sorted(available))}")
    cls = available[name][1]
    options = {k: v for k, v in entries[key].options().items() if k in cls.Config.model_fields}
    from pydantic import ValidationError

    from ratchet.core.errors import config_error

    try:
        config = cls.Config.model_validate({**options, **params})
    except ValidationError as exc:
        err = config_error(exc, "--param", cls.Config)
        raise UserError(err.message, field=err.field, fix=err.fix) from None
    strategies = build_strategies(workspace, workspace.plugins)
    strategies[key] = cls(key, config)
    active = workspace.state.read("active").document
    made_by = ((active.get(RESERVED_KEY) or {}).get("strategies") or {}).get(key, entries[key].strategy)
    section = (active.get("strategies") or {}).get(key)
    if section is not None and made_by != name:
        section = strategies[key].adopt(made_by, section)
    document = {**active, "strategies": {**(active.get("strategies") or {}),
                                         key: section if section is not None else strategies[key].initial_state()}}
    label = name + "".join(f" {k}={json.dumps(v)}" for k, v in params.items())
    return Candidate(label, document, strategies)


def versions_since(workspace: Workspace, since: str) -> list[str]:
    """Version names at or after ``since`` (semver order)."""
    start = precedence(since)
    if start is None:
        raise UserError(f"since: {since!r} is not a version", field="since", fix="name a tag such as v0.3.0")
    return [v.name for v in workspace.versions.list() if (p := precedence(v.name)) is not None and p >= start]


def reward_tools(workspace: Workspace, key: str) -> list[str]:
    """The feedback tools whose ``value`` is a call's reward for strategy ``key``: ``reward``, and the
    strategy's own tools that take a numeric ``value`` (CMA-ES's and Optuna's ``score``)."""
    strategy = build_strategies(workspace, workspace.plugins).get(key)
    own = [t.name for t in (strategy.feedback_tools() if strategy else []) if t.batch_of is None
           and ((t.input_schema.get("properties") or {}).get("value") or {}).get("type") == "number"]
    return list(dict.fromkeys(["reward", *own]))


def logged_calls(workspace: Workspace, key: str, *, last: int | None = None,
                 since: str | None = None) -> list[LoggedCall]:
    """The last ``last`` rewards (all by default; see :func:`reward_tools`) of decisions by strategy ``key``,
    served by ``since`` or a later version when given, oldest first."""
    if last is not None and last < 1:
        raise UserError("last: must be at least 1", field="last", fix="pass --last N with N >= 1")
    versions = versions_since(workspace, since) if since else None
    rows = workspace.store.rewarded_decisions(key, limit=last, versions=versions, tools=reward_tools(workspace, key))
    calls = []
    for row in reversed(rows):
        v = row["value"]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        choice = row["choice"]
        calls.append(LoggedCall(choice_key(choice), row["propensity"], float(v), row["features"] or {}, row["version"]))
    return calls


def evaluate_candidate(workspace: Workspace, candidate: Candidate, key: str, calls: list[LoggedCall], *,
                       seed: int = 0, min_samples: int = 2) -> Evaluation:
    """The candidate's estimates for strategy ``key`` over ``calls``."""
    strategy = candidate.strategies.get(key)
    if strategy is None:
        raise NotFoundError(f"key: no strategy {key!r}", field="key",
                            fix=f"use one of: {', '.join(candidate.strategies)}")
    section = candidate.section(key)
    rng = np.random.default_rng(seed)

    def probabilities(features: dict[str, Any]) -> dict[Any, float]:
        found = strategy.choice_probabilities(section, {"features": features}, rng)
        if found is None:
            raise OPEError(f"strategy {strategy.name!r} (key {key!r}) cannot give its choice probabilities, so it "
                           "cannot be evaluated off-policy", field="key",
                           fix="evaluate a strategy that implements choice_probabilities (the bandit family, rules, "
                               "preference, cmaes, optuna)")
        return found

    choices = list(probabilities({}))
    choices += [c for c in dict.fromkeys(call.choice for call in calls) if c not in choices]
    return evaluate(calls, choices, probabilities, min_samples=min_samples)


def evaluable_keys(workspace: Workspace) -> list[str]:
    """The keys evaluated when none is named: the configured bandits (their rewards are the ``reward`` events
    every evaluation reads). Other strategies that give choice probabilities (rules, preference, CMA-ES,
    Optuna) are evaluated when their key is named."""
    strategies = build_strategies(workspace, workspace.plugins)
    return [k for k, s in strategies.items() if s.family == "bandit" and gives_probabilities(s)]


def gives_probabilities(strategy: Strategy, section: dict[str, Any] | None = None) -> bool:
    """Whether ``strategy`` gives its choice probabilities (in ``section``, else its initial state), so
    that it can be evaluated off-policy."""
    section = strategy.initial_state() if section is None else section
    return strategy.choice_probabilities(section, {"features": {}}, np.random.default_rng(0)) is not None
