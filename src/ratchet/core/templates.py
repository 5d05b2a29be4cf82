"""The copier template library: scaffolds, runner and strategy templates from every installed plugin.

A library is a folder whose subfolders each hold a ``copier.yml`` (plus ``template/`` and a README
that becomes the docs page); plugins contribute libraries through ``ratchet_register_template_libraries``.

``copier update`` needs a git template with version tags, and a template installed inside a Python
package is neither. So every render goes through a *versioned source*: a git repo per template under
``$RATCHET_CACHE_DIR/templates`` (default ``~/.cache/ratchet``), committed and tagged with the
package's version whenever its content changes. ``.copier-answers.yml`` records that repo and tag, and
after an upgrade ``copier update`` moves a project to the new tag.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratchet.core.errors import NotFoundError, UserError
from ratchet.core.fsutil import locked

if TYPE_CHECKING:
    from ratchet.core.plugins import Plugins

GIT_ENV = {"GIT_AUTHOR_NAME": "Ratchet", "GIT_AUTHOR_EMAIL": "ratchet@localhost",
           "GIT_COMMITTER_NAME": "Ratchet", "GIT_COMMITTER_EMAIL": "ratchet@localhost"}


@dataclass
class Question:
    name: str
    type: str
    help: str
    default: Any
    choices: list[Any] | None = None
    when: Any = None  # copier's condition for asking it (a Jinja expression), if any


@dataclass
class Template:
    name: str
    family: str
    path: Path
    plugin: str
    version: str
    summary: str = ""
    questions: list[Question] = field(default_factory=list)
    workspace: bool = False  # renders a ratchet.toml: a scaffold `ratchet init` can make a workspace from

    @property
    def readme(self) -> str:
        readme = self.path / "README.md"
        return readme.read_text(encoding="utf-8") if readme.exists() else ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "summary": self.summary, "plugin": self.plugin,
                "version": self.version, "path": str(self.path), "workspace": self.workspace,
                "questions": [q.__dict__ for q in self.questions]}


def _read_template(path: Path, family: str | None, plugin: str, version: str) -> Template:
    import yaml

    config = yaml.safe_load((path / "copier.yml").read_text(encoding="utf-8")) or {}
    questions = []
    for key, spec in config.items():
        if key.startswith("_"):
            continue
        spec = spec if isinstance(spec, dict) else {"default": spec}
        choices = spec.get("choices")
        if isinstance(choices, dict):
            choices = list(choices.values())
        questions.append(Question(key, spec.get("type", "str"), spec.get("help", ""), spec.get("default"), choices,
                                  spec.get("when")))
    paragraph: list[str] = []  # the README's first paragraph of prose
    for line in Template(path.name, "", path, plugin, version).readme.splitlines():
        if line.strip() and not line.startswith("#"):
            paragraph.append(line.strip())
        elif paragraph:
            break
    summary = " ".join(paragraph)
    content = path / str(config.get("_subdirectory") or ".")
    workspace = any((content / name).is_file() for name in ("ratchet.toml", "ratchet.toml.jinja"))
    return Template(path.name, config.get("_ratchet_family") or family or "template", path, plugin, version,
                    summary, questions, workspace)


def discover(plugins: Plugins) -> dict[str, Template]:
    """Every template of every registered library, by name (a duplicate name is an error)."""

    def validate(path: Path | str, family: str | None = None):
        path = Path(path)
        if not path.is_dir():
            raise ValueError(f"template library {path} is not a folder")
        return path, family

    found = plugins.collect("ratchet_register_template_libraries", validate, key=lambda item: str(item[0]))
    templates: dict[str, Template] = {}
    for plugin, (library, family) in found.values():
        version = _plugin_version(plugins, plugin)
        for sub in sorted(library.iterdir()):
            if (sub / "copier.yml").is_file():
                if sub.name in templates:
                    raise UserError(f"template {sub.name!r} is provided by both {templates[sub.name].plugin!r} "
                                    f"and {plugin!r}", fix="uninstall one of the two plugins")
                templates[sub.name] = _read_template(sub, family, plugin, version)
    return templates


def _plugin_version(plugins: Plugins, plugin: str) -> str:
    dist = plugins._dists.get(plugin)
    if dist:
        return dist.split()[-1]
    from ratchet import __version__

    return __version__


def get_workspace_scaffold(templates: dict[str, Template], name: str) -> Template:
    """Template ``name`` if it makes a workspace (what ``ratchet init`` renders); the error lists only those."""
    scaffolds = sorted(n for n, t in templates.items() if t.workspace)
    choose = f"choose one of: {', '.join(scaffolds) or '(none installed)'}"
    if name not in templates:
        raise NotFoundError(f"unknown template {name!r}", field="--template", fix=choose)
    if not templates[name].workspace:
        raise UserError(f"template {name!r} is a {templates[name].family} template, not a workspace scaffold",
                        field="--template", fix=f"{choose}; add {name!r} to a workspace afterwards with "
                        f"`ratchet templates render {name} WORKSPACE`")
    return templates[name]


def get(templates: dict[str, Template], name: str) -> Template:
    if name not in templates:
        raise NotFoundError(f"unknown template {name!r}", field="template",
                            fix=f"choose one of: {', '.join(sorted(templates)) or '(none installed)'}")
    return templates[name]


def parse_data(template: Template, pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs checked against the template's questions (values are cast by copier)."""
    known = {q.name: q for q in template.questions}
    data: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--data {pair!r} is not KEY=VALUE", field="--data", fix="write it like name=my-agent")
        if key not in known:
            raise UserError(f"template {template.name!r} has no question {key!r}", field=f"--data {key}",
                            fix=f"use one of: {', '.join(known)} (see `ratchet templates show {template.name}`)")
        q = known[key]
        if q.choices and value not in [str(c) for c in q.choices]:
            raise UserError(f"{value!r} is not a valid {key}", field=f"--data {key}",
                            fix=f"choose one of: {', '.join(str(c) for c in q.choices)}")
        data[key] = _cast(q, value)
    return data


