"""``ratchet init``: render a workspace from a scaffold, make it a git repo and version it v0.1.0.

Everything happens in a temporary sibling folder that is renamed into place only when the workspace
is complete, so a refused template, answer or state leaves nothing behind.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ratchet.core.errors import UserError
from ratchet.core.plugins import Plugins
from ratchet.core.versions import Version

DEFAULT_TEMPLATE = "workspace"


NAME_QUESTION = "project_name"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,62}$")


def default_name(tpl, dest: Path, name: str | None, data: list[str], from_folder: bool) -> list[str]:
    """The scaffold's name answer: ``name`` if given, else (``from_folder``) the folder's name, lowercased,
    other characters as dashes, when that is a valid name; nothing when ``data`` answers it or the scaffold
    asks no name (then the scaffold's default holds)."""
    if not any(q.name == NAME_QUESTION for q in tpl.questions):
        if name is not None:
            raise UserError(f"template {tpl.name!r} asks no {NAME_QUESTION}", field="--name",
                            fix="leave --name out, or answer the template's own questions with --data")
        return []
    if any(pair.partition("=")[0] == NAME_QUESTION for pair in data):
        if name is not None:
            raise UserError(f"--name and --data {NAME_QUESTION}=... both name the workspace", field="--name",
                            fix="give one of them")
        return []
    if name is not None:
        return [f"{NAME_QUESTION}={name}"]  # checked by the scaffold's validator
    if not from_folder:
        return []
    slug = re.sub(r"[^a-z0-9-]+", "-", dest.name.lower()).strip("-")
    return [f"{NAME_QUESTION}={slug}"] if NAME_PATTERN.match(slug) else []


def create_workspace(dest: Path, *, template: str = DEFAULT_TEMPLATE, data: list[str] | None = None,
                     plugins: Plugins, author: str = "cli", name: str | None = None,
                     name_from_folder: bool = False) -> Version:
    """Make a workspace at ``dest`` from a scaffold (``workspace`` by default, with ``data`` answers
    ``key=value``), a git repo whose first version is v0.1.0; returns that version. The workspace's name
    is ``name``, else with ``name_from_folder`` the folder's (see :func:`default_name`)."""
    from ratchet.core import templates as tl
    from ratchet.core.documents import dumps
    from ratchet.core.workspace import CONFIG_NAME, Workspace

    dest = Path(dest).resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UserError(f"{dest} already exists and is not empty", field="DIR",
                        fix="choose a new folder, or empty this one")
    library = tl.discover(plugins)
    tpl = tl.get_workspace_scaffold(library, template)
    answers = tl.parse_data(tpl, [*default_name(tpl, dest, name, data or [], name_from_folder), *(data or [])])
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging_dir = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.init-"))
    work = staging_dir / dest.name
    try:
        tl.render(tpl, work, answers)
        if not (work / CONFIG_NAME).is_file():
            raise UserError(f"template {template!r} is not a workspace scaffold: it made no {CONFIG_NAME}",
                            field="--template", fix="use a workspace template, e.g. --template workspace")
        ws = Workspace.open(work, search_parents=False)
        state = ws.state
        active = state.path("active")
        document = _with_strategy_sections(ws, plugins, _load_json(active))
        state.validate(document, "the scaffold's active state")
        active.write_bytes(dumps(document))
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=work, check=True)
        version = ws.versions.make_version(
            "initial", paths=["."], reason=f"workspace from template {template}", kind="init", author=author,
            extra={"template": template, "template_version": tpl.version,
                   "plugin_distributions": plugins.distributions()})
        if dest.exists():
            dest.rmdir()
        work.rename(dest)
        Workspace.open(dest, search_parents=False).versioned(version)
        return version
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)


def _load_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def _with_strategy_sections(ws, plugins: Plugins, document: dict[str, Any]) -> dict[str, Any]:
    """Fill each configured strategy's initial section, so v0.1.0 holds the complete state."""
    entries = ws.config.tuner.strategies
    if not entries:
        return document
    from ratchet.core.documents import RESERVED_KEY
    from ratchet.core.strategy import build_strategies

    sections = dict(document.get("strategies") or {})
    for key, strategy in build_strategies(ws, plugins).items():
        sections.setdefault(key, strategy.initial_state())
    made_by = {e.key: e.strategy for e in entries}  # so a later switch of strategy is recognised
    return {**document, "strategies": sections, RESERVED_KEY: {"strategies": made_by}}
