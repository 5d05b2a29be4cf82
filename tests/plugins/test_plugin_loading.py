"""Plugins found through entry points, named when they fail, filtered by RATCHET_LOAD_PLUGINS."""

import sys
import textwrap
from pathlib import Path

import pytest

from ratchet.core.errors import PluginError
from ratchet.core.plugins import check_required, load_plugins
from ratchet.core.strategy import registered_strategies


def make_dist(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """An installed distribution on disk: modules plus a dist-info with entry points (what pip would leave)."""
    for name, code in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[ratchet]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))


@pytest.fixture
def site(tmp_path, monkeypatch):
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    yield path
    for mod in [m for m in sys.modules if m.startswith("fixture_")]:
        del sys.modules[mod]


GOOD = """
from ratchet import hookimpl
from ratchet.core.strategy import Strategy, Decision

class Always(Strategy):
    name = "always_first"
    family = "fixture"
    def initial_state(self): return {}
    def state_schema(self): return {"type": "object"}
    def decide(self, section, context, rng): return Decision(strategy=self.key, choice=0)
    def feedback_tools(self): return []
    def apply(self, section, events): return dict(section)

@hookimpl
def ratchet_register_strategies(register):
    register(Always)
"""


def test_hook_ratchet_register_strategies_entry_point_plugin_is_found(site, monkeypatch):
    make_dist(site, "ratchet-fixture-good", "1.2.3", {"fixture_good": "fixture_good"}, {"fixture_good": GOOD})
    monkeypatch.setenv("RATCHET_LOAD_PLUGINS", "fixture_good")
    pm = load_plugins()
    info = {i.name: i for i in pm.infos()}
    assert info["fixture_good"].dist == "ratchet-fixture-good 1.2.3"
    assert info["fixture_good"].hooks == ("ratchet_register_strategies",)
    assert registered_strategies(pm)["always_first"][0] == "fixture_good"


def test_plugins_load_in_name_order_and_filter(site, monkeypatch):
    make_dist(site, "ratchet-fixture-good", "1.2.3", {"zz_good": "fixture_good", "aa_good": "fixture_good2"},
              {"fixture_good": GOOD, "fixture_good2": "x = 1\n"})
    monkeypatch.setenv("RATCHET_LOAD_PLUGINS", "zz_good,aa_good")
    assert [i.name for i in load_plugins().infos()] == ["aa_good", "zz_good"]
    monkeypatch.setenv("RATCHET_LOAD_PLUGINS", "")
    assert load_plugins().infos() == []


def test_plugins_import_error_names_plugin_and_distribution(site, monkeypatch):
    make_dist(site, "ratchet-fixture-broken", "0.3.1", {"fixture_broken": "fixture_broken"},
              {"fixture_broken": "import not_a_real_module_xyz\n"})
    monkeypatch.setenv("RATCHET_LOAD_PLUGINS", "fixture_broken")
    with pytest.raises(PluginError) as err:
        load_plugins()
    text = str(err.value)
    assert "plugin 'fixture_broken' (ratchet-fixture-broken 0.3.1)" in text
    assert "not_a_real_module_xyz" in text and "reinstall" in text


def test_plugins_raising_hook_names_plugin_dist_and_hook(site, monkeypatch):
    code = """
from ratchet import hookimpl
@hookimpl
def ratchet_register_strategies(register):
    register(dict)
"""
    make_dist(site, "ratchet-fixture-bad", "0.0.1", {"fixture_bad": "fixture_bad"}, {"fixture_bad": code})
    monkeypatch.setenv("RATCHET_LOAD_PLUGINS", "fixture_bad")
    with pytest.raises(PluginError) as err:
        registered_strategies(load_plugins())
    e = err.value
    assert (e.plugin, e.dist, e.hook) == ("fixture_bad", "ratchet-fixture-bad 0.0.1", "ratchet_register_strategies")
    assert "must subclass ratchet.Strategy" in str(e)


def test_plugins_duplicate_registration_is_refused(site, monkeypatch):
    make_dist(site, "ratchet-fixture-good", "1.2.3", {"fixture_good": "fixture_good", "fixture_again": "fixture_good"},
              {"fixture_good": GOOD})
    monkeypatch.setenv("RATCHET_LOAD_PLUGINS", "fixture_good")
    pm = load_plugins()
    import fixture_good

    class Again:
        ratchet_register_strategies = staticmethod(fixture_good.ratchet_register_strategies)

    pm.register(Again(), "again")
    with pytest.raises(PluginError, match="already registered by plugin"):
        registered_strategies(pm)


def test_plugins_misspelled_hook_is_an_error(site, monkeypatch):
    code = "from ratchet import hookimpl\n@hookimpl\ndef ratchet_register_strategys(register):\n    pass\n"
    make_dist(site, "ratchet-fixture-typo", "0.1", {"fixture_typo": "fixture_typo"}, {"fixture_typo": code})
    monkeypatch.setenv("RATCHET_LOAD_PLUGINS", "fixture_typo")
    with pytest.raises(PluginError) as err:
        load_plugins()
    assert err.value.plugin == "fixture_typo" and "ratchet_register_strategys" in str(err.value)


def test_plugins_workspace_module_is_loaded(ws):
    names = {i.name: i for i in ws.plugins.infos()}
    assert names["workspace:plugins/support_desk.py"].source == "workspace"
    assert "ratchet_register_runner_tools" in names["workspace:plugins/support_desk.py"].hooks


def test_plugins_workspace_module_missing_is_named(ws_path):
    from ratchet.core.workspace import Workspace

    toml = ws_path / "ratchet.toml"
    toml.write_text(toml.read_text().replace("plugins/support_desk.py", "plugins/nope.py"))
    with pytest.raises(PluginError) as err:
        Workspace.open(ws_path).plugins
    assert "plugins/nope.py" in str(err.value) and "ratchet.toml" in err.value.fix


def test_plugins_required_plugins():
    check_required(["pluggy>=1.0"])
    with pytest.raises(PluginError, match="pip install 'ratchet-not-installed-xyz>=1'"):
        check_required(["ratchet-not-installed-xyz>=1"])
    with pytest.raises(PluginError, match="is installed but pluggy>=999 is required"):
        check_required(["pluggy>=999"])


def test_plugins_first_party_use_entry_points():
    from importlib import metadata

    from helpers import ratchet_distribution

    names = {ep.name for ep in metadata.entry_points(group="ratchet")
             if ep.dist and ep.dist.name == ratchet_distribution()}
    assert {"templates", "bandits"} <= names
