"""`copier update` across two versions of a template, with a `_migrations` entry.

tests/fixtures/templates/strategy-plugin-0.0.1 is "version 1" of the strategy-plugin scaffold (the
plugin as the single module src/<package>.py); the shipped scaffold is "version 2" (0.1.0: the module
moved into the package src/<package>/__init__.py, with a migration). A project is rendered from
version 1 through the same versioned template cache `ratchet templates render` uses, committed and
edited; then the cache gains the shipped version, as it does after an upgrade of Ratchet, and
`copier update` moves the project to it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import copier
import pytest
import yaml
from copier.errors import UnsafeTemplateError

from ratchet.core import templates as tl
from template_helpers import FIXTURES, tree

V1 = FIXTURES / "strategy-plugin-0.0.1"


def git(cwd, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, **tl.GIT_ENV}).stdout


@pytest.fixture
def project(library, tmp_path, monkeypatch):
    """A package rendered from version 1 (tag 0.0.1 of the template's versioned cache), committed,
    then edited and committed again like a user would."""
    monkeypatch.setenv("RATCHET_CACHE_DIR", str(tmp_path / "cache"))
    template = library["strategy-plugin"]
    repo = tl.cache_dir() / "templates" / f"{template.plugin}--{template.name}"  # where versioned_source keeps it
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    shutil.copytree(V1, repo, dirs_exist_ok=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "strategy-plugin 0.0.1")
    git(repo, "tag", "-a", "0.0.1", "-m", "version 1 (test fixture)")

    dest = tmp_path / "ratchet-bandits-foo"
    copier.run_copy(str(repo), dest, data={"name": "bandits-foo"}, defaults=True, quiet=True, vcs_ref="0.0.1")
    assert tree(dest) == {".copier-answers.yml", ".gitignore", "README.md", "pyproject.toml",
                          "src/ratchet_bandits_foo.py", "tests/test_plugin.py"}
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "rendered from strategy-plugin 0.0.1")
    module = dest / "src" / "ratchet_bandits_foo.py"
    module.write_text(module.read_text().replace("epsilon: float = Field(default=0.1,", "epsilon: float = Field(default=0.2,")
                      + '\n\ndef describe() -> str:\n    """A helper the user added."""\n    return "eps-greedy"\n')
    (dest / "README.md").write_text((dest / "README.md").read_text() + "\n## Notes\nOur own notes.\n")
    git(dest, "commit", "-qam", "our edits")
    return template, repo, dest


def test_update_needs_trust_for_the_migration(project):
    template, repo, dest = project
    tl.versioned_source(template)  # Ratchet upgraded: the cache gains the shipped version
    with pytest.raises(UnsafeTemplateError, match="migrations"):
        copier.run_update(dest, defaults=True, overwrite=True, quiet=True)
    assert git(dest, "status", "--porcelain") == ""  # refused before touching anything


def test_update_runs_the_migration_and_keeps_the_edits(project):
    template, repo, dest = project
    src, tag = tl.versioned_source(template)
    assert src == str(repo) and tag.startswith(template.version)
    assert git(repo, "tag", "--list").split() == sorted(["0.0.1", tag])

    copier.run_update(dest, defaults=True, overwrite=True, quiet=True, unsafe=True)  # `copier update --trust`

    assert tree(dest) == {".copier-answers.yml", ".gitignore", "README.md", "pyproject.toml",
                          "src/ratchet_bandits_foo/__init__.py", "tests/test_plugin.py"}
    moved = (dest / "src" / "ratchet_bandits_foo" / "__init__.py").read_text()
    # the user's edits moved with the module ...
    assert "epsilon: float = Field(default=0.2," in moved and 'def describe() -> str:' in moved
    # ... and so did the new version's own change to it
    assert "A Ratchet tuner strategy plugin. The module is the plugin" in moved and "in a single module" not in moved
    assert "<<<<<<<" not in moved
    compile(moved, "__init__.py", "exec")
    readme = (dest / "README.md").read_text()
    assert "Our own notes." in readme and "`src/ratchet_bandits_foo/__init__.py`" in readme
    pyproject = (dest / "pyproject.toml").read_text()
    assert "[tool.setuptools.packages.find]" in pyproject and "py-modules" not in pyproject
    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert answers["_commit"] == tag and answers["name"] == "bandits-foo"
    status = git(dest, "status", "--porcelain").splitlines()
    assert " D src/ratchet_bandits_foo.py" in status  # left for the user to review and commit


def test_update_without_a_version_change_is_a_no_op(library, tmp_path, monkeypatch):
    """A project rendered from the shipped version updates to itself: nothing to migrate, no trust needed."""
    monkeypatch.setenv("RATCHET_CACHE_DIR", str(tmp_path / "cache"))
    dest = tmp_path / "pkg"
    tl.render(library["strategy-plugin"], dest, {"name": "bandits-foo"})
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "rendered")
    copier.run_update(dest, defaults=True, overwrite=True, quiet=True)
    assert git(dest, "status", "--porcelain") == ""
