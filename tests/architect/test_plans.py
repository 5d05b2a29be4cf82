"""Plan actions applied to a workspace, state diffs, bumps, and the playbook planner."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from helpers import tree_snapshot, use_style_strategy
from ratchet.architect.planners import PlanRequest
from ratchet.architect.plans import (
    AddTest,
    EditConfig,
    ReplaceText,
    SetState,
    WriteFile,
    apply_action,
    bump_for,
    parse_action,
)
from ratchet.core.documents import REMOVED, apply_changes, state_changes
from ratchet.core.errors import ConfigError, StateValidationError, UserError
from ratchet.plugins.planners.playbook import PlaybookPlanner


class _Session:
    def __init__(self, ws):
        self.workspace = ws


def test_set_state_writes_valid_state(ws):
    files = apply_action(ws, SetState(pointer="/params/max_sentences", value=2))
    assert files == ["state/active.state.json"]
    assert json.loads((ws.root / "state/active.state.json").read_text())["params"]["max_sentences"] == 2


def test_set_state_invalid_value_names_field_and_changes_nothing(ws):
    before = tree_snapshot(ws.root)
    with pytest.raises(StateValidationError) as err:
        apply_action(ws, SetState(pointer="/params/top_k", value=0))
    assert "top_k" in str(err.value.field)
    with pytest.raises(UserError, match="no object at /nope"):
        apply_action(ws, SetState(pointer="/nope/deeper", value=1))
    assert tree_snapshot(ws.root) == before


def test_write_and_replace_stay_inside_the_workspace(ws):
    assert apply_action(ws, WriteFile(path="notes/a.txt", content="one two")) == ["notes/a.txt"]
    apply_action(ws, ReplaceText(path="notes/a.txt", old="two", new="three"))
    assert (ws.root / "notes/a.txt").read_text() == "one three"
    for bad in ("../escape.txt", "/etc/passwd", ".git/config", ".ratchet/x", "a/./b", "a\x00b"):
        with pytest.raises(ValidationError, match="path"):
            WriteFile(path=bad, content="x")  # the model refuses it, as the API's schema does
        with pytest.raises(UserError) as err:  # and so does applying an action built without validation
            apply_action(ws, WriteFile.model_construct(path=bad, content="x"))
        assert err.value.field == "path"
    with pytest.raises(UserError, match="occurs 0 times") as err:
        apply_action(ws, ReplaceText(path="notes/a.txt", old="absent", new="x"))
    assert err.value.field == "old"


def test_edit_config_sets_appends_keeps_comments_and_validates(ws):
    before = (ws.root / "ratchet.toml").read_text()
    apply_action(ws, EditConfig(set={"tuner.strategies[key=style].strategy": "ucb1", "tuner.promotion.every_events": 7},
                                append={"workspace.plugins": "plugins/extra.py"}))
    text = (ws.root / "ratchet.toml").read_text()
    assert 'strategy = "ucb1"' in text and "every_events = 7" in text and "plugins/extra.py" in text
    assert "# workspace plugin modules" in text  # comments survive
    (ws.root / "ratchet.toml").write_text(before)
    with pytest.raises(ConfigError) as err:
        apply_action(ws, EditConfig(set={"tuner.promotion.every_event": 7}))
    assert err.value.field == "tuner.promotion.every_event" and "every_events" in err.value.fix
    with pytest.raises(UserError, match="0 tables"):
        apply_action(ws, EditConfig(set={"tuner.strategies[key=nope].strategy": "ucb1"}))
    assert (ws.root / "ratchet.toml").read_text() == before


def test_add_test_appends_a_valid_case_and_refuses_duplicates(ws):
    case = {"id": "new-case", "tool": "answer", "args": {"question": "q", "conversation_id": "c"},
            "expect": {"path": "entry_id", "equals": "refund-window"}}
    assert apply_action(ws, AddTest(tier="fast", case=case)) == ["tests/fast/architect.yaml"]
    assert yaml.safe_load((ws.root / "tests/fast/architect.yaml").read_text()) == [case]
    with pytest.raises(UserError, match="already has a case"):
        apply_action(ws, AddTest(tier="fast", case=case))
    with pytest.raises(UserError) as err:
        apply_action(ws, AddTest(tier="fast", case={**case, "id": "other", "expect": {"equals": 1, "contains": 2}}))
    assert "expect" in (err.value.field or "") or "exactly one" in str(err.value)


def test_parse_action_names_the_bad_field():
    with pytest.raises(UserError) as err:
        parse_action({"kind": "set_state", "pointer": "params"})
    assert err.value.field == "action.set_state.pointer"
    with pytest.raises(UserError):
        parse_action({"kind": "launch_rockets"})


def test_state_changes_round_trip_onto_another_document():
    base = {"params": {"a": 1, "b": 2}, "strategies": {"s": {"n": 1}}, "gone": 1}
    mine = {"params": {"a": 1, "b": 3, "c/d": 4}, "strategies": {"s": {"n": 1}}}
    changes = state_changes(base, mine)
    assert changes == [("/gone", REMOVED), ("/params/b", 3), ("/params/c~1d", 4)]
    theirs = {"params": {"a": 1, "b": 2}, "strategies": {"s": {"n": 9}}, "gone": 1}  # someone else's change
    assert apply_changes(theirs, changes) == {"params": {"a": 1, "b": 3, "c/d": 4}, "strategies": {"s": {"n": 9}}}


def test_bump_follows_from_the_change():
    assert bump_for(["state/active.state.json"], breaking=False) == "patch"
    assert bump_for(["state/active.state.json", "tests/fast/architect.yaml"], breaking=False) == "minor"
    assert bump_for(["plugins/x.py"], breaking=True) == "major"


# --- the playbook planner ---------------------------------------------------------------------------


def _plan(ws, **request):
    return PlaybookPlanner().plan(PlanRequest(source="feedback", **request), _Session(ws))


def test_playbook_length_and_tone_complaints_are_state_changes(ws):
    plan = _plan(ws, text="Your answers are WAY too long, nobody reads them")
    assert plan.rule == "answers-too-long"
    assert [a.model_dump() for a in plan.actions] == [
        {"kind": "set_state", "pointer": "/params/max_sentences", "value": 2}]  # ${max} stays a number
    plan = _plan(ws, text="The replies feel too casual for a bank")
    assert plan.rule == "tone-too-casual" and plan.actions[0].value == "formal"


def test_playbook_add_a_test_builds_the_case_from_the_text(ws):
    plan = _plan(ws, text='Please add a test: "How long do refunds take?" should be answered by refund-timing')
    (action,) = plan.actions
    assert action.kind == "add_test" and action.tier == "fast"
    assert action.case["args"]["question"] == "How long do refunds take?"
    assert action.case["expect"] == {"path": "entry_id", "equals": "refund-timing"}
    assert action.case["id"].startswith("architect-how-long-do-refunds-take")


def test_playbook_wake_up_with_falling_rewards_renders_the_drift_bandit(ws_path):
    ws = use_style_strategy(ws_path, "thompson")  # a stationary bandit
    report = {"breaches": [{"kpi": "reward_rate", "value": 0.3, "slo": 0.5}], "kpis": {}}
    plan = PlaybookPlanner().plan(PlanRequest(source="wake", report=report), _Session(ws))
    assert plan.rule == "drifting-preferences"
    assert [a.kind for a in plan.actions] == ["render_template", "edit_config"]
    assert plan.actions[0].template == "drift-bandit"


@pytest.mark.parametrize("strategy", ["glr_thompson", "discounted_thompson", "sw_ucb"])
def test_playbook_drift_rule_leaves_a_drift_aware_bandit_alone(ws_path, strategy):
    """A bandit that already follows drifting preferences is not replaced by the discounted-Thompson
    plugin: neither a falling reward rate nor a complaint about drift matches the rule."""
    ws = use_style_strategy(ws_path, strategy)
    assert ws.config.tuner.strategies[0].strategy == strategy
    report = {"breaches": [{"kpi": "reward_rate", "value": 0.3, "slo": 0.5}], "kpis": {}}
    plan = PlaybookPlanner().plan(PlanRequest(source="wake", report=report), _Session(ws))
    assert plan.rule != "drifting-preferences" and plan.actions == [], plan
    plan = _plan(ws, text="Our users' preferences have drifted")
    assert plan.rule != "drifting-preferences" and plan.actions == [], plan


def _rule_when(ws, when: str) -> None:
    (ws.root / "architect/playbook.yaml").write_text(
        f"rules:\n  - name: r\n    when: {when}\n    summary: s\n"
        "    actions: [{set_state: {pointer: /params/tone, value: formal}}]\n")


def test_playbook_config_condition_reads_ratchet_toml(ws):
    """`when.config` holds while every named ratchet.toml value is (`in`) or is not (`not_in`) one of
    those listed; a key the configuration does not have counts as null."""
    style = "tuner.strategies[key=style].strategy"
    current = ws.config.tuner.strategies[0].strategy
    _rule_when(ws, f"{{text: [x], config: {{'{style}': {{in: [{current}]}}, tuner.promotion.every_events: "
                   "{not_in: [0]}}}")
    assert _plan(ws, text="x").rule == "r"
    _rule_when(ws, f"{{text: [x], config: {{'{style}': {{not_in: [{current}, other]}}}}}}")
    assert _plan(ws, text="x").actions == []
    _rule_when(ws, "{text: [x], config: {'tuner.strategies[key=nothing].strategy': {not_in: [a]}, no.such.key: "
                   "{in: [null]}}}")
    assert _plan(ws, text="x").rule == "r"


@pytest.mark.parametrize(("when", "field", "fix"), [
    ("{text: [x], config: {a.b: {}}}", "rules.0.when.config.a.b", "in"),
    ("{text: [x], config: {a.b: {in: [1], not_in: [2]}}}", "rules.0.when.config.a.b", "in"),
    ("{text: [x], config: {'a..b': {in: [1]}}}", "rules.0.when.config", "tuner.strategies[key=style].strategy"),
])
def test_playbook_config_condition_errors_name_the_key(ws, when, field, fix):
    _rule_when(ws, when)
    with pytest.raises(ConfigError) as err:
        _plan(ws, text="x")
    assert err.value.field.startswith(field) and fix in (err.value.fix or "") + str(err.value), err.value


@pytest.mark.parametrize("text", ["Could you answer with bullet points?", "I'd rather get the steps as a list",
                                  "a bulleted answer would be easier to read"])
def test_playbook_asks_for_a_new_style_render_the_reply_style_template(ws, text):
    plan = _plan(ws, text=text)
    assert plan.rule == "new-reply-style"
    assert [a.kind for a in plan.actions] == ["render_template", "edit_config", "replace_text", "replace_text",
                                              "add_test"]
    assert plan.actions[4].tier == "full" and plan.actions[4].case["ope"]["margin"] == 0.05  # the off-policy gate
    assert plan.actions[0].template == "reply-style" and plan.actions[0].data["style"] == "bullets"
    assert plan.actions[1].append == {"tuner.strategies[key=style].arms": "bullets"}


def test_playbook_rule_with_absent_paths_applies_once(ws_path):
    ws = use_style_strategy(ws_path, "thompson")  # a stationary bandit: the drift rule would apply
    (ws.root / "plugins/drift_style.py").write_text("# already rendered\n")
    plan = _plan(ws, text="preferences have drifted")
    assert plan.actions == [] and "no playbook rule matches" in plan.summary


def test_playbook_no_match_gives_an_empty_plan(ws):
    plan = _plan(ws, text="lovely weather today")
    assert plan.actions == [] and "no playbook rule matches" in plan.summary


def test_playbook_invalid_file_names_the_key(ws):
    (ws.root / "architect/playbook.yaml").write_text("rules:\n  - name: x\n    when: {txt: [a]}\n    summary: s\n"
                                                     "    actions: [{set_state: {pointer: /a, value: 1}}]\n")
    with pytest.raises(ConfigError) as err:
        _plan(ws, text="anything")
    assert err.value.field == "rules.0.when.txt" and "text" in err.value.fix
