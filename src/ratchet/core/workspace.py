"""A workspace: the git repo that holds one agent service, configured by ``ratchet.toml``.

The configuration is read into pydantic models with unknown keys forbidden, so a typo is an error that
names the key instead of a silently ignored setting.
"""

from __future__ import annotations

import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ratchet.core.errors import ConfigError, NotFoundError, config_error

CONFIG_NAME = "ratchet.toml"
RUNTIME_DIR = ".ratchet"
STORE_URL_ENV = "RATCHET_STORE_URL"  # overrides [store] url


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkspaceSection(_Section):
    name: str = Field(description="the service's name, used in tags' metadata and telemetry")
    plugins: list[str] = Field(
        default_factory=list, description="workspace plugin modules, as paths relative to the workspace"
    )
    required_plugins: list[str] = Field(
        default_factory=list, description="distributions that must be installed, e.g. 'ratchet-foo>=0.3'"
    )
    remote: str | None = Field(
        default=None, description="the git remote (e.g. 'origin') that every version is pushed to and fetched "
        "from before the next one is made: hosts that share one store clone it and share it",
    )


class StrategyEntry(BaseModel):
    """One ``[[tuner.strategies]]`` table: ``key`` names the state section, ``strategy`` the class."""

    model_config = ConfigDict(extra="allow")
    key: str
    strategy: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PromotionPolicy(_Section):
    every_events: int = Field(default=50, ge=0, description="promote after this many new events (0: off)")
    every_seconds: float = Field(default=0, ge=0, description="promote pending events this often (0: off)")
    on_request: bool = Field(default=True, description="the tuner's promote() tool may promote")


class ServerSection(_Section):
    host: str = Field(default="127.0.0.1", description="address the server binds")
    port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")


class TunerSection(ServerSection):
    strategies: list[StrategyEntry] = Field(
        default_factory=list, description="[[tuner.strategies]] tables: key (state section), strategy (name), "
        "and the strategy's own options")
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy, description="when staging is promoted")


class ArchitectSection(ServerSection):
    planner: str | None = Field(default=None, description="planner name; default: llm if model set")
    model: str | None = Field(default=None, description="an init_chat_model string, e.g. 'openai:gpt-4o'")
    base_url: str | None = Field(default=None, description="the model's endpoint, e.g. an OpenAI-compatible "
                                 "server's http://127.0.0.1:8000/v1 or Ollama's http://127.0.0.1:11434; None: the "
                                 "provider's default (or its own environment variable, e.g. OPENAI_BASE_URL)")
    api_key_env: str | None = Field(default=None, description="the name of the environment variable that holds "
                                    "the model's key (never the key); None: the provider's own, e.g. "
                                    "OPENAI_API_KEY or ANTHROPIC_API_KEY")
    temperature: float | None = Field(default=None, ge=0, description="the model's temperature; None: not "
                                      "sent, the provider's default (reasoning models reject any other)")
    model_retries: int | None = Field(default=None, ge=0, le=10, description="how often the provider's client "
                                      "retries a failed model call (429, 5xx, lost connections); None: its default")
    max_steps: int = Field(default=25, ge=1, le=500, description="the LLM planner's limit of model calls in "
                           "one job; a job that reaches it without finishing its plan fails")
    model_timeout_seconds: float = Field(default=120, gt=0, description="how long the LLM planner waits for one "
                                         "model call (with the provider client's retries); never past the "
                                         "job's time limit")
    approval: Literal["none", "major", "agents", "all"] = Field(
        default="agents", description="which jobs wait in needs_approval for POST /jobs/{id}/approve: none; "
        "major (breaking changes); agents (major ones, and changes beyond the active state that an agent wrote: "
        "an external agent's job or a planner other than the playbook); all")
    job_timeout_seconds: float = Field(default=600, gt=0, description="time limit of a job's planning, "
                                       "applying and testing, from when it starts running")
    max_parallel_jobs: int = Field(default=2, ge=1, le=32, description="jobs the Architect runs at once, so "
                                   "that one waiting on its model holds up no other (merges still take turns)")
    playbook: str = Field(default="architect/playbook.yaml", description="the playbook planner's rules, relative "
                          "to the workspace")


class VersionsSection(ServerSection):
    signing_key: str | None = Field(
        default=None, description="private SSH key that signs every version's tag with git's own SSH signing "
        "(gpg.format=ssh; make one with `ssh-keygen -t ed25519`), relative to the workspace, ~ expanded. None: "
        "tags are not signed")
    allowed_signers: str | None = Field(
        default=None, description="git's allowed signers file (gpg.ssh.allowedSignersFile: a line `PRINCIPAL "
        "KEY` per trusted public key), relative to the workspace, ~ expanded. Each tag is shown as verified, "
        "unverified (a bad signature, or a key not listed) or unsigned; without this file no tag verifies")