def _cast(q: Question, value: str) -> Any:
    try:
        if q.type == "int":
            return int(value)
        if q.type == "float":
            return float(value)
        if q.type == "bool":
            lowered = value.lower()
            if lowered not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError(value)
            return lowered in ("true", "yes", "1")
    except ValueError:
        raise UserError(f"{value!r} is not a valid {q.type} for {q.name}", field=f"--data {q.name}",
                        fix=f"give {q.name} a {q.type} value") from None
    return value


def cache_dir() -> Path:
    return Path(os.environ.get("RATCHET_CACHE_DIR") or Path.home() / ".cache" / "ratchet")


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    if proc.returncode != 0:
        raise UserError(f"git {args[0]} failed for the template cache {cwd}: {proc.stderr.strip()}",
                        fix=f"delete {cwd} and try again")
    return proc.stdout.strip()


def _tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def versioned_source(template: Template) -> tuple[str, str]:
    """A git repo holding this template's content, and the PEP 440 tag of that content."""
    repo = cache_dir() / "templates" / f"{template.plugin}--{template.name}"
    with locked(cache_dir() / "templates" / ".lock"):
        if not (repo / ".git").exists():
            repo.mkdir(parents=True, exist_ok=True)
            _git(repo, "init", "-q", "-b", "main")
        digest = _tree_digest(template.path)
        tags = _git(repo, "tag", "--list").split()
        for tag in tags:  # already have this exact content?
            if _git(repo, "tag", "-l", "--format=%(contents:subject)", tag) == digest:
                return str(repo), tag
        for child in repo.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        shutil.copytree(template.path, repo, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", f"{template.name} {template.version}")
        tag, n = template.version, 0
        while tag in tags:  # same package version, changed content (a development install)
            n += 1
            tag = f"{template.version}.post{n}"
        _git(repo, "tag", "-a", tag, "-m", digest)
        return str(repo), tag


def render(template: Template, dest: Path, data: dict[str, Any]) -> list[str]:
    """Render ``template`` without prompts into ``dest``: a new folder, or an existing one (e.g. a
    workspace) that gains the rendered files. All or nothing: a file that already exists is never
    overwritten, and then nothing is written. Returns the rendered paths, relative to ``dest``."""
    import copier

    dest = Path(dest)
    src, ref = versioned_source(template)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.render-"))
    try:
        out = tmp / "out"
        try:
            copier.run_copy(src, out, data=data, defaults=True, quiet=True, vcs_ref=ref, unsafe=False)
        except Exception as exc:  # copier's validators and type errors: translate, name the template
            raise UserError(f"template {template.name!r} refused the answers: {exc}", field="--data",
                            fix=f"check the values against `ratchet templates show {template.name}`") from None
        files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        if not dest.exists():
            out.rename(dest)
            return files
        clashes = [f for f in files if (dest / f).exists()]
        if clashes:
            raise UserError(f"rendering {template.name!r} into {dest} would overwrite {', '.join(clashes)}",
                            field="DEST", fix="choose other answers (e.g. another module name), or move those files")
        for f in files:
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(out / f, dest / f)
        return files
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def wire_plugins(dest: Path, files: list[str]) -> list[str]:
    """Add the rendered workspace plugin modules (``plugins/NAME.py`` among ``files``) to ``[workspace]
    plugins`` of ``dest``'s ratchet.toml, when ``dest`` is a workspace, so that what the template adds
    (its runner tool, strategy, test cases) is served at once. Returns the modules added."""
    import tomlkit

    from ratchet.core.workspace import CONFIG_NAME, Workspace

    path = Path(dest) / CONFIG_NAME
    if not path.is_file():
        return []
    modules = [f for f in files if f.startswith("plugins/") and f.endswith(".py") and f.count("/") == 1]
    configured = set(Workspace.open(dest, search_parents=False).config.workspace.plugins)
    added = [m for m in modules if m not in configured]
    if added:  # tomlkit keeps the file's comments and layout
        doc = tomlkit.parse(path.read_text(encoding="utf-8"))
        section = doc.setdefault("workspace", tomlkit.table())
        section["plugins"] = [*section.get("plugins", []), *added]
        path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return added

