"""Generate the reference pages of the docs site from the code, at build time.

This is a mkdocs hook (``hooks:`` in ``mkdocs.yml``). ``on_config`` builds every generated page in
memory and expands the nav; ``on_files`` adds the pages to the build as generated files. Nothing is
written under ``docs/``, so generated pages are never committed and cannot go stale.

What is generated, and from what:

- ``configuration.md``: the pydantic models of ``ratchet.toml`` (``ratchet.core.workspace.Config``).
- ``library/``: an index of every discovered template, and a page per template from its README
  with the Questions table rebuilt from its ``copier.yml``.
- ``reference/hooks.md``: the hookspecs' signatures and docstrings (``ratchet.core.hookspecs``).
- ``reference/api.md``: the public plugin API, ``ratchet.__all__``, with each name's summary.
- ``reference/cli.md``: ``--help`` of every ``ratchet`` command.
- ``reference/rest/``: the OpenAPI of each REST app (Versions; Architect once it exists), rendered,
  plus the raw ``openapi.json``.
- ``reference/mcp.md``: the runner's and tuner's tools, resources and resource templates, listed
  through an in-memory MCP client from servers built for a freshly created default workspace.

To read the generated Markdown without building the site: ``python docs/_hooks/generate.py OUT_DIR``.
"""

from __future__ import annotations

import contextlib
import html
import importlib
import inspect
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.generate")

# REST apps documented when importable: (slug, title, module). A module that does not exist yet is
# skipped with a note in the build log; one that exists but fails to import fails the build.
REST_APPS = [
    ("versions", "Versions API", "ratchet.versions.app"),
    ("architect", "Architect API", "ratchet.architect.app"),
]

# Nav entries (in mkdocs.yml) that the hook expands into a section holding the generated pages.
TEMPLATES_INDEX = "library/index.md"
REST_INDEX = "reference/rest/index.md"

def footer(source: str) -> str:
    """The last line of every generated page: where it comes from (so that fixes go there)."""
    return f"\n---\n\n<small>Generated from {source} at every docs build.</small>\n"


# --- Markdown helpers ---------------------------------------------------------------------------------


def rst_inline(text: str) -> str:
    """reST inline markup used in our docstrings (````code````, ``:param:`` roles aside) as Markdown."""
    return re.sub(r"``(.+?)``", r"`\1`", text)


def cell(text: Any) -> str:
    """Text for a Markdown table cell: one line, pipes escaped, HTML outside code spans escaped."""
    if text is None:
        return ""
    parts = re.split(r"(`[^`]*`)", rst_inline(" ".join(str(text).split())))
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a code span: kept literal (the tables extension ignores pipes inside code spans)
            out.append(part)
        else:
            out.append(html.escape(part, quote=False).replace("|", "\\|"))
    return "".join(out)


def code(value: Any) -> str:
    """``value`` as an inline code span (JSON/TOML-ish literals)."""
    text = value if isinstance(value, str) else json.dumps(value)
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return ""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r if r else " " for r in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fenced(text: str, lang: str = "") -> str:
    fence = "````" if "```" in text else "```"
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}\n"


def details(title: str, body: str) -> str:
    """A collapsed block (pymdownx.details)."""
    return f'??? note "{title}"\n\n' + textwrap.indent(body, "    ") + "\n"


def anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def docstring_markdown(doc: str) -> str:
    """A pytest-style docstring as Markdown.

    Handles paragraphs, ``:param name:`` / ``:return:`` fields with indented continuation lines (they
    become a Parameters table and a Returns line, where the first field was) and ``Example::`` literal
    blocks, which become fenced Python.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    body: list[str] = []
    params: list[tuple[str, str]] = []
    returns: list[str] = []
    fields_at: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r":(param|parameter|arg)\s+(\w+):\s*(.*)", line) or re.match(r":(returns?|rtype)():\s*(.*)", line)
        if m:
            if fields_at is None:
                fields_at = len(body)
            text = [m.group(3)]
            i += 1
            while i < len(lines) and lines[i].startswith((" ", "\t")) and lines[i].strip():
                text.append(lines[i].strip())
                i += 1
            joined = " ".join(text)
            if m.group(1).startswith("return"):
                returns.append(joined)
            elif m.group(1) != "rtype":
                params.append((m.group(2), joined))
            continue
        if line.rstrip().endswith("::"):
            lead = line.rstrip()[:-2].rstrip()
            if lead:
                body.append(rst_inline(lead) + ":")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
                block.append(lines[i])
                i += 1
            body += ["", fenced(textwrap.dedent("\n".join(block)).strip("\n"), "python")]
            continue
        body.append(rst_inline(line))
        i += 1
    if fields_at is not None:
        fields = []
        if params:
            fields.append("**Parameters**\n\n" + table(["name", "meaning"], [[code(p), cell(t)] for p, t in params]))
        if returns:
            fields.append(f"**Returns:** {cell(' '.join(returns))}\n")
        body[fields_at:fields_at] = ["", *fields, ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(body)).strip() + "\n"


# --- JSON Schema as text --------------------------------------------------------------------------------


def schema_type(schema: Any, link=None) -> str:
    """A short type for a JSON Schema: ``string``, ``integer ≥ 0``, ``list[Foo]``, ``"a" | "b"``, …

    ``link(name)`` turns a ``#/components/schemas/Name`` (or ``#/$defs/Name``) reference into text.
    """
    if not isinstance(schema, dict) or not schema:
        return "any"
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return link(name) if link else name
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return " \\| ".join(json.dumps(v) for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " \\| ".join(schema_type(s, link) for s in schema[key])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return schema_type(schema["allOf"][0], link)
    kind = schema.get("type")
    if isinstance(kind, list):
        return " \\| ".join(schema_type({**schema, "type": k}, link) for k in kind)
    if kind == "array":
        return f"list[{schema_type(schema.get('items'), link)}]"
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"dict[string, {schema_type(extra, link)}]"
        return "object"
    text = kind or "any"
    bounds = [("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
              ("minLength", "length ≥"), ("maxLength", "length ≤"), ("maxItems", "items ≤")]
    limits = [f"{sign} {schema[k]}" for k, sign in bounds if k in schema]
    return text + (f" ({', '.join(limits)})" if limits else "")


def schema_notes(schema: dict[str, Any]) -> str:
    """Description plus the constraints and default a type does not show."""
    parts = []
    if schema.get("description"):
        parts.append(cell(schema["description"]).rstrip("."))
    if "pattern" in schema:  # a long one (the version regex) would swamp the table; openapi.json has it
        pattern = schema["pattern"]
        parts.append(f"pattern {code(pattern)}" if len(pattern) <= 40 else "checked against a pattern")
    if "default" in schema:
        parts.append(f"default {code(schema['default'])}")
    if schema.get("examples"):
        parts.append(f"e.g. {code(schema['examples'][0])}")
    if schema.get("maxItems") is not None and schema.get("type") == "array":
        parts.append(f"at most {schema['maxItems']} items")
    return "; ".join(parts)


def properties_table(schema: dict[str, Any], link=None, root: dict | None = None) -> str:
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    rows = []
    for name, prop in props.items():
        flat = _merge_nullable(prop)
        rows.append([code(name), schema_type(prop, link), "yes" if name in required else "no", schema_notes(flat)])
    out = table(["name", "type", "required", "description"], rows)
    if schema.get("additionalProperties") is True and props:
        out += "\nOther keys are allowed.\n"
    return out


def _merge_nullable(prop: dict[str, Any]) -> dict[str, Any]:
    """Pydantic puts a nullable field's constraints inside ``anyOf``; surface them for notes."""
    merged = dict(prop)
    for branch in prop.get("anyOf") or []:
        if isinstance(branch, dict):
            for key in ("pattern",):
                if key in branch and key not in merged:
                    merged[key] = branch[key]
    return merged


# --- the ratchet.toml reference -------------------------------------------------------------------------

# Keys whose pydantic field has no ``description`` yet. The model's own description always wins; a key
# listed here is reported in the build log so the description can move into the model.
def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(code(json.dumps(a)) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple, set):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "table"
    if annotation is type(None):
        return "none"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if annotation in names:
        return names[annotation]
    if inspect.isclass(annotation):
        return "table"
    return str(annotation)


def _constraints(field_info) -> str:
    signs = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    out = []
    for meta in field_info.metadata:
        for attr, sign in signs.items():
            value = getattr(meta, attr, None)
            if value is not None:
                out.append(f"{sign} {value}")
    return f" ({', '.join(out)})" if out else ""


def _toml_default(field_info) -> str:
    from pydantic_core import PydanticUndefined

    if field_info.is_required():
        return "required"
    value = field_info.default_factory() if field_info.default_factory else field_info.default
    if value is PydanticUndefined or value is None:
        return "not set"
    if hasattr(value, "model_dump"):
        return "(see below)"
    if isinstance(value, bool):
        return code("true" if value else "false")
    return code(json.dumps(value))


