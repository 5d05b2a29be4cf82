"""Rules mined from labelled outcomes (family ``rules``).

Feedback ``label(conversation_id, outcome)`` joins the conversation's latest decision of this strategy
and the features the runner logged for that call; the configured ``features`` of it become one
example. Every ``refit_every`` examples a shallow scikit-learn decision tree is fitted on the window's
*untreated* examples (those where no rule's action was applied) and its leaves become readable
if-then rules::

    if has_order_number = true and question_length <= 8 then escalated

A rule's ``support`` is the number of untreated window examples matching its conditions and its
``confidence`` the share of them with its outcome. A leaf becomes a rule only if its majority
outcome has an action; it becomes *active* with support >= ``min_support`` and confidence >=
``min_confidence`` (and not mostly covered by an active rule). An active rule is *retired* (moved to
``retired`` with the reason) when its confidence on its last ``recent`` matching untreated examples
falls below ``retire_below``.

Actions: ``actions = {outcome = {param = value, ...}}``. A rule predicting ``outcome`` makes the runner
merge that dict into params, e.g. ``actions = {escalated = {style = "formal"}}``: where the rules
predict an escalation, answer formally. ``param`` must stay unset (the choice is a dict).

Why untreated examples and a holdout: once a rule's action works, treated calls in its region stop
showing the outcome, and mining them would retire the rule for succeeding (then re-mine it, and so on).
So a matching call keeps the default with probability ``holdout`` (``info["holdout"]``); these calls
keep measuring whether the rule still holds. ``holdout = 0`` never retires a rule from new evidence.

Stickiness: decisions are not sticky. Each call's features differ (each question in a conversation
has its own), so rules are re-evaluated per call; a label joins the conversation's latest call.
Rule inputs must be known before deciding (``ratchet_extract_features``); a feature missing from
``context["features"]`` never matches. Features must be booleans or numbers.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from ratchet import (Decision, FeedbackEvent, FeedbackTool, Rule, RulesTable, Strategy, StrategyConfig, choice_key,
                     hookimpl)

_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_INT = {"type": "integer", "minimum": 0}
_RATE = {"type": "number", "minimum": 0, "maximum": 1}
MAX_RETIRED = 50  # retired rules kept as history


def _unique(v: list[str], what: str) -> list[str]:
    dup = sorted({a for a in v if v.count(a) > 1})
    if dup:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(dup)}")
    return v


class RulesConfig(StrategyConfig):
    """Options of ``rules``: rules mined from labelled outcomes, each with its support and confidence."""

    features: list[str] = Field(min_length=1, description="logged features the rules may test (bool or number)")
    outcomes: list[str] = Field(default=["resolved", "escalated"], min_length=2, description="label values")
    actions: dict[str, dict[str, Any]] = Field(
        min_length=1, description="{outcome: {param: value}}: params merged in where a rule predicts outcome")
    min_support: int = Field(default=20, ge=1, description="matching examples a rule needs to become active")
    min_confidence: float = Field(default=0.8, gt=0, le=1, description="share with the outcome to become active")
    retire_below: float = Field(default=0.6, ge=0, le=1, description="recent confidence that retires an active rule")
    recent: int = Field(default=30, ge=1, description="last matching untreated examples judged for retirement")
    max_depth: int = Field(default=2, ge=1, le=3, description="depth of the tree (conditions per rule)")
    refit_every: int = Field(default=20, ge=1, description="refit after this many labelled examples")
    window: int = Field(default=1000, ge=10, description="labelled examples kept")
    holdout: float = Field(default=0.1, ge=0, lt=1, description="share of matching calls left untreated")

    @field_validator("features")
    @classmethod
    def _features_unique(cls, v: list[str]) -> list[str]:
        return _unique(v, "features")

    @field_validator("outcomes")
    @classmethod
    def _outcomes_unique(cls, v: list[str]) -> list[str]:
        return _unique(v, "outcomes")

    @field_validator("actions")
    @classmethod
    def _actions_known(cls, v: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        outcomes = info.data.get("outcomes") or []
        for outcome, params in v.items():
            if outcome not in outcomes:
                raise ValueError(f"action for unknown outcome {outcome!r}; outcomes are: {', '.join(outcomes)}")
            if not params:
                raise ValueError(f"the action for {outcome!r} sets no params")
        return v

    @field_validator("retire_below")
    @classmethod
    def _below_activation(cls, v: float, info: ValidationInfo) -> float:
        if v > info.data.get("min_confidence", 1.0):
            raise ValueError("retire_below must not exceed min_confidence")
        return v

    @field_validator("param")
    @classmethod
    def _no_param(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError("rules set params through `actions`; leave param unset")
        return v


def _value(v: Any) -> float | None:
    """A usable feature value as a float (booleans as 0/1), or None."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(v):
        return float(v)
    return None


