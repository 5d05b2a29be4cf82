"""Helpers of the template tests: rendering, wiring a workspace, running its tiers, importing modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import commit_all

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "ratchet"
FIXTURES = ROOT / "tests" / "fixtures" / "templates"


def render(library, name: str, dest: Path, data: dict[str, Any] | None = None) -> list[str]:
    from ratchet.core import templates as tl

    return tl.render(tl.get(library, name), dest, data or {})


def wire(ws_path: Path, plugins: list[str] | None = None, strategies: list[dict[str, Any]] | None = None,
         add_strategies: list[dict[str, Any]] | None = None):
    """Edit ratchet.toml: add workspace plugin modules, replace or extend the [[tuner.strategies]]
    tables, commit the workspace (a tuner promotes only over committed config), and return it reopened."""
    import tomlkit

    from ratchet.core.workspace import Workspace

    path = ws_path / "ratchet.toml"
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    if plugins:
        doc["workspace"]["plugins"] = list(doc["workspace"]["plugins"]) + plugins
    if strategies is not None or add_strategies:
        tables = tomlkit.aot()
        kept = [] if strategies is not None else [dict(t) for t in doc["tuner"]["strategies"]]
        for entry in kept + (strategies or []) + (add_strategies or []):
            tables.append(tomlkit.item(entry))
        doc["tuner"]["strategies"] = tables
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    commit_all(ws_path, "wire the plugins")
    return Workspace.open(ws_path)


async def arun_tier(ws, tier: str):
    """Run a tier's cases against the workspace's runner over in-memory MCP, as `ratchet test` does,
    without the budgets' latency limits (no timing assertions)."""
    from ratchet.runner.server import build_server
    from ratchet.runner.service import Runner
    from ratchet.tiers.harness import load_cases
    from ratchet.tiers.harness import run_tier as run

    cases = load_cases(ws, tier, ws.plugins)
    target = build_server(Runner(ws, explore=False, record=False, allow_overrides=True))
    return await run(target, cases, tier=tier)


def run_tier(ws, tier: str):
    """``arun_tier`` for tests that are not async."""
    import anyio

    return anyio.run(arun_tier, ws, tier)


def load_module(path: Path):
    """A rendered workspace module, imported the way the workspace loads it."""
    from ratchet.core.plugins import import_path

    return import_path(path)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts
            and "__pycache__" not in p.parts}