def configuration_page(example_toml: str) -> tuple[str, list[str]]:
    """The ``ratchet.toml`` reference, and the keys whose model field has no description."""
    from pydantic import BaseModel

    from ratchet.core.workspace import Config, StrategyEntry

    undocumented: list[str] = []
    sections: list[tuple[str, type[BaseModel]]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            key = info.alias or name
            ann = info.annotation
            if inspect.isclass(ann) and issubclass(ann, BaseModel) and ann is not StrategyEntry:
                sections.append((f"{prefix}{key}", ann))
                walk(ann, f"{prefix}{key}.")

    walk(Config, "")
    out = ["# Configuration: `ratchet.toml`\n",
           "Every workspace has a `ratchet.toml` at its root. Unknown keys are errors that name the key "
           "and suggest the closest known one, so a typo never becomes a silently ignored setting. "
           "Paths are relative to the workspace.\n",
           "Here is the file `ratchet init` writes (the default workspace scaffold):\n",
           fenced(example_toml, "toml")]
    for section, model in sections:
        out.append(f"## `[{section}]`\n")
        doc = model.__dict__.get("__doc__")  # its own, not BaseModel's
        if doc:
            out.append(rst_inline(inspect.cleandoc(doc)) + "\n")
        rows = []
        for name, info in model.model_fields.items():
            key = info.alias or name
            full = f"{section}.{key}"
            desc = info.description
            if not desc:
                undocumented.append(full)
            ann = info.annotation
            if typing.get_origin(ann) is list and typing.get_args(ann) and typing.get_args(ann)[0] is StrategyEntry:
                type_text = "array of tables (`[[tuner.strategies]]`)"
            else:
                type_text = _type_name(ann) + _constraints(info)
            rows.append([code(key), type_text, _toml_default(info), cell(desc) if desc else "—"])
        out.append(table(["key", "type", "default", "description"], rows))
        if section == "tuner":
            out.append(_strategies_section())
    out.append(footer("the pydantic models in `ratchet.core.workspace`"))
    return "\n".join(out), undocumented


def _strategies_section() -> str:
    from ratchet.core.workspace import StrategyEntry

    rows = []
    for name, info in StrategyEntry.model_fields.items():
        desc = {"key": "the state section this strategy owns (`strategies.<key>`); unique",
                "strategy": "a registered strategy's name (`ratchet plugins --hook ratchet_register_strategies`)"}
        rows.append([code(name), _type_name(info.annotation), "required", desc.get(name, "")])
    rows.append(["any other key", "any", "—", "an option of that strategy (e.g. `arms`, `param`); see "
                 "[Strategies](strategies.md)"])
    return ("\n### `[[tuner.strategies]]`\n\n" + (rst_inline(inspect.getdoc(StrategyEntry) or "") + "\n\n")
            + table(["key", "type", "default", "description"], rows))


# --- the template library -------------------------------------------------------------------------------

FAMILY_ORDER = ["scaffold", "runner", "strategy", "tier"]


def _family_key(family: str) -> tuple[int, str]:
    return (FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER), family)


def template_pages(templates: dict[str, Any]) -> dict[str, str]:
    pages: dict[str, str] = {}
    by_family: dict[str, list[Any]] = {}
    for t in templates.values():
        by_family.setdefault(t.family, []).append(t)
    index = ["# Template library\n",
             f"{len(templates)} copier templates are installed. List them with `ratchet templates list`, read "
             "one with `ratchet templates show NAME`, and render one with `ratchet templates render NAME DEST`. "
             "The Architect draws from the same library. Installed packages add libraries through the "
             "[`ratchet_register_template_libraries`](../reference/hooks.md#ratchet_register_template_libraries) hook.\n"]
    for family in sorted(by_family, key=_family_key):
        index.append(f"## {family.capitalize()} templates\n")
        rows = [[f'[{t.name}]({t.name}.md){{: style="white-space: nowrap" }}', cell(t.summary) or "—", code(t.plugin)]
                for t in sorted(by_family[family], key=lambda t: t.name)]
        index.append(table(["template", "summary", "plugin"], rows))
    index.append(footer("the installed template libraries"))
    pages[TEMPLATES_INDEX] = "\n".join(index)
    for t in templates.values():
        pages[f"library/{t.name}.md"] = template_page(t)
    return pages


def _questions_table(template) -> str:
    rows = []
    for q in template.questions:
        notes = [cell(q.help)]
        if q.choices:
            notes.append("one of " + ", ".join(code(str(c)) for c in q.choices))
        if q.when is not None and not isinstance(q.when, bool):
            notes.append(f"asked when {code(str(q.when).strip())}")
        rows.append([code(q.name), q.type, "—" if q.default is None else code(str(q.default).strip()),
                     "; ".join(n for n in notes if n)])
    return table(["question", "type", "default", "meaning"], rows)


