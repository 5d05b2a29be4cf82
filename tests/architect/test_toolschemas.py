"""Tool-schema diffs: which changes break clients (the Architect bumps major on them)."""

import pytest

from ratchet.architect.toolschemas import schema_diff
from ratchet.versions.catalog import json_diff


def tools(**props_by_tool):
    """``{"runner": {tool: {input_schema}}}`` from ``tool=(properties, required)``."""
    return {"runner": {name: {"description": "", "output_schema": None,
                              "input_schema": {"type": "object", "properties": props, "required": req}}
                       for name, (props, req) in props_by_tool.items()}}


BASE = tools(answer=({"q": {"type": "string"}, "n": {"type": "number"}}, ["q"]))


def test_schema_diff_identical_is_empty():
    diff = schema_diff(BASE, BASE)
    assert diff["breaking"] is False
    assert diff["servers"]["runner"] == {"added": [], "removed": [], "changed": {}, "breaking": False}


def test_schema_diff_added_tool_and_optional_argument_are_not_breaking():
    new = tools(answer=({"q": {"type": "string"}, "n": {"type": "number"}, "lang": {"type": "string"}}, ["q"]),
                search=({}, []))
    diff = schema_diff(BASE, new)
    assert diff["breaking"] is False and diff["servers"]["runner"]["added"] == ["search"]
    assert diff["servers"]["runner"]["changed"]["answer"]["arguments_added"] == ["lang"]


def test_schema_diff_removed_tool_is_breaking():
    diff = schema_diff(BASE, tools())
    assert diff["breaking"] is True and diff["servers"]["runner"]["removed"] == ["answer"]


def test_schema_diff_new_required_argument_is_breaking():
    diff = schema_diff(BASE, tools(answer=({"q": {"type": "string"}, "n": {"type": "number"}}, ["q", "n"])))
    change = diff["servers"]["runner"]["changed"]["answer"]
    assert diff["breaking"] is True and change["required_added"] == ["n"] and change["arguments_added"] == []


@pytest.mark.parametrize("old, new", [
    ({"type": "number"}, {"type": "integer"}),
    ({"type": ["string", "null"]}, {"type": "string"}),
    ({"anyOf": [{"type": "string"}, {"type": "null"}]}, {"type": "string"}),
    ({"type": "string", "enum": ["a", "b"]}, {"type": "string", "enum": ["a"]}),
    ({"type": "string"}, {"type": "string", "enum": ["a"]}),
    ({}, {"type": "string"}),
])
def test_schema_diff_narrowed_type_is_breaking(old, new):
    diff = schema_diff(tools(t=({"x": old}, [])), tools(t=({"x": new}, [])))
    (narrowed,) = diff["servers"]["runner"]["changed"]["t"]["narrowed"]
    assert narrowed["argument"] == "x" and diff["breaking"] is True


@pytest.mark.parametrize("old, new", [
    ({"type": "integer"}, {"type": "number"}),
    ({"type": "string"}, {"type": ["string", "null"]}),
    ({"enum": ["a"]}, {"enum": ["a", "b"]}),
])
def test_schema_diff_widened_type_is_not_breaking(old, new):
    assert schema_diff(tools(t=({"x": old}, [])), tools(t=({"x": new}, [])))["breaking"] is False


def test_json_diff_paths_are_json_pointers():
    old = {"params": {"style": "a", "k/v": 1}, "arms": [1, 2], "gone": True}
    new = {"params": {"style": "b", "k/v": 1}, "arms": [1, 2, 3], "new": None}
    assert json_diff(old, new) == [
        {"path": "/arms/2", "op": "add", "old": None, "new": 3},
        {"path": "/gone", "op": "remove", "old": True, "new": None},
        {"path": "/new", "op": "add", "old": None, "new": None},
        {"path": "/params/style", "op": "replace", "old": "a", "new": "b"},
    ]


def test_tool_schemas_come_from_the_commit_in_another_process(ws):
    import sys

    from helpers import git
    from ratchet.architect.toolschemas import tool_schemas_at
    from ratchet.core.errors import RatchetError

    head = git(ws.root, "rev-parse", "HEAD").strip()
    schemas = tool_schemas_at(ws, head)
    assert "answer" in schemas["runner"] and "reward" in schemas["tuner"]
    assert not any(str(ws.root) in (getattr(m, "__file__", None) or "") for m in list(sys.modules.values()))

    plugin = ws.root / "plugins" / "support_desk.py"
    plugin.write_text(plugin.read_text() + "\nraise RuntimeError('broken on purpose')\n")
    git(ws.root, "commit", "-qam", "break the runner")
    with pytest.raises(RatchetError, match="broken on purpose") as err:
        tool_schemas_at(ws, git(ws.root, "rev-parse", "HEAD").strip())
    assert err.value.field == "version"
