"""The drift-bandit strategy template: renders a workspace plugin module that works in a workspace."""

import pytest

from helpers import tree_snapshot
from ratchet.core import templates as tl
from ratchet.core.errors import UserError
from ratchet.core.plugins import load_plugins
from ratchet.core.strategy import build_strategies
from ratchet.core.workspace import Workspace
from ratchet.runner.service import Runner
from ratchet.tuner.service import Tuner


@pytest.fixture(scope="module")
def template():
    return tl.get(tl.discover(load_plugins()), "drift-bandit")


def enable(ws_path, module, strategy):
    toml = ws_path / "ratchet.toml"
    text = toml.read_text().replace('plugins = ["plugins/support_desk.py"]',
                                    f'plugins = ["plugins/support_desk.py", "plugins/{module}.py"]')
    toml.write_text(text.replace('strategy = "glr_thompson"', f'strategy = "{strategy}"'))
    return Workspace.open(ws_path)


def test_drift_bandit_listed_as_strategy_template(template):
    assert template.family == "strategy" and "drift" in template.summary
    assert {q.name for q in template.questions} >= {"strategy_name", "forgetting", "gamma", "window"}


def test_drift_bandit_renders_into_a_workspace_and_is_adopted(ws_path, template):
    runner, tuner = Runner(Workspace.open(ws_path), seed=1), Tuner(Workspace.open(ws_path))
    for i in range(10):
        runner.call("answer", {"question": "refund?", "conversation_id": f"d{i}"})
        tuner.feedback("reward", {"conversation_id": f"d{i}", "value": 1})
    tuner.apply_pending()
    learned = tuner.workspace.state.read("staging").document["strategies"]["style"]["pulls"]

    files = tl.render(template, ws_path, tl.parse_data(template, ["strategy_name=drift_style"]))
    assert files == [".copier-answers.drift-bandit.yml", "plugins/drift_style.py"]
    ws = enable(ws_path, "drift_style", "drift_style")
    strategy = build_strategies(ws, ws.plugins)["style"]
    assert strategy.name == "drift_style" and strategy.config.gamma == 0.995
    adopted = ws.state.migrate(ws.state.read("staging").document)["strategies"]["style"]
    assert adopted["policy"] == "drift_style" and adopted["pulls"] == learned
    out = Runner(ws, seed=2).call("answer", {"question": "refund?", "conversation_id": "after"})
    assert out["style"] in ("concise", "friendly", "detailed", "formal")


def test_drift_bandit_window_variant(ws_path, template):
    tl.render(template, ws_path, tl.parse_data(template, ["strategy_name=recent_style", "forgetting=window",
                                                          "window=200"]))
    ws = enable(ws_path, "recent_style", "recent_style")
    strategy = build_strategies(ws, ws.plugins)["style"]
    assert strategy.config.window == 200 and type(strategy).__mro__[1].__name__ == "SlidingWindowUCB"


@pytest.mark.parametrize("data, fragment", [
    (["gamma=2"], "must be in (0, 1]"),
    (["strategy_name=Bad-Name"], "lowercase"),
    (["forgetting=never"], "not a valid forgetting"),
])
def test_drift_bandit_bad_answers_write_nothing(ws_path, template, data, fragment):
    before = tree_snapshot(ws_path)
    with pytest.raises(UserError) as err:
        tl.render(template, ws_path, tl.parse_data(template, data))
    assert fragment in str(err.value)
    assert tree_snapshot(ws_path) == before


def test_drift_bandit_never_overwrites(ws_path, template):
    tl.render(template, ws_path, {})
    before = tree_snapshot(ws_path)
    with pytest.raises(UserError) as err:
        tl.render(template, ws_path, {"strategy_name": "other"})  # same answers file: refused whole
    assert ".copier-answers.drift-bandit.yml" in str(err.value)
    assert tree_snapshot(ws_path) == before
