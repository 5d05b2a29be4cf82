"""``ratchet doctor``: check a workspace, its store, its servers, its token and its model configuration,
changing nothing and spending no model tokens.

Each check ends ``ok``, ``warn`` (works, but worth a look) or ``fail`` (something will not work), with
what was found and, unless ok, the fix. Checks that need something that failed before (the store's
tables need a connection) are left out rather than failing twice.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ratchet.core.errors import RatchetError

Status = Literal["ok", "warn", "fail"]
SERVERS = ("runner", "tuner", "architect", "versions")
MCP_SERVERS = ("runner", "tuner")
# A route of each REST server that needs the token, to show the token is accepted.
AUTHED_ROUTES = {"architect": "/jobs?limit=1", "versions": "/versions?limit=1"}
EXTRAS = ("openai", "anthropic", "ollama")  # the providers ratchet has an extra for


@dataclass
class Check:
    area: str  # workspace, store, servers, token, model
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failed(area: str, name: str, exc: RatchetError) -> Check:
    field = f" ({exc.field})" if exc.field else ""
    return Check(area, name, "fail", f"{exc.message}{field}", exc.fix)


def diagnose(root: Path | None = None, *, timeout: float = 3.0) -> list[Check]:
    """Every check of the workspace at or above ``root``, in order; ``timeout`` bounds each network call."""
    from ratchet.core.workspace import Workspace

    try:
        ws = Workspace.open(root or Path.cwd())
    except RatchetError as exc:
        return [failed("workspace", "ratchet.toml", exc)]
    checks = [Check("workspace", "ratchet.toml", "ok", f"{ws.root / 'ratchet.toml'} parses and validates")]
    for area, run in (("workspace", _workspace), ("store", _store), ("token", _token), ("servers", _servers),
                      ("model", _model)):
        try:
            checks += list(run(ws, timeout))
        except RatchetError as exc:  # a check that cannot go on says why, the others still run
            checks.append(failed(area, area, exc))
    return checks


# --- workspace -------------------------------------------------------------------------------------


def _workspace(ws, timeout: float) -> Iterator[Check]:
    try:
        names = [info.name for info in ws.plugins.infos()]
        yield Check("workspace", "plugins", "ok", f"{len(names)} plugins load")
    except RatchetError as exc:
        yield failed("workspace", "plugins", exc)
    except Exception as exc:  # noqa: BLE001 -- a plugin's own import error
        yield Check("workspace", "plugins", "fail", f"a plugin does not load: {type(exc).__name__}: {exc}",
                    "fix or remove the plugin named in [workspace] plugins, or install what it imports")
    yield _state_file(ws)
    yield _budgets(ws)
    yield from _git(ws)


def _state_file(ws) -> Check:
    from ratchet.core.documents import ACTIVE_PATH

    path = ws.root / ACTIVE_PATH
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        ws.state.validate(document, ACTIVE_PATH)
    except FileNotFoundError:
        return Check("workspace", "state", "fail", f"{ACTIVE_PATH} is missing",
                     "restore it with `git checkout -- state/`, or roll back to a version")
    except json.JSONDecodeError as exc:
        return Check("workspace", "state", "fail", f"{ACTIVE_PATH} is not valid JSON: {exc}",
                     f"fix the JSON syntax at line {exc.lineno}, or `git checkout -- {ACTIVE_PATH}`")
    except RatchetError as exc:
        return failed("workspace", "state", exc)
    return Check("workspace", "state", "ok", f"{ACTIVE_PATH} is valid against {ws.config.state.schema_file}")


def _budgets(ws) -> Check:
    from ratchet.tiers.budgets import BUDGETS_PATH, load_budgets

    try:
        load_budgets(ws)
    except RatchetError as exc:
        return failed("workspace", "budgets", exc)
    return Check("workspace", "budgets", "ok", f"{BUDGETS_PATH} is valid")


def _git(ws) -> Iterator[Check]:
    versions = ws.versions
    try:
        head = versions.head()
    except RatchetError as exc:
        yield Check("workspace", "git", "fail", f"{ws.root} is not a git repository with a commit: {exc.message}",
                    "make the workspace with `ratchet init DIR`, or run `git init` and tag a first version")
        return
    if head is None:
        yield Check("workspace", "git", "fail", "the repository has no commit",
                    "make the workspace with `ratchet init DIR`")
        return
    tagged = [v.name for v in versions.list() if v.commit == head]
    if tagged:
        yield Check("workspace", "git", "ok", f"HEAD {head[:10]} is version {tagged[-1]}")
    else:
        latest = versions.latest()
        yield Check("workspace", "git", "warn", f"HEAD {head[:10]} is not a tagged version (latest: "
                    f"{latest.name if latest else 'none'})",
                    "versions are made by ratchet (state promote, rollback, the Architect); check out main at the "
                    "latest version, or commit your change through a version")
    dirty = [line for line in versions.git("status", "--porcelain").decode().splitlines() if line]
    if dirty:
        shown = ", ".join(line[3:] for line in dirty[:5]) + (" ..." if len(dirty) > 5 else "")
        yield Check("workspace", "work tree", "warn", f"{len(dirty)} uncommitted change(s): {shown}",
                    "commit or discard them: a version is made only from committed files")
    else:
        yield Check("workspace", "work tree", "ok", "clean")


# --- store -----------------------------------------------------------------------------------------


def _store(ws, timeout: float) -> Iterator[Check]:
    import sqlalchemy as sa

    from ratchet.core.stores.schema import metadata

    url = ws.store_url
    shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    database = sa.engine.make_url(url).database
    if url.startswith("sqlite") and database and database != ":memory:" and not Path(database).exists():
        yield Check("store", "connect", "warn", f"{shown}: the database file does not exist yet",
                    "it is made when a server or command first uses the store (e.g. `ratchet state show`)")
        return
    args = {"connect_timeout": max(1, int(timeout))} if url.startswith("postgresql") else {}
    engine = sa.create_engine(url, connect_args=args)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
    except Exception as exc:  # noqa: BLE001 -- any driver's error
        yield Check("store", "connect", "fail", f"cannot connect to {shown}: {type(exc).__name__}: "
                    f"{' '.join(str(exc).split())[:300]}",
                    "check [store] url (or RATCHET_STORE_URL) and that the database server is running")
        return
    finally:
        engine.dispose()
    yield Check("store", "connect", "ok", f"connected to {shown}")
    missing = sorted(set(metadata.tables) - tables)
    if missing:
        yield Check("store", "schema", "warn", f"{len(missing)} of ratchet's tables are missing: {', '.join(missing)}",
                    "they are made when a server or command first uses the store (e.g. `ratchet state show`)")
    else:
        yield Check("store", "schema", "ok", f"all {len(metadata.tables)} tables present")


# --- token -----------------------------------------------------------------------------------------


def _token(ws, timeout: float) -> Iterator[Check]:
    from ratchet.core import auth

    token = auth.load_token(ws)  # a token_file that cannot be read, or a short token, fails here
    exposed = [name for name in SERVERS if not auth.is_loopback(getattr(ws.config, name).host)]
    if token:
        where = auth.TOKEN_ENV if os.environ.get(auth.TOKEN_ENV) else f"[auth] token_file {ws.config.auth.token_file}"
        yield Check("token", "token", "ok", f"from {where} (id {auth.token_id(token)})")
    elif exposed:
        yield Check("token", "token", "fail", f"no token, and {', '.join(exposed)} bind a non-loopback address, "
                    "which the servers refuse without one",
                    f"set {auth.TOKEN_ENV} (make one with `ratchet token`) or [auth] token_file in ratchet.toml")
    else:
        yield Check("token", "token", "warn", f"no token ({auth.TOKEN_ENV} unset, no [auth] token_file): the "
                    "servers are open to anyone on this host",
                    f"to require one, set {auth.TOKEN_ENV} (make one with `ratchet token`) or [auth] token_file")


# --- servers ---------------------------------------------------------------------------------------


def _servers(ws, timeout: float) -> Iterator[Check]:
    from ratchet.core import auth

    try:
        token = auth.load_token(ws)
    except RatchetError:
        token = None  # the token check said why
    for name in SERVERS:
        cfg = getattr(ws.config, name)
        if not cfg.port:
            yield Check("servers", name, "ok", "port 0: chosen when it starts")
            continue
        host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
        address = f"{host}:{cfg.port}"
        try:
            socket.create_connection((host, cfg.port), timeout=timeout).close()
        except OSError:
            yield Check("servers", name, "ok", f"{address} is free (not running)")
            continue
        identify = _mcp_server if name in MCP_SERVERS else _rest_server
        yield identify(ws, name, f"http://{address}", token, timeout)


def _rest_server(ws, name: str, url: str, token: str | None, timeout: float) -> Check:
    import httpx

    from ratchet.core import auth

    expected = f"Ratchet {name}: {ws.name}"
    try:
        with httpx.Client(base_url=url, timeout=timeout) as http:
            title = http.get("/openapi.json").json().get("info", {}).get("title")
            if title != expected:
                return _other(name, url, f"it serves {title!r}" if title else "it is not a Ratchet server")
            status = http.get(AUTHED_ROUTES[name], headers=auth.header(token)).status_code
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return _other(name, url, f"it does not answer as a Ratchet server ({type(exc).__name__})")
    if status == 401:
        return _refused(name, url, token)
    if status != 200:
        return Check("servers", name, "fail", f"{url}: the {name} answered {AUTHED_ROUTES[name]} with {status}",
                     f"see its log (.ratchet/logs/{name}.log under `ratchet up`)")
    return Check("servers", name, "ok", f"{url}: the Ratchet {name} of this workspace answers"
                 + (" and accepts the token" if token else ""))


def _mcp_server(ws, name: str, url: str, token: str | None, timeout: float) -> Check:
    import anyio
    import httpx
    from mcp import Client

    from ratchet.core import auth

    async def server_name() -> str:
        with anyio.fail_after(timeout):
            async with Client(auth.mcp_target(f"{url}/mcp", token), mode="legacy") as client:
                return client.server_info.name

    try:
        served = anyio.run(server_name)
    except Exception as exc:  # noqa: BLE001 -- whatever answers there, the MCP handshake failed
        if _status_of(exc) == 401:
            return _refused(name, url, token)
        try:  # tell a Ratchet server that refuses us from a stranger
            status = httpx.post(f"{url}/mcp", timeout=timeout).status_code
        except httpx.HTTPError:
            status = None
        if status == 401:
            return _refused(name, url, token)
        return _other(name, url, f"no MCP server answers at /mcp ({type(exc).__name__})")
    if served != f"ratchet-{name}:{ws.name}":
        return _other(name, url, f"it is the MCP server {served!r}")
    return Check("servers", name, "ok", f"{url}/mcp: the Ratchet {name} of this workspace answers"
                 + (" and accepts the token" if token else ""))


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status inside an exception (or an exception group of them), if any."""
    response = getattr(exc, "response", None)
    if response is not None:
        return getattr(response, "status_code", None)
    for inner in getattr(exc, "exceptions", ()):
        status = _status_of(inner)
        if status is not None:
            return status
    cause = exc.__cause__ or exc.__context__
    return _status_of(cause) if cause is not None else None


