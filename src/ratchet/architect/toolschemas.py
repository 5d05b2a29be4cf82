"""The runner's and tuner's MCP tool schemas at a version, and what changed between two versions.

Schemas come from the code *at that version*: the commit is extracted with ``git archive`` into a
temporary folder, opened as a workspace in a fresh process (``python -m ratchet.architect.toolschemas DIR``),
and its ``build_server(...)`` tool lists are read through an in-memory MCP client, so they are exactly
what clients of that version saw, and that code never runs in the server that asked. The result is cached in
the object store under ``tools/{commit}.json`` (a commit's files never change; the framework version
is recorded so that an upgrade of the first-party plugins recomputes it).

``schema_diff`` says which changes break clients: a removed tool, a new required argument, or a
narrowed argument type (number -> integer, fewer types, a smaller enum).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratchet import __version__
from ratchet.core.errors import GitError, RatchetError
from ratchet.core.workspace import STORE_URL_ENV

if TYPE_CHECKING:
    from ratchet.core.versions import Version
    from ratchet.core.workspace import Workspace

SERVERS = ("runner", "tuner")
BUILD_TIMEOUT_SECONDS = 120
_build_lock = threading.Lock()  # one extraction at a time: each costs a plugin load and an index build


def cache_key(commit: str) -> str:
    return f"tools/{commit}.json"


def tool_schemas(workspace: Workspace, version: Version | str) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"runner": {name: {description, input_schema, output_schema}}, "tuner": {...}}`` at ``version``.

    Synchronous (it runs its own event loop): from async code, call it in a worker thread.
    """
    if isinstance(version, str):
        version = workspace.versions.get(version)
    return tool_schemas_at(workspace, version.commit)


def tool_schemas_at(workspace: Workspace, commit: str) -> dict[str, dict[str, dict[str, Any]]]:
    """As :func:`tool_schemas`, for any commit of the repository (e.g. an Architect job's branch)."""
    key = cache_key(commit)
    cached = workspace.objects.get_json(key)
    if cached and cached.get("framework") == __version__:
        return cached["servers"]
    with _build_lock:
        cached = workspace.objects.get_json(key)
        if cached and cached.get("framework") == __version__:
            return cached["servers"]
        servers = _build(workspace, commit)
        workspace.objects.put_json(key, {"commit": commit, "framework": __version__, "servers": servers})
    return servers


def _build(workspace: Workspace, commit: str) -> dict[str, dict[str, dict[str, Any]]]:
    tmp = Path(tempfile.mkdtemp(prefix="ratchet-tools-"))
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=workspace.root, capture_output=True)
        if archive.returncode != 0:
            raise GitError(f"git archive {commit} failed: {archive.stderr.decode(errors='replace').strip()}",
                           field="version")
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
        # In a fresh process: the commit's plugin code (perhaps an Architect job's, perhaps years old)
        # never runs, nor lingers in sys.modules, in the server that asked.
        # The copy gets a store of its own, so nothing it does reaches the workspace's.
        env = {**os.environ, STORE_URL_ENV: f"sqlite:///{tmp}/.ratchet/tools.db"}
        proc = subprocess.run([sys.executable, "-m", "ratchet.architect.toolschemas", str(tmp)], capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT_SECONDS, env=env)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
            raise RatchetError(f"the tools of {commit[:12]} could not be listed:\n{tail}", field="version",
                               fix="the code at that commit fails to load; see the error above")
        return json.loads(proc.stdout)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