def _relative_links_to_text(markdown: str) -> str:
    """README links to files beside the template make no sense on the site: keep their text and target."""
    return re.sub(r"(?<!!)\[([^\]]+)\]\((?!https?://|#|mailto:)([^)\s]+)\)", r"\1 (`\2`)", markdown)


def _link_hooks(markdown: str) -> str:
    """Turn `ratchet_<hook>` code spans outside fenced blocks into links to the hook reference."""
    from ratchet.core import hookspecs

    hooks = {name for name in vars(hookspecs) if name.startswith("ratchet_")}
    parts = re.split(r"(?ms)(^```.*?^```)", markdown)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"(?<!\[)`(ratchet_\w+)`", lambda m: f"[`{m.group(1)}`](../reference/hooks.md#{m.group(1)})"
                          if m.group(1) in hooks else m.group(0), parts[i])
    return "".join(parts)


def template_page(t) -> str:
    readme = t.readme.strip() or f"# {t.name}\n\n{t.summary}"
    readme = _link_hooks(_relative_links_to_text(readme))
    if not readme.startswith("# "):
        readme = f"# {t.name}\n\n{readme}"
    questions = ("## Questions\n\n" + "Generated from the template's `copier.yml`; answer with "
                 f"`--data NAME=VALUE`.\n\n" + _questions_table(t))
    # The README's own Questions section is replaced by the table generated from copier.yml, which
    # cannot drift from the questions copier really asks.
    parts = re.split(r"(?m)^(## .*)$", readme)
    head, rest = parts[0], parts[1:]
    sections = [(rest[i], rest[i + 1]) for i in range(0, len(rest), 2)]
    out = head.rstrip() + "\n\n"
    out += (f"| family | from | render |\n|---|---|---|\n| {t.family} | {code(f'{t.plugin} {t.version}')} "
            f"| `ratchet templates render {t.name} DEST` |\n\n")
    placed = False
    for title, text in sections:
        if title.strip().lower() == "## questions":
            out += questions + "\n"
            placed = True
        else:
            out += f"{title}{text.rstrip()}\n\n"
    if not placed:
        out += questions
    return out.rstrip() + "\n" + footer(f"`README.md` and `copier.yml` of the template (`{_shown_path(t.path)}`)")


def _shown_path(path: Path) -> str:
    """A template's folder, relative to the installed package that ships it when possible."""
    for parent in path.parents:
        if (parent / "__init__.py").is_file() and not (parent.parent / "__init__.py").is_file():
            return str(path.relative_to(parent.parent))
    return path.name


# --- hook reference -------------------------------------------------------------------------------------


def hooks_page(plugin_infos: list[Any]) -> str:
    from ratchet.core import hookspecs

    source = inspect.getsource(hookspecs)
    banners = [(m.start(), m.group(1).strip()) for m in re.finditer(r"(?m)^# --- (.+?) -+$", source)]
    hooks = sorted(((inspect.getsourcelines(fn)[1], name, fn) for name, fn in vars(hookspecs).items()
                    if name.startswith("ratchet_") and callable(fn)), key=lambda x: x[0])
    implementers: dict[str, list[str]] = {}
    for info in plugin_infos:
        where = f" ({info.dist})" if info.dist else " (a module of the default workspace)" if info.source == "workspace" else ""
        for hook in info.hooks:
            implementers.setdefault(hook, []).append(f"`{info.name}`{where}")

    module_doc = docstring_markdown(hookspecs.__doc__ or "")
    out = ["# Hook reference\n", module_doc,
           "A plugin is a module with `@hookimpl` functions plus an entry point in the `ratchet` group:\n",
           fenced('[project.entry-points.ratchet]\nmy_plugin = "my_plugin"', "toml"),
           fenced("from ratchet import hookimpl\n\n@hookimpl\ndef ratchet_register_strategies(register):\n"
                  "    register(MyStrategy)", "python"),
           "An impl may accept a subset of a hook's arguments. `ratchet plugins --hook NAME` lists the "
           "installed plugins that implement a hook.\n"]
    line_offsets = [0]
    for line in source.splitlines(keepends=True):
        line_offsets.append(line_offsets[-1] + len(line))
    current = None
    for lineno, name, fn in hooks:
        offset = line_offsets[lineno - 1]
        group = next((title for pos, title in reversed(banners) if pos < offset), None)
        if group and group != current:
            out.append(f"## {group[0].upper()}{group[1:]}\n")
            current = group
        spec = getattr(fn, "ratchet_spec", {}) or {}
        params = ", ".join(_param_text(p) for p in inspect.signature(fn).parameters.values())
        ret = inspect.signature(fn).return_annotation
        returns = "" if ret is inspect.Signature.empty else f" -> {ret}"
        signature = f"{name}({params}){returns}"
        if len(signature) > 80:  # one parameter a line, as black would
            lines = "".join(f"    {_param_text(p)},\n" for p in inspect.signature(fn).parameters.values())
            signature = f"{name}(\n{lines}){returns}"
        kind = ("firstresult: the first non-None result wins" if spec.get("firstresult")
                else "event: every impl is called, results are ignored" if name.startswith("ratchet_on_")
                else "every impl is called")
        out.append(f"### `{name}` {{#{name}}}\n")
        out.append(fenced(signature, "python"))
        badges = [f"**Call:** {kind}."]
        if spec.get("historic"):
            badges.append("**Historic:** impls registered late are called with the earlier calls' arguments.")
        if spec.get("warn_on_impl"):
            badges.append(f"**Deprecated:** {cell(spec['warn_on_impl'])}")
        out.append(" ".join(badges) + "\n")
        out.append(docstring_markdown(inspect.getdoc(fn) or ""))
        impls = implementers.get(name)
        out.append(f"**Implemented by:** {', '.join(impls)}.\n" if impls
                   else "**Implemented by:** no first-party plugin yet.\n")
    out.append(footer("the docstrings in `ratchet/core/hookspecs.py`"))
    return "\n".join(out)


