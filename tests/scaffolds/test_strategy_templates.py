"""The strategy templates (bandit, cmaes, optuna, preference, rules), each rendered into a copy of the
default workspace: the [[tuner.strategies]] table names only key and strategy, the answers are the
config's defaults, a runner call decides, feedback is applied, and switching from the first-party
strategy keeps what it learned."""

from __future__ import annotations

import pytest

from helpers import assert_valid_section
from ratchet.core.strategy import build_strategies
from ratchet.runner.service import Runner
from ratchet.tuner.service import Tuner
from template_helpers import render, wire

Q = {"question": "Where is order #123456? It has not arrived", "conversation_id": "c0"}


def serve_and_feed(ws, tool: str, payload, n: int = 6):
    """n runner calls, one feedback event each (``payload(i, result)``), applied to staging."""
    runner, tuner = Runner(ws, seed=1), Tuner(ws)
    results = []
    for i in range(n):
        out = runner.call("answer", {**Q, "conversation_id": f"c{i}"})
        results.append(out)
        tuner.feedback(tool, {"conversation_id": f"c{i}", **payload(i, out)})
    tuner.apply_pending()
    return results, ws.state.read("staging").document["strategies"]


def test_bandit_template_defaults_and_rewards(library, ws_path, no_bytecode):
    render(library, "bandit", ws_path, {"policy": "ucb1", "exploration": 0.5})
    ws = wire(ws_path, plugins=["plugins/style_ucb1.py"], strategies=[{"key": "style", "strategy": "style_ucb1"}])
    strategy = build_strategies(ws, ws.plugins)["style"]
    assert type(strategy).__mro__[1].__name__ == "UCB1" and strategy.family == "bandit"
    assert strategy.config.arms == ["concise", "friendly", "detailed", "formal"] and strategy.config.param == "style"
    assert strategy.config.alpha == 0.5
    results, sections = serve_and_feed(ws, "reward", lambda i, out: {"value": 1.0 if out["style"] == "formal" else 0.0})
    section = sections["style"]
    assert section["policy"] == "style_ucb1" and sum(section["pulls"]) == 6
    assert section["reward_sum"][3] == sum(r["style"] == "formal" for r in results)
    assert_valid_section(strategy, section)


def test_bandit_template_linear_policy_uses_the_features(library, ws_path, no_bytecode):
    render(library, "bandit", ws_path, {"policy": "lin_ucb"})
    ws = wire(ws_path, plugins=["plugins/style_lin_ucb.py"], strategies=[{"key": "style", "strategy": "style_lin_ucb"}])
    strategy = build_strategies(ws, ws.plugins)["style"]
    assert strategy.config.features == ["question_length", "has_order_number"]
    Runner(ws, seed=0).call("answer", Q)
    decision = ws.store.decisions_for("c0")[0]
    assert decision["features"]["has_order_number"] is True and decision["info"]["x"]


def test_bandit_template_adopts_what_thompson_learned(library, ws_path, no_bytecode):
    ws = wire(ws_path)
    serve_and_feed(ws, "reward", lambda i, out: {"value": 1.0})
    ws.state.promote(reason="learned with thompson", author="test")
    learned = ws.state.read("active").document["strategies"]["style"]["pulls"]
    render(library, "bandit", ws_path, {"policy": "kl_ucb"})
    ws = wire(ws_path, plugins=["plugins/style_kl_ucb.py"], strategies=[{"key": "style", "strategy": "style_kl_ucb"}])
    adopted = ws.state.migrate(ws.state.read("active").document)["strategies"]["style"]
    assert adopted["policy"] == "style_kl_ucb" and adopted["pulls"] == learned


def test_cmaes_template_serves_candidates_and_scores_them(library, ws_path, no_bytecode):
    render(library, "cmaes", ws_path, {"repeats": 1, "popsize": 4})
    ws = wire(ws_path, plugins=["plugins/params_cmaes.py"],
              add_strategies=[{"key": "retrieval", "strategy": "params_cmaes"}])
    strategy = build_strategies(ws, ws.plugins)["retrieval"]
    assert list(strategy.config.dimensions) == ["w_question", "min_score"]
    assert strategy.config.dimensions["min_score"].x0 == 0.12 and strategy.config.popsize == 4
    section = ws.state.migrate(ws.state.read("active").document)["strategies"]["retrieval"]
    assert_valid_section(strategy, section)
    runner = Runner(ws, seed=2)
    points = [runner.call("answer", {**Q, "conversation_id": f"c{i}"}) for i in range(4)]
    assert all(p["entry_id"] for p in points)
    decisions = [ws.store.decisions_for(f"c{i}") for i in range(4)]
    chosen = [next(d for d in ds if d["strategy"] == "retrieval")["choice"] for ds in decisions]
    assert all(set(c) == {"w_question", "min_score"} and 0.02 <= c["min_score"] <= 0.4 for c in chosen)
    tuner = Tuner(ws)
    for i in range(4):
        tuner.feedback("score", {"conversation_id": f"c{i}", "value": chosen[i]["w_question"]})
    tuner.apply_pending()
    after = ws.state.read("staging").document["strategies"]["retrieval"]
    assert after["policy"] == "params_cmaes" and after["evaluations"] == 4 and after["skipped"] == 0
    assert sum(map(len, after["scores"])) == 4 or after["generation"] == 1  # told once every candidate has a score
    assert_valid_section(strategy, after)


