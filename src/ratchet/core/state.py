"""The State Manager: the ``staging`` and ``active`` state documents of a workspace.

Both documents live in the store (:mod:`ratchet.core.stores.coordination`), so every process on every
host reads and writes the same ones. Each is validated against ``state/schema.json`` and has a revision;
writes are compare-and-swap (a conditional ``UPDATE``: a stale writer loses and retries). Active also
records the version that holds it and that version's commit: it changes only through a version, made by
:mod:`ratchet.core.lineage` (promotion, rollback, the Architect's merge), which commits and tags
``state/active.state.json`` first and moves the store's active document last. Staging is where feedback
lands; the tuner can always rebuild it from active plus the feedback log. On the first read from a new
store, active is taken from the latest version's ``state/active.state.json`` (staging from active).

A rollback is a new version whose active state equals an older version's: history is never rewritten.
A pin (also in the store) makes every runner serve a fixed version's state without changing active.

Every read goes through ``migrate``: the schema's registered migrations (``x-schema-version``), then
strategy adoption when ``ratchet.toml`` now names another strategy for a section than the one that
made it. Ratchet's own bookkeeping (the last feedback event folded in, which strategy made each
section) lives under the reserved top-level key ``ratchet``, which the workspace's schema never sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ratchet.core.documents import ACTIVE_PATH, RESERVED_KEY, dumps
from ratchet.core.errors import (ConflictError, GitError, NotFoundError, StateValidationError, UncommittedError,
                                 UserError)

if TYPE_CHECKING:
    from ratchet.core.versions import Version
    from ratchet.core.workspace import Workspace

DocName = Literal["staging", "active"]
DOC_NAMES: tuple[str, ...] = ("staging", "active")
SCHEMA_VERSION_KEY = "x-schema-version"  # in state/schema.json: the version documents must carry



@dataclass(frozen=True)
class StateDoc:
    name: str
    revision: int
    document: dict[str, Any]
    sha256: str
    version: str | None = None  # active: the version that holds it
    commit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.revision, "sha256": self.sha256, "version": self.version,
                "commit": self.commit, "document": self.document}


Migration = Callable[[dict[str, Any]], dict[str, Any]]


class StateManager:
    """Reads, validates and writes a workspace's state documents."""

    def __init__(self, workspace: Workspace, migrations: dict[int, tuple[int, Migration]] | None = None,
                 schema: dict[str, Any] | None = None):
        self.workspace = workspace
        self._migrations = migrations
        self._fixed_schema = schema  # a version's tagged schema (ratchet.core.workspace.TaggedWorkspace)
        self._validator = None
        self._validator_mtime = None

    # --- paths ---

    def path(self, name: str) -> Path:
        """Where git keeps ``name``: ``state/active.state.json`` (staging is not committed)."""
        if name not in DOC_NAMES:
            raise UserError(f"unknown state document {name!r}", field="document", fix="use staging or active")
        return self.workspace.state_dir / f"{name}.state.json"

    @property
    def coordination(self):
        return self.workspace.store.coordination

    # --- schema ---

    def schema(self) -> dict[str, Any]:
        if self._fixed_schema is not None:
            return self._fixed_schema
        try:
            return json.loads(self.workspace.schema_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFoundError(f"state schema {self.workspace.schema_path} is missing",
                                fix="restore state/schema.json from git") from None
        except json.JSONDecodeError as exc:
            raise StateValidationError(f"state/schema.json is not valid JSON: {exc}", field="state/schema.json",
                                       fix="fix the JSON syntax") from None

    @property
    def schema_version(self) -> int:
        return int(self.schema().get(SCHEMA_VERSION_KEY, 1))

    def validator(self):
        path = self.workspace.schema_path
        mtime = path.stat().st_mtime_ns if self._fixed_schema is None and path.exists() else None
        if self._validator is None or mtime != self._validator_mtime:
            from jsonschema import validators

            schema = self.schema()
            cls = validators.validator_for(schema)
            cls.check_schema(schema)
            self._validator, self._validator_mtime = cls(schema), mtime
        return self._validator

    def validate(self, document: Any, source: str = "state") -> None:
        """Raise a StateValidationError naming the JSON path of the first problem."""
        from jsonschema.exceptions import best_match

        if not isinstance(document, dict):
            raise StateValidationError(f"{source}: a state document must be a JSON object", field="$",
                                       fix="wrap the state in {...}")
        if RESERVED_KEY in document:
            document = {k: v for k, v in document.items() if k != RESERVED_KEY}
        error = best_match(self.validator().iter_errors(document))
        if error is not None:
            raise StateValidationError(
                f"{source} violates state/schema.json at {error.json_path}: {error.message}",
                field=error.json_path, fix=f"change the value at {error.json_path} to match the schema",
            )

    @property
    def migrations(self) -> dict[int, tuple[int, Migration]]:
        """``{from_version: (to_version, fn)}`` from the ``ratchet_register_migrations`` hook."""
        if self._migrations is None:
            def validate(from_version: int, to_version: int, fn: Migration):
                if not (isinstance(from_version, int) and isinstance(to_version, int) and to_version > from_version):
                    raise ValueError(f"a migration goes from one integer version to a higher one, "
                                     f"not {from_version!r} -> {to_version!r}")
                return from_version, (to_version, fn)

            found = self.workspace.plugins.collect("ratchet_register_migrations", validate,
                                                   key=lambda item: str(item[0]), workspace=self.workspace)
            self._migrations = dict(item for _plugin, item in found.values())
        return self._migrations

    def migrate(self, document: dict[str, Any]) -> dict[str, Any]:
        """Bring a document up to date: the schema's version through the registered migrations, then
        each strategy section to the strategy ``ratchet.toml`` now configures (see ``adopt_strategies``)."""
        return self.adopt_strategies(self._migrate_schema(document))

    def adopt_strategies(self, document: dict[str, Any]) -> dict[str, Any]:
        """Sections made by another strategy than the configured one are handed to the new strategy's
        ``adopt`` (what it learned carries over where it can), or restart from its initial state.

        Which strategy made each section is recorded under ``ratchet.strategies``; a document without
        that record is taken to match the configuration.
        """
        entries = self.workspace.config.tuner.strategies
        if not entries:
            return document
        recorded = dict((document.get(RESERVED_KEY) or {}).get("strategies") or {})
        wanted = {e.key: e.strategy for e in entries}
        if all(recorded.get(k, v) == v for k, v in wanted.items()) and recorded.keys() >= wanted.keys():
            return document
        from ratchet.core.confine import confined
        from ratchet.core.strategy import build_strategies

        built = build_strategies(self.workspace, self.workspace.plugins)
        sections = dict(document.get("strategies") or {})
        for key, name in wanted.items():
            previous = recorded.get(key)
            if previous is not None and previous != name:
                old = sections.get(key)
                try:
                    with confined(self.workspace.state_dir, self.workspace.runtime_dir):  # strategy code
                        adopted = built[key].adopt(previous, old) if old is not None else None
                except Exception as exc:  # noqa: BLE001 -- name the strategy and its plugin
                    raise self._strategy_error(name, "adopt", exc) from exc
                sections[key] = adopted if adopted is not None else built[key].initial_state()
            elif key not in sections:
                sections[key] = built[key].initial_state()
            recorded[key] = name
        return {**document, "strategies": sections,
                RESERVED_KEY: {**(document.get(RESERVED_KEY) or {}), "strategies": recorded}}

    def _strategy_error(self, name: str, method: str, exc: Exception):
        from ratchet.core.errors import PluginError
        from ratchet.core.strategy import registered_strategies

        plugin = registered_strategies(self.workspace.plugins, self.workspace).get(name, (name,))[0]
        return PluginError(f"{type(exc).__name__}: {exc}", plugin=plugin, hook=f"{name}.{method}",
                           fix=f"fix the strategy's {method}(), or switch back to the previous strategy")

    def _migrate_schema(self, document: dict[str, Any]) -> dict[str, Any]:
        target = self.schema_version
        current = int(document.get("schema_version", 1))
        while current < target:
            if current not in self.migrations:
                raise StateValidationError(
                    f"state has schema_version {current} but the schema is version {target}, and no migration "
                    f"from {current} is registered", field="$.schema_version",
                    fix="register one with the ratchet_register_migrations hook")
            nxt, fn = self.migrations[current]
            document = fn(json.loads(json.dumps(document)))
            document["schema_version"] = current = nxt
        return document

    # --- reading ---

    def read(self, name: DocName) -> StateDoc:
        self.path(name)  # checks the name
        row = self.coordination.document(name) or self._seed(name)
        try:
            document = json.loads(row.body)
        except json.JSONDecodeError as exc:  # only a hand-edited store could hold this
            raise StateValidationError(f"the store's {name} state is not valid JSON: {exc}", field=name,
                                       fix="write a valid document with `ratchet state set`") from None
        return StateDoc(name, row.revision, document, row.sha256, row.version, row.commit)

    def _seed(self, name: str):
        """The first read from a new store: active from the latest version (or the work tree's file when
        there is none yet), staging from active (or from a staging file an older Ratchet left)."""
        if name == "staging":
            legacy = self.path("staging")
            body = legacy.read_bytes() if legacy.is_file() else None
            if body is None or not _is_json(body):
                body = (self.coordination.document("active") or self._seed("active")).body
            return self.coordination.seed("staging", body)
        versions = self.workspace.versions
        try:
            latest = versions.latest()
        except GitError:  # a plain folder (e.g. a commit's files, listed for its tool schemas)
            latest = None
        if latest is not None:
            body = versions.read_file(latest.name, ACTIVE_PATH)
            return self.coordination.seed("active", body, version=latest.name, commit=latest.commit)
        path = self.path("active")
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{path.relative_to(self.workspace.root)} is missing",
                                fix="restore it with `git checkout -- state/` or roll back to a version") from None
        return self.coordination.seed("active", body)

    # --- writing ---

    def write(self, name: DocName, document: dict[str, Any], expected_revision: int | None) -> StateDoc:
        """Compare-and-swap staging: replace it if its revision is still ``expected_revision``.

        ``expected_revision=None`` writes unconditionally. Raises ConflictError when another writer won.
        Active changes only through a version (promote, roll back, an Architect job).
        """
        if name != "staging":
            self.path(name)
            raise UserError("the active state changes only through a version", field="document",
                            fix="write staging, then promote it (`ratchet state promote`), or roll back")
        self.validate(document, f"{name} state")
        if expected_revision is None and self.coordination.document(name) is None:
            self._seed(name)  # a new store (a conditional write follows the caller's read, which seeded it)
        row = self.coordination.swap(name, dumps(document), expected_revision)
        return StateDoc(name, row.revision, document, row.sha256)

    def update(self, name: DocName, change: Callable[[dict[str, Any]], dict[str, Any]],
               retries: int = 100) -> StateDoc:
        """Read, apply ``change`` (pure: it may run more than once), compare-and-swap; retry on conflict."""
        for _ in range(retries):
            doc = self.read(name)
            try:
                return self.write(name, change(doc.document), doc.revision)
            except ConflictError:
                continue
        raise ConflictError(f"{name} state kept changing: {retries} attempts lost the swap",
                            fix="reduce the number of concurrent writers, or retry later")

    # --- versions ---

    def promote(self, *, reason: str, author: str, extra: dict[str, Any] | None = None,
                kind: str = "tuner", document: dict[str, Any] | None = None, turn=None) -> Version:
        """Make staging (or ``document``, e.g. the exact staging a test tier passed) active as a new
        patch version (:mod:`ratchet.core.lineage`; pass the ``turn`` if you hold one). If it fails,
        active, main and the tags are as they were."""
        self.check_committed("promote")
        staging = self.read("staging")
        document = self.migrate(document if document is not None else staging.document)
        self.validate(document, "staging state")
        with _turn(self.workspace, turn) as held:
            return held.make_state_version(document, bump="patch", reason=reason, author=author, kind=kind,
                                           extra={"staging_revision": staging.revision, **(extra or {})})

    def rollback(self, version: str, *, reason: str | None = None, author: str = "cli") -> Version:
        """A new patch version whose active state equals ``version``'s. Staging is reset to it too."""
        self.check_committed("roll back")
        target = self.workspace.versions.get(version)
        document = self.at_version(target.name)
        self.validate(document, f"state of {target.name}")
        with _turn(self.workspace, None) as held:
            return held.make_state_version(
                document, bump="patch", reason=reason or f"roll back to {target.name}", author=author,
                kind="rollback", extra={"rolled_back_to": target.name}, allow_empty=True, reset_staging=True)

    def check_committed(self, action: str) -> None:
        """Refuse to make a version while ``ratchet.toml``, the state schema or a workspace plugin differs
        from what git holds (:attr:`Workspace.behaviour_paths`): the state was made by those files, and a
        tag must hold what made it."""
        dirty = self.workspace.versions.uncommitted(self.workspace.behaviour_paths)
        if dirty:
            raise UncommittedError(dirty, action=action)

    # --- pins ---

    def pin(self, version: str) -> str:
        """Every runner serves ``version``'s state from now on, whatever active becomes, until ``unpin``."""
        name = self.workspace.versions.get(version).name
        self.coordination.pin(name)
        return name

    def unpin(self) -> None:
        self.coordination.pin(None)

    def pinned(self) -> str | None:
        return self.coordination.pinned()

    def at_version(self, version: str) -> dict[str, Any]:
        """The active state document as of ``version``, migrated to the current schema and strategies:
        what serving it now (a pin) or rolling back to it uses. To show it as it was tagged, use
        ``workspace.as_tagged(version).active_state()``."""
        versions = self.workspace.versions
        return self.migrate(json.loads(versions.read_file(versions.get(version).name, ACTIVE_PATH)))


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
        return True
    except ValueError:
        return False


@contextmanager
def _turn(workspace: Workspace, turn):
    """The caller's turn to make versions, or a new one."""
    if turn is not None:
        yield turn
        return
    from ratchet.core.lineage import Lineage

    with Lineage(workspace).turn() as held:
        yield held