def api_page() -> str:
    """The public API (``ratchet.__all__``), section by section, each name with its kind and summary."""
    import ratchet

    out = ["# Plugin API\n", docstring_markdown(ratchet.__doc__ or ""),
           "Besides the names below: `hookimpl` marks a hook implementation, and `__version__` is the "
           "installed version.\n"]
    for section, names in ratchet._SECTIONS.items():
        out.append(f"## {section}\n")
        rows = []
        for name in names:
            obj = getattr(ratchet, name)
            kind = ("class" if isinstance(obj, type) else "function" if inspect.isroutine(obj)
                    else "type alias" if typing.get_origin(obj) is not None else "constant")
            own = obj.__dict__.get("__doc__") if kind == "class" else obj.__doc__ if kind == "function" else None
            summary = inspect.cleandoc(own or "").split("\n\n")[0]
            if kind in ("class", "function") and not summary:  # fails the strict build
                log.warning("docs: ratchet.%s has no docstring; the API page needs one", name)
            if kind == "constant":
                summary = ", ".join(f"`{v}`" for v in obj) if isinstance(obj, (list, tuple)) else repr(obj)
            rows.append([f"`{name}`", kind, cell(summary)])
        out.append(table(["name", "kind", "what it is"], rows))
    out.append(footer("`ratchet.__all__` and the docstrings of its names"))
    return "\n".join(out)


def _exit_codes() -> str:
    """The exit-code table of ``ratchet.core.errors``' docstring (a reST simple table)."""
    from ratchet.core import errors

    rows = [[code(m.group(1)), cell(m.group(2))]
            for m in re.finditer(r"(?m)^(\d+)\s{2,}(.+)$", errors.__doc__ or "")]
    return "## Exit codes {#exit-codes}\n\n" + table(["code", "meaning"], rows)


def _param_text(p: inspect.Parameter) -> str:
    """``name: annotation`` with the annotation as written (the module has postponed annotations)."""
    text = p.name if p.annotation is inspect.Parameter.empty else f"{p.name}: {p.annotation}"
    return text if p.default is inspect.Parameter.empty else f"{text} = {p.default!r}"


# --- CLI reference --------------------------------------------------------------------------------------


