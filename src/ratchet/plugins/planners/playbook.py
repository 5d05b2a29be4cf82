"""The default planner: deterministic and offline, driven by a playbook in the workspace.

``architect/playbook.yaml`` (``[architect] playbook``) is a list of rules; the first rule whose ``when``
matches the request gives the plan::

    rules:
      - name: answers-too-long
        when:
          text: ['too long', 'verbose', 'wordy']     # regexes, case-insensitive; any one matches
          kpi: [reward_rate]                         # or: the Triggerer's report breaches one of these
          absent: []                                 # and none of these paths exists (done once)
          config:                                    # and these ratchet.toml values are (not) among these
            tuner.strategies[key=style].strategy: {not_in: [glr_thompson]}
        summary: Answers are too long, so cap them at ${max} sentences
        vars: {max: 2}                               # optional constants for the templates
        actions:
          - set_state: {pointer: /params/max_sentences, value: 2}

Actions are the Architect's (``architect/plans.py``), written as one-key mappings. Strings in ``summary`` and
``actions`` may use ``${name}``: the named groups of the regex that matched, ``vars``, ``text`` (the
request), ``slug`` (a short id made from the first named group, or the text) and ``job``. A string
that is exactly ``${name}`` is replaced by the value itself (a number stays a number).
"""

from __future__ import annotations

import hashlib
import re
import string
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ratchet import (ACTION_KINDS, ConfigError, JobSession, NotFoundError, Plan, PlanRequest, UserError, config_error,
                     config_key, config_value, parse_action)


class ConfigCondition(BaseModel):
    """A condition on one ratchet.toml value: it is one of ``in``, or none of ``not_in``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    in_: list[Any] | None = Field(default=None, alias="in", description="the value is one of these")
    not_in: list[Any] | None = Field(default=None, description="the value is none of these")

    @model_validator(mode="after")
    def _one_of(self) -> ConfigCondition:
        if (self.in_ is None) == (self.not_in is None):
            raise ValueError("give exactly one of `in` or `not_in`, a list of values")
        return self

    def holds(self, value: Any) -> bool:
        return value in self.in_ if self.in_ is not None else value not in self.not_in


class When(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: list[str] = Field(default_factory=list, description="regexes matched against the feedback text")
    kpi: list[str] = Field(default_factory=list, description="KPIs whose breach in a wake-up matches")
    absent: list[str] = Field(default_factory=list, description="the rule applies only while none of these "
                              "workspace paths exists (e.g. the plugin it renders: done once)")
    config: dict[str, ConfigCondition] = Field(default_factory=dict, description="the rule applies only while "
                                               "every named ratchet.toml value meets its condition")

    @field_validator("config")
    @classmethod
    def _keys_well_formed(cls, v: dict[str, ConfigCondition]) -> dict[str, ConfigCondition]:
        for dotted in v:
            try:
                config_key(dotted)
            except UserError:
                raise ValueError(f"key {dotted!r} is malformed: write keys like tuner.promotion.every_events "
                                 "or tuner.strategies[key=style].strategy") from None
        return v

    @field_validator("text", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("text")
    @classmethod
    def _compiles(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"regex {pattern!r} does not compile: {exc}") from None
        return v


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    when: When
    summary: str
    rationale: str = ""
    vars: dict[str, Any] = Field(default_factory=dict)
    actions: list[dict[str, Any]] = Field(min_length=1)

    @field_validator("actions")
    @classmethod
    def _one_key_each(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, action in enumerate(v):
            if len(action) != 1 or next(iter(action)) not in ACTION_KINDS:
                raise ValueError(f"action #{i + 1} must be one key, one of {', '.join(ACTION_KINDS)}")
        return v


class Playbook(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule]


def load_playbook(workspace) -> Playbook:
    rel = workspace.config.architect.playbook
    path = workspace.root / rel
    if not path.is_file():
        raise NotFoundError(f"the architect playbook {rel} does not exist", field="architect.playbook",
                            fix=f"write {rel} (see the default workspace's), or set [architect] planner")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{rel} is not valid YAML: {exc}", field=rel, fix="fix the YAML syntax") from None
    try:
        return Playbook.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, rel, Playbook, assign=": ") from None


def _slug(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())[:6]
    digest = hashlib.sha1(text.encode()).hexdigest()[:6]
    return "-".join(words + [digest])


def _fill(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = re.fullmatch(r"\$\{(\w+)\}", value)
        if whole and whole.group(1) in variables:
            return variables[whole.group(1)]
        return string.Template(value).safe_substitute({k: str(v) for k, v in variables.items()})
    if isinstance(value, list):
        return [_fill(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, variables) for k, v in value.items()}
    return value


class PlaybookPlanner:
    """Match the request against the workspace's playbook rules; the first match gives the plan."""

    name = "playbook"

    def match(self, playbook: Playbook, request: PlanRequest, root=None,
              config: dict[str, Any] | None = None) -> tuple[Rule, dict[str, Any]] | None:
        text = request.text or ""
        breached = set(request.breached())
        for rule in playbook.rules:
            if root is not None and any((root / p).exists() for p in rule.when.absent):
                continue  # already done
            if config is not None and not all(c.holds(config_value(config, k)) for k, c in rule.when.config.items()):
                continue  # the workspace is not set up the way the rule is for
            for pattern in rule.when.text:
                m = re.search(pattern, text, re.IGNORECASE | re.DOTALL)
                if m and text:
                    groups = {k: v.strip() for k, v in m.groupdict().items() if v is not None}
                    return rule, groups
            if breached & set(rule.when.kpi):
                return rule, {"kpi": ", ".join(sorted(breached & set(rule.when.kpi)))}
        return None

    def plan(self, request: PlanRequest, session: JobSession) -> Plan:
        playbook = load_playbook(session.workspace)
        workspace = session.workspace
        found = self.match(playbook, request, workspace.root, workspace.config.model_dump(mode="json"))
        if found is None:
            what = f"the text {request.text!r}" if request.text else f"the breaches {request.breached()}"
            return Plan(summary=f"no playbook rule matches {what}", actions=[])
        rule, groups = found
        text = request.text or ""
        first = next(iter(groups.values()), None) if groups else None
        variables = {"text": text, "slug": _slug(first or text or rule.name),
                     "job": getattr(getattr(session, "job", None), "id", ""), **rule.vars, **groups}
        actions = []
        for item in rule.actions:
            kind, fields = next(iter(item.items()))
            actions.append(parse_action({"kind": kind, **_fill(fields or {}, variables)}))
        return Plan(summary=_fill(rule.summary, variables), rationale=_fill(rule.rationale, variables),
                    actions=actions, rule=rule.name)
