"""Resource-updated notifications for clients on protocol 2025-11-25.

MCPServer serves change events only as ``subscriptions/listen`` streams (protocol 2026-07-28) and answers
``resources/subscribe`` with -32601. Clients of the earlier protocol (the TypeScript SDK, the MCP
Inspector by default) subscribe that way, so this serves it: each ``resources/subscribe`` records the
client's session, and :meth:`LegacySubscribers.notify` sends it ``notifications/resources/updated``
(the SDK's ``send_resource_updated``). Registering the handler also makes the server advertise
``resources.subscribe`` to those clients.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
import mcp.types as types
from mcp.server.mcpserver import MCPServer

log = logging.getLogger("ratchet.subscriptions")
SEND_TIMEOUT = 5.0  # seconds; a client that does not read its stream is dropped rather than waited for


class LegacySubscribers:
    """The client connections subscribed to each resource URI through ``resources/subscribe``.

    Keyed by connection, not by the per-request session proxy the handler is given, so a client that
    subscribes twice hears each change once; a connection is forgotten when it closes (a callback on its
    exit stack), since the SDK's notify never fails on a closed stream and cannot tell us it left.
    """

    def __init__(self) -> None:
        self._by_uri: dict[str, set[Any]] = {}
        self._watched: set[Any] = set()  # connections whose close will forget them

    def install(self, server: MCPServer) -> None:
        lowlevel = server._lowlevel_server  # private; add_request_handler itself is the SDK's public API
        lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, self._subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, self._unsubscribe)

    def subscribers(self, uri: str) -> int:
        return len(self._by_uri.get(uri, ()))

    async def _subscribe(self, ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        connection = _connection(ctx)
        self._by_uri.setdefault(str(params.uri), set()).add(connection)
        if connection not in self._watched:
            self._watched.add(connection)
            connection.exit_stack.callback(self._forget, connection)
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        self._by_uri.get(str(params.uri), set()).discard(_connection(ctx))
        return types.EmptyResult()

    def _forget(self, connection: Any) -> None:
        self._watched.discard(connection)
        for subscribed in self._by_uri.values():
            subscribed.discard(connection)

    async def notify(self, uri: str) -> None:
        """Tell every connection subscribed to ``uri`` that it changed; one that does not take the message
        within ``SEND_TIMEOUT`` is dropped rather than waited for."""
        for connection in list(self._by_uri.get(uri, ())):
            sent = False
            try:
                with anyio.move_on_after(SEND_TIMEOUT):
                    await connection.send_resource_updated(uri)
                    sent = True
            except Exception as exc:  # noqa: BLE001 -- a broken connection: the client left
                log.debug("dropping a subscriber of %s: %s", uri, exc)
            if not sent:
                self._by_uri[uri].discard(connection)


def _connection(ctx: Any) -> Any:
    """The client's connection behind a request (the SDK hands lowlevel handlers a per-request session
    proxy; its connection is not public on that context, only on the high-level ``Context``)."""
    return ctx.session._connection
