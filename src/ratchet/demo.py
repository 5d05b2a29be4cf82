"""``ratchet demo``: the main job on the embedded default, no services or keys needed.

Until the servers land this shows the foundation end to end: make a workspace from the default
scaffold, change staging, promote it (a patch version), roll back (another patch version), and print
the versions and the active state.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click


def run_demo(out: Path | None) -> Path:
    from ratchet.cli import print_table
    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins
    from ratchet.core.workspace import Workspace

    root = Path(out) if out else Path(tempfile.mkdtemp(prefix="ratchet-demo-")) / "support-desk"
    v0 = create_workspace(root, plugins=load_plugins(), author="demo")
    click.echo(f"1. Made workspace {root} -> {v0.name}")
    ws = Workspace.open(root)

    def concise(doc: dict) -> dict:
        return {**doc, "params": {**doc["params"], "style": "concise"}}

    staged = ws.state.update("staging", concise)
    click.echo(f"2. Set staging style=concise (staging revision {staged.revision})")
    v1 = ws.state.promote(reason="demo: users prefer concise replies", author="demo", kind="manual")
    click.echo(f"3. Promoted staging -> {v1.name}")
    v2 = ws.state.rollback(v0.name, reason="demo: roll back to the initial state", author="demo")
    click.echo(f"4. Rolled back to {v0.name} -> {v2.name}")
    print_table(["version", "kind", "bump", "reason"],
                [[v.name, v.kind, v.metadata.get("bump"), v.metadata.get("reason")] for v in ws.versions.list()],
                title=f"versions of {ws.name}")
    active = ws.state.read("active")
    click.echo(f"Active state (revision {active.revision}):")
    click.echo(json.dumps(active.document["params"], indent=2, sort_keys=True))
    return root