def _other(name: str, url: str, what: str) -> Check:
    return Check("servers", name, "fail", f"{url}: something else holds the {name}'s port: {what}",
                 f"stop it, or give [{name}] another port (0 picks a free one at start)")


def _refused(name: str, url: str, token: str | None) -> Check:
    from ratchet.core import auth

    said = "refuses this token" if token else "requires a token and none is set"
    return Check("servers", name, "fail", f"{url}: the {name} {said} (401)",
                 f"give every process the same token: {auth.TOKEN_ENV} or [auth] token_file")


# --- model -----------------------------------------------------------------------------------------


def _model(ws, timeout: float) -> Iterator[Check]:
    from ratchet.architect.planners import select_planner
    from ratchet.plugins.planners.llm import LlmPlanner, provider_of

    cfg = ws.config.architect
    planner = select_planner(ws, None)
    if not isinstance(planner, LlmPlanner):
        yield Check("model", "planner", "ok", f"planner {planner.name!r}: no model to check")
        return
    if not cfg.model:
        yield Check("model", "model", "fail", "the llm planner is selected but [architect] model is not set",
                    "set [architect] model, e.g. model = \"openai:gpt-4o-mini\"")
        return
    provider = provider_of(cfg.model)
    yield _package(cfg.model, provider)
    variable = planner.key_variable()
    key = os.environ.get(variable) if variable else None
    if variable is None:
        yield Check("model", "key", "ok", f"the {provider} provider needs no key"
                    if provider in ("ollama",) else "no key variable known for this provider; none checked")
    elif key:
        yield Check("model", "key", "ok", f"{variable} is set")
    else:
        yield Check("model", "key", "fail", f"{variable} is not set in this environment",
                    f"set {variable} where the Architect runs (`ratchet up` passes its environment on), or name the "
                    "variable that holds the key in [architect] api_key_env")
    yield _endpoint(cfg, provider, key, variable, timeout)


