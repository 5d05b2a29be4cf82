"""The package as a user gets it: build the wheel, install it into a fresh venv, and make and test a
workspace with the installed ``ratchet`` command (not this checkout). Installing the dependencies needs
the package index (PyPI, as pip is configured): it also proves that the declared dependencies suffice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_distribution_name_is_ours_and_every_install_command_uses_it():
    name = project()["name"]
    assert name == "ratchet-agents"  # `ratchet` on PyPI is an unrelated project
    assert all(not extra.startswith("ratchet[") for extras in project()["optional-dependencies"].values()
               for extra in extras)
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "src" / "ratchet").rglob("*.jinja")), *sorted((ROOT / "src" / "ratchet").rglob("*.py")),
             *sorted((ROOT / "src" / "ratchet").rglob("README.md"))]
    for path in texts:
        text = path.read_text(encoding="utf-8")
        assert "install 'ratchet[" not in text and "install ratchet " not in text, path
    for scaffold in ("runner-plugin", "strategy-plugin"):
        toml = (ROOT / "src/ratchet/scaffolds" / scaffold / "template/pyproject.toml.jinja").read_text()
        assert 'dependencies = ["ratchet-agents{{ ratchet_requirement }}"]' in toml


def test_the_extras_the_readme_names_exist():
    readme = (ROOT / "README.md").read_text()
    named = readme.split("# extras: ", 1)[1].split("\n", 1)[0].split(", ")
    assert named and set(named) <= set(project()["optional-dependencies"]), named


def test_license_and_changelog_are_there():
    assert project()["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
    assert (ROOT / "CHANGELOG.md").read_text().startswith("# Changelog")


def run(args: list, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("RATCHET_TEST_STORE_URL")),
                    reason="uses no store: run once, in the SQLite pass (it takes minutes)")
@pytest.mark.timeout(1800)  # a cold pip cache downloads numpy, scikit-learn, matplotlib, optuna, ...
def test_the_wheel_installs_into_a_fresh_venv_and_its_ratchet_makes_and_tests_a_workspace(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RATCHET_LOAD_PLUGINS", "VIRTUAL_ENV")}
    env |= {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "RATCHET_CACHE_DIR": str(tmp_path / "cache")}
    dist = tmp_path / "dist"
    # the checkout as a user's sdist/wheel build sees it: a copy without build leftovers
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, ROOT], tmp_path, env)
    wheel = next(dist.glob("ratchet_agents-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "ratchet/scaffolds/workspace/copier.yml" in names

    home = tmp_path / "venv"
    venv.create(home, with_pip=True)
    py = home / "bin" / "python"
    # the dependencies come from the package index as configured (pip's cache makes it quick after once)
    run([py, "-m", "pip", "install", "--quiet", "--prefer-binary", "--find-links", dist, wheel], tmp_path, env,
        timeout=900)
    shown = run([py, "-m", "pip", "show", "ratchet-agents"], tmp_path, env).stdout
    assert "Name: ratchet-agents" in shown and f"Location: {home}" in shown.replace("\n", " ").split("Editable")[0]

    ratchet = home / "bin" / "ratchet"
    made = run([ratchet, "init", "my-desk"], tmp_path, env)
    assert "v0.1.0" in made.stdout
    where = run([py, "-c", "import ratchet; print(ratchet.__file__)"], tmp_path, env).stdout
    assert where.startswith(str(home))  # the installed package, not this checkout
    tested = run([ratchet, "test", "--tier", "micro", "--json", "-w", "my-desk"], tmp_path, env)
    tier = json.loads(tested.stdout)["tiers"][0]
    assert tier["tier"] == "micro" and tier["failed"] == 0 and tier["passed"] > 0
