from pathlib import Path

import pytest

from ratchet.core.errors import ConfigError, NotFoundError
from ratchet.core.workspace import Workspace, find_root


def write_toml(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratchet.toml").write_text(text)
    return root


def test_workspace_open_default(ws):
    assert ws.name == "support-desk"
    assert ws.config.tuner.strategies[0].key == "style"
    assert ws.config.tuner.promotion.every_events == 50


def test_workspace_find_root_from_subfolder(ws_path):
    assert find_root(ws_path / "state") == ws_path.resolve()
    assert Workspace.open(ws_path / "data").root == ws_path.resolve()


def test_workspace_not_found(tmp_path):
    with pytest.raises(NotFoundError) as err:
        Workspace.open(tmp_path)
    assert "ratchet.toml" in str(err.value) and "ratchet init" in err.value.fix


def test_workspace_malformed_toml_names_the_problem(tmp_path):
    root = write_toml(tmp_path / "w", '[workspace]\nname = "x\n')
    with pytest.raises(ConfigError) as err:
        Workspace.open(root)
    assert "not valid TOML" in str(err.value) and "line" in str(err.value)


def test_workspace_unknown_key_suggests_the_right_one(tmp_path):
    root = write_toml(tmp_path / "w", '[workspace]\nname = "x"\n[tuner.promotion]\nevery_event = 5\n')
    with pytest.raises(ConfigError) as err:
        Workspace.open(root)
    assert err.value.field == "tuner.promotion.every_event"
    assert "every_events" in err.value.fix


def test_workspace_missing_required_key(tmp_path):
    root = write_toml(tmp_path / "w", "[workspace]\nplugins = []\n")
    with pytest.raises(ConfigError) as err:
        Workspace.open(root)
    assert err.value.field == "workspace.name"


def test_workspace_bad_value_names_key(tmp_path):
    root = write_toml(tmp_path / "w", '[workspace]\nname = "x"\n[runner]\nport = 70000\n')
    with pytest.raises(ConfigError) as err:
        Workspace.open(root)
    assert err.value.field == "runner.port"


def test_workspace_duplicate_strategy_keys(tmp_path):
    root = write_toml(tmp_path / "w", '[workspace]\nname = "x"\n'
                      '[[tuner.strategies]]\nkey = "a"\nstrategy = "ucb1"\n'
                      '[[tuner.strategies]]\nkey = "a"\nstrategy = "exp3"\n')
    with pytest.raises(ConfigError, match="duplicate key"):
        Workspace.open(root)


def test_workspace_unknown_strategy_and_bad_strategy_option(ws_path):
    from ratchet.core.strategy import build_strategies

    toml = ws_path / "ratchet.toml"
    original = toml.read_text()
    toml.write_text(original.replace('strategy = "glr_thompson"', 'strategy = "thompsen"'))
    ws = Workspace.open(ws_path)
    with pytest.raises(ConfigError) as err:
        build_strategies(ws, ws.plugins)
    assert err.value.field == "tuner.strategies[0].strategy" and "thompson" in err.value.fix
    toml.write_text(original.replace('arms = [', 'armz = ['))
    ws = Workspace.open(ws_path)
    with pytest.raises(ConfigError) as err:
        build_strategies(ws, ws.plugins)
    assert err.value.field.startswith("tuner.strategies[0].")
