"""State documents as data: their canonical bytes, Ratchet's bookkeeping inside them, and the leaf-level
changes between two of them. Pure functions; the State Manager (:mod:`ratchet.core.state`) keeps the
documents and :mod:`ratchet.core.lineage` versions them."""

from __future__ import annotations

import copy
import json
from typing import Any

ACTIVE_PATH = "state/active.state.json"
# Ratchet's own bookkeeping inside a state document (e.g. the last feedback event applied). It is not
# part of the workspace's schema: validation ignores it and runner tools never see it.
RESERVED_KEY = "ratchet"


def applied_seq(document: dict[str, Any]) -> int:
    """The sequence number of the last feedback event folded into ``document``."""
    return int((document.get(RESERVED_KEY) or {}).get("applied_seq", 0))


def dumps(document: dict[str, Any]) -> bytes:
    """The canonical bytes of a state document (stable, so equal states give equal files and commits)."""
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# --- leaf-level changes between documents (an Architect job's change, re-applied on another state) ---


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def state_changes(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """The leaf changes that turn ``before`` into ``after``: ``(pointer, value)``, with ``REMOVED`` as the
    value of a deleted key. Objects are compared key by key; anything else is replaced whole."""
    out: list[tuple[str, Any]] = []
    for key in sorted(before.keys() | after.keys()):
        pointer = f"{prefix}/{_escape(key)}"
        if key not in after:
            out.append((pointer, REMOVED))
        elif key not in before:
            out.append((pointer, after[key]))
        elif isinstance(before[key], dict) and isinstance(after[key], dict):
            out += state_changes(before[key], after[key], pointer)
        elif before[key] != after[key]:
            out.append((pointer, after[key]))
    return out


def apply_changes(document: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
    """``document`` with ``changes`` (from :func:`state_changes`) applied; missing parents are created."""
    out = copy.deepcopy(document)
    for pointer, value in changes:
        keys = [k.replace("~1", "/").replace("~0", "~") for k in pointer.split("/")[1:]]
        node = out
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        if value is REMOVED:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = copy.deepcopy(value)
    return out


class _Removed:  # the value of a deleted key in a change list
    def __repr__(self) -> str:
        return "REMOVED"


REMOVED = _Removed()