def cli_page() -> str:
    import click

    from ratchet import cli as cli_module

    out = ["# CLI reference\n"]
    module_doc = inspect.getdoc(cli_module) or ""
    intro, _, example = module_doc.partition("::")
    out.append(rst_inline(intro.strip()).rstrip(":") + ":\n")
    if example:  # the literal block, then the prose after it
        block, _, rest = example.strip("\n").partition("\n\n")
        out.append(fenced(textwrap.dedent(block), "bash"))
        if rest.strip():
            out.append(rst_inline(" ".join(rest.split())) + "\n")

    def walk(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        ctx = click.Context(command, info_name=path[-1], parent=parent, terminal_width=80, max_content_width=80)
        if len(path) > 1:
            level = "#" * min(len(path), 4)
            out.append(f"{level} `{' '.join(path)}` {{#{anchor(' '.join(path))}}}\n")
        out.append(fenced(command.get_help(ctx), "text"))
        if isinstance(command, click.Group):
            for sub_name in command.list_commands(ctx):
                sub = command.get_command(ctx, sub_name)
                if sub is not None and not sub.hidden:
                    walk(sub, [*path, sub_name], ctx)

    out.append("## `ratchet`\n")
    walk(cli_module.cli, ["ratchet"], None)
    out.append(_exit_codes())
    out.append(footer("the `ratchet` click commands (`ratchet/cli.py`) and `ratchet.core.errors`"))
    return "\n".join(out)


# --- REST APIs ------------------------------------------------------------------------------------------


def rest_pages(apps: list[tuple[str, str, dict[str, Any]]], skipped: list[tuple[str, str]]) -> dict[str, str]:
    pages: dict[str, str] = {}
    index = ["# REST APIs\n",
             "Each REST API is a FastAPI app served by its own process; a running server also serves its "
             "OpenAPI at `/openapi.json` and interactive docs at `/docs`. Errors have one shape in every API: "
             "`error` (the error class), `detail` (what failed), `field` (which parameter or field) and `fix` "
             "(how to fix it).\n"]
    rows = []
    for slug, title, spec in apps:
        info = spec.get("info", {})
        rows.append([f"[{title}]({slug}.md)", cell(info.get("description", "")), f"`ratchet serve {slug}`",
                     f"[openapi.json]({slug}.openapi.json)"])
        pages[f"reference/rest/{slug}.md"] = openapi_page(title, slug, spec)
        pages[f"reference/rest/{slug}.openapi.json"] = json.dumps(spec, indent=2, sort_keys=True) + "\n"
    index.append(table(["API", "what it does", "serve it", "OpenAPI"], rows))
    for title, why in skipped:
        index.append(f"!!! note \"{title}\"\n    Not in this build: {why}\n")
    index.append(footer("each app's OpenAPI document"))
    pages[REST_INDEX] = "\n".join(index)
    return pages


def openapi_page(title: str, slug: str, spec: dict[str, Any]) -> str:
    schemas = spec.get("components", {}).get("schemas", {})

    def link(name: str) -> str:
        return f"[{name}](#{anchor('schema-' + name)})" if name in schemas else name

    info = spec.get("info", {})
    out = [f"# {title}\n", cell(info.get("description", "")) + "\n",
           f"Serve it with `ratchet serve {slug}` (host and port from `[{slug}]` in `ratchet.toml`). "
           f"The raw document: [`openapi.json`]({slug}.openapi.json) (version {info.get('version', '?')}).\n"]
    endpoints = [(path, method, op) for path, item in spec.get("paths", {}).items()
                 for method, op in item.items() if method in ("get", "post", "put", "patch", "delete")]
    out.append(table(["method", "path", "summary"],
                     [[method.upper(), f"[`{path}`](#{_op_anchor(method, path)})", cell(op.get("summary", ""))]
                      for path, method, op in endpoints]))
    out.append("## Endpoints\n")
    for path, method, op in endpoints:
        out.append(f"### `{method.upper()} {path}` {{#{_op_anchor(method, path)}}}\n")
        if op.get("description") or op.get("summary"):
            out.append(rst_inline(op.get("description") or op.get("summary")) + "\n")
        params = op.get("parameters") or []
        if params:
            rows = []
            for p in params:
                s = p.get("schema", {})
                notes = schema_notes({**_merge_nullable(s), "description": p.get("description") or s.get("description")})
                rows.append([code(p["name"]), p.get("in", ""), schema_type(s, link), "yes" if p.get("required") else "no",
                             notes])
            out.append("**Parameters**\n\n" + table(["name", "in", "type", "required", "description"], rows))
        body = op.get("requestBody")
        if body:
            for media, content in (body.get("content") or {}).items():
                out.append(f"**Request body** ({code(media)}{', required' if body.get('required') else ''}): "
                           f"{schema_type(content.get('schema'), link)}\n")
        rows = []
        for status, resp in (op.get("responses") or {}).items():
            content = resp.get("content") or {}
            media = next(iter(content.values()), {})
            rows.append([f"`{status}`", cell(resp.get("description", "")),
                         schema_type(media.get("schema"), link) if media else "—"])
        out.append("**Responses**\n\n" + table(["status", "meaning", "body"], rows))
    if schemas:
        out.append("## Schemas\n")
        for name, s in schemas.items():
            out.append(f"### {name} {{#{anchor('schema-' + name)}}}\n")
            if s.get("description"):
                out.append(cell(s["description"]) + "\n")
            if s.get("properties"):
                out.append(properties_table(s, link))
            else:
                out.append(f"Type: {schema_type(s, link)}\n")
    out.append(footer("the OpenAPI document of the app's `create_app(workspace)`"))
    return "\n".join(out)


def _op_anchor(method: str, path: str) -> str:
    return anchor(f"{method}-{path}")


# --- MCP tools and resources ----------------------------------------------------------------------------


def mcp_page(servers: dict[str, dict[str, Any]], strategies: list[str]) -> str:
    out = ["# MCP tools and resources\n",
           "The runner and the tuner are MCP servers (streamable HTTP at `http://HOST:PORT/mcp`, or stdio "
           "with `--transport stdio`). Which tools they serve depends on the workspace: the runner serves the "
           "tools its plugins register ([`ratchet_register_runner_tools`](hooks.md#ratchet_register_runner_tools)), "
           "the tuner serves the feedback tools of the strategies `ratchet.toml` selects "
           f"(here: {', '.join(code(s) for s in strategies) or 'none'}; see [Strategies](../strategies.md)) "
           "plus its own `promote`, `status` and `rebuild_staging`. This page lists those of the default "
           "workspace.\n",
           "Errors a caller can fix come back as tool results with `is_error` set and a message that says what "
           "failed and how to fix it.\n"]
    descriptions = {"runner": "Serves the active state (or a pinned version) to clients; every call names a "
                              "`conversation_id` and its decisions are logged.",
                    "tuner": "Takes feedback about conversations the runner served, folds it into staging, and "
                             "promotes staging to a patch version."}
    for name, data in servers.items():
        out.append(f"## {name.capitalize()} (`ratchet serve {name}`)\n")
        out.append(descriptions.get(name, "") + "\n")
        if data.get("instructions"):
            out.append(f"Instructions sent to clients: {cell(data['instructions'])}\n")
        out.append(table(["tool", "summary"], [[f"[`{t['name']}`](#{anchor(name + '-' + t['name'])})",
                                                cell((t.get("description") or "").split("\n\n")[0])]
                                               for t in data["tools"]]))
        resources = [[code(r["uri"]), cell(r.get("description", "")), code(r.get("mime_type") or "")]
                     for r in data["resources"]]
        resources += [[code(r["uri_template"]) + " (template)", cell(r.get("description", "")),
                       code(r.get("mime_type") or "")] for r in data["templates"]]
        out.append(f"### Resources of the {name}\n")
        out.append(table(["URI", "what it holds", "MIME type"], resources) if resources else "None.\n")
        for tool in data["tools"]:
            out.append(f"### `{tool['name']}` {{#{anchor(name + '-' + tool['name'])}}}\n")
            out.append(rst_inline(tool.get("description") or "") + "\n")
            schema = tool.get("input_schema") or {}
            if schema.get("properties"):
                out.append("**Arguments**\n\n" + properties_table(_inline_defs(schema), None))
            else:
                out.append("**Arguments:** none.\n")
            output = tool.get("output_schema") or {}
            if output.get("properties"):
                out.append("**Result**\n\n" + properties_table(_inline_defs(output), None))
            elif output:
                out.append(f"**Result:** {schema_type(output)}.\n")
            out.append(details("JSON Schema", fenced(json.dumps({"input": schema, "output": output or None},
                                                                 indent=2), "json")))
    out.append(footer("the runner and tuner servers built for a fresh default workspace (`ratchet init`), "
                      "listed through an in-memory MCP client"))
    return "\n".join(out)


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """Show array items by their type rather than a ``$defs`` name nobody can click."""
    defs = schema.get("$defs") or {}
    return json.loads(json.dumps(schema), object_hook=lambda d: defs.get(d["$ref"].rsplit("/", 1)[-1], d)
                      if isinstance(d.get("$ref"), str) and d["$ref"].startswith("#/$defs/") else d)


# --- gathering ------------------------------------------------------------------------------------------


@dataclass
class Generated:
    pages: dict[str, str] = field(default_factory=dict)
    templates: list[str] = field(default_factory=list)
    rest: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _default_workspace() -> Iterator[Path]:
    """A fresh default workspace in a temporary folder (the template cache too, so a build leaves nothing)."""
    tmp = Path(tempfile.mkdtemp(prefix="ratchet-docs-"))
    saved = os.environ.get("RATCHET_CACHE_DIR")
    if not saved:
        os.environ["RATCHET_CACHE_DIR"] = str(tmp / "cache")
    try:
        from ratchet.core.create import create_workspace
        from ratchet.core.plugins import load_plugins

        root = tmp / "support-desk"
        create_workspace(root, plugins=load_plugins(), author="docs")
        yield root
    finally:
        if not saved:
            os.environ.pop("RATCHET_CACHE_DIR", None)
            if saved is not None:
                os.environ["RATCHET_CACHE_DIR"] = saved
        shutil.rmtree(tmp, ignore_errors=True)


async def _list_servers(ws) -> dict[str, dict[str, Any]]:
    from mcp import Client

    from ratchet.runner.server import build_server as runner_server
    from ratchet.runner.service import Runner
    from ratchet.tuner.server import build_server as tuner_server
    from ratchet.tuner.service import Tuner

    servers = {"runner": runner_server(Runner(ws, record=False)), "tuner": tuner_server(Tuner(ws), worker="none")}
    out: dict[str, dict[str, Any]] = {}
    for name, server in servers.items():
        async with Client(server) as client:
            tools = (await client.list_tools()).tools
            resources = (await client.list_resources()).resources
            templates = (await client.list_resource_templates()).resource_templates
        out[name] = {
            "instructions": getattr(server, "instructions", None),
            "tools": [t.model_dump(exclude_none=True) for t in tools],
            "resources": [r.model_dump(exclude_none=True, mode="json") for r in resources],
            "templates": [r.model_dump(exclude_none=True, mode="json") for r in templates],
        }
    return out


def _rest_specs(ws) -> tuple[list[tuple[str, str, dict[str, Any]]], list[tuple[str, str]]]:
    apps, skipped = [], []
    for slug, title, module_name in REST_APPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):  # the module itself is missing, not a dependency
                log.info("docs: skipping the %s: %s does not exist yet", title, module_name)
                skipped.append((title, f"`{module_name}` is not part of this installation yet."))
                continue
            raise
        app = module.create_app(ws)
        spec = app.openapi()
        spec.setdefault("info", {})["title"] = title  # the app's own title names the workspace it served
        apps.append((slug, title, spec))
    return apps, skipped


