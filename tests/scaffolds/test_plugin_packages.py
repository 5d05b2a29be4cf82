"""The plugin package scaffolds, end to end: render, pip-install into a separate folder, run the
package's own tests, find it through its entry point, and use it from a workspace.

pip builds each package in an isolated build environment (setuptools>=77 from the package index, as
`make` does for Ratchet itself) and installs it with --target into a temporary folder, so the test
environment is never changed; subprocesses see it through PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from template_helpers import render, tree

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def env_with(target: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RATCHET_LOAD_PLUGINS", "PYTHONPATH")}
    return {**env, "PYTHONPATH": str(target), "RATCHET_CACHE_DIR": str(tmp_path / "cache"),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def build_and_install(library, name: str, data: dict, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    pkg, target = tmp_path / "pkg", tmp_path / "site"
    render(library, name, pkg, data)
    build_copy = tmp_path / "build-copy"  # pip's in-tree build leaves build/ and *.egg-info behind
    shutil.copytree(pkg, build_copy)
    env = env_with(target, tmp_path)
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(build_copy)],
        tmp_path, env)
    return pkg, target, env


def test_strategy_plugin_package_installs_tests_and_works_in_a_workspace(library, ws_path, tmp_path):
    pkg, target, env = build_and_install(library, "strategy-plugin", {"name": "bandits-foo"}, tmp_path)
    assert (target / "ratchet_bandits_foo" / "__init__.py").is_file()
    assert (target / "ratchet_bandits_foo-0.1.0.dist-info" / "entry_points.txt").read_text().split() == [
        "[ratchet]", "bandits_foo", "=", "ratchet_bandits_foo"]

    # the package's own tests, against the installed copy (the smoke test needs the entry point)
    out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], pkg, env).stdout
    assert "6 passed" in out

    # Ratchet finds it through its entry point
    plugins = json.loads(run([str(BIN / "ratchet"), "plugins", "--json"], tmp_path, env).stdout)
    mine = next(p for p in plugins if p["name"] == "bandits_foo")
    assert mine == {"name": "bandits_foo", "dist": "ratchet-bandits-foo 0.1.0", "source": "entry point",
                    "hooks": ["ratchet_register_strategies"]}

    # ... and a workspace uses it: a [[tuner.strategies]] entry names it, rewards are applied, and it
    # keeps what the workspace's Thompson bandit had learned
    script = textwrap.dedent("""
        import json, sys, tomlkit
        from ratchet.runner.service import Runner
        from ratchet.tuner.service import Tuner
        from ratchet.core.workspace import Workspace

        root = sys.argv[1]
        ws = Workspace.open(root)
        runner, tuner = Runner(ws, seed=1), Tuner(ws)
        for i in range(5):
            runner.call("answer", {"question": "Where is my parcel?", "conversation_id": f"t{i}"})
            tuner.feedback("reward", {"conversation_id": f"t{i}", "value": 1})
        tuner.apply_pending()
        ws.state.promote(reason="thompson learned", author="test")
        learned = ws.state.read("active").document["strategies"]["style"]

        doc = tomlkit.parse(open(f"{root}/ratchet.toml").read())
        doc["tuner"]["strategies"][0]["strategy"] = "bandits_foo"
        doc["tuner"]["strategies"][0]["epsilon"] = 0.2
        open(f"{root}/ratchet.toml", "w").write(tomlkit.dumps(doc))

        ws = Workspace.open(root)
        runner, tuner = Runner(ws, seed=2), Tuner(ws)
        plugin = [i for i in ws.plugins.infos() if i.name == "bandits_foo"][0]
        styles = []
        for i in range(8):
            styles.append(runner.call("answer", {"question": "How do I reset my password?",
                                                 "conversation_id": f"e{i}"})["style"])
            tuner.feedback("reward", {"conversation_id": f"e{i}", "value": 0.5})
        tuner.apply_pending()
        section = ws.state.read("staging").document["strategies"]["style"]
        print(json.dumps({"plugin": plugin.dist, "strategy": type(tuner.strategies["style"]).__module__,
                          "epsilon": tuner.strategies["style"].config.epsilon, "learned": learned["pulls"],
                          "section": section, "styles": styles,
                          "kpis": tuner.strategies["style"].kpis(section)}))
    """)
    out = json.loads(run([sys.executable, "-c", script, str(ws_path)], tmp_path, env).stdout.splitlines()[-1])
    assert out["plugin"] == "ratchet-bandits-foo 0.1.0" and out["strategy"] == "ratchet_bandits_foo"
    assert out["epsilon"] == 0.2
    section = out["section"]
    assert section["policy"] == "bandits_foo" and section["t"] == 5 + 8
    assert [p - q for p, q in zip(section["pulls"], out["learned"])] == [out["styles"].count(a) for a in section["arms"]]
    assert out["kpis"]["pulls"] == 13


def test_runner_plugin_package_installs_and_its_tests_pass(library, tmp_path):
    pkg, target, env = build_and_install(library, "runner-plugin", {"name": "faq-search", "tool_name": "search_faq"},
                                         tmp_path)
    assert tree(pkg) == {".copier-answers.yml", ".gitignore", "README.md", "pyproject.toml",
                         "src/ratchet_faq_search/__init__.py", "tests/test_plugin.py"}
    out = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], pkg, env).stdout
    assert "7 passed" in out
    hooks = json.loads(run([str(BIN / "ratchet"), "plugins", "--json", "--hook", "ratchet_register_runner_tools"],
                           tmp_path, env).stdout)
    assert {p["name"] for p in hooks} >= {"faq_search"}