async def _list_tools(root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    from mcp import Client

    from ratchet.core.workspace import Workspace
    from ratchet.runner.server import build_server as runner_server
    from ratchet.runner.service import Runner
    from ratchet.tuner.server import build_server as tuner_server
    from ratchet.tuner.service import Tuner

    copy = Workspace.open(root, search_parents=False)
    try:
        document = json.loads((root / "state" / "active.state.json").read_text())
    except (FileNotFoundError, ValueError):
        document = {}
    # A fixed document keeps the runner off git and the store: the copy is a plain folder.
    servers = {"runner": runner_server(Runner(copy, record=False, document=document)),
               "tuner": tuner_server(Tuner(copy), worker="none")}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, server in servers.items():
        async with Client(server) as client:
            tools = (await client.list_tools()).tools
        out[name] = {t.name: {"description": t.description or "", "input_schema": t.input_schema,
                              "output_schema": t.output_schema} for t in sorted(tools, key=lambda t: t.name)}
    return out


# --- diff -------------------------------------------------------------------------------------------


def schema_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Per server: tools added/removed and, per changed tool, arguments added (required or not),
    removed and narrowed; ``breaking`` when a tool is removed, an argument becomes required or narrows."""
    servers = {}
    for server in sorted(set(SERVERS) | set(old) | set(new)):
        before, after = old.get(server) or {}, new.get(server) or {}
        changed = {}
        for tool in sorted(before.keys() & after.keys()):
            change = _tool_diff(before[tool].get("input_schema") or {}, after[tool].get("input_schema") or {})
            if any(change[k] for k in ("required_added", "arguments_added", "arguments_removed", "narrowed")):
                changed[tool] = change
        removed = sorted(before.keys() - after.keys())
        servers[server] = {"added": sorted(after.keys() - before.keys()), "removed": removed, "changed": changed,
                           "breaking": bool(removed) or any(c["breaking"] for c in changed.values())}
    return {"servers": servers, "breaking": any(s["breaking"] for s in servers.values())}


def _tool_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    old_props, new_props = old.get("properties") or {}, new.get("properties") or {}
    old_req, new_req = set(old.get("required") or []), set(new.get("required") or [])
    narrowed = []
    for arg in sorted(old_props.keys() & new_props.keys()):
        why = _narrowing(_resolve(old, old_props[arg]), _resolve(new, new_props[arg]))
        if why:
            narrowed.append({"argument": arg, "change": why})
    required_added = sorted(new_req - old_req)
    return {"required_added": required_added,
            "arguments_added": sorted(new_props.keys() - old_props.keys()),
            "arguments_removed": sorted(old_props.keys() - new_props.keys()),
            "narrowed": narrowed, "breaking": bool(required_added or narrowed)}


def _resolve(root: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``#/$defs/...`` reference (pydantic puts nested models there)."""
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return target if isinstance(target, dict) else {}
    return schema if isinstance(schema, dict) else {}


def _types(schema: dict[str, Any]) -> set[str] | None:
    """The JSON types a schema allows; None for any. ``anyOf``/``oneOf`` of typed branches are unioned."""
    if "type" in schema:
        t = schema["type"]
        return set(t) if isinstance(t, list) else {t}
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        found: set[str] = set()
        for branch in branches:
            sub = _types(branch) if isinstance(branch, dict) else None
            if sub is None:
                return None
            found |= sub
        return found
    return None


def _enum(schema: dict[str, Any]) -> list | None:
    if "const" in schema:
        return [schema["const"]]
    return schema.get("enum")


def _narrowing(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why ``new`` accepts fewer values than ``old`` (types or enum), or None."""
    before, after = _types(old), _types(new)
    if after is not None:
        widened = after | ({"integer"} if "number" in after else set())  # a number covers integers
        lost = (before or {"any"}) - widened
        if lost:
            return f"type {_fmt(before)} -> {_fmt(after)}"
    old_enum, new_enum = _enum(old), _enum(new)
    if new_enum is not None:
        dropped = [v for v in old_enum if v not in new_enum] if old_enum is not None else None
        if old_enum is None or dropped:
            return (f"enum {json.dumps(old_enum)} -> {json.dumps(new_enum)}" if old_enum is not None
                    else f"restricted to enum {json.dumps(new_enum)}")
    return None


def _fmt(types: set[str] | None) -> str:
    return "any" if types is None else "|".join(sorted(types))


def main() -> None:
    """``python -m ratchet.architect.toolschemas DIR``: print the tool schemas of the workspace in DIR as JSON."""
    import anyio

    try:
        print(json.dumps(anyio.run(_list_tools, Path(sys.argv[1]))))
    except RatchetError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