def generate() -> Generated:
    import anyio

    from ratchet.core import templates as tl
    from ratchet.core.plugins import load_plugins
    from ratchet.core.workspace import Workspace

    gen = Generated()
    plugins = load_plugins()
    library = tl.discover(plugins)
    gen.templates = sorted(library)
    gen.pages.update(template_pages(library))
    gen.pages["reference/cli.md"] = cli_page()
    gen.pages["reference/api.md"] = api_page()
    with _default_workspace() as root:
        ws = Workspace.open(root, search_parents=False)
        gen.pages["reference/hooks.md"] = hooks_page(ws.plugins.infos())  # first party plus the workspace's own
        config_md, undocumented = configuration_page((root / "ratchet.toml").read_text(encoding="utf-8"))
        if undocumented:
            log.warning("docs: ratchet.toml keys without a Field(description=...) in ratchet.core.workspace: %s",
                        ", ".join(undocumented))
        gen.pages["configuration.md"] = config_md
        servers = anyio.run(_list_servers, ws)
        strategies = [s.strategy for s in ws.config.tuner.strategies]
        gen.pages["reference/mcp.md"] = mcp_page(servers, strategies)
        apps, skipped = _rest_specs(ws)
        gen.rest = [slug for slug, _, _ in apps]
        gen.pages.update(rest_pages(apps, skipped))
        with contextlib.suppress(Exception):
            ws.store.engine.dispose()
    return gen


