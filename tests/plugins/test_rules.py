"""The rules strategy: contract, mining, activation, retirement, tools, and end to end on fixed seeds."""

from __future__ import annotations

import copy
import json

import jsonschema
import numpy as np
import pytest
from mcp import Client
from pydantic import ValidationError

from helpers import agrees_with_decide, assert_valid_section, call_tool, set_strategy
from ratchet.core.ope import LoggedCall, evaluate
from ratchet.core.strategy import choice_key
from ratchet.core.errors import ConfigError
from ratchet.core.strategy import Decision, FeedbackEvent, Strategy
from ratchet.plugins.tuner_strategies import rules as R
from ratchet.runner.server import build_server as runner_server
from ratchet.runner.service import Runner
from ratchet.tuner.server import build_server as tuner_server
from ratchet.tuner.service import Tuner

FEATURES = ["has_order_number", "question_length"]
ACTIONS = {"escalated": {"style": "formal"}}


def make(**kw):
    kw = {"features": FEATURES, "actions": ACTIONS, "min_support": 20, "recent": 20, "retire_below": 0.5,
          "holdout": 0.3, **kw}
    return R.Rules("k", R.Rules.Config(**kw))


def label(decision, outcome, features, n=0):
    return FeedbackEvent(event_id=f"e{n}", tool="label", conversation_id=f"c{n}", payload={"outcome": outcome},
                         decision=decision, features=features)