def _package(model: str, provider: str | None) -> Check:
    import importlib.util

    module = f"langchain_{provider}" if provider else None
    if module is None:
        return Check("model", "package", "fail", f"cannot tell the provider of {model!r}",
                     "prefix the model with its provider, e.g. \"openai:gpt-4o-mini\"")
    for needed in ("langchain", module):
        if importlib.util.find_spec(needed) is None:
            extra = f" (or the ratchet[{provider}] extra)" if provider in EXTRAS else ""
            return Check("model", "package", "fail", f"{needed} is not installed",
                         f"pip install {needed.replace('_', '-')}{extra} in the Architect's environment")
    return Check("model", "package", "ok", f"{module} imports")


def _endpoint(cfg, provider: str | None, key: str | None, variable: str | None, timeout: float) -> Check:
    """List the provider's models with one GET (no tokens spent) and look for the configured one."""
    import httpx

    name = cfg.model.split(":", 1)[1] if ":" in cfg.model else cfg.model
    listing = _listing(cfg, provider, key)
    if listing is None:
        return Check("model", "endpoint", "warn", f"no model listing known for the {provider} provider; the "
                     "endpoint was not checked", "submit a small request and see the job's transcript")
    url, headers, names_of = listing
    did = f"GET {url} (lists the models; spends no tokens)"
    try:
        response = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return Check("model", "endpoint", "fail", f"{did}: cannot reach it: {type(exc).__name__}: {exc}",
                     "check [architect] base_url and that the model's server is running and reachable from here")
    if response.status_code in (401, 403):
        return Check("model", "endpoint", "fail", f"{did}: refused the key ({response.status_code})",
                     f"check the key in {variable or 'the provider key variable'}, or name the variable that holds "
                     "the right one in [architect] api_key_env")
    if response.status_code != 200:
        return Check("model", "endpoint", "fail", f"{did}: answered {response.status_code}",
                     "check [architect] base_url: it should be the API's root (e.g. http://HOST:PORT/v1)")
    try:
        names = names_of(response.json())
    except (ValueError, KeyError, TypeError, AttributeError):
        return Check("model", "endpoint", "warn", f"{did}: answered 200, but not with a model listing",
                     "check [architect] base_url: it should be the API's root (e.g. http://HOST:PORT/v1)")
    if name not in names:
        return Check("model", "endpoint", "warn", f"{did}: reachable, but {name!r} is not among its "
                     f"{len(names)} models", "check the model's name in [architect] model")
    return Check("model", "endpoint", "ok", f"{did}: reachable, and it serves {name!r}")


Listing = tuple[str, dict[str, str], Callable[[Any], list[str]]]


def _listing(cfg, provider: str | None, key: str | None) -> Listing | None:
    """Where the provider lists its models, the headers that carry the key, and how to read the names."""
    if provider == "ollama":
        base = (cfg.base_url or os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434").rstrip("/")
        return f"{base}/api/tags", {}, lambda body: [m["name"] for m in body["models"]] + \
            [m["name"].removesuffix(":latest") for m in body["models"]]
    if provider == "anthropic":
        base = (cfg.base_url or os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com").rstrip("/")
        return f"{base}/v1/models", {"x-api-key": key or "", "anthropic-version": "2023-06-01"}, \
            lambda body: [m["id"] for m in body["data"]]
    if provider == "openai" or cfg.base_url:  # OpenAI and every OpenAI-compatible endpoint
        base = (cfg.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        return f"{base}/models", {"Authorization": f"Bearer {key}"} if key else {}, \
            lambda body: [m["id"] for m in body["data"]]
    return None
