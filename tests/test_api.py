"""The public plugin API: ``from ratchet import ...`` is the one place plugins, templates and scaffolds
import from; every public object has exactly one public location (copier-uv's ``test_api``)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ratchet
from helpers import ratchet_imports
from ratchet.core import templates as tl

SRC = Path(ratchet.__file__).parent
PUBLIC = [n for n in ratchet.__all__ if n != "__version__"]

# Every template rendered with its defaults, plus the answers that pick other imports.
RENDERS = [(name, {}) for name in ["workspace", "test-tier", "support-desk", "llm-chat", "tool-router", "cmaes",
                                   "optuna", "preference", "rules", "drift-bandit"]] + [
    ("strategy-plugin", {"name": "bandits-foo"}),
    ("runner-plugin", {"name": "faq-search"}),
    ("drift-bandit", {"forgetting": "window"}),
    *[("bandit", {"policy": p}) for p in ["thompson", "gaussian_thompson", "kl_ucb", "ucb1", "exp3", "lin_ucb",
                                          "lin_thompson"]],
]


def internal_modules():
    """Every importable module of the package (templates and scaffolds are data, not modules)."""
    for info in pkgutil.walk_packages([str(SRC)], "ratchet."):
        if not info.name.endswith("__main__"):  # it runs the CLI
            yield importlib.import_module(info.name)


def test_public_names_resolve_to_ratchet_objects():
    for name in PUBLIC:
        obj = getattr(ratchet, name)
        if isinstance(obj, type) or callable(obj) and hasattr(obj, "__code__"):
            assert obj.__module__.startswith("ratchet."), f"ratchet.{name} is {obj!r}, not Ratchet's"
    assert ratchet.hookimpl.project_name == "ratchet"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ratchet.nope  # noqa: B018


def test_each_public_object_has_one_public_location():
    """Only ``ratchet`` lists the API in ``__all__``, once per object: no package re-exports it
    (``ratchet.versions`` once listed ``create_app``), and no object has two public names."""
    names_of: dict[int, list[str]] = {}
    for name in PUBLIC:
        names_of.setdefault(id(getattr(ratchet, name)), []).append(name)
    assert not [n for n in names_of.values() if len(n) > 1], "two public names for one object"
    exported_elsewhere = {m.__name__: m.__all__ for m in internal_modules() if hasattr(m, "__all__")}
    assert exported_elsewhere == {}, "only `ratchet` has an __all__: internal modules may move between releases"


def test_the_api_is_imported_lazily():
    """``import ratchet`` (every plugin does, and ``ratchet --help``) imports none of the API's modules."""
    code = ("import sys, ratchet; print(sorted(m for m in sys.modules if m.startswith('ratchet.'))); "
            "ratchet.Strategy; print('ratchet.core.strategy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "True"]


def test_first_party_plugins_import_only_the_public_api():
    """The first-party plugins are written as a third party's would be: ``from ratchet import ...``, or
    a public name of another first-party plugin module."""
    wrong = []
    for path in sorted((SRC / "plugins").rglob("*.py")):
        for module, names, line in ratchet_imports(path):
            ok = (module == "ratchet" and set(names) <= set(ratchet.__all__)) or (
                module.startswith("ratchet.plugins.") and not any(n.startswith("_") for n in names))
            if not ok:
                wrong.append(f"{path.relative_to(SRC)}:{line}: from {module} import {', '.join(names)}")
    assert wrong == []


@pytest.mark.parametrize("name, data", RENDERS, ids=[f"{n}-{'-'.join(map(str, d.values())) or 'defaults'}"
                                                      for n, d in RENDERS])
def test_rendered_templates_import_only_the_public_api(library, tmp_path, name, data):
    files = tl.render(tl.get(library, name), tmp_path / "out", data)
    seen = []
    for f in files:
        if f.endswith(".py"):
            for module, names, line in ratchet_imports(tmp_path / "out" / f, type_checking=True):
                seen += names
                assert module == "ratchet", f"{f}:{line}: imports {module}; use `from ratchet import ...`"
                assert set(names) <= set(ratchet.__all__), f"{f}:{line}: {set(names) - set(ratchet.__all__)}"
    assert seen, f"{name} renders no module that imports ratchet: is this test looking at its files?"
