"""``resources/subscribe`` for 2025-11-25 clients: one notification per change, and no memory of clients
that left (``ratchet.subscriptions``)."""

import warnings

import anyio
import mcp.types as types
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer

from ratchet.subscriptions import LegacySubscribers

pytestmark = pytest.mark.anyio


def served() -> tuple[MCPServer, LegacySubscribers]:
    server = MCPServer("subscriptions-test")
    legacy = LegacySubscribers()
    legacy.install(server)

    @server.resource("x://a")
    def a() -> str:
        return "a"

    return server, legacy


async def subscribe(client: Client, uri: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the SDK marks subscribe_resource deprecated (2026-07-28 removed it)
        await client.subscribe_resource(uri)


async def test_a_client_that_subscribes_twice_hears_each_change_once():
    server, legacy = served()
    heard = []

    async def on_message(message):
        if isinstance(message, types.ResourceUpdatedNotification):
            heard.append(str(message.params.uri))

    async with Client(server, mode="legacy", message_handler=on_message) as c:
        await subscribe(c, "x://a")
        await subscribe(c, "x://a")
        await legacy.notify("x://a")
        await c.read_resource("x://a")  # the notification, sent before this answer, has arrived
        assert heard == ["x://a"]


async def test_a_client_that_leaves_without_unsubscribing_is_forgotten_when_it_leaves():
    """Before, a session that disconnected stayed subscribed: the SDK's notify never raises on a closed
    stream, so the "drop it when a send fails" rule never fired and every subscriber was kept forever."""
    server, legacy = served()
    async with Client(server, mode="legacy") as c:
        await subscribe(c, "x://a")
        assert legacy.subscribers("x://a") == 1
    with anyio.fail_after(5):
        while legacy.subscribers("x://a"):
            await anyio.sleep(0.01)
