"""The tuner as an MCP server: a thin adapter from :class:`ratchet.tuner.service.Tuner` to the wire.

Feedback tools are the strategies' (with their JSON Schemas); ``promote()``, ``status()`` and
``rebuild_staging()`` are the tuner's own. A feedback call returns once its events are durably in the
log; a background worker then folds them into staging and promotes by the workspace's policy (every
N events, every T seconds).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import subprocess
import sys
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field

from ratchet import __version__
from ratchet.core.errors import RatchetError
from ratchet.runner.server import infrastructure_error, tool_error
from ratchet.serving import RatchetMCPServer, mcp_auth, refuse_unknown_arguments
from ratchet.tuner.results import FeedbackAck, PromoteResult, RebuildResult, TunerStatus
from ratchet.tuner.service import Route, Tuner

log = logging.getLogger("ratchet.tuner")
PROMOTE_DESCRIPTION = ("Apply pending feedback, run the micro tier on staging and, on a pass, make it active and "
                       "tag a patch version. Returns whether it promoted, the version, and the micro-tier summary.")
COALESCE_SECONDS = 0.02  # let events arriving together be folded by one compare-and-swap


class _Worker:
    """Applies feedback and promotes in a thread of this process, woken by new events (in-process
    servers and tests; ``ratchet serve tuner`` runs :mod:`ratchet.tuner.worker` as a process instead)."""

    def __init__(self, tuner: Tuner):
        self.tuner = tuner
        self.wake = anyio.Event()

    def poke(self) -> None:
        self.wake.set()

    async def run(self) -> None:
        period = self.tuner.workspace.config.tuner.promotion.every_seconds or None
        next_timed = anyio.current_time() + period if period else None
        while True:
            timeout = None if next_timed is None else max(0.0, next_timed - anyio.current_time())
            with anyio.move_on_after(timeout):
                await self.wake.wait()
            await anyio.sleep(COALESCE_SECONDS)
            self.wake = anyio.Event()
            timed = next_timed is not None and anyio.current_time() >= next_timed
            if timed:
                next_timed = anyio.current_time() + period
            try:
                outcome = await self.tuner.tick(timed=timed)
            except RatchetError as exc:
                log.error("%s", exc)
                continue
            if outcome and not outcome["promoted"]:
                log.warning("promotion skipped: %s", outcome["reason"])


@contextlib.asynccontextmanager
async def _worker_process(tuner: Tuner):
    """Run :mod:`ratchet.tuner.worker` beside this server; it exits with the server."""
    proc = subprocess.Popen([sys.executable, "-m", "ratchet.tuner.worker", str(tuner.workspace.root),
                             str(os.getpid())])
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            await anyio.to_thread.run_sync(lambda: proc.wait(timeout=10))
        except subprocess.TimeoutExpired:
            proc.kill()


def without_optional_nulls(schema: dict[str, Any], value: Any) -> Any:
    """``value`` without the nulls the schema's objects (and their arrays' items) do not require: JSON
    clients send null for "not given". A null where a value is required stays, for the schema to refuse."""
    if isinstance(value, dict) and "properties" in schema:
        required = set(schema.get("required", ()))
        return {k: without_optional_nulls(schema["properties"].get(k, {}), v) for k, v in value.items()
                if v is not None or k in required}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [without_optional_nulls(schema["items"], v) for v in value]
    return value


def _feedback_tool(tuner: Tuner, route: Route, worker: _Worker | None):
    """A function MCPServer can register for one feedback tool; its advertised schema is replaced by
    the strategy's JSON Schema, which the tuner also validates against."""
    schema = route.tool.input_schema
    name = route.tool.name

    async def call(ctx: Context, **arguments: Any) -> FeedbackAck:
        given = without_optional_nulls(schema, arguments)  # an optional argument sent as null is left out
        try:
            ack = await anyio.to_thread.run_sync(lambda: tuner.feedback(name, given))  # trace id: its span's
        except RatchetError as exc:
            raise tool_error(exc) from exc
        except Exception as exc:  # noqa: BLE001 -- the store's or the disk's failure, said plainly
            raise infrastructure_error(exc) from exc
        if worker is not None:
            worker.poke()
        return ack

    params = [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=Any, default=None)
              for p in schema.get("properties", {})]
    params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))
    call.__signature__ = inspect.Signature(params, return_annotation=FeedbackAck)
    call.__annotations__ = {**{p.name: p.annotation for p in params}, "return": FeedbackAck}
    call.__name__ = name
    return call


def build_server(tuner: Tuner, *, worker: str = "thread", token: str | None = None) -> MCPServer:
    """An MCPServer serving ``tuner``. Build one per uvicorn start: an MCP app runs only once.

    ``worker``: where feedback is folded and promotions run: ``"thread"`` (in this process),
    ``"process"`` (a worker process beside the server, so acknowledging and folding use separate cores)
    or ``"none"`` (another process does it, e.g. a second tuner).
    """
    if worker not in ("thread", "process", "none"):
        raise ValueError(f"worker must be thread, process or none, not {worker!r}")
    background = _Worker(tuner) if worker == "thread" else None

    @contextlib.asynccontextmanager
    async def lifespan(_server: MCPServer):
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, tuner.prepare)  # so the first promotion is not slow
            if background is not None:
                tg.start_soon(background.run)
                background.poke()  # apply whatever was logged while no tuner ran
            async with (_worker_process(tuner) if worker == "process" else contextlib.nullcontext()):
                yield {"tuner": tuner}
            tg.cancel_scope.cancel()

    server = RatchetMCPServer(f"ratchet-tuner:{tuner.workspace.name}", version=__version__, log_level="WARNING",
                       **mcp_auth(token),
                       lifespan=lifespan,
                       instructions="Tuner of a Ratchet workspace: send feedback about conversations the "
                       "runner served; promote() tests staging and makes it a patch version.")
    for route in tuner.routes.values():
        server.add_tool(_feedback_tool(tuner, route, background), name=route.tool.name,
                        description=route.tool.description)
        server._tool_manager.get_tool(route.tool.name).parameters = route.tool.input_schema  # the exact schema
        if route.tool.input_schema.get("additionalProperties") is False:
            refuse_unknown_arguments(server, route.tool.name)

    @server.tool(description=PROMOTE_DESCRIPTION)
    async def promote(reason: Annotated[str, Field(description="why, recorded in the version's tag and the "
                                                   "promotion log")] = "requested through the tuner's promote tool"
                      ) -> PromoteResult:
        if not tuner.workspace.config.tuner.promotion.on_request:
            raise tool_error(RatchetError("promotion on request is off for this workspace",
                                          fix="set [tuner.promotion] on_request = true in ratchet.toml"))
        try:
            await anyio.to_thread.run_sync(tuner.apply_pending)
            return await tuner.promote(reason=reason)
        except RatchetError as exc:
            raise tool_error(exc) from exc

    @server.tool()
    async def status() -> TunerStatus:
        """Staging vs active, pending events, the last promotion, and each strategy's KPIs."""
        try:
            return await anyio.to_thread.run_sync(tuner.status)
        except RatchetError as exc:
            raise tool_error(exc) from exc

    @server.tool()
    async def rebuild_staging() -> RebuildResult:
        """Rebuild staging from active plus every logged feedback event after it."""
        try:
            return await anyio.to_thread.run_sync(tuner.rebuild_staging)
        except RatchetError as exc:
            raise tool_error(exc) from exc

    return server
