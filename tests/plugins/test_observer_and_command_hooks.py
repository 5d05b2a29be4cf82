"""Observer hooks see every version and event; plugins can add CLI commands."""

from click.testing import CliRunner

from helpers import with_style
from ratchet import hookimpl


class Recorder:
    def __init__(self):
        self.versions, self.events = [], []

    @hookimpl
    def ratchet_on_version(self, version, metadata):
        self.versions.append((version, metadata["kind"]))

    @hookimpl
    def ratchet_on_event(self, kind, payload):
        self.events.append(kind)


def test_hook_ratchet_on_version_sees_promotions_and_rollbacks(ws):
    rec = Recorder()
    ws.plugins.register(rec, "recorder")
    ws.state.update("staging", with_style("concise"))
    ws.state.promote(reason="t", author="test")
    ws.state.rollback("v0.1.0", author="test")
    assert rec.versions == [("v0.1.1", "tuner"), ("v0.1.2", "rollback")]


def test_hook_ratchet_on_event_sees_emitted_events(ws):
    rec = Recorder()
    ws.plugins.register(rec, "recorder")
    seq = ws.emit("custom.thing", {"x": 1})
    assert rec.events == ["custom.thing"] and ws.store.events_since(seq - 1)[0]["kind"] == "custom.thing"


def test_hook_observer_that_raises_does_not_undo_the_version(ws):
    class Broken:
        @hookimpl
        def ratchet_on_version(self, version):
            raise RuntimeError("observer bug")

    ws.plugins.register(Broken(), "broken")
    ws.state.update("staging", with_style("formal"))
    assert ws.state.promote(reason="t", author="test").name == "v0.1.1"
    assert ws.versions.latest().name == "v0.1.1"


def test_hook_ratchet_register_commands_adds_a_command(monkeypatch):
    import click

    from ratchet import cli as cli_module
    from ratchet.core import plugins as plugins_module

    class Commands:
        @hookimpl
        def ratchet_register_commands(self, cli):
            @cli.command("hello-plugin")
            def hello():
                click.echo("hello from a plugin")

    real = plugins_module.load_plugins

    def with_commands(*a, **kw):
        pm = real(*a, **kw)
        pm.register(Commands(), "commands")
        return pm

    monkeypatch.setattr(plugins_module, "load_plugins", with_commands)
    monkeypatch.setattr("sys.argv", ["ratchet", "hello-plugin"])
    cli_module.cli.commands.pop("hello-plugin", None)
    try:
        cli_module.main_register_plugin_commands()
        result = CliRunner().invoke(cli_module.cli, ["hello-plugin"])
        assert result.output.strip() == "hello from a plugin"
    finally:
        cli_module.cli.commands.pop("hello-plugin", None)
