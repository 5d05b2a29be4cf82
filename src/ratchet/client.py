"""Call a Ratchet workspace from your own code: its runner's tools, its tuner's feedback tools.

A thin layer over the MCP SDK's client (``mcp.Client``, streamable HTTP) that knows the workspace:
addresses from ``ratchet.toml`` (``[runner]``/``[tuner]`` host and port) unless given, the bearer token
from ``RATCHET_API_TOKEN`` or ``[auth] token_file`` unless given, results as plain dicts, and failures
as exceptions that carry the field and the fix (:class:`ToolCallError`, a :class:`UserError`)::

    async with AsyncRatchet.from_workspace("path/to/ws") as rt:
        reply = await rt.call("answer", question="Where is my order?", conversation_id="c1")
        await rt.send("reward", conversation_id="c1", value=1.0)

:class:`Ratchet` is the same API without ``await`` (it runs the async client on a thread of its own).
"""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import mcp.types as types
from mcp import Client, MCPError

from ratchet.core import auth
from ratchet.core.errors import AuthError, ConfigError, NotFoundError, RatchetError, UnavailableError, UserError

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

CHANGING = ("state://active", "version://current")  # what a promotion changes
MODERN_PROTOCOL = "2026-07-28"  # from this version on, change events come as subscriptions/listen streams
_PREFIX = re.compile(r"^Error executing tool [^:]+: ")
_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


class ToolCallError(UserError):
    """A tool answered with an error: ``field`` names the argument at fault (when one is), ``fix`` says
    what to do, ``tool`` is the tool."""

    def __init__(self, tool: str, message: str, *, field: str | None = None, fix: str | None = None):
        super().__init__(message, field=field, fix=fix)
        self.tool = tool

    @classmethod
    def from_text(cls, tool: str, text: str) -> ToolCallError:
        """Parse the servers' wording: ``[field: ]problem`` and an optional ``\\n  Fix: what to do``."""
        message, _, fix = _PREFIX.sub("", text, count=1).partition("\n  Fix: ")
        field = _FIELD.match(message)
        return cls(tool, f"{tool}: {message}", field=field.group(1) if field else None, fix=fix.strip() or None)


def server_url(workspace: Workspace, component: str) -> str:
    """The MCP endpoint of the workspace's ``runner`` or ``tuner``: where it listens now (recorded in
    ``.ratchet/run/`` by ``ratchet serve``, so a port of 0 is no obstacle), else the port in ``ratchet.toml``."""
    from ratchet.ops import addresses

    cfg = getattr(workspace.config, component)
    recorded = addresses.url(workspace.root, component)
    if recorded:
        return loopback(recorded)
    if not cfg.port:
        raise ConfigError(f"{component}.port: no {component} is running for this workspace and ratchet.toml "
                          f"gives no port for it (0 picks one at start)", field=f"{component}.port",
                          fix=f"start it (`ratchet up`, or `ratchet serve {component}`), pass its address (e.g. "
                          f"{component}_url='http://127.0.0.1:PORT/mcp', or --{component}-url on the command "
                          f"line), or set [{component}] port in ratchet.toml")
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{cfg.port}/mcp"