def matches(conditions: list[dict[str, Any]], features: dict[str, Any]) -> bool:
    for c in conditions:
        x = _value(features.get(c["feature"]))
        if x is None:
            return False
        if c["op"] == "=":
            if (x > 0.5) != c["value"]:
                return False
        elif not (x <= c["value"] if c["op"] == "<=" else x > c["value"]):
            return False
    return True


def rule_text(conditions: list[dict[str, Any]], outcome: str) -> str:
    parts = [f"{c['feature']} {c['op']} {str(c['value']).lower() if isinstance(c['value'], bool) else c['value']}"
             for c in conditions]
    return f"if {' and '.join(parts) or 'true'} then {outcome}"


class Rules(Strategy):
    """If-then rules from a shallow decision tree over labelled examples; the first matching rule acts."""

    name: ClassVar[str] = "rules"
    family: ClassVar[str] = "rules"
    Config: ClassVar[type[StrategyConfig]] = RulesConfig

    # --- section ---

    def initial_state(self) -> dict[str, Any]:
        c = self.config
        return {"policy": self.name, "features": list(c.features), "outcomes": list(c.outcomes), "t": 0,
                "skipped": 0, "since_fit": 0, "fits": 0, "examples": [], "active": [], "retired": [],
                "last_fit": []}

    def state_schema(self) -> dict[str, Any]:
        c = self.config
        # retired rules may name features or outcomes of an earlier config: plain strings
        cond = {"type": "object", "additionalProperties": False, "required": ["feature", "op", "value"],
                "properties": {"feature": {"type": "string"}, "op": {"enum": ["=", "<=", ">"]},
                               "value": {"type": ["boolean", "number"]}}}
        rule = {"type": "object", "required": ["id", "text", "conditions", "outcome", "support", "confidence"],
                "properties": {"id": {"type": "string"}, "text": {"type": "string"},
                               "conditions": {"type": "array", "items": cond, "maxItems": 2 * c.max_depth},
                               "outcome": {"type": "string"}, "support": _INT, "confidence": _RATE,
                               "recent_confidence": {"anyOf": [_RATE, {"type": "null"}]},
                               "since": _INT, "status": {"type": "string"}, "reason": {"type": "string"},
                               "retired_at": _INT}}
        example = {"type": "object", "additionalProperties": False, "required": ["x", "y", "treated", "rule"],
                   "properties": {"x": {"type": "array", "items": {"type": ["boolean", "number"]},
                                        "minItems": len(c.features), "maxItems": len(c.features)},
                                  "y": {"enum": list(c.outcomes)}, "treated": {"type": "boolean"},
                                  "rule": {"type": ["string", "null"]}}}
        props = {
            "policy": {"const": self.name},
            "features": {"const": list(c.features)},
            "outcomes": {"const": list(c.outcomes)},
            "t": {**_INT, "description": "labelled examples applied"},
            "skipped": {**_INT, "description": "labels without a decision, a known outcome or usable features"},
            "since_fit": _INT,
            "fits": _INT,
            "examples": {"type": "array", "items": example, "maxItems": c.window},
            "active": {"type": "array", "items": rule, "description": "in evaluation order"},
            "retired": {"type": "array", "items": rule, "maxItems": MAX_RETIRED},
            "last_fit": {"type": "array", "items": rule, "description": "every rule of the last fit, with status"},
        }
        return {"$schema": _SCHEMA, "title": f"{self.name} section", "type": "object", "properties": props,
                "required": list(props), "additionalProperties": False}

    def _copy(self, section: dict[str, Any]) -> dict[str, Any]:
        """A copy to mutate (examples are never mutated in place, so their list is shallow-copied); the
        section re-keyed if the configured features or outcomes changed."""
        c = self.config
        s = {**section, "examples": section["examples"][:], "active": [dict(r) for r in section["active"]],
             "retired": section["retired"][:]}
        if s["features"] == c.features and s["outcomes"] == c.outcomes and len(s["examples"]) <= c.window:
            return s
        fresh = {**self.initial_state(), **{k: s[k] for k in ("t", "skipped", "fits", "retired")}}
        keep = s["features"] == c.features
        if keep:
            fresh["examples"] = [e for e in s["examples"] if e["y"] in c.outcomes][-c.window:]
        for r in s["active"]:
            if keep and r["outcome"] in c.outcomes:
                fresh["active"].append(r)
            else:
                self._retire(fresh, r, "the configured features or outcomes changed")
        return fresh

    def _retire(self, s: dict[str, Any], rule: dict[str, Any], reason: str) -> None:
        s["retired"] = (s["retired"] + [{**rule, "reason": reason, "retired_at": s["t"]}])[-MAX_RETIRED:]

    # --- feedback ---

    def feedback_tools(self) -> list[FeedbackTool]:
        item = {"type": "object", "additionalProperties": False, "required": ["conversation_id", "outcome"],
                "properties": {
                    "conversation_id": {"type": "string", "minLength": 1, "description": "the labelled conversation"},
                    "outcome": {"enum": list(self.config.outcomes), "description": "what happened"},
                    "event_id": {"type": "string", "description": "idempotency key; repeats are ignored"}}}
        batch = {"type": "object", "additionalProperties": False, "required": ["events"],
                 "properties": {"events": {"type": "array", "items": item, "maxItems": 10000,
                                           "description": "the events, each as the one-event tool takes it"}}}
        return [
            FeedbackTool(name="label", description="Report the outcome of a served conversation; its logged "
                         "features become a training example for rule mining.", input_schema=item),
            FeedbackTool(name="label_batch", description="Report many labels at once (at most 10000).",
                         input_schema=batch, batch_of="label"),
        ]

    def apply(self, section: dict[str, Any], events: list[FeedbackEvent]) -> dict[str, Any]:
        c = self.config
        s = self._copy(section)
        for ev in events:
            d, y = ev.decision, ev.payload.get("outcome")
            x = [ev.features.get(f) for f in c.features]
            if d is None or y not in c.outcomes or any(_value(v) is None for v in x):
                s["skipped"] += 1
                continue
            info = d.info if isinstance(d.info, dict) else {}
            s["examples"].append({"x": x, "y": y, "treated": isinstance(d.choice, dict) and bool(d.choice),
                                  "rule": info.get("rule") if isinstance(info.get("rule"), str) else None})
            if len(s["examples"]) > c.window:
                del s["examples"][0]
            s["t"] += 1
            s["since_fit"] += 1
            if s["since_fit"] >= c.refit_every:  # at fixed counts: batching does not change the result
                self._refit(s)
                s["since_fit"] = 0
        return s

    # --- mining ---

    def _stats(self, rule: dict[str, Any], data: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
        """support, confidence and recent_confidence of ``rule`` on (features, outcome) pairs, oldest first."""
        hits = [y == rule["outcome"] for f, y in data if matches(rule["conditions"], f)]
        last = hits[-self.config.recent:]
        return {"support": len(hits), "confidence": sum(hits) / len(hits) if hits else 0.0,
                "recent_confidence": sum(last) / len(last) if len(last) == self.config.recent else None}

    def _refit(self, s: dict[str, Any]) -> None:
        c = self.config
        s["fits"] += 1
        untreated = [e for e in s["examples"] if not e["treated"]]
        data = [(dict(zip(c.features, e["x"])), e["y"]) for e in untreated]
        kept = []
        for r in s["active"]:
            r.update(self._stats(r, data))
            if r["recent_confidence"] is not None and r["recent_confidence"] < c.retire_below:
                self._retire(s, r, f"confidence {r['recent_confidence']:.2f} < retire_below {c.retire_below} "
                                   f"on the last {c.recent} matching untreated examples")
            else:
                kept.append(r)
        s["active"], s["last_fit"] = kept, []
        if len(untreated) >= c.min_support:
            for r in self._mine(untreated, data):
                s["last_fit"].append(self._admit(s, r, data))
        s["active"].sort(key=lambda r: (-r["confidence"], -r["support"], r["id"]))

    def _admit(self, s: dict[str, Any], rule: dict[str, Any], data: list[tuple[dict[str, Any], str]]) -> dict:
        """Activate a mined rule if it qualifies; returns it with its status."""
        c = self.config
        active = {r["id"]: r for r in s["active"]}
        if rule["id"] in active:
            return {**rule, "status": "active"}
        if rule["support"] < c.min_support:
            return {**rule, "status": f"support {rule['support']} < min_support {c.min_support}"}
        if rule["confidence"] < c.min_confidence:
            return {**rule, "status": f"confidence {rule['confidence']:.2f} < min_confidence {c.min_confidence}"}
        if rule["recent_confidence"] is not None and rule["recent_confidence"] < c.retire_below:
            return {**rule, "status": f"recent confidence {rule['recent_confidence']:.2f} < retire_below"}
        mine = [f for f, _ in data if matches(rule["conditions"], f)]
        for other in s["active"]:  # tree boundaries move between fits: don't stack near-copies
            if sum(matches(other["conditions"], f) for f in mine) * 2 >= len(mine):
                return {**rule, "status": f"covered by {other['id']}"}
        s["active"].append({**rule, "since": s["t"]})
        return {**rule, "status": "activated"}

    def _mine(self, untreated: list[dict[str, Any]], data: list[tuple[dict[str, Any], str]]) -> list[dict]:
        from sklearn.tree import DecisionTreeClassifier

        c = self.config
        X = np.array([[_value(v) for v in e["x"]] for e in untreated])
        y = np.array([c.outcomes.index(e["y"]) for e in untreated])
        kinds = ["bool" if all(isinstance(e["x"][k], bool) for e in untreated) else
                 "int" if all(isinstance(e["x"][k], int) for e in untreated) else "float"
                 for k in range(len(c.features))]
        # leaves may be smaller than min_support so that small regions show up (and are refused, visibly)
        tree = DecisionTreeClassifier(max_depth=c.max_depth, min_samples_leaf=max(1, c.min_support // 4),
                                      random_state=0).fit(X, y)
        t = tree.tree_
        left, right = t.children_left, t.children_right

        def majority(node: int) -> int | None:
            """The class every leaf under ``node`` predicts, or None if they disagree (so the split matters)."""
            if left[node] < 0:
                return int(tree.classes_[int(np.argmax(t.value[node][0]))])
            a, b = majority(left[node]), majority(right[node])
            return a if a is not None and a == b else None

        rules = []

        def walk(node: int, path: list[tuple[int, str, float]]) -> None:
            cls = majority(node)
            if cls is None:
                walk(left[node], path + [(t.feature[node], "<=", t.threshold[node])])
                walk(right[node], path + [(t.feature[node], ">", t.threshold[node])])
            elif c.outcomes[cls] in c.actions:
                conditions = self._conditions(path, kinds)
                text = rule_text(conditions, c.outcomes[cls])
                rule = {"id": "r-" + hashlib.sha1(text.encode()).hexdigest()[:8], "text": text,
                        "conditions": conditions, "outcome": c.outcomes[cls]}
                rules.append({**rule, **self._stats(rule, data)})

        walk(0, [])
        return rules

    def _conditions(self, path: list[tuple[int, str, float]], kinds: list[str]) -> list[dict[str, Any]]:
        """Readable conditions, one bound per feature and side (a path may split a feature twice)."""
        lo: dict[int, float] = {}
        hi: dict[int, float] = {}
        for k, op, thr in path:
            if op == "<=":
                hi[k] = min(hi.get(k, math.inf), thr)
            else:
                lo[k] = max(lo.get(k, -math.inf), thr)
        out = []
        for k, f in enumerate(self.config.features):
            kind = kinds[k]
            if kind == "bool" and (k in lo or k in hi):
                out.append({"feature": f, "op": "=", "value": k in lo})
                continue
            # thresholds are midpoints: for integers x <= 8.5 is x <= 8 and x > 8.5 is x > 8
            fmt = (lambda v: int(math.floor(v))) if kind == "int" else (lambda v: round(float(v), 6))
            if k in lo:
                out.append({"feature": f, "op": ">", "value": fmt(lo[k])})
            if k in hi:
                out.append({"feature": f, "op": "<=", "value": fmt(hi[k])})
        return out

    # --- decisions ---

    def decide(self, section: dict[str, Any], context: dict[str, Any], rng: np.random.Generator) -> Decision:
        features = context.get("features") or {}
        for r in section.get("active", []):
            action = self.config.actions.get(r["outcome"])
            if action is None or not matches(r["conditions"], features):
                continue
            h = self.config.holdout
            if h > 0 and rng.random() < h:  # keep measuring whether the rule still holds
                return Decision(strategy=self.key, choice={}, propensity=h, sticky=False,
                                info={"rule": r["id"], "holdout": True})
            return Decision(strategy=self.key, choice=dict(action), propensity=1 - h, sticky=False,
                            info={"rule": r["id"]})
        return Decision(strategy=self.key, choice={}, propensity=1.0, sticky=False, info={})

    def choice_probabilities(self, section: dict[str, Any], context: dict[str, Any],
                             rng: np.random.Generator) -> dict[str, float]:
        """Exact: the first matching active rule's action with probability 1 - holdout, no change ({})
        with holdout; no change with probability 1 where no rule matches (deterministic there)."""
        features = context.get("features") or {}
        for r in section.get("active", []):
            action = self.config.actions.get(r["outcome"])
            if action is None or not matches(r["conditions"], features):
                continue
            out: dict[str, float] = {}
            for choice, p in ((dict(action), 1.0 - self.config.holdout), ({}, self.config.holdout)):
                if p > 0:
                    out[choice_key(choice)] = out.get(choice_key(choice), 0.0) + p
            return out
        return {choice_key({}): 1.0}

    # --- reporting ---

    def served(self, section: dict[str, Any]) -> Any:
        """No change: with exploration off the runner asks without a call's features, so no rule can match."""
        return {}

    def belief(self, section: dict[str, Any]) -> list[RulesTable]:
        """The active rules, then the last fit's other candidates (with why they are not active)."""
        active = [Rule(text=r["text"], support=r["support"], confidence=r["confidence"], status="active")
                  for r in section["active"]]
        ids = {r["id"] for r in section["active"]}
        others = [Rule(text=r["text"], support=r["support"], confidence=r["confidence"], status=r["status"])
                  for r in section["last_fit"] if r["id"] not in ids]
        return [RulesTable(title=f"rules mined from {len(section['examples'])} labelled examples "
                                 f"(min support {self.config.min_support}, min confidence {self.config.min_confidence})",
                           rules=active + others)]

    def kpis(self, section: dict[str, Any]) -> dict[str, Any]:
        ex = section["examples"]

        def rate(rule: dict[str, Any], treated: bool) -> dict[str, Any]:
            ys = [e["y"] == rule["outcome"] for e in ex if e["rule"] == rule["id"] and e["treated"] is treated]
            return {"n": len(ys), "outcome_rate": sum(ys) / len(ys) if ys else None}

        return {
            "examples": len(ex),
            "labelled": section["t"],
            "skipped": section["skipped"],
            "fits": section["fits"],
            "outcome_rates": {o: sum(e["y"] == o for e in ex) / len(ex) if ex else None
                              for o in section["outcomes"]},
            "active": [{"id": r["id"], "text": r["text"], "support": r["support"], "confidence": r["confidence"],
                        "recent_confidence": r.get("recent_confidence"),
                        "action": self.config.actions.get(r["outcome"]),
                        "treated": rate(r, True), "holdout": rate(r, False)} for r in section["active"]],
            "retired": len(section["retired"]),
            "last_retired": ({"text": section["retired"][-1]["text"], "reason": section["retired"][-1]["reason"]}
                             if section["retired"] else None),
            "candidates": [{"text": r["text"], "support": r["support"], "confidence": r["confidence"],
                            "status": r["status"]} for r in section["last_fit"]],
        }


@hookimpl
def ratchet_register_strategies(register):
    register(Rules)
