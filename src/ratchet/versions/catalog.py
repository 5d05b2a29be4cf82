"""The catalog of versions that the Versions API serves: listing, one version, diffs, what is served.

The parsed, sorted list of versions stays in memory and is rebuilt only when the tags change, which a
stat of ``packed-refs`` and ``refs/tags`` in the git common folder detects (as the runner's hot reload
does), so listing costs the same with 10 or 10,000 tags. Signatures are verified only for the versions
a page shows, and remembered per tag object (:mod:`ratchet.core.signing`).
"""

from __future__ import annotations

import bisect
import threading
from typing import TYPE_CHECKING, Any

from ratchet.core.documents import RESERVED_KEY
from ratchet.core.errors import NotFoundError
from ratchet.core.versions import Version, parse_version, precedence, tag_name
from ratchet.tiers.harness import summary_key

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

# ``kind=tuner`` means every version the State Manager made: tuner promotions, rollbacks, manual ones.
KIND_GROUPS = {"tuner": frozenset({"tuner", "rollback", "manual"}), "architect": frozenset({"architect"})}


def summary(v: Version, signature: str) -> dict[str, Any]:
    m = v.metadata
    return {"version": v.name, "commit": v.commit, "created": v.created, "kind": v.kind,
            "author": m.get("author"), "bump": m.get("bump"), "reason": m.get("reason"), "signature": signature,
            "metadata": m}


class Catalog:
    """Read-only views of one workspace's versions."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._lock = threading.Lock()
        # (change key, versions oldest first, their precedence keys): swapped as one reference
        self._snap: tuple[tuple | None, list[Version], list[tuple]] = (None, [], [])

    # --- the in-memory list ---

    def _change_key(self) -> tuple:
        common = self.workspace.versions._common_dir
        key = []
        for path in (common / "packed-refs", common / "refs" / "tags"):
            try:
                st = path.stat()
                key.append((st.st_ino, st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                key.append(None)
        return tuple(key)

    def _snapshot(self) -> tuple[tuple | None, list[Version], list[tuple]]:
        key = self._change_key()
        if key != self._snap[0]:
            with self._lock:
                if key != self._snap[0]:
                    listed = self.workspace.versions.list()
                    self._snap = (key, listed, [v.key for v in listed])
        return self._snap

    def versions(self) -> list[Version]:
        """Every version, oldest first (semver precedence)."""
        return self._snapshot()[1]

    # --- views ---

    def page(self, *, kind: str | None = None, since: str | None = None, order: str = "desc",
             limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """One page of versions. ``next_offset`` is None on the last page. An unknown kind matches nothing."""
        _, listed, keys = self._snapshot()
        if since is not None:
            listed = listed[bisect.bisect_right(keys, precedence(tag_name(parse_version(since)))):]
        if kind is not None:
            kinds = KIND_GROUPS.get(kind, frozenset({kind}))
            listed = [v for v in listed if v.kind in kinds]
        total = len(listed)
        if order == "desc":
            chosen = listed[max(total - offset - limit, 0):max(total - offset, 0)][::-1]
        else:
            chosen = listed[offset:offset + limit]
        return {"items": [self._summary(v) for v in chosen], "total": total, "limit": limit, "offset": offset,
                "next_offset": offset + limit if offset + limit < total else None}

    def detail(self, name: str, *, tools: bool = True) -> dict[str, Any]:
        """A version's metadata, its active state (read through the version's own tagged ratchet.toml and
        schema, without Ratchet's bookkeeping), tool schemas and evals. ``tools=False`` leaves the tool
        schemas out (None): reading them the first time runs the version's code in a fresh process."""
        from ratchet.architect.toolschemas import tool_schemas

        ws = self.workspace
        v = ws.versions.get(name)
        tools, tools_error = self._tools(v, tool_schemas) if tools else (None, None)
        evals = ws.objects.get_json(summary_key(v.commit))
        return {**self._summary(v), "state": self._state(v), "tools": tools, "tools_error": tools_error,
                "evals_exist": evals is not None, "ope": (evals or {}).get("ope") or {}}

    def evals(self, name: str) -> dict[str, Any]:
        v = self.workspace.versions.get(name)
        found = self.workspace.objects.get_json(summary_key(v.commit))
        if found is None:
            raise NotFoundError(f"version {v.name} has no eval summary", field="version",
                                fix=f"run `ratchet test` with {v.name} checked out, or promote through the tuner "
                                "(it records the micro tier)")
        return found

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """State changes (JSON-pointer paths) and tool-schema changes from ``a`` to ``b``."""
        from ratchet.architect.toolschemas import schema_diff, tool_schemas

        ws = self.workspace
        va, vb = ws.versions.get(a), ws.versions.get(b)
        (old, err_a), (new, err_b) = self._tools(va, tool_schemas), self._tools(vb, tool_schemas)
        tools = schema_diff(old, new) if old is not None and new is not None else None
        return {"from": va.name, "to": vb.name, "state": json_diff(self._state(va) or {}, self._state(vb) or {}),
                "tools": tools, "tools_error": err_a or err_b}

    def state_diff(self, a: str, b: str) -> list[dict[str, Any]]:
        """The state half of :meth:`diff` (fast: it reads two tagged files)."""
        va, vb = self.workspace.versions.get(a), self.workspace.versions.get(b)
        return json_diff(self._state(va) or {}, self._state(vb) or {})

    def active(self) -> dict[str, Any]:
        """What runners serve: the store's active state (and the version that holds it), or the pinned
        version's."""
        state = self.workspace.state
        active, pinned = state.read("active"), state.pinned()
        return {"version": active.version, "commit": active.commit, "state_revision": active.revision,
                "pinned": pinned, "served": pinned or active.version}

    # --- helpers ---

    def _summary(self, v: Version) -> dict[str, Any]:
        return summary(v, self.workspace.versions.signature(v))

    def _state(self, v: Version) -> dict[str, Any] | None:
        try:
            document = self.workspace.as_tagged(v.name).active_state()
        except NotFoundError:  # the version exists (checked) but has no state file
            return None
        return {k: val for k, val in document.items() if k != RESERVED_KEY}

    def _tools(self, v: Version, tool_schemas) -> tuple[dict[str, Any] | None, str | None]:
        try:
            return tool_schemas(self.workspace, v), None
        except Exception as exc:  # noqa: BLE001 -- a version whose code no longer loads still has metadata
            return None, f"{v.name}: {type(exc).__name__}: {exc}"


def json_diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """``[{"path": "/a/0/b", "op": "add"|"remove"|"replace", "old", "new"}]`` from ``old`` to ``new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(old.keys() | new.keys(), key=str):
            sub = f"{path}/{str(k).replace('~', '~0').replace('/', '~1')}"
            if k not in new:
                out.append({"path": sub, "op": "remove", "old": old[k], "new": None})
            elif k not in old:
                out.append({"path": sub, "op": "add", "old": None, "new": new[k]})
            else:
                out += json_diff(old[k], new[k], sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        out = []
        for i in range(max(len(old), len(new))):
            if i >= len(new):
                out.append({"path": f"{path}/{i}", "op": "remove", "old": old[i], "new": None})
            elif i >= len(old):
                out.append({"path": f"{path}/{i}", "op": "add", "old": None, "new": new[i]})
            else:
                out += json_diff(old[i], new[i], f"{path}/{i}")
        return out
    if old != new or type(old) is not type(new):
        return [{"path": path, "op": "replace", "old": old, "new": new}]
    return []