class StoreSection(_Section):
    url: str = Field(default="sqlite:///.ratchet/ratchet.db", description="SQLAlchemy URL of the store")
    objects: str = Field(default=".ratchet/objects", description="fsspec URL or folder of the object store")
    objects_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options of the object store, e.g. for S3 "
        "{client_kwargs = {endpoint_url = 'http://minio:9000'}}; credentials come from the usual environment "
        "variables (AWS_ACCESS_KEY_ID, ...)",
    )
    sync: Literal["normal", "full"] = Field(
        default="normal", description="SQLite synchronous mode: normal survives a process crash, full a power cut"
    )


class AuthSection(_Section):
    token_file: str | None = Field(
        default=None, description="file holding the bearer token every server requires and every client sends "
        "(relative to the workspace, ~ expanded); RATCHET_API_TOKEN overrides it. None and no variable: the "
        "servers are open, and only loopback may be bound")
    cors_origins: list[str] = Field(
        default_factory=list, description="web origins (scheme://host[:port]) whose pages may call the REST apps "
        "(CORS); none by default")

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        import re

        for origin in origins:
            if not re.fullmatch(r"https?://[^/\s*]+", origin):
                raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port], e.g. "
                                 "'https://dashboard.example', one per page host (no '*', no path)")
        return origins


class LimitsSection(_Section):
    body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="largest request body the REST apps "
                            "(Architect, Versions) read; a larger one is refused with 413")
    file_bytes: int = Field(default=1024 * 1024, ge=1, description="largest file an Architect job's write_file "
                            "or replace_text may leave (413)")
    open_jobs: int = Field(default=10, ge=1, description="unfinished Architect jobs (queued, running, open for an "
                           "agent or waiting for approval); a new one beyond is refused with 429")
    open_worktrees: int = Field(default=10, ge=1, description="job worktrees under .ratchet/jobs; a new job beyond "
                                "is refused with 429")
    prune_after_days: float = Field(default=7, ge=0, description="a finished job's leftover worktree and branch are "
                                    "removed this long after it finished (its record stays)")


class StateSection(_Section):
    schema_file: str = Field(default="state/schema.json", alias="schema",
                             description="JSON Schema of the state documents, relative to the workspace")


class Config(_Section):
    workspace: WorkspaceSection
    state: StateSection = Field(default_factory=StateSection)
    runner: ServerSection = Field(default_factory=ServerSection)
    tuner: TunerSection = Field(default_factory=TunerSection)
    architect: ArchitectSection = Field(default_factory=ArchitectSection)
    versions: VersionsSection = Field(default_factory=VersionsSection)
    store: StoreSection = Field(default_factory=StoreSection)
    auth: AuthSection = Field(default_factory=AuthSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)

    @model_validator(mode="after")
    def _unique_strategy_keys(self) -> Config:
        keys = [s.key for s in self.tuner.strategies]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"tuner.strategies has duplicate key(s) {dupes}; each key names one state section")
        return self


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist", fix="run `ratchet init DIR` to make a workspace") from None
    return parse_config(text, path.name)


