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
    """The sessions subscribed to each resource URI through ``resources/subscribe``."""

    def __init__(self) -> None:
        self._by_uri: dict[str, set[Any]] = {}

    def install(self, server: MCPServer) -> None:
        lowlevel = server._lowlevel_server  # private; add_request_handler itself is the SDK's public API
        lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, self._subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, self._unsubscribe)

    async def _subscribe(self, ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        self._by_uri.setdefault(str(params.uri), set()).add(ctx.session)
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        self._by_uri.get(str(params.uri), set()).discard(ctx.session)
        return types.EmptyResult()

    async def notify(self, uri: str) -> None:
        """Tell every session subscribed to ``uri`` that it changed; forget sessions that are gone."""
        for session in list(self._by_uri.get(uri, ())):
            sent = False
            try:
                with anyio.move_on_after(SEND_TIMEOUT):
                    await session.send_resource_updated(uri)
                    sent = True
            except Exception as exc:  # noqa: BLE001 -- a closed connection: the client left
                log.debug("dropping a subscriber of %s: %s", uri, exc)
            if not sent:
                self._by_uri[uri].discard(session)
