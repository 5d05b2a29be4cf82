"""ratchet.client against real servers: `ratchet serve runner|tuner` processes over streamable HTTP."""

import json

import anyio
import pytest
from click.testing import CliRunner

from helpers import ServerProcess, point_workspace_at
from ratchet.cli import cli
from ratchet.client import AsyncRatchet, Ratchet, ToolCallError
from ratchet.core import auth
from ratchet.core.errors import AuthError, ConfigError, NotFoundError, UnavailableError

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

Q = "How long do I have to return an item?"
TOKEN = "client-test-token-0123456789abcdef"


@pytest.fixture
def servers(ws):
    with ServerProcess("runner", ws.root) as runner, ServerProcess("tuner", ws.root) as tuner:
        yield runner, tuner


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_async_client_calls_sends_promotes_reads_and_follows(ws, servers, mode):
    runner, tuner = servers
    async with AsyncRatchet(runner.url, tuner.url, mode=mode) as rt:
        assert [t.name for t in await rt.tools()] == ["answer"]
        reply = await rt.call("answer", question=Q, conversation_id="k1")
        assert reply["entry_id"] == "refund-window"
        ack = await rt.send("reward", conversation_id="k1", value=1.0, event_id="e1")
        assert ack["accepted"] == 1
        assert (await rt.status())["pending_events"] >= 0
        assert await rt.version() == "v0.1.0"
        session = await rt.session("k1")
        assert session["turns"][0]["conversation_id"] == "k1" and session["feedback"][0]["event_id"] == "e1"
        async with rt.follow() as changes:
            outcome = await rt.promote(reason="client test")
            assert outcome["promoted"] and outcome["version"] == "v0.1.1", outcome
            with anyio.fail_after(10):
                seen = {await anext(changes), await anext(changes)}
        assert seen == {"state://active", "version://current"}
        assert (await rt.active())["version"] == "v0.1.1" == await rt.version()


def test_sync_client_from_the_workspace_addresses(ws, servers):
    point_workspace_at(ws.root, *servers)
    with Ratchet.from_workspace(ws.root) as rt:
        reply = rt.call("answer", question=Q, conversation_id="s1")
        assert reply["style"] in ("concise", "friendly", "detailed", "formal")
        assert rt.send("reward", conversation_id="s1", value=0.0)["accepted"] == 1
        assert len(rt.session("s1")["feedback"]) == 1
        with rt.follow(("version://current",)) as changes:
            assert rt.promote()["version"] == "v0.1.1"
            assert next(changes) == "version://current"
        assert rt.version() == "v0.1.1"


def test_client_errors_carry_the_field_and_the_fix(ws, servers):
    runner, tuner = servers
    with Ratchet(runner.url, tuner.url) as rt:
        with pytest.raises(ToolCallError) as err:
            rt.call("answer", question=Q, conversation_id="")
        assert err.value.field == "conversation_id" and err.value.fix and err.value.tool == "answer"
        with pytest.raises(ToolCallError) as err:
            rt.send("reward", conversation_id="nobody", value=1.0)
        assert err.value.field == "conversation_id" and "unknown conversation" in err.value.message
        assert err.value.fix == "send feedback only for conversation ids a runner of this workspace served"
        with pytest.raises(ToolCallError) as err:
            rt.send("reward", conversation_id="nobody", value=3)
        assert err.value.field == "value" and err.value.fix
        with pytest.raises(NotFoundError) as err:
            rt.call("anser", question=Q, conversation_id="c")
        assert err.value.field == "tool" and "answer" in err.value.fix
        with pytest.raises(NotFoundError):
            rt.session("never-served")


def test_client_without_a_server_or_an_address_says_what_to_do(ws, tmp_path):
    toml = ws.root / "ratchet.toml"
    toml.write_text(toml.read_text().replace("[runner]\nport = 8701", "[runner]\nport = 0"))
    with Ratchet.from_workspace(ws.root) as rt, pytest.raises(ConfigError) as err:
        rt.call("answer", question=Q, conversation_id="c")
    assert err.value.field == "runner.port" and "runner_url" in err.value.fix
    with Ratchet("http://127.0.0.1:9/mcp") as rt, pytest.raises(UnavailableError) as err:
        rt.version()
    assert err.value.field == "runner" and "ratchet serve runner" in err.value.fix


def test_client_sends_the_token(ws, monkeypatch):
    monkeypatch.setenv(auth.TOKEN_ENV, TOKEN)  # the servers' token (they inherit the environment)
    with ServerProcess("runner", ws.root) as runner:
        monkeypatch.delenv(auth.TOKEN_ENV)
        with Ratchet(runner.url, token=TOKEN) as rt:
            assert rt.version() == "v0.1.0"
        with Ratchet(runner.url) as rt, pytest.raises(AuthError) as err:
            rt.version()
        assert err.value.field == "token"
        monkeypatch.setenv(auth.TOKEN_ENV, TOKEN)
        with Ratchet(runner.url) as rt:  # the configured token, by default
            assert rt.version() == "v0.1.0"


def test_client_finds_servers_that_picked_their_port(ws):
    """Issue 14: with ``port = 0`` (what the port-clash error recommends) the client reads where each server
    listens from ``.ratchet/run/``, as ``ratchet feedback`` does, instead of asking for a URL."""
    toml = ws.root / "ratchet.toml"
    toml.write_text(toml.read_text().replace("[runner]\nport = 8701", "[runner]\nport = 0")
                    .replace("[tuner]\nport = 8702", "[tuner]\nport = 0"))
    with ServerProcess("runner", ws.root) as runner, ServerProcess("tuner", ws.root) as tuner:
        with Ratchet.from_workspace(ws.root) as rt:
            assert rt.call("answer", question=Q, conversation_id="p0")["style"]
            assert rt.send("reward", conversation_id="p0", value=1.0)["accepted"] == 1
            assert rt._async.urls == {"runner": runner.url, "tuner": tuner.url}
        sent = CliRunner().invoke(cli, ["send", "reward", "conversation_id=p0", "value=0", "--json",
                                        "-w", str(ws.root)])
        assert sent.exit_code == 0 and json.loads(sent.output)["accepted"] == 1, sent.output
