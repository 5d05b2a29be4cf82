"""Architect plans: what a planner decided, as actions that are applied to a folder (a job's worktree).

An action is one of:

* ``set_state``: set a JSON pointer in ``state/active.state.json`` (validated against the schema);
* ``render_template``: render a template of the library into the workspace (never overwriting a file);
* ``write_file`` / ``replace_text``: write a whole file, or replace one exact occurrence of a text;
* ``edit_config``: set or append keys of ``ratchet.toml`` (comments kept; the result is validated);
* ``add_test``: append a case to ``tests/<tier>/architect.yaml`` (validated like every case).

Every action is checked before anything is written, so a bad action fails with the field at fault and
leaves the folder as it was. The bump of the version a plan makes follows from what it changed, not from
what the planner says: see :func:`bump_for`.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic_core import PydanticCustomError

from ratchet.core.documents import ACTIVE_PATH, dumps
from ratchet.core.errors import TooLargeError, UserError

if TYPE_CHECKING:
    from ratchet.core.templates import Template
    from ratchet.core.workspace import Workspace

TIERS = ("micro", "fast", "full")
TEST_FILE = "architect.yaml"

MAX_PATH = 1024  # characters in a workspace path; a part may have 255 bytes (the file systems' limit)
# A path in the workspace, as the API's schema states it (so that a request the schema accepts is not
# refused for its path): "/"-separated parts of 1 to 255 characters, none of them "." or "..", no NUL.
# The same pattern in JSON Schema (ECMA-262), Python and Rust regexes.
_PART = r"(?:[^/.\x00][^/\x00]{0,254}|\.[^/.\x00][^/\x00]{0,253}|\.\.[^/\x00]{1,253})"
PATH_PATTERN = rf"^{_PART}(?:/{_PART})*$"
OWN_DATA_PATTERN = r"^\.(git|ratchet)(/|$)"  # git's files, runtime data and the tags' source of truth
PATH_SCHEMA = {"pattern": PATH_PATTERN, "maxLength": MAX_PATH, "not": {"pattern": OWN_DATA_PATTERN}}


def path_problem(rel: str) -> tuple[str, str] | None:
    """What is wrong with ``rel`` as a workspace path, and the fix; None if nothing is."""
    if "\x00" in rel:
        return f"path {rel!r} contains a NUL character", "give a path without NUL"
    if len(rel) > MAX_PATH or any(len(part) > 255 for part in rel.split("/")):
        return (f"path {rel[:60]!r}... is too long",
                f"give a path of at most {MAX_PATH} characters, each part at most 255")
    if rel.startswith("/") or ".." in rel.split("/"):
        return f"path {rel!r} leaves the workspace", "give a path relative to the root"
    if not re.fullmatch(PATH_PATTERN, rel):
        return f"path {rel!r} has an empty or '.' part", "write it like notes/why.md"
    if re.match(OWN_DATA_PATTERN, rel):
        return f"path {rel!r} is Ratchet's or git's own data", "write anywhere but .git and .ratchet"
    return None


def check_path(rel: str) -> str:
    problem = path_problem(rel)
    if problem:
        raise PydanticCustomError("workspace_path", "{problem}; {fix}", {"problem": problem[0], "fix": problem[1]})
    return rel


WorkspacePath = Annotated[str, AfterValidator(check_path),
                          Field(description="a path relative to the workspace root, e.g. notes/why.md",
                                json_schema_extra=PATH_SCHEMA)]


def _kind_required(schema: dict[str, Any]) -> None:
    # ``kind`` has a default so that ``SetState(pointer=..., value=...)`` reads well in Python, but on
    # the wire it is the discriminator and must be sent.
    schema["required"] = ["kind", *[r for r in schema.get("required", []) if r != "kind"]]


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_kind_required)


class SetState(_Action):
    """Set one value of the active state, by JSON pointer (RFC 6901), e.g. ``/params/max_sentences``."""

    kind: Literal["set_state"] = "set_state"
    pointer: str = Field(pattern=r"^(/[^/]*)+$", description="JSON pointer into the state, e.g. /params/top_k")
    value: Any = Field(description="the new value (any JSON)")


class RenderTemplate(_Action):
    """Render a template of the library into the workspace."""

    kind: Literal["render_template"] = "render_template"
    template: str = Field(min_length=1, description="template name, as `ratchet templates list` shows it")
    data: dict[str, Any] = Field(default_factory=dict, description="answers to the template's questions")


class WriteFile(_Action):
    """Write a whole file (created or replaced)."""

    kind: Literal["write_file"] = "write_file"
    path: WorkspacePath
    content: str


class ReplaceText(_Action):
    """Replace the one occurrence of ``old`` in a file with ``new``."""

    kind: Literal["replace_text"] = "replace_text"
    path: WorkspacePath
    old: str = Field(min_length=1, description="text that occurs exactly once in the file")
    new: str


# A dotted key of ratchet.toml: names, each but the last may select a table by one of its values.
_NAME = r"[A-Za-z0-9_-]+"
CONFIG_KEY_PATTERN = rf"^({_NAME}(\[{_NAME}=[^\].]+\])?\.)*{_NAME}$"
_ConfigKey = Annotated[str, Field(pattern=CONFIG_KEY_PATTERN)]
_ONLY_KEYS = {"additionalProperties": False}  # pydantic states the keys' pattern as patternProperties


class EditConfig(_Action):
    """Edit ``ratchet.toml``. Keys are dotted; ``tuner.strategies[key=style].strategy`` selects a table
    of an array of tables by one of its values."""

    kind: Literal["edit_config"] = "edit_config"
    set: dict[_ConfigKey, Any] = Field(default_factory=dict, description="dotted key -> new value",
                                       json_schema_extra=_ONLY_KEYS)
    append: dict[_ConfigKey, Any] = Field(default_factory=dict, description="dotted key of a list -> item to add",
                                          json_schema_extra=_ONLY_KEYS)


class AddTest(_Action):
    """Add a test case to a tier (``tests/<tier>/architect.yaml``)."""

    kind: Literal["add_test"] = "add_test"
    tier: Literal["micro", "fast", "full"]
    case: dict[str, Any] = Field(description="a case: id, tool, args, expect (as in tests/<tier>/*.yaml)")


Action = Annotated[SetState | RenderTemplate | WriteFile | ReplaceText | EditConfig | AddTest,
                   Field(discriminator="kind")]
ACTION_KINDS = ("set_state", "render_template", "write_file", "replace_text", "edit_config", "add_test")
_action_adapter: TypeAdapter = TypeAdapter(Action)


class Plan(BaseModel):
    """What a planner decided: a one-line summary, why, and the actions."""

    model_config = ConfigDict(extra="forbid")
    summary: str = Field(min_length=1)
    rationale: str = ""
    actions: list[Action] = Field(default_factory=list)
    rule: str | None = Field(default=None, description="the playbook rule that produced it, if any")


def parse_action(data: dict[str, Any]) -> Action:
    """An action from JSON; raises a ``UserError`` naming the field."""
    from pydantic import ValidationError

    try:
        return _action_adapter.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "kind"
        raise UserError(f"invalid action: {loc}: {err['msg']}", field=f"action.{loc}",
                        fix=f"an action has kind one of {', '.join(ACTION_KINDS)} and that kind's fields") from None


def describe(action: Action) -> str:
    """The action in a few words, for the job's log: its kind and what it aims at (never whole contents)."""
    if isinstance(action, SetState):
        return f"set_state {action.pointer}"
    if isinstance(action, RenderTemplate):
        return f"render_template {action.template}"
    if isinstance(action, WriteFile):
        return f"write_file ({len(action.content.encode('utf-8')):,} bytes)"
    if isinstance(action, EditConfig):
        return f"edit_config {', '.join([*action.set, *action.append])}"
    if isinstance(action, AddTest):
        return f"add_test {action.tier} {action.case.get('id')}"
    return action.kind