class World:
    """Questions with an order number get escalated unless answered formally; very long ones always do."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.changed = False  # after a change, order numbers no longer lead to escalations

    def features(self, long=False):
        if long:
            return {"has_order_number": False, "question_length": 45}
        return {"has_order_number": bool(self.rng.random() < 0.4), "question_length": int(self.rng.integers(3, 16))}

    def outcome(self, features, style):
        if features["question_length"] >= 40:
            return "escalated"
        p = 0.9 if features["has_order_number"] and style != "formal" and not self.changed else 0.05
        return "escalated" if self.rng.random() < p else "resolved"


def play(st, section, world, n, rng, start=0, long=0):
    """n decisions on ``section`` (no feedback applied in between) and their labels."""
    out = []
    for i in range(n):
        f = world.features(long=i < long)
        d = st.decide(section, {"features": f}, rng)
        out.append(label(d, world.outcome(f, d.choice.get("style", "friendly")), {**f, "topic": "x"}, start + i))
    return out


PLANTED = "if has_order_number = true then escalated"


# --- contract and config ----------------------------------------------------------------------------


def test_contract_and_initial_state():
    assert issubclass(R.Rules, Strategy) and R.Rules.family == "rules"
    st = make()
    s0 = st.initial_state()
    assert_valid_section(st, s0)
    assert s0 == st.initial_state() and s0 is not st.initial_state()
    assert st.served(s0) == {} and st.kpis(s0)["active"] == []
    seen = []
    R.ratchet_register_strategies(seen.append)
    assert seen == [R.Rules]


@pytest.mark.parametrize("kw, field", [
    ({"features": []}, "features"),
    ({"features": ["a", "a"]}, "features"),
    ({"actions": {}}, "actions"),
    ({"actions": {"exploded": {"style": "formal"}}}, "actions"),
    ({"actions": {"escalated": {}}}, "actions"),
    ({"outcomes": ["only"]}, "outcomes"),
    ({"max_depth": 4}, "max_depth"),
    ({"min_support": 0}, "min_support"),
    ({"min_confidence": 0}, "min_confidence"),
    ({"retire_below": 0.9}, "retire_below"),  # above min_confidence
    ({"holdout": 1}, "holdout"),
    ({"param": "style"}, "param"),
    ({"window": 5}, "window"),
    ({"bogus": 1}, "bogus"),
])
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ValidationError) as err:
        make(**kw)
    assert field in str(err.value)


RULES_TOML = """
[[tuner.strategies]]
key = "rules"
strategy = "rules"
features = ["has_order_number", "question_length"]
outcomes = ["resolved", "escalated"]
actions = { escalated = { style = "formal" } }
min_support = 20
min_confidence = 0.8
retire_below = 0.5
recent = 20
holdout = 0.3
refit_every = 20
max_depth = 2
"""


def test_config_error_in_ratchet_toml_names_the_key(ws_path):
    from ratchet.core.workspace import Workspace

    set_strategy(ws_path, RULES_TOML.replace("max_depth = 2", "max_depth = 5"))
    with pytest.raises(ConfigError) as err:
        Tuner(Workspace.open(ws_path))
    assert err.value.field == "tuner.strategies[0].max_depth"


# --- apply ------------------------------------------------------------------------------------------


def test_apply_is_pure_deterministic_and_batch_invariant():
    st = make(refit_every=7)
    world, rng = World(1), np.random.default_rng(1)
    s0 = st.initial_state()
    s1 = st.apply(s0, play(st, s0, world, 150, rng))
    evs = play(st, s0, world, 60, rng, start=150) + play(st, s1, world, 60, rng, start=210)  # delayed feedback
    frozen = copy.deepcopy(s1)
    s2 = st.apply(s1, evs)
    assert s1 == frozen and st.apply(s1, evs) == s2
    one_by_one = s1
    for e in evs:
        one_by_one = st.apply(one_by_one, [e])
    assert one_by_one == s2
    assert_valid_section(st, s1)
    assert_valid_section(st, s2)
    assert s2["t"] == 270 and s2["skipped"] == 0 and s2["fits"] == 270 // 7
    again = st.apply(s2, [])
    assert again == s2 and again is not s2


def test_apply_skips_unusable_labels():
    st = make()
    d = Decision(strategy="k", choice={}, sticky=False)
    ok = {"has_order_number": True, "question_length": 4}
    evs = [label(None, "escalated", ok), label(d, "exploded", ok), label(d, "escalated", {"has_order_number": True}),
           label(d, "escalated", {**ok, "question_length": "long"}),
           label(d, "escalated", {**ok, "question_length": None})]
    s = st.apply(st.initial_state(), evs)
    assert s["skipped"] == 5 and s["examples"] == [] and s["t"] == 0
    s = st.apply(s, [label(d, "escalated", ok)])
    assert s["examples"] == [{"x": [True, 4], "y": "escalated", "treated": False, "rule": None}]


def test_window_is_bounded():
    st = make(window=50, refit_every=1000)
    s = st.apply(st.initial_state(), play(st, st.initial_state(), World(2), 120, np.random.default_rng(2)))
    assert len(s["examples"]) == 50 and s["t"] == 120
    assert_valid_section(st, s)


# --- mining, activation, retirement -----------------------------------------------------------------


def test_recovers_planted_rule_and_refuses_rare_region():
    st = make()
    s = st.initial_state()
    s = st.apply(s, play(st, s, World(3), 300, np.random.default_rng(3), long=8))
    (rule,) = s["active"]
    assert rule["text"] == PLANTED and rule["support"] >= 20 and rule["confidence"] >= 0.8
    assert rule["conditions"] == [{"feature": "has_order_number", "op": "=", "value": True}]
    rare = [r for r in s["last_fit"] if "question_length >" in r["text"]]
    assert len(rare) == 1 and rare[0]["confidence"] == 1.0 and rare[0]["support"] == 8
    assert rare[0]["status"] == "support 8 < min_support 20" and rare[0]["outcome"] == "escalated"
    # the rare region is not acted on
    d = st.decide(s, {"features": {"has_order_number": False, "question_length": 45}}, np.random.default_rng(0))
    assert d.choice == {} and d.info == {}


def test_readable_conditions_with_integer_thresholds():
    """Escalated iff an order number and a short question: two conditions, integer bounds."""
    st = make(min_confidence=0.9, retire_below=0.5, refit_every=400)
    rng = np.random.default_rng(4)
    evs = []
    for n in range(400):
        f = {"has_order_number": bool(rng.random() < 0.5), "question_length": int(rng.integers(3, 16))}
        y = "escalated" if f["has_order_number"] and f["question_length"] <= 8 else "resolved"
        evs.append(label(Decision(strategy="k", choice={}, sticky=False), y, f, n))
    s = st.apply(st.initial_state(), evs)
    assert [r["text"] for r in s["active"]] == ["if has_order_number = true and question_length <= 8 then escalated"]
    rule = s["active"][0]
    assert rule["confidence"] == 1.0
    assert R.matches(rule["conditions"], {"has_order_number": True, "question_length": 8})
    assert not R.matches(rule["conditions"], {"has_order_number": True, "question_length": 9})
    assert not R.matches(rule["conditions"], {"has_order_number": True})  # a missing feature never matches


def test_rule_that_stops_holding_is_retired_with_reason():
    st = make()
    world, rng = World(5), np.random.default_rng(5)
    s = st.initial_state()
    s = st.apply(s, play(st, s, world, 300, rng))
    s = st.apply(s, play(st, s, world, 200, rng, start=300))  # acted on: treated ones are resolved
    assert [r["text"] for r in s["active"]] == [PLANTED]
    k = st.kpis(s)["active"][0]
    assert k["treated"]["outcome_rate"] < 0.2 < 0.7 < k["holdout"]["outcome_rate"]
    world.changed = True
    s = st.apply(s, play(st, s, world, 400, rng, start=500))
    assert s["active"] == [] and len(s["retired"]) == 1
    retired = s["retired"][0]
    assert retired["text"] == PLANTED and "< retire_below 0.5" in retired["reason"] and retired["retired_at"] > 500
    assert st.kpis(s)["retired"] == 1 and st.kpis(s)["last_retired"]["text"] == PLANTED
    assert_valid_section(st, s)


def test_features_changed_in_config_retires_active_rules():
    st = make()
    s = st.apply(st.initial_state(), play(st, st.initial_state(), World(6), 200, np.random.default_rng(6)))
    assert s["active"]
    other = make(features=["question_length"])
    s2 = other.apply(s, [])
    assert_valid_section(other, s2)
    assert s2["active"] == [] and s2["examples"] == [] and "features" in s2["retired"][-1]["reason"]


# --- decide -----------------------------------------------------------------------------------------


def test_decide_first_match_holdout_and_no_match():
    st = make(holdout=0.25)
    s = st.apply(st.initial_state(), play(st, st.initial_state(), World(7), 200, np.random.default_rng(7)))
    rid = s["active"][0]["id"]
    order = {"features": {"has_order_number": True, "question_length": 5}}
    rng = np.random.default_rng(0)
    draws = [st.decide(s, order, rng) for _ in range(2000)]
    acted = [d for d in draws if d.choice]
    assert all(d.choice == {"style": "formal"} and d.info == {"rule": rid} and d.propensity == 0.75 for d in acted)
    held = [d for d in draws if not d.choice]
    assert all(d.info == {"rule": rid, "holdout": True} and d.propensity == 0.25 for d in held)
    assert abs(len(held) / 2000 - 0.25) < 0.03 and not any(d.sticky for d in draws)
    assert st.decide(s, order, np.random.default_rng(9)) == st.decide(s, order, np.random.default_rng(9))
    none = st.decide(s, {"features": {"has_order_number": False, "question_length": 5}}, rng)
    assert none.choice == {} and none.info == {} and none.propensity == 1.0 and not none.sticky
    assert st.decide(s, {}, rng).choice == {}


def test_feedback_tool_schemas():
    tools = {t.name: t for t in make().feedback_tools()}
    assert set(tools) == {"label", "label_batch"} and tools["label_batch"].batch_of == "label"
    for t in tools.values():
        jsonschema.Draft202012Validator.check_schema(t.input_schema)
        assert t.needs_decision and t.join == ["conversation_id"]
    assert tools["label"].input_schema["properties"]["outcome"]["enum"] == ["resolved", "escalated"]


# --- through the servers ----------------------------------------------------------------------------


@pytest.fixture
def rules_ws(ws_path):
    from ratchet.core.workspace import Workspace

    set_strategy(ws_path, RULES_TOML)
    return Workspace.open(ws_path)


BAD = [
    ("label", {"outcome": "resolved"}, "conversation_id"),
    ("label", {"conversation_id": "c0"}, "outcome"),
    ("label", {"conversation_id": "c0", "outcome": "exploded"}, "outcome"),
    ("label", {"conversation_id": 7, "outcome": "resolved"}, "conversation_id"),
    ("label", {"conversation_id": "c0", "outcome": "resolved", "colour": "red"}, "colour"),
    ("label", {"conversation_id": "c0", "outcome": "resolved", "event_id": 5}, "event_id"),
    ("label", {"conversation_id": "ghost", "outcome": "resolved"}, "conversation_id"),
    ("label_batch", {"events": [{"conversation_id": "c0", "outcome": "resolved"},
                                {"conversation_id": "c1", "outcome": True}]}, "events[1].outcome"),
    ("label_batch", {"events": [{"conversation_id": "c0", "outcome": "resolved"},
                                {"conversation_id": "ghost", "outcome": "resolved"}]}, "events[1].conversation_id"),
    ("label_batch", {"events": "all"}, "events"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("tool, args, field", BAD, ids=[f"{t}-{f}-{i}" for i, (t, _, f) in enumerate(BAD)])
async def test_bad_feedback_names_the_field_and_stores_nothing(rules_ws, tool, args, field):
    runner = Runner(rules_ws, seed=0)
    for i in range(2):
        runner.call("answer", {"question": "where is my parcel?", "conversation_id": f"c{i}"})
    async with Client(tuner_server(Tuner(rules_ws))) as c:
        is_error, text = await call_tool(c, tool, args)
    assert is_error and field in text, text
    if "ghost" in json.dumps(args):
        assert "unknown conversation 'ghost'" in text
    assert rules_ws.store.last_feedback_seq() == 0


SHORT = ["where is my parcel?", "How long do I have to return an item?", "Do you ship internationally?",
         "How do I cancel my subscription?", "What payment methods do you accept?",
         "I was charged twice this month and I would like to know why that happened"]
WITH_ORDER = ["Where is order #{n}?", "My package for order #{n} has not arrived yet, can you check?",
              "Can I still change the address on order #{n} please?", "order #{n} late"]
LONG = "I bought a lamp from you last month and " + "it keeps flickering and " * 8 + "what should I do?"


def question(world, i, long=False):
    if long:
        return LONG
    if world.rng.random() < 0.4:
        return WITH_ORDER[i % 4].format(n=100000 + i)
    return SHORT[i % 6]


def outcome(world, result_style, q):
    feats = {"has_order_number": "#" in q, "question_length": len(q.split())}
    return world.outcome(feats, result_style)


@pytest.mark.anyio
async def test_end_to_end_mines_acts_and_retires(rules_ws):
    """Serve over MCP, label, promote: the planted rule turns order questions formal; a rare region is left
    alone; when order numbers stop mattering the rule is retired and the default style returns."""
    ws, world = rules_ws, World(10)
    runner, tuner = Runner(ws, seed=10), Tuner(ws)
    assert len(LONG.split()) >= 40
    labels = []
    async with Client(runner_server(runner)) as rc, Client(tuner_server(tuner)) as tc:
        for i in range(250):
            q = question(world, i, long=i % 30 == 0 and i < 240)  # 8 long questions
            r = (await rc.call_tool("answer", {"question": q, "conversation_id": f"a{i}"})).structured_content
            assert r["style"] == "friendly"  # nothing mined yet
            labels.append({"conversation_id": f"a{i}", "outcome": outcome(world, r["style"], q)})
        is_error, ack = await call_tool(tc, "label_batch", {"events": labels})
        assert not is_error and ack["accepted"] == 250
        is_error, promoted = await call_tool(tc, "promote")
        assert not is_error and promoted["promoted"], promoted
        _, status = await call_tool(tc, "status")
    kpis = status["strategies"]["rules"]["kpis"]
    assert [r["text"] for r in kpis["active"]] == [PLANTED]
    assert kpis["active"][0]["support"] >= 20 and kpis["active"][0]["confidence"] >= 0.8
    rare = [c for c in kpis["candidates"] if "question_length >" in c["text"]]
    assert rare and rare[0]["status"].startswith("support 8 < min_support")
    assert ws.store.decisions_for("a0")[0]["sticky"] is False

    def serve(prefix, n):
        out = []
        for i in range(n):
            q = question(world, i)
            r = runner.call("answer", {"question": q, "conversation_id": f"{prefix}{i}"})
            out.append((q, r["style"]))
            tuner.feedback("label", {"conversation_id": f"{prefix}{i}", "outcome": outcome(world, r["style"], q)})
        return out

    runner.reload_if_changed()  # the server's own watcher may have reloaded already
    assert runner.snapshot.version == promoted["version"]
    served = serve("b", 200)
    order = [s for q, s in served if "#" in q]
    assert 0.55 < order.count("formal") / len(order) < 0.85  # acted on, minus the 30% holdout
    assert all(s == "friendly" for q, s in served if "#" not in q)
    assert runner.call("answer", {"question": LONG, "conversation_id": "long"})["style"] == "friendly"
    tuner.apply_pending()
    assert (await tuner.promote())["promoted"]
    assert [r["text"] for r in tuner.status()["strategies"]["rules"]["kpis"]["active"]] == [PLANTED]

    world.changed = True  # order numbers stop leading to escalations
    runner.reload_if_changed()
    serve("c", 300)
    tuner.apply_pending()
    outcome_ = await tuner.promote()
    assert outcome_["promoted"], outcome_
    kpis = tuner.status()["strategies"]["rules"]["kpis"]
    assert kpis["active"] == [] and kpis["retired"] == 1
    assert kpis["last_retired"]["text"] == PLANTED and "retire_below" in kpis["last_retired"]["reason"]
    runner.reload_if_changed()
    assert {s for _, s in serve("d", 40)} == {"friendly"}

# --- choice_probabilities (off-policy evaluation) ----------------------------------------------------


@pytest.fixture
def rules_section():
    """A rules strategy that learned 'order number -> escalated' (so it answers formally there)."""
    st = make(holdout=0.25)
    s = st.apply(st.initial_state(), play(st, st.initial_state(), World(7), 200, np.random.default_rng(7)))
    assert s["active"]
    return st, s


def test_rules_probabilities_are_the_holdout_split_where_a_rule_matches(rules_section):
    st, s = rules_section
    order = {"features": {"has_order_number": True, "question_length": 5}}
    probs = agrees_with_decide(st, s, order)
    assert probs == {choice_key({"style": "formal"}): pytest.approx(0.75), "{}": pytest.approx(0.25)}
    plain = {"features": {"has_order_number": False, "question_length": 5}}
    assert agrees_with_decide(st, s, plain) == {"{}": 1.0}  # deterministic: no rule matches
    assert st.choice_probabilities(s, {}, np.random.default_rng(0)) == {"{}": 1.0}
    no_holdout = R.Rules("k", st.config.model_copy(update={"holdout": 0.0}))
    assert no_holdout.choice_probabilities(s, order, np.random.default_rng(0)) == {'{"style": "formal"}': 1.0}


def test_rules_off_policy_a_rule_is_judged_by_its_holdout(rules_section):
    """Logged by the rules (holdout 0.25): the candidate 'no rule at all' is estimated from the held-out calls
    (formal answers cut escalations there: reward 1 for resolved), and 'the rule always' from the others."""
    st, s = rules_section
    rng = np.random.default_rng(3)
    calls = []
    for _ in range(2000):
        features = {"has_order_number": bool(rng.random() < 0.5), "question_length": 5}
        d = st.decide(s, {"features": features}, rng)
        p_resolved = 0.95 if d.choice or not features["has_order_number"] else 0.1
        calls.append(LoggedCall(choice_key(d.choice), d.propensity, float(rng.random() < p_resolved), features))
    choices = ["{}", choice_key({"style": "formal"})]
    logging = evaluate(calls, choices, lambda f: st.choice_probabilities(s, {"features": f}, rng))
    no_rule = evaluate(calls, choices, lambda f: {"{}": 1.0})
    truth_logging, truth_no_rule = 0.5 * 0.95 + 0.5 * (0.75 * 0.95 + 0.25 * 0.1), 0.5 * 0.95 + 0.5 * 0.1
    for name in ("ips", "snips", "dr"):
        assert logging.estimates[name].low < truth_logging < logging.estimates[name].high, name
        assert no_rule.estimates[name].low < truth_no_rule < no_rule.estimates[name].high, name
    assert no_rule.estimates["dr"].high < logging.estimates["dr"].low  # the rule helps, and OPE sees it
