"""The runner as an MCP server: a thin adapter from :class:`ratchet.runner.service.Runner` to the wire.

Tools are the workspace's runner tools (schemas from their type hints, the ``RunContext`` parameter
left out). Resources: ``state://active`` (the served state, its version and revision),
``version://current`` and ``session://{conversation_id}`` (turns, decisions, feedback). A watcher
reloads when the store says the state changed (PostgreSQL NOTIFY, and a poll every 100 ms
as the safety net; on SQLite the poll alone) and notifies the subscribers of ``state://active`` and
``version://current`` when it changes: ``subscriptions/listen`` streams (protocol 2026-07-28) and
``resources/subscribe`` sessions (2025-11-25).
"""

from __future__ import annotations

import contextlib
import inspect
import json
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated

from ratchet import __version__
from ratchet.core.errors import NotFoundError, RatchetError, unavailable
from ratchet.runner.service import OVERRIDES_META_KEY, Runner, ToolSpec
from ratchet.serving import RatchetMCPServer, mcp_auth, refuse_unknown_arguments
from ratchet.subscriptions import LegacySubscribers

RELOAD_INTERVAL = 0.1  # seconds between checks for new state; a promotion is served within this
CHANGING_RESOURCES = ("state://active", "version://current")  # subscribers hear when these change


def tool_error(exc: BaseException) -> ToolError:
    """An error the caller can read and fix, worded as the core worded it."""
    if isinstance(exc, (RatchetError, ValueError)):  # a ValueError from a tool says what was wrong
        return ToolError(str(exc))
    return ToolError(f"{type(exc).__name__}: {exc}")


def infrastructure_error(exc: Exception) -> ToolError:
    """A failure of the store or the disk as a tool error that says what failed and that a retry may
    work (the SDK would say only "Error executing tool"); re-raises anything else, a bug."""
    described = unavailable(exc)
    if described is None:
        raise exc
    return tool_error(described)


def _mcp_tool(runner: Runner, spec: ToolSpec):
    """A function MCPServer can register: the tool's own parameters plus the request context."""

    def call(ctx: Context, **arguments: Any) -> Any:
        meta = ctx.request_context.meta or {}
        overrides = meta.get(OVERRIDES_META_KEY) if hasattr(meta, "get") else None
        try:
            return runner.call(spec.name, arguments, overrides=overrides)  # trace id: the call's span
        except (RatchetError, ValueError, TypeError, KeyError) as exc:  # the caller's to fix
            raise tool_error(exc) from exc
        except Exception as exc:  # noqa: BLE001 -- the store's or the disk's failure, said plainly
            raise infrastructure_error(exc) from exc

    ctx_param = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in spec.parameters]
    returns = dict[str, Any] if spec.returns is dict else spec.returns  # bare dict gets no output schema
    call.__signature__ = inspect.Signature([*params, ctx_param], return_annotation=returns)
    call.__annotations__ = {**{p.name: p.annotation for p in params}, "ctx": Context, "return": returns}
    call.__name__ = spec.name
    call.__doc__ = spec.description
    return call


def build_server(runner: Runner, *, token: str | None = None) -> MCPServer:
    """An MCPServer serving ``runner``. Build one per uvicorn start: an MCP app runs only once."""
    bus = InMemorySubscriptionBus()
    legacy = LegacySubscribers()

    @contextlib.asynccontextmanager
    async def lifespan(_server: MCPServer):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_watch, runner, bus, legacy)
            yield {"runner": runner}
            tg.cancel_scope.cancel()

    server = RatchetMCPServer(f"ratchet-runner:{runner.workspace.name}", version=__version__, log_level="WARNING",
                       **mcp_auth(token),
                       subscriptions=bus, lifespan=lifespan,
                       instructions="Runner of a Ratchet workspace. Pass the same conversation_id for every "
                       "turn of a conversation; send feedback about it to the tuner.")
    for spec in runner.tools.values():
        server.add_tool(_mcp_tool(runner, spec), name=spec.name, description=spec.description or None)
        refuse_unknown_arguments(server, spec.name)
    legacy.install(server)

    @server.resource("state://active", mime_type="application/json",
                     description="The state being served, with its version and revision.")
    def active_state() -> str:
        return json.dumps(runner.snapshot.to_dict(), sort_keys=True)

    @server.resource("version://current", mime_type="application/json", description="The version being served.")
    def current_version() -> str:
        snap = runner.snapshot
        return json.dumps({"version": snap.version, "source": snap.source, "revision": snap.revision})

    @server.resource("session://{conversation_id}", mime_type="application/json",
                     description="A conversation's turns, decisions and feedback.")
    def session(conversation_id: str) -> str:
        try:
            return json.dumps(runner.session(conversation_id), default=str, sort_keys=True)
        except NotFoundError as exc:
            raise ResourceNotFoundError(str(exc)) from exc

    return server


async def _watch(runner: Runner, bus: InMemorySubscriptionBus, legacy: LegacySubscribers) -> None:
    try:
        while True:
            await anyio.to_thread.run_sync(runner.wait_for_change, RELOAD_INTERVAL)
            try:
                changed = await anyio.to_thread.run_sync(runner.reload_if_changed)
            except RatchetError:
                continue  # e.g. a half-made workspace change: keep serving the snapshot we have
            if changed:
                for uri in CHANGING_RESOURCES:
                    await bus.publish(ResourceUpdated(uri=uri))  # 2026-07-28: subscriptions/listen
                    await legacy.notify(uri)  # 2025-11-25: resources/subscribe
    finally:
        runner.close()  # the server stops: so does its listener (and its database connection)
