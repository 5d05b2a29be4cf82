"""`ratchet call` and `ratchet send` against real servers (`ratchet serve runner|tuner` processes)."""

import json

import pytest
from click.testing import CliRunner

from helpers import ServerProcess
from ratchet.cli import cli
from ratchet.client import parse_arguments
from ratchet.core.errors import UserError


def test_arguments_are_json_when_they_parse_and_strings_otherwise():
    assert parse_arguments(["value=1", "flag=true", "tags=[\"a\"]", "question=where is it?", "id=c1", "e="]) == {
        "value": 1, "flag": True, "tags": ["a"], "question": "where is it?", "id": "c1", "e": ""}
    schema = {"properties": {"event_id": {"type": "string"}, "value": {"type": "number"}}}
    assert parse_arguments(["event_id=7", "value=7"], schema) == {"event_id": "7", "value": 7}
    with pytest.raises(UserError) as err:
        parse_arguments(["value"])
    assert err.value.field == "value" and "key=value" in err.value.fix


@pytest.mark.slow
def test_call_and_send_over_mcp(ws):
    with ServerProcess("runner", ws.root) as runner, ServerProcess("tuner", ws.root) as tuner:
        cli_runner = CliRunner()
        called = cli_runner.invoke(cli, ["call", "answer", "question=How long do I have to return an item?",
                                         "conversation_id=cli-1", "--url", runner.url, "-w", str(ws.root), "--json"])
        assert called.exit_code == 0, called.output
        assert json.loads(called.output)["entry_id"] == "refund-window"
        plain = cli_runner.invoke(cli, ["call", "answer", "question=where is my parcel?", "conversation_id=cli-2",
                                        "--url", runner.url, "-w", str(ws.root)])
        assert plain.exit_code == 0 and "style: " in plain.output, plain.output
        sent = cli_runner.invoke(cli, ["send", "reward", "conversation_id=cli-1", "value=1", "event_id=7",
                                       "--url", tuner.url, "-w", str(ws.root), "--json"])
        assert sent.exit_code == 0, sent.output
        assert json.loads(sent.output)["accepted"] == 1
        status = cli_runner.invoke(cli, ["send", "status", "--url", tuner.url, "-w", str(ws.root), "--json"])
        assert status.exit_code == 0 and "pending_events" in json.loads(status.output), status.output
        bad = cli_runner.invoke(cli, ["send", "reward", "conversation_id=cli-1", "value=2",
                                      "--url", tuner.url, "-w", str(ws.root)])
        assert bad.exit_code == 3 and "value" in bad.output and "Fix:" in bad.output, bad.output
        unknown = cli_runner.invoke(cli, ["call", "anwser", "--url", runner.url, "-w", str(ws.root)])
        assert unknown.exit_code == 6 and "answer" in unknown.output, unknown.output