def test_optuna_template_mixed_space(library, ws_path, no_bytecode):
    render(library, "optuna", ws_path, {"pool": 2, "repeats": 1})
    ws = wire(ws_path, plugins=["plugins/params_tpe.py"], add_strategies=[{"key": "retrieval", "strategy": "params_tpe"}])
    strategy = build_strategies(ws, ws.plugins)["retrieval"]
    assert strategy.config.space["max_sentences"].type == "categorical" and strategy.config.pool == 2
    results, sections = serve_and_feed(ws, "score", lambda i, out: {"value": float(len(out["answer"]) < 120)}, n=4)
    section = sections["retrieval"]
    assert section["policy"] == "params_tpe" and section["study"] == f"{ws.name}:retrieval"
    assert section["trials"] + section["added"] >= 4
    assert_valid_section(strategy, section)


def test_preference_template_and_adoption(library, ws_path, no_bytecode):
    ws = wire(ws_path, strategies=[{"key": "style", "strategy": "preference", "param": "style",
                                    "variants": ["concise", "friendly", "detailed", "formal"]}])
    runner, tuner = Runner(ws, seed=4), Tuner(ws)
    served = [runner.call("answer", {**Q, "conversation_id": f"p{i}"})["style"] for i in range(8)]
    tuner.feedback("prefer_variants", {"winner": "formal", "loser": "concise"})
    tuner.feedback("prefer", {"winner_conversation_id": "p0", "loser_conversation_id": "p1"})
    tuner.apply_pending()
    ws.state.promote(reason="first-party preference", author="test")
    learned = ws.state.read("active").document["strategies"]["style"]
    assert learned["n"] >= 1 and set(served) <= {"concise", "friendly", "detailed", "formal"}

    render(library, "preference", ws_path, {"exploration": 0.5})
    ws = wire(ws_path, plugins=["plugins/style_preference.py"],
              strategies=[{"key": "style", "strategy": "style_preference"}])
    strategy = build_strategies(ws, ws.plugins)["style"]
    assert strategy.config.exploration == 0.5 and strategy.config.variants == ["concise", "friendly", "detailed", "formal"]
    adopted = ws.state.migrate(ws.state.read("active").document)["strategies"]["style"]
    assert adopted == {**learned, "policy": "style_preference"}
    assert Runner(ws, seed=0).call("answer", {**Q, "conversation_id": "after"})["style"] in strategy.variants


def test_rules_template_defaults_labels_and_adoption(library, ws_path, no_bytecode):
    render(library, "rules", ws_path, {"min_support": 5, "min_confidence": 0.5})
    ws = wire(ws_path, plugins=["plugins/escalation_rules.py"],
              add_strategies=[{"key": "escalation_rules", "strategy": "escalation_rules", "refit_every": 5}])
    strategy = build_strategies(ws, ws.plugins)["escalation_rules"]
    c = strategy.config
    assert c.features == ["has_order_number", "question_length"] and c.actions == {"escalated": {"style": "formal"}}
    assert c.min_support == 5 and c.min_confidence == 0.5 and c.retire_below == 0.5 and c.refit_every == 5
    _, sections = serve_and_feed(ws, "label", lambda i, out: {"outcome": "escalated"}, n=10)
    section = sections["escalation_rules"]
    assert section["policy"] == "escalation_rules" and section["t"] == 10 and section["fits"] == 2
    assert_valid_section(strategy, section)
    # what the first-party `rules` learned under the same key carries over
    from ratchet.plugins.tuner_strategies.rules import Rules

    first_party = {**section, "policy": Rules.name}
    assert strategy.adopt("rules", first_party) == section
    assert strategy.adopt("rules", {**first_party, "features": ["other"]}) is None


@pytest.mark.parametrize("name, data, module, cls_name", [
    ("bandit", {}, "style_thompson", "StyleThompson"),
    ("cmaes", {}, "params_cmaes", "ParamsCmaes"),
    ("optuna", {}, "params_tpe", "ParamsTpe"),
    ("preference", {}, "style_preference", "StylePreference"),
    ("rules", {}, "escalation_rules", "EscalationRules"),
])
def test_strategy_template_registers_through_its_hook(library, ws_path, no_bytecode, name, data, module, cls_name):
    from ratchet.core.strategy import registered_strategies

    render(library, name, ws_path, data)
    ws = wire(ws_path, plugins=[f"plugins/{module}.py"])
    found = registered_strategies(ws.plugins, ws)
    plugin, cls = found[module]
    assert plugin == f"workspace:plugins/{module}.py" and cls.__name__ == cls_name
    cls("k", cls.Config())  # every required option has a default from the answers
