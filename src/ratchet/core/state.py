"""The State Manager: the ``staging`` and ``active`` state documents of a workspace.

Each document is a JSON file under ``state/`` validated against ``state/schema.json``, with a revision
kept beside it in ``.ratchet/state/<name>.rev`` (revision and sha256 of the file). Writes are
compare-and-swap: under an exclusive lock, the caller's expected revision must equal the current one,
then the file is replaced atomically and the revision advanced. A crash between those two steps is
detected by the checksum and counted as a new revision, so a stale writer still loses the swap.

``active.state.json`` is committed to git at every promotion and tagged as a patch version (it alone
is fsynced); ``staging.state.json`` is runtime data (git-ignored) that the tuner can rebuild from
active plus the feedback log. A rollback is a new version whose active state equals an older
version's: history is never rewritten. A pin makes the runner serve a fixed version's state without
changing active.

Every read goes through ``migrate``: the schema's registered migrations (``x-schema-version``), then
strategy adoption when ``ratchet.toml`` now names another strategy for a section than the one that
made it. Ratchet's own bookkeeping (the last feedback event folded in, which strategy made each
section) lives under the reserved top-level key ``ratchet``, which the workspace's schema never sees.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ratchet.core.errors import ConflictError, NotFoundError, StateValidationError, UserError
from ratchet.core.fsutil import atomic_write, locked

if TYPE_CHECKING:
    from ratchet.core.versions import Version
    from ratchet.core.workspace import Workspace

DocName = Literal["staging", "active"]
DOC_NAMES: tuple[str, ...] = ("staging", "active")
ACTIVE_PATH = "state/active.state.json"
SCHEMA_VERSION_KEY = "x-schema-version"  # in state/schema.json: the version documents must carry
# Ratchet's own bookkeeping inside a state document (e.g. the last feedback event applied). It is not
# part of the workspace's schema: validation ignores it and runner tools never see it.
RESERVED_KEY = "ratchet"


def applied_seq(document: dict[str, Any]) -> int:
    """The sequence number of the last feedback event folded into ``document``."""
    return int((document.get(RESERVED_KEY) or {}).get("applied_seq", 0))


def dumps(document: dict[str, Any]) -> bytes:
    """The canonical bytes of a state document (stable, so equal states give equal files and commits)."""
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


@dataclass(frozen=True)
class StateDoc:
    name: str
    revision: int
    document: dict[str, Any]
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "revision": self.revision, "sha256": self.sha256, "document": self.document}


Migration = Callable[[dict[str, Any]], dict[str, Any]]


class StateManager:
    """Reads, validates and writes a workspace's state documents."""

    def __init__(self, workspace: Workspace, migrations: dict[int, tuple[int, Migration]] | None = None):
        self.workspace = workspace
        self._migrations = migrations
        self._validator = None
        self._validator_mtime = None

    # --- paths ---

    def path(self, name: str) -> Path:
        if name not in DOC_NAMES:
            raise UserError(f"unknown state document {name!r}", field="document", fix="use staging or active")
        return self.workspace.state_dir / f"{name}.state.json"

    def _rev_path(self, name: str) -> Path:
        return self.workspace.runtime_dir / "state" / f"{name}.rev"

    def _lock(self):
        return locked(self.workspace.runtime_dir / "locks" / "state.lock")

    # --- schema ---

    def schema(self) -> dict[str, Any]:
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
        mtime = self.workspace.schema_path.stat().st_mtime_ns if self.workspace.schema_path.exists() else None
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
        from ratchet.core.strategy import build_strategies

        from ratchet.core.confine import confined

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
        with self._lock():
            return self._read_locked(name)

    def exclusive(self):
        """Hold the state lock across several steps (e.g. the Architect's merge and tag): no promotion,
        rollback or write runs meanwhile. Inside it, use ``read_held`` and ``write_held`` only."""
        return self._lock()

    def read_held(self, name: DocName) -> StateDoc:
        return self._read_locked(name)

    def write_held(self, name: DocName, document: dict[str, Any]) -> StateDoc:
        self.validate(document, f"{name} state")
        return self._write_locked(name, dumps(document), None)

    def _read_locked(self, name: str) -> StateDoc:
        path = self.path(name)
        if name == "staging" and not path.exists():
            # Staging starts as a copy of active; it is runtime data, not committed.
            active = self._read_locked("active")
            self._write_locked("staging", dumps(active.document), None)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{path.relative_to(self.workspace.root)} is missing",
                                fix="restore it with `git checkout -- state/` or roll back to a version") from None
        sha = hashlib.sha256(data).hexdigest()
        revision = self._revision_locked(name, sha)
        try:
            document = json.loads(data)
        except json.JSONDecodeError as exc:
            raise StateValidationError(f"{path.name} is not valid JSON: {exc}", field=path.name,
                                       fix="fix the file, or restore it from git") from None
        return StateDoc(name, revision, document, sha)

    def _revision_locked(self, name: str, sha: str) -> int:
        rev_path = self._rev_path(name)
        try:
            rev_text, rev_sha = rev_path.read_text().split()
            revision = int(rev_text)
        except (FileNotFoundError, ValueError):
            revision, rev_sha = 0, ""
        if rev_sha != sha:  # first read, or a write crashed after replacing the file: a new revision
            revision += 1
            rev_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(rev_path, f"{revision} {sha}\n".encode(), durable=False)
        return revision

    # --- writing ---

    def write(self, name: DocName, document: dict[str, Any], expected_revision: int | None) -> StateDoc:
        """Compare-and-swap: replace ``name`` if its revision is still ``expected_revision``.

        ``expected_revision=None`` writes unconditionally. Raises ConflictError when another writer won.
        """
        self.validate(document, f"{name} state")
        data = dumps(document)
        with self._lock():
            return self._write_locked(name, data, expected_revision)

    def _write_locked(self, name: str, data: bytes, expected_revision: int | None) -> StateDoc:
        path = self.path(name)
        current = None
        if path.exists():
            current = self._revision_locked(name, hashlib.sha256(path.read_bytes()).hexdigest())
        if expected_revision is not None and current != expected_revision:
            raise ConflictError(f"{name} state is at revision {current}, not {expected_revision}",
                                field=name, fix="read it again and retry your change")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Staging is rebuilt from active plus the feedback log, so after a power cut an older staging
        # costs nothing: only active (committed to git at each promotion) pays for fsync.
        atomic_write(path, data, durable=name == "active")
        sha = hashlib.sha256(data).hexdigest()
        revision = (current or 0) + 1
        # Not fsynced: if a power cut loses this record, the checksum no longer matches the file and
        # the next read counts a new revision, so a stale writer still loses its swap.
        atomic_write(self._rev_path(name), f"{revision} {sha}\n".encode(), durable=False)
        return StateDoc(name, revision, json.loads(data), sha)

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
                kind: str = "tuner", document: dict[str, Any] | None = None) -> Version:
        """Make staging (or ``document``, e.g. the exact staging a test tier passed) active, commit
        ``state/active.state.json`` and tag a patch version.

        If committing or tagging fails, active is restored byte for byte and no tag is made.
        """
        with self._lock():
            staging = self._read_locked("staging")
            document = self.migrate(document if document is not None else staging.document)
            self.validate(document, "staging state")
            data = dumps(document)
            return self._replace_active_and_version(
                data, bump="patch", reason=reason, author=author, kind=kind,
                extra={"staging_revision": staging.revision, **(extra or {})})

    def rollback(self, version: str, *, reason: str | None = None, author: str = "cli") -> Version:
        """A new patch version whose active state equals ``version``'s. Staging is reset to it too."""
        versions = self.workspace.versions
        target = versions.get(version)
        document = self.migrate(json.loads(versions.read_file(target.name, ACTIVE_PATH)))
        self.validate(document, f"state of {target.name}")
        data = dumps(document)
        with self._lock():
            made = self._replace_active_and_version(
                data, bump="patch", reason=reason or f"roll back to {target.name}", author=author,
                kind="rollback", extra={"rolled_back_to": target.name}, allow_empty=True)
            self._write_locked("staging", data, None)
        return made

    def _replace_active_and_version(self, data: bytes, *, bump, reason, author, kind, extra,
                                    allow_empty: bool = False) -> Version:
        active_path = self.path("active")
        old = active_path.read_bytes() if active_path.exists() else None
        if old == data and not allow_empty:
            raise UserError("staging equals active: nothing to promote",
                            fix="send feedback to the tuner first, or `ratchet state set staging FILE`")
        old_rev = self._rev_path("active").read_bytes() if self._rev_path("active").exists() else None
        self._write_locked("active", data, None)
        try:
            version = self.workspace.versions.make_version(
                bump, paths=[ACTIVE_PATH], reason=reason, kind=kind, author=author, extra=extra,
                allow_empty=allow_empty)
        except BaseException:
            if old is not None:  # restore byte for byte; nothing was tagged
                atomic_write(active_path, old)
            if old_rev is not None:
                atomic_write(self._rev_path("active"), old_rev)
            raise
        self.workspace.versioned(version)
        return version

    # --- pins ---

    def _pin_path(self) -> Path:
        return self.workspace.runtime_dir / "pin.json"

    def pin(self, version: str) -> str:
        """Serve ``version``'s state from now on, whatever active becomes, until ``unpin``."""
        name = self.workspace.versions.get(version).name
        atomic_write(self._pin_path(), json.dumps({"version": name}).encode())
        return name

    def unpin(self) -> None:
        self._pin_path().unlink(missing_ok=True)

    def pinned(self) -> str | None:
        try:
            return json.loads(self._pin_path().read_text())["version"]
        except (FileNotFoundError, KeyError, json.JSONDecodeError):
            return None

    def at_version(self, version: str) -> dict[str, Any]:
        """The active state document as of ``version``, migrated to the current schema."""
        versions = self.workspace.versions
        return self.migrate(json.loads(versions.read_file(versions.get(version).name, ACTIVE_PATH)))