# --- mkdocs hooks ---------------------------------------------------------------------------------------

_generated: Generated | None = None


def _expand_nav(nav: list[Any], gen: Generated) -> list[Any]:
    """Replace the nav entries that point at a generated index with a section of its pages."""
    sections = {
        TEMPLATES_INDEX: [TEMPLATES_INDEX] + [{name: f"library/{name}.md"} for name in gen.templates],
        REST_INDEX: [REST_INDEX] + [{title: f"reference/rest/{slug}.md"} for slug, title, _ in REST_APPS
                                    if slug in gen.rest],
    }
    out = []
    for item in nav:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, list):
                out.append({title: _expand_nav(value, gen)})
            elif value in sections:
                out.append({title: sections[value]})
            else:
                out.append(item)
        else:
            out.append(sections.get(item, item))
    return out


def on_config(config):
    global _generated
    _generated = generate()
    log.info("docs: generated %d pages (%d templates; REST: %s)", len(_generated.pages), len(_generated.templates),
             ", ".join(_generated.rest) or "none")
    if config.nav:
        config.nav = _expand_nav(config.nav, _generated)
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    assert _generated is not None
    for path, content in _generated.pages.items():
        existing = files.get_file_from_path(path)
        if existing is not None:  # a committed file would shadow the generated one
            raise RuntimeError(f"docs/{path} is generated at build time; delete the committed copy")
        files.append(File.generated(config, path, content=content))
    return files


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/_hooks/generate.py OUT_DIR")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out_dir = Path(sys.argv[1])
    for rel, text in generate().pages.items():
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        print(target)