# --- applying ---------------------------------------------------------------------------------------


def inside_workspace(root: Path, rel: str, field: str) -> Path:
    """``root / rel``, refusing what :func:`path_problem` refuses, and a part over the file systems'
    255 bytes (which the schema, counting characters, cannot state)."""
    problem = path_problem(rel)
    if problem is None and any(len(part.encode()) > 255 for part in rel.split("/")):
        problem = f"path {rel[:60]!r}... has a part over 255 bytes", "shorten it: file systems take 255 bytes a name"
    if problem:
        raise UserError(problem[0], field=field, fix=problem[1])
    return root / Path(*rel.split("/"))


def check_file_size(data: str, limit: int | None, field: str, what: str) -> None:
    """Refuse ``data`` (a file's new content) over ``limit`` bytes, encoded, naming ``field``."""
    size = len(data.encode("utf-8"))
    if limit is not None and size > limit:
        raise TooLargeError(f"{what} would be {size:,} bytes, over the limit of {limit:,} bytes; nothing was written",
                            field=field, fix="write a smaller file (split it), or raise [limits] file_bytes in "
                            "the Architect's ratchet.toml")


def apply_action(workspace: Workspace, action: Action, *, library: dict[str, Template] | None = None,
                 file_bytes: int | None = None) -> list[str]:
    """Apply ``action`` to ``workspace`` (a job's worktree); return the paths it wrote, relative.

    ``library`` is the template library to render from (default: what the workspace's plugins register);
    ``file_bytes`` the largest file ``write_file`` and ``replace_text`` may leave (default: no limit).
    """
    root = workspace.root
    if isinstance(action, SetState):
        path = root / ACTIVE_PATH
        document = set_pointer(json.loads(path.read_text(encoding="utf-8")), action.pointer, action.value)
        workspace.state.validate(document, f"state after setting {action.pointer}")
        path.write_bytes(dumps(document))
        return [ACTIVE_PATH]
    if isinstance(action, RenderTemplate):
        from ratchet.core import templates

        template = templates.get(library if library is not None else templates.discover(workspace.plugins),
                                 action.template)
        known = {q.name for q in template.questions}
        unknown = sorted(set(action.data) - known)
        if unknown:
            raise UserError(f"template {template.name!r} has no question {unknown[0]!r}", field=f"data.{unknown[0]}",
                            fix=f"use one of: {', '.join(sorted(known))}")
        return templates.render(template, root, action.data)
    if isinstance(action, WriteFile):
        path = inside_workspace(root, action.path, "path")
        if path.is_dir():
            raise UserError(f"path {action.path!r} is a folder", field="path", fix="give the path of a file")
        blocking = next((p for p in path.parents if p.is_file()), None)
        if blocking is not None:
            raise UserError(f"path {action.path!r}: {blocking.relative_to(root)} is a file, not a folder",
                            field="path", fix="give a path whose folders are folders")
        check_file_size(action.content, file_bytes, "content", action.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(action.content, encoding="utf-8")
        return [action.path]
    if isinstance(action, ReplaceText):
        path = inside_workspace(root, action.path, "path")
        if not path.is_file():
            raise UserError(f"{action.path} does not exist", field="path", fix="write_file creates a file")
        text = path.read_text(encoding="utf-8")
        count = text.count(action.old)
        if count != 1:
            raise UserError(f"the text to replace occurs {count} times in {action.path}", field="old",
                            fix="give a longer text that occurs exactly once")
        replaced = text.replace(action.old, action.new)
        check_file_size(replaced, file_bytes, "new", f"{action.path} after the replacement")
        path.write_text(replaced, encoding="utf-8")
        return [action.path]
    if isinstance(action, EditConfig):
        return [edit_config(root, action)]
    if isinstance(action, AddTest):
        return [add_test(workspace, action)]
    raise UserError(f"unknown action {action!r}", field="action.kind")  # pragma: no cover


def set_pointer(document: dict[str, Any], pointer: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with ``value`` at ``pointer`` (the parent must exist)."""
    out = copy.deepcopy(document)
    keys = [k.replace("~1", "/").replace("~0", "~") for k in pointer.split("/")[1:]]
    node: Any = out
    for i, key in enumerate(keys[:-1]):
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            at = "/" + "/".join(keys[: i + 1])
            raise UserError(f"state has no object at {at}", field="pointer", fix="point into an existing object")
    node[keys[-1]] = value
    return out


_SELECTOR = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)(\[(?P<key>[A-Za-z0-9_-]+)=(?P<value>[^\]]+)\])?$")


def config_key(dotted: str) -> list[re.Match[str]]:
    """The parts of a ratchet.toml key as ``edit_config`` takes it: dotted, where a part may choose one
    table of an array of tables by one of its values (``tuner.strategies[key=style].strategy``). Each part
    is a match with ``name`` and, for a chosen table, ``key`` and ``value``; a malformed part raises
    :class:`UserError` naming it."""
    parts = []
    for part in dotted.split("."):
        m = _SELECTOR.match(part)
        if not m:
            raise UserError(f"ratchet.toml key {dotted!r} is malformed at {part!r}", field="edit_config",
                            fix="write keys like tuner.promotion.every_events or tuner.strategies[key=style].strategy")
        parts.append(m)
    return parts


def config_value(config: dict[str, Any], dotted: str) -> Any:
    """The value of the key ``dotted`` (see :func:`config_key`) in a workspace's configuration as a dict
    (``Config.model_dump(mode="json")``), or None when it has no such key or no single table matches."""
    node: Any = config
    for m in config_key(dotted):
        node = node.get(m["name"]) if isinstance(node, dict) else None
        if m["key"]:
            found = [t for t in node or [] if isinstance(t, dict) and str(t.get(m["key"])) == m["value"]]
            node = found[0] if len(found) == 1 else None
        if node is None:
            return None
    return node


def _walk(doc, dotted: str, create: bool):
    """The container and last key that ``dotted`` names in a tomlkit document."""
    import tomlkit

    parts = dotted.split(".")
    node = doc
    for i, m in enumerate(config_key(dotted)):
        name = m["name"]
        last = i == len(parts) - 1
        if last and not m["key"]:
            return node, name
        if name not in node:
            if not create or m["key"]:
                raise UserError(f"ratchet.toml has no {'.'.join(parts[: i + 1])!r}", field="edit_config",
                                fix="name an existing table, or set the key on its own")
            node[name] = tomlkit.table()
        node = node[name]
        if m["key"]:
            match = [t for t in node if str(t.get(m["key"])) == m["value"]]
            if len(match) != 1:
                raise UserError(f"ratchet.toml: {len(match)} tables of {name} have {m['key']} = {m['value']!r}",
                                field="edit_config", fix="select exactly one table")
            node = match[0]
            if last:
                raise UserError(f"{dotted!r} names a table, not a key", field="edit_config",
                                fix="add .KEY to name a key of that table")
    raise UserError(f"empty key {dotted!r}", field="edit_config")  # pragma: no cover


def edit_config(root: Path, action: EditConfig) -> str:
    import tomlkit
    from pydantic import ValidationError

    from ratchet.core.errors import config_error
    from ratchet.core.workspace import CONFIG_NAME, Config

    path = root / CONFIG_NAME
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    for dotted, value in action.set.items():
        node, key = _walk(doc, dotted, create=True)
        node[key] = value
    for dotted, item in action.append.items():
        node, key = _walk(doc, dotted, create=True)
        current = node.get(key)
        if current is None:
            node[key] = [item]
        elif not isinstance(current, list):
            raise UserError(f"ratchet.toml {dotted!r} is not a list", field="edit_config", fix="use set instead")
        elif item not in current:
            current.append(item)
    try:
        Config.model_validate(json.loads(json.dumps(doc.unwrap())))
    except ValidationError as exc:
        raise config_error(exc, f"{CONFIG_NAME} after the edit", Config) from None
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return CONFIG_NAME


def add_test(workspace: Workspace, action: AddTest) -> str:
    from pydantic import ValidationError

    from ratchet.tiers.harness import Case, _case_error, expectations, load_cases

    rel = f"tests/{action.tier}/{TEST_FILE}"
    try:
        Case.model_validate(action.case, context={"kinds": expectations(workspace.plugins)})
    except ValidationError as exc:
        raise _case_error(exc, f"new {action.tier} case") from None
    existing = {c.id for c in load_cases(workspace, action.tier, workspace.plugins)} \
        if (workspace.root / "tests" / action.tier).is_dir() else set()
    if action.case["id"] in existing:
        raise UserError(f"tier {action.tier} already has a case {action.case['id']!r}", field="case.id",
                        fix="give the new case a unique id")
    path = workspace.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "" if path.exists() else "# Cases added by the Architect (each job's reason is in its version's metadata).\n"
    with path.open("a", encoding="utf-8") as f:
        f.write(header + yaml.safe_dump([action.case], sort_keys=False, allow_unicode=True))
    return rel


# --- bumps ------------------------------------------------------------------------------------------


def bump_for(changed: list[str], breaking: bool) -> str:
    """The bump a change earns: a breaking tool-schema change is major; anything beyond the active
    state (a plugin, a template's files, tests, config) is minor; the active state alone is a patch."""
    if breaking:
        return "major"
    if changed and all(p == ACTIVE_PATH for p in changed):
        return "patch"
    return "minor"
