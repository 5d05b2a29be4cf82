"""Small helpers shared by the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (``.git`` included) with its bytes: to assert that nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def with_style(style: str):
    """A state change for StateManager.update: set params.style."""
    return lambda doc: {**doc, "params": {**doc["params"], "style": style}}
