"""Finding, loading and calling plugins.

Load order: entry points of group ``ratchet`` sorted by name (first-party plugins are registered the
same way), then the workspace's modules listed in ``ratchet.toml``. ``RATCHET_LOAD_PLUGINS=a,b`` loads
only the named entry points (empty: none); ``RATCHET_TRACE_PLUGINS=1`` traces every hook call to stderr.

Hooks are called through :meth:`Plugins.call`, which runs impls one at a time so that a failure names
the plugin, its distribution and the hook.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import pluggy

from ratchet.core import hookspecs
from ratchet.core.errors import PluginError, RatchetError

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

GROUP = "ratchet"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    dist: str | None  # "name version" of the distribution, None for workspace modules
    source: str  # "entry point", "workspace" or "registered"
    hooks: tuple[str, ...]


class Plugins:
    """A pluggy manager plus the bookkeeping that lets errors name plugins and distributions."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self._dists: dict[str, str | None] = {}
        self._distributions: dict[str, tuple[str, str]] = {}  # entry-point plugin -> (distribution, version)
        self._sources: dict[str, str] = {}
        if os.environ.get("RATCHET_TRACE_PLUGINS"):
            self.pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
            self.pm.enable_tracing()

    # --- loading ---

    def register(self, plugin: object, name: str, *, dist: str | None = None, source: str = "registered") -> None:
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(str(exc), plugin=name, dist=dist,
                              fix="match the hook's signature in ratchet.core.hookspecs") from None
        except ValueError as exc:  # already registered under this name
            raise PluginError(str(exc), plugin=name, dist=dist, fix="give each plugin a unique name") from None
        self._dists[name] = dist
        self._sources[name] = source

    def load_entrypoints(self, only: list[str] | None = None) -> None:
        eps = sorted(metadata.entry_points(group=GROUP), key=lambda ep: ep.name)
        seen: set[str] = set()
        for ep in eps:
            if ep.name in seen or (only is not None and ep.name not in only):
                continue  # the same dist can be visible twice on odd sys.paths
            seen.add(ep.name)
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else None
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 -- any import failure must name the plugin
                raise PluginError(
                    f"entry point {ep.name} = {ep.value!r} could not be imported: {type(exc).__name__}: {exc}",
                    plugin=ep.name, dist=dist,
                    fix=f"reinstall or upgrade {ep.dist.name if ep.dist else 'the plugin'}, "
                    f"or skip it with RATCHET_LOAD_PLUGINS",
                ) from exc
            self.register(module, ep.name, dist=dist, source="entry point")
            if ep.dist:
                self._distributions[ep.name] = (ep.dist.name, ep.dist.version)

    def load_workspace_modules(self, workspace: Workspace) -> None:
        for rel in workspace.config.workspace.plugins:
            path = workspace.resolve(rel)
            name = f"workspace:{rel}"
            if not path.is_file():
                raise PluginError(f"{rel} does not exist in {workspace.root}", plugin=name,
                                  fix="fix the path in [workspace] plugins of ratchet.toml")
            self.register(import_path(path), name, source="workspace")

    def check(self) -> None:
        """Fail on hookimpls whose name matches no hookspec (a typo would otherwise be silently ignored)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            plugin = self.pm.get_name(exc.plugin) or "?"
            raise PluginError(str(exc), plugin=plugin, dist=self._dists.get(plugin),
                              fix="rename the function to a ratchet_* hook listed by `ratchet plugins --hooks`") from None

    # --- calling ---

    def call(self, hook: str, **kwargs: Any) -> list[Any]:
        """Call every impl of ``hook`` in pluggy's order, each with only the arguments it takes.

        Returns the non-None results. Stops at the first result for ``firstresult`` hooks.
        """
        caller = getattr(self.pm.hook, hook)
        firstresult = bool(caller.spec and caller.spec.opts.get("firstresult"))
        results = []
        for impl in reversed(caller.get_hookimpls()):
            args = {k: kwargs[k] for k in impl.argnames if k in kwargs}
            try:
                result = impl.function(**args)
            except RatchetError as exc:
                if isinstance(exc, PluginError):
                    raise
                raise self.error(impl.plugin_name, hook, exc) from exc
            except Exception as exc:  # noqa: BLE001 -- the point is to name the plugin
                raise self.error(impl.plugin_name, hook, exc) from exc
            if result is not None:
                if firstresult:
                    return [result]
                results.append(result)
        return results

    def error(self, plugin: str, hook: str, exc: BaseException, fix: str | None = None) -> PluginError:
        return PluginError(
            f"{type(exc).__name__}: {exc}", plugin=plugin, dist=self._dists.get(plugin), hook=hook,
            fix=fix or getattr(exc, "fix", None) or f"see `ratchet plugins --hook {hook}`, then fix or remove the plugin",
        )

    def collect(self, hook: str, validate: Callable[..., Any] | None = None, *, key: Callable[[Any], str],
                **kwargs: Any) -> dict[str, tuple[str, Any]]:
        """Run a ``ratchet_register_*`` hook and return ``{key: (plugin_name, obj)}``.

        ``validate(obj, *args, **kw)`` may normalise the registered object or raise; duplicates are refused.
        """
        found: dict[str, tuple[str, Any]] = {}
        caller = getattr(self.pm.hook, hook)
        for impl in reversed(caller.get_hookimpls()):
            plugin = impl.plugin_name

            def register(obj: Any, *args: Any, _plugin: str = plugin, **kw: Any) -> None:
                item = validate(obj, *args, **kw) if validate else obj
                k = key(item)
                if k in found:
                    raise ValueError(f"{k!r} is already registered by plugin {found[k][0]!r}")
                found[k] = (_plugin, item)

            args = {"register": register, **kwargs}
            try:
                impl.function(**{k: args[k] for k in impl.argnames if k in args})
            except PluginError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise self.error(plugin, hook, exc) from exc
        return found

    # --- introspection ---

    def infos(self) -> list[PluginInfo]:
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda np: np[0]):
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            out.append(PluginInfo(name, self._dists.get(name), self._sources.get(name, "registered"), hooks))
        return out

    def distributions(self) -> dict[str, str]:
        """``{distribution: version}`` of the installed distributions whose entry-point plugins are
        loaded, sorted by name: what a version records so that it can be reproduced."""
        return dict(sorted(set(self._distributions.values())))

    def hook_names(self) -> list[str]:
        return sorted(n for n in dir(self.pm.hook) if n.startswith("ratchet_"))


def import_path(path: Path) -> ModuleType:
    """Import a workspace module by file path under a name unique to its location."""
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    mod_name = f"ratchet_workspace_{digest}.{path.stem}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001
        del sys.modules[mod_name]
        raise PluginError(f"{type(exc).__name__}: {exc}", plugin=f"workspace:{path.name}",
                          fix=f"fix the error in {path}") from exc
    return module


def _selected_entrypoints() -> list[str] | None:
    raw = os.environ.get("RATCHET_LOAD_PLUGINS")
    if raw is None:
        return None
    return [n.strip() for n in raw.split(",") if n.strip()]


def check_required(requirements: list[str]) -> None:
    """Fail like pytest's ``required_plugins`` when a required distribution is missing or too old."""
    from packaging.requirements import InvalidRequirement, Requirement

    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise PluginError(str(exc), plugin=text, fix="write it like 'ratchet-foo>=0.3'") from None
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            raise PluginError("required plugin is not installed", plugin=req.name,
                              fix=f"pip install '{text}'") from None
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            raise PluginError(f"version {installed} is installed but {text} is required",
                              plugin=req.name, dist=f"{req.name} {installed}", fix=f"pip install '{text}'")


def load_plugins(workspace: Workspace | None = None, *, entrypoints: bool = True) -> Plugins:
    """A manager with entry-point plugins and, if given, the workspace's own modules loaded."""
    plugins = Plugins()
    if entrypoints:
        plugins.load_entrypoints(_selected_entrypoints())
    if workspace is not None:
        check_required(workspace.config.workspace.required_plugins)
        plugins.load_workspace_modules(workspace)
    plugins.check()
    return plugins
