"""The layout shows the architecture: ``core/`` is what every component shares and imports no component;
the components depend on each other one way; nothing in ``core/`` imports in a circle."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import ratchet
from helpers import ratchet_imports

SRC = Path(ratchet.__file__).parent
COMPONENTS = ["runner", "tuner", "architect", "versions", "tiers", "ops"]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The Ratchet modules a module imports when it runs (``import a.b`` and ``from a import b`` alike
    name the module itself; names from a module name that module)."""
    found = set()
    for module, names, _ in ratchet_imports(path, type_checking=False):
        for name in names or [""]:
            candidate = f"{module}.{name}"
            found.add(candidate if (SRC.parent / candidate.replace(".", "/")).with_suffix(".py").exists() else module)
    return found


def graph(folder: Path) -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(folder.rglob("*.py"))}


def test_core_imports_no_component():
    """Only the package root (``__version__``) is allowed besides ``ratchet.core``; a component's logic
    lives in its own package beside its adapter."""
    up = {m: sorted(i for i in deps if not i.startswith("ratchet.core") and i != "ratchet")
          for m, deps in graph(SRC / "core").items()}
    assert {m: deps for m, deps in up.items() if deps} == {}


def test_core_has_no_import_cycle():
    """Every runtime import inside ``core/``, lazy ones included, points one way (``TYPE_CHECKING``
    imports name types for annotations and run nothing)."""
    core = {m: {d for d in deps if d.startswith("ratchet.core")} for m, deps in graph(SRC / "core").items()}
    try:
        order = list(TopologicalSorter(core).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle in ratchet.core: {' -> '.join(exc.args[1])}") from None
    assert order.index("ratchet.core.errors") < order.index("ratchet.core.workspace")


def test_components_depend_on_each_other_one_way():
    """E.g. the tuner runs its micro tier through the runner, the Versions API diffs tool schemas with
    the Architect's code; no component imports back a component that imports it."""
    packages: dict[str, set[str]] = {c: set() for c in COMPONENTS}
    for component in COMPONENTS:
        for deps in graph(SRC / component).values():
            packages[component] |= {d.split(".")[1] for d in deps if d.count(".")} & (set(COMPONENTS) - {component})
    try:
        list(TopologicalSorter(packages).static_order())
    except CycleError as exc:
        raise AssertionError(f"components import each other in a circle: {' -> '.join(exc.args[1])}") from None
    assert "runner" in packages["tuner"]  # the check sees real edges