def parse_config(text: str, source: str = CONFIG_NAME) -> Config:
    """``ratchet.toml``'s text as a Config; errors name ``source`` (the file, or the file at a version)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}", field=source,
                          fix="fix the TOML syntax at the line given") from None
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, source, Config) from None


def find_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` that has a ``ratchet.toml``."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise NotFoundError(
        f"no {CONFIG_NAME} in {start} or any parent folder",
        fix="run inside a workspace, pass --workspace DIR, or make one with `ratchet init DIR`",
    )


class Workspace:
    """An opened workspace: its root, its config, and the paths and services built on them."""

    def __init__(self, root: Path, config: Config):
        self.root = root
        self.config = config

    @classmethod
    def open(cls, path: Path | str | None = None, *, search_parents: bool = True) -> Workspace:
        path = Path(path or ".")
        root = find_root(path) if search_parents else path.resolve()
        return cls(root, load_config(root / CONFIG_NAME))

    @property
    def name(self) -> str:
        return self.config.workspace.name

    @property
    def runtime_dir(self) -> Path:
        """Git-ignored runtime data: the store, locks, the object store, pins."""
        path = self.root / RUNTIME_DIR
        path.mkdir(exist_ok=True)
        return path

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def schema_path(self) -> Path:
        return self.root / self.config.state.schema_file

    def resolve(self, relative: str) -> Path:
        return (self.root / relative).resolve()

    @cached_property
    def plugins(self):
        """Entry-point plugins plus this workspace's own modules (loaded on first use)."""
        from ratchet.core.plugins import load_plugins

        return load_plugins(self)

    @cached_property
    def versions(self):
        from ratchet.core.signing import Signing
        from ratchet.core.versions import VersionStore

        cfg = self.config.versions
        return VersionStore(self.root, Signing(key=self._config_path(cfg.signing_key),
                                               allowed_signers=self._config_path(cfg.allowed_signers)))

    def _config_path(self, value: str | None) -> Path | None:
        """A path from ``ratchet.toml``: ~ expanded, relative to the workspace."""
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path

    @cached_property
    def state(self):
        from ratchet.core.state import StateManager

        return StateManager(self)

    @property
    def behaviour_paths(self) -> list[str]:
        """The workspace's files that decide how it behaves besides its state: ``ratchet.toml``, the state
        schema and the workspace plugins. A version is reproducible only if these are committed."""
        return [CONFIG_NAME, self.config.state.schema_file, *self.config.workspace.plugins]

    @property
    def store_url(self) -> str:
        """The store's SQLAlchemy URL: ``RATCHET_STORE_URL`` if set (credentials and hosts that differ per
        deployment stay out of the repo), else ``[store] url``; a relative SQLite path is made absolute
        against the workspace."""
        import os

        url = os.environ.get(STORE_URL_ENV) or self.config.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.root / url[len(prefix):])
        return url

    @cached_property
    def store(self):
        from ratchet.core.stores.sql import Store

        return Store.for_workspace(self)

    @cached_property
    def objects(self):
        from ratchet.core.stores.objects import ObjectStore

        return ObjectStore.for_workspace(self)

    def as_tagged(self, version: str) -> TaggedWorkspace:
        """This workspace as ``version`` configured it (see :class:`TaggedWorkspace`)."""
        return TaggedWorkspace(self, version)

    def emit(self, kind: str, payload: dict[str, Any]) -> int:
        """Write an event to the store's event log and tell every ``ratchet_on_event`` observer."""
        seq = self.store.append_event(kind, payload)
        self._observe("ratchet_on_event", kind=kind, payload=payload)
        return seq

    def versioned(self, version) -> None:
        """Tell every ``ratchet_on_version`` observer about a version just made."""
        self._observe("ratchet_on_version", version=version.name, metadata=version.metadata)

    def _observe(self, hook: str, **kwargs: Any) -> None:
        import logging

        try:  # an observer must never undo what it observes
            self.plugins.call(hook, workspace=self, **kwargs)
        except Exception as exc:  # noqa: BLE001
            logging.getLogger("ratchet").warning("%s", exc)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"


class TaggedWorkspace(Workspace):
    """A workspace as one of its versions configured it: ``ratchet.toml`` and the state schema are read
    from the version's tag, whatever the files on disk say now. The store, object store, versions and
    plugins are the workspace's own (plugin code runs only if the tagged state needs a migration)."""

    def __init__(self, workspace: Workspace, version: str):
        version = workspace.versions.get(version).name
        text = workspace.versions.read_file(version, CONFIG_NAME).decode("utf-8", errors="replace")
        super().__init__(workspace.root, parse_config(text, f"{CONFIG_NAME} at {version}"))
        self.version, self.current = version, workspace

    def active_state(self) -> dict[str, Any]:
        """The version's active state document as the version reads it: through its own tagged
        ``ratchet.toml`` and schema, not the current ones (which may name other strategies or a newer
        schema). What showing a version uses; serving one uses ``state.at_version``."""
        import json

        from ratchet.core.documents import ACTIVE_PATH

        return self.state.migrate(json.loads(self.versions.read_file(self.version, ACTIVE_PATH)))

    @cached_property
    def plugins(self):
        return self.current.plugins

    @cached_property
    def versions(self):
        return self.current.versions

    @cached_property
    def store(self):
        return self.current.store

    @cached_property
    def objects(self):
        return self.current.objects

    @cached_property
    def state(self):
        import json

        from ratchet.core.state import StateManager

        path = self.config.state.schema_file
        try:
            schema = json.loads(self.versions.read_file(self.version, path))
        except ValueError as exc:
            raise ConfigError(f"{path} at {self.version} is not valid JSON: {exc}", field=path,
                              fix="a tagged file cannot change: show the version with `git show`") from None
        return StateManager(self, schema=schema)

    def __repr__(self) -> str:
        return f"TaggedWorkspace({str(self.root)!r}, {self.version!r})"
