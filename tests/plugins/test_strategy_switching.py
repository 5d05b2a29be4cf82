"""Switching a workspace's strategy carries what was learned over, through the State Manager."""

import pytest

from helpers import commit_all
from ratchet.core.documents import RESERVED_KEY
from ratchet.core.workspace import Workspace
from ratchet.runner.service import Runner
from ratchet.tuner.service import Tuner


def learn(ws, n=30):
    runner, tuner = Runner(ws, seed=2), Tuner(ws)
    for i in range(n):
        out = runner.call("answer", {"question": "where is my parcel?", "conversation_id": f"s{i}"})
        tuner.feedback("reward", {"conversation_id": f"s{i}", "value": 1.0 if out["style"] == "concise" else 0.0})
    tuner.apply_pending()
    return ws.state.read("staging").document["strategies"]["style"]


def switch(ws_path, strategy, extra=""):
    toml = ws_path / "ratchet.toml"
    text = toml.read_text()
    old = next(line for line in text.splitlines() if line.startswith("strategy = "))
    toml.write_text(text.replace(old, f'strategy = "{strategy}"{extra}'))
    commit_all(ws_path)
    return Workspace.open(ws_path)


@pytest.mark.parametrize("target", ["ucb1", "kl_ucb", "discounted_thompson", "exp3", "sw_ucb", "gaussian_thompson",
                                    "glr_thompson"])
def test_switch_between_bandits_keeps_arm_statistics(ws_path, target):
    before = learn(Workspace.open(ws_path))
    ws = switch(ws_path, target)
    adopted = ws.state.migrate(ws.state.read("staging").document)
    section = adopted["strategies"]["style"]
    assert section["policy"] == target
    assert section["pulls"] == before["pulls"]
    assert section["reward_sum"] == pytest.approx(before["reward_sum"])
    assert adopted[RESERVED_KEY]["strategies"] == {"style": target}
    # the runner serves the adopted section, and the tuner keeps learning on it
    assert Runner(ws, explore=False).call("answer", {"question": "refund?", "conversation_id": "x"})["style"] == "concise"


def test_switch_thompson_round_trip_is_exact(ws_path):
    before = learn(Workspace.open(ws_path))
    ws = switch(ws_path, "ucb1")
    via_ucb = ws.state.migrate(ws.state.read("staging").document)
    ws = switch(ws_path, "thompson")
    back = ws.state.migrate(via_ucb)["strategies"]["style"]
    assert back["alpha"] == pytest.approx(before["alpha"]) and back["beta"] == pytest.approx(before["beta"])


def test_switch_thompson_to_glr_thompson_and_back_is_exact(ws_path):
    before = learn(Workspace.open(ws_path))
    ws = switch(ws_path, "glr_thompson")
    via_glr = ws.state.migrate(ws.state.read("staging").document)
    section = via_glr["strategies"]["style"]
    assert section["alpha"] == pytest.approx(before["alpha"]) and sum(section["alarms"]) == 0
    ws = switch(ws_path, "thompson")
    back = ws.state.migrate(via_glr)["strategies"]["style"]
    assert back["alpha"] == pytest.approx(before["alpha"]) and back["beta"] == pytest.approx(before["beta"])


def test_switch_to_linear_keeps_totals(ws_path):
    before = learn(Workspace.open(ws_path))
    ws = switch(ws_path, "lin_ucb", '\nfeatures = ["has_order_number"]')
    section = ws.state.migrate(ws.state.read("staging").document)["strategies"]["style"]
    assert section["pulls"] == before["pulls"]


def test_switch_is_promoted_as_a_version(ws_path):
    learn(Workspace.open(ws_path))
    ws = switch(ws_path, "kl_ucb")
    tuner = Tuner(ws)
    import anyio

    runner = Runner(ws, seed=4)
    runner.call("answer", {"question": "refund?", "conversation_id": "after"})
    tuner.feedback("reward", {"conversation_id": "after", "value": 1})
    tuner.apply_pending()
    outcome = anyio.run(tuner.promote)
    assert outcome["promoted"]
    active = ws.state.read("active").document
    assert active["strategies"]["style"]["policy"] == "kl_ucb"
    assert active[RESERVED_KEY]["strategies"] == {"style": "kl_ucb"}


def test_switch_to_cmaes_warm_starts_from_the_best_point():
    from ratchet.plugins.tuner_strategies.cmaes import CMAES

    cma = CMAES("w", CMAES.Config.model_validate(
        {"dimensions": {"w_question": {"low": 0, "high": 1}, "min_score": {"low": 0, "high": 0.5}}, "seed": 1}))
    optuna_section = {"best": {"number": 7, "params": {"w_question": 0.9, "min_score": 0.8, "style": "formal"},
                               "value": 0.7}}
    adopted = cma.adopt("optuna", optuna_section)
    assert adopted["mean"] == pytest.approx([0.9, 0.5])  # min_score clipped to its bound
    assert adopted["generation"] == 0 and adopted["best"] is None
    assert cma.adopt("thompson", {"arms": ["a", "b"], "pulls": [1, 2]}) is None  # nothing to start from