def loopback(url: str) -> str:
    """``url`` with a wildcard bind address (``0.0.0.0``, ``[::]``) replaced by loopback, which reaches it."""
    for wildcard in ("//0.0.0.0:", "//[::]:"):
        url = url.replace(wildcard, "//127.0.0.1:", 1)
    return url


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _refused_token(url: str, token: str | None) -> bool:
    """Whether the server at ``url`` answers 401 (the SDK's client reports any HTTP error alike)."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=5, headers=auth.header(token)) as http:
            return (await http.post(url, json={})).status_code == 401
    except httpx.HTTPError:
        return False


async def _unreachable(component: str, url: str, token: str | None, exc: BaseException) -> RatchetError:
    leaf = _leaf(exc)
    if isinstance(leaf, MCPError) and await _refused_token(url, token):
        return AuthError(f"{component}: {url} refused the token (HTTP 401)", field="token",
                         fix=f"set {auth.TOKEN_ENV} or [auth] token_file to the token the servers use, or pass token=")
    return UnavailableError(f"{component}: cannot reach {url} ({type(leaf).__name__}: {leaf})", field=component,
                            fix=f"start it (`ratchet serve {component}` or `ratchet up`) or pass its address")


class AsyncRatchet:
    """A connection to a workspace's runner and tuner. Each server is connected on first use and
    disconnected when the ``async with`` block ends.

    ``runner_url``/``tuner_url``: MCP endpoints (``http://HOST:PORT/mcp``); default: from ``workspace``'s
    ``ratchet.toml``. ``token``: the bearer token; default: the workspace's (or ``RATCHET_API_TOKEN``).
    ``mode``: ``"auto"`` (protocol 2026-07-28) or ``"legacy"`` (2025-11-25), as ``mcp.Client`` takes it.
    """

    def __init__(self, runner_url: str | None = None, tuner_url: str | None = None, *,
                 workspace: Workspace | None = None, token: str | None = None, mode: str = "auto",
                 timeout: float = 60.0):
        self.workspace = workspace
        self.urls = {"runner": runner_url, "tuner": tuner_url}
        self.token = token if token is not None else auth.load_token(workspace)
        self.mode = mode
        self.timeout = timeout
        self._clients: dict[str, Client] = {}
        self._task_group: anyio.abc.TaskGroup | None = None
        self._requests: anyio.abc.ObjectSendStream | None = None  # to the task that holds the connections
        self._followers: list[anyio.abc.ObjectSendStream[str]] = []  # 2025-11-25 subscribers

    @classmethod
    def from_workspace(cls, path: str | Path = ".", **options: Any) -> AsyncRatchet:
        """A client for the workspace at ``path``: its addresses and token unless given in ``options``."""
        from ratchet.core.workspace import Workspace

        return cls(workspace=Workspace.open(Path(path)), **options)

    async def __aenter__(self) -> AsyncRatchet:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._requests = await self._task_group.start(self._hold_connections)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._clients.clear()
        self._requests.close()  # the holder disconnects and ends
        await self._task_group.__aexit__(*exc)

    async def _hold_connections(self, *, task_status: Any) -> None:
        """Connect (and at the end disconnect) in one task, whichever task asked: the SDK's connections
        are task groups, which must be left in the task that entered them."""
        send, receive = anyio.create_memory_object_stream[tuple[Client, list, anyio.Event]](0)
        task_status.started(send)
        async with contextlib.AsyncExitStack() as stack, receive:
            async for client, outcome, done in receive:
                try:
                    outcome.append(await stack.enter_async_context(client))
                except Exception as exc:  # noqa: BLE001 -- handed to the caller, which raises it
                    outcome.append(exc)
                done.set()

    def url(self, component: str) -> str:
        if self.urls[component] is None:
            if self.workspace is None:
                raise ConfigError(f"{component}: no address", field=f"{component}_url",
                                  fix=f"pass {component}_url='http://127.0.0.1:PORT/mcp' or a workspace")
            self.urls[component] = server_url(self.workspace, component)
        return self.urls[component]

    async def connect(self, component: str) -> Client:
        """The MCP client of ``runner`` or ``tuner`` (connected on first use): for anything this class
        does not wrap."""
        if component not in self._clients:
            url = self.url(component)
            client = Client(auth.mcp_target(url, self.token), mode=self.mode, read_timeout_seconds=self.timeout,
                            message_handler=self._on_message, cache=None)
            if self._requests is None:
                raise RuntimeError("use AsyncRatchet in an `async with` block")
            outcome: list = []
            done = anyio.Event()
            await self._requests.send((client, outcome, done))
            await done.wait()
            if isinstance(outcome[0], Exception):  # the SDK's connection failures come in exception groups
                raise await _unreachable(component, url, self.token, outcome[0]) from outcome[0]
            self._clients[component] = outcome[0]
        return self._clients[component]

    # --- tools --------------------------------------------------------------------------------------

    async def tools(self, component: str = "runner") -> list[types.Tool]:
        """The tools ``runner`` or ``tuner`` serves, with their input and output schemas."""
        return (await (await self.connect(component)).list_tools()).tools

    async def call(self, tool: str, /, **arguments: Any) -> dict[str, Any]:
        """Call runner tool ``tool``; its structured result (e.g. ``answer``'s reply)."""
        return await self.call_tool("runner", tool, arguments)

    async def send(self, tool: str, /, **arguments: Any) -> dict[str, Any]:
        """Send feedback through tuner tool ``tool`` (e.g. ``reward``); the acknowledgement, once stored."""
        return await self.call_tool("tuner", tool, arguments)

    async def promote(self, reason: str | None = None) -> dict[str, Any]:
        """Ask the tuner to test staging and promote it (a patch version) if it passes."""
        return await self.call_tool("tuner", "promote", {} if reason is None else {"reason": reason})

    async def status(self) -> dict[str, Any]:
        """The tuner's status: staging vs active, pending events, the last promotion, KPIs."""
        return await self.call_tool("tuner", "status", {})

    async def call_tool(self, component: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Call ``tool`` of ``runner`` or ``tuner`` with ``arguments`` as a dict; its structured result."""
        client = await self.connect(component)
        try:
            result = await client.call_tool(tool, arguments)
        except MCPError as exc:
            raise ToolCallError(tool, f"{tool}: {exc.message}") from exc
        if result.is_error:
            text = next((c.text for c in result.content if isinstance(c, types.TextContent)), "failed")
            if text.startswith("Unknown tool"):
                names = sorted(t.name for t in await self.tools(component))
                raise NotFoundError(f"{component} has no tool {tool!r}", field="tool",
                                    fix=f"use one of: {', '.join(names)}")
            raise ToolCallError.from_text(tool, text)
        return result.structured_content if result.structured_content is not None else {}

    # --- resources ----------------------------------------------------------------------------------

    async def read(self, uri: str) -> Any:
        """A runner resource, parsed from JSON (``state://active``, ``version://current``, ``session://ID``)."""
        client = await self.connect("runner")
        try:
            result = await client.read_resource(uri)
        except MCPError as exc:
            kind = NotFoundError if exc.code == -32602 else UserError
            raise kind(f"{uri}: {exc.message}", field="uri",
                       fix="read state://active, version://current or session://CONVERSATION_ID") from exc
        return json.loads(result.contents[0].text)

    async def session(self, conversation_id: str) -> dict[str, Any]:
        """A conversation's turns, decisions and feedback."""
        return await self.read(f"session://{conversation_id}")

    async def active(self) -> dict[str, Any]:
        """The state being served: ``version``, ``revision``, ``source`` and the ``state`` document."""
        return await self.read("state://active")

    async def version(self) -> str | None:
        """The version being served (e.g. ``v0.1.3``)."""
        return (await self.read("version://current"))["version"]

    # --- changes ------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def follow(self, uris: tuple[str, ...] = CHANGING) -> AsyncIterator[AsyncIterator[str]]:
        """Hear when the runner's resources change (a promotion changes both ``state://active`` and
        ``version://current``): yields an async iterator of the URIs that changed. Subscribed before
        the block starts; no replay of what changed before. Works on both protocol versions."""
        client = await self.connect("runner")
        if client.protocol_version >= MODERN_PROTOCOL:
            async with client.listen(resource_subscriptions=list(uris)) as sub:
                yield (event.uri async for event in sub)
            return
        send, receive = anyio.create_memory_object_stream[str](100)
        self._followers.append(send)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resources/subscribe: deprecated by the SDK, what 2025-11-25 has
            for uri in uris:
                await client.subscribe_resource(uri)
        try:
            async with receive:
                yield (uri async for uri in receive if uri in uris)
        finally:
            self._followers.remove(send)
            send.close()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            for send in list(self._followers):
                with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    send.send_nowait(str(message.params.uri))


class Ratchet:
    """:class:`AsyncRatchet` without ``await``: use it in a ``with`` block (or call :meth:`close`)."""

    def __init__(self, runner_url: str | None = None, tuner_url: str | None = None, **options: Any):
        self._async = AsyncRatchet(runner_url, tuner_url, **options)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._entered = self._portal.wrap_async_context_manager(self._async)  # entered and left in one task
        self._entered.__enter__()

    @classmethod
    def from_workspace(cls, path: str | Path = ".", **options: Any) -> Ratchet:
        from ratchet.core.workspace import Workspace

        return cls(workspace=Workspace.open(Path(path)), **options)

    def __enter__(self) -> Ratchet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._portal_cm is not None:
            try:
                self._entered.__exit__(None, None, None)
            finally:
                self._portal_cm.__exit__(None, None, None)
                self._portal_cm = None

    def tools(self, component: str = "runner") -> list[types.Tool]:
        return self._portal.call(self._async.tools, component)

    def call_tool(self, component: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return self._portal.call(self._async.call_tool, component, tool, arguments)

    def call(self, tool: str, /, **arguments: Any) -> dict[str, Any]:
        return self._portal.call(lambda: self._async.call(tool, **arguments))

    def send(self, tool: str, /, **arguments: Any) -> dict[str, Any]:
        return self._portal.call(lambda: self._async.send(tool, **arguments))

    def promote(self, reason: str | None = None) -> dict[str, Any]:
        return self._portal.call(self._async.promote, reason)

    def status(self) -> dict[str, Any]:
        return self._portal.call(self._async.status)

    def read(self, uri: str) -> Any:
        return self._portal.call(self._async.read, uri)

    def session(self, conversation_id: str) -> dict[str, Any]:
        return self._portal.call(self._async.session, conversation_id)

    def active(self) -> dict[str, Any]:
        return self._portal.call(self._async.active)

    def version(self) -> str | None:
        return self._portal.call(self._async.version)

    @contextlib.contextmanager
    def follow(self, uris: tuple[str, ...] = CHANGING) -> Iterator[Iterator[str]]:
        """As :meth:`AsyncRatchet.follow`: a blocking iterator of the URIs that changed."""
        with self._portal.wrap_async_context_manager(self._async.follow(uris)) as changes:
            def iterate() -> Iterator[str]:
                while True:
                    try:
                        yield self._portal.call(changes.__anext__)
                    except StopAsyncIteration:
                        return
            yield iterate()


# --- the command line (`ratchet call` / `ratchet send`) ---------------------------------------------


def parse_arguments(pairs: tuple[str, ...] | list[str], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """``key=value`` pairs as tool arguments; a value that parses as JSON is that JSON (``value=1`` a
    number, ``tags='["a"]'`` a list), anything else a string (``question=where is it``). A key the
    tool's input ``schema`` declares a string stays a string (``event_id=7``)."""
    properties = (schema or {}).get("properties", {})
    arguments: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserError(f"argument {pair!r}: not key=value", field=pair,
                            fix="write each argument as key=value, e.g. conversation_id=c1 value=1")
        if properties.get(key, {}).get("type") == "string":
            arguments[key] = raw
            continue
        try:
            arguments[key] = json.loads(raw)
        except ValueError:
            arguments[key] = raw
    return arguments


def call_once(component: str, tool: str, pairs: list[str] | tuple[str, ...], *, url: str | None = None,
              workspace: str | Path | None = None) -> dict[str, Any]:
    """One tool call with ``key=value`` arguments (:func:`parse_arguments`) on the workspace's
    ``runner`` or ``tuner`` (or the server at ``url``)."""
    from ratchet.core.workspace import Workspace

    try:
        ws = Workspace.open(Path(workspace or Path.cwd()))
    except RatchetError:
        if url is None:
            raise
        ws = None  # an address from outside a workspace: the token comes from RATCHET_API_TOKEN
    with Ratchet(**{f"{component}_url": url}, workspace=ws) as client:
        schema = next((t.input_schema for t in client.tools(component) if t.name == tool), None)
        return client.call_tool(component, tool, parse_arguments(pairs, schema))
