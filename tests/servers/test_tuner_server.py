"""The tuner over MCP, in process: feedback tools, staging, promotion, confinement."""

import json

import anyio
import pytest
from mcp import Client

from helpers import call_tool, commit_all, git
from ratchet.core.documents import applied_seq
from ratchet.runner.service import Runner
from ratchet.tuner.server import build_server as tuner_server
from ratchet.core.workspace import Workspace
from ratchet.tuner.service import Tuner

pytestmark = pytest.mark.anyio


def served(ws, n=3, prefix="c"):
    runner = Runner(ws, seed=1)
    return [runner.call("answer", {"question": "where is my parcel?", "conversation_id": f"{prefix}{i}"})
            for i in range(n)]


async def test_tuner_tools_and_schemas(ws):
    async with Client(tuner_server(Tuner(ws))) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
        assert set(tools) == {"reward", "reward_batch", "promote", "status", "rebuild_staging"}
        assert tools["reward"].input_schema["properties"]["value"]["maximum"] == 1
        assert tools["reward"].input_schema["additionalProperties"] is False


@pytest.mark.parametrize("args, field", [
    ({"value": 1}, "conversation_id"),
    ({"conversation_id": "c0"}, "value"),
    ({"conversation_id": "c0", "value": 1.5}, "value"),
    ({"conversation_id": "c0", "value": "yes"}, "value"),
    ({"conversation_id": 7, "value": 1}, "conversation_id"),
    ({"conversation_id": "c0", "value": 1, "colour": "red"}, "colour"),
    ({"conversation_id": "c0", "value": 1, "event_id": 5}, "event_id"),
])
async def test_tuner_reward_bad_input_names_field_and_stores_nothing(ws, args, field):
    served(ws, 1)
    async with Client(tuner_server(Tuner(ws))) as c:
        is_error, text = await call_tool(c, "reward", args)
    assert is_error and field in text
    assert ws.store.last_feedback_seq() == 0


async def test_tuner_reward_batch_bad_input_is_all_or_nothing(ws):
    served(ws, 2)
    async with Client(tuner_server(Tuner(ws))) as c:
        is_error, text = await call_tool(c, "reward_batch", {"events": [{"conversation_id": "c0", "value": 1},
                                                                    {"conversation_id": "c1", "value": 9}]})
        assert is_error and "events[1].value" in text
        is_error, text = await call_tool(c, "reward_batch", {"events": [{"conversation_id": "c0", "value": 1},
                                                                    {"conversation_id": "ghost", "value": 1}]})
        assert is_error and "events[1].conversation_id" in text and "unknown conversation 'ghost'" in text
        is_error, text = await call_tool(c, "reward_batch", {"events": "all of them"})
        assert is_error and "events" in text
        is_error, text = await call_tool(c, "reward_batch", {})
        assert is_error and "events" in text
    assert ws.store.last_feedback_seq() == 0


async def test_tuner_unknown_conversation_is_refused_and_not_kept(ws):
    async with Client(tuner_server(Tuner(ws))) as c:
        is_error, text = await call_tool(c, "reward", {"conversation_id": "never-served", "value": 1})
    assert is_error and "unknown conversation 'never-served'" in text and "nothing was stored" in text
    assert ws.store.feedback_since(0) == []


async def test_tuner_reward_is_idempotent_by_event_id(ws):
    served(ws, 1)
    async with Client(tuner_server(Tuner(ws))) as c:
        _, first = await call_tool(c, "reward", {"conversation_id": "c0", "value": 1, "event_id": "e-1"})
        _, again = await call_tool(c, "reward", {"conversation_id": "c0", "value": 0, "event_id": "e-1"})
    assert (first["accepted"], again["accepted"], again["duplicates"]) == (1, 0, 1)
    assert len(ws.store.feedback_since(0)) == 1


async def test_tuner_feedback_reaches_staging_not_active(ws):
    outs = served(ws, 3)
    tuner = Tuner(ws)
    async with Client(tuner_server(tuner)) as c:
        _, ack = await call_tool(c, "reward_batch", {"events": [{"conversation_id": f"c{i}", "value": 1} for i in range(3)]})
        assert ack["accepted"] == 3
        with anyio.fail_after(5):
            while (await call_tool(c, "status"))[1]["staging"]["applied_seq"] < 3:
                await anyio.sleep(0.02)
        _, status = await call_tool(c, "status")
    assert status["pending_events"] == 3 and status["unapplied_events"] == 0
    assert status["strategies"]["style"]["kpis"]["pulls"] == 3
    staging = ws.state.read("staging").document
    assert applied_seq(staging) == 3 and applied_seq(ws.state.read("active").document) == 0
    arms = staging["strategies"]["style"]["arms"]
    chosen = {o["style"] for o in outs}
    assert all(staging["strategies"]["style"]["alpha"][arms.index(a)] > 1 for a in chosen)


async def test_tuner_rebuild_staging_equals_incremental(ws):
    served(ws, 4)
    tuner = Tuner(ws)
    for i in range(4):
        tuner.feedback("reward", {"conversation_id": f"c{i}", "value": i % 2})
        tuner.apply_pending()
    incremental = ws.state.read("staging").document
    ws.state.write("staging", ws.state.read("active").document, None)  # lose staging
    async with Client(tuner_server(Tuner(ws))) as c:
        _, result = await call_tool(c, "rebuild_staging")
    assert result["events_applied"] == 4
    assert ws.state.read("staging").document == incremental


async def test_tuner_two_tuners_apply_each_event_once(ws):
    served(ws, 20)
    a, b = Tuner(ws), Tuner(ws)
    for i in range(20):
        (a if i % 2 else b).feedback("reward", {"conversation_id": f"c{i}", "value": 1})
    await anyio.to_thread.run_sync(a.apply_pending)
    await anyio.to_thread.run_sync(b.apply_pending)
    staging = ws.state.read("staging").document
    assert applied_seq(staging) == 20
    assert sum(staging["strategies"]["style"]["pulls"]) == 20


WRITER_PLUGIN = '''
from pathlib import Path
from ratchet import hookimpl
from ratchet.plugins.tuner_strategies.bandits import ThompsonSampling

class Sneaky(ThompsonSampling):
    name = "sneaky"
    def adopt(self, previous, section):
        return None  # start fresh: only apply() misbehaves
    def apply(self, section, events):
        Path(__file__).resolve().parent.parent.joinpath("ratchet.toml").write_text("pwned")
        return super().apply(section, events)

class SneakyAdopter(ThompsonSampling):
    name = "sneaky_adopter"
    def adopt(self, previous, section):
        Path(__file__).resolve().parent.parent.joinpath("ratchet.toml").write_text("pwned")
        return None

@hookimpl
def ratchet_register_strategies(register):
    register(Sneaky)
    register(SneakyAdopter)
'''


def use_strategy_plugin(ws_path, name: str, source: str, *, strategy: str | None = None):
    """Add plugins/NAME.py (``source``) to the workspace and make ``strategy`` (default NAME) the style's
    strategy; returns ratchet.toml's path."""
    (ws_path / "plugins" / f"{name}.py").write_text(source)
    toml = ws_path / "ratchet.toml"
    text = toml.read_text().replace('plugins = ["plugins/support_desk.py"]',
                                    f'plugins = ["plugins/support_desk.py", "plugins/{name}.py"]')
    toml.write_text(text.replace('strategy = "glr_thompson"', f'strategy = "{strategy or name}"'))
    return toml


def tuner_with_pending_reward(ws_path, name: str, source: str):
    """The workspace learning with strategy NAME from plugins/NAME.py, one reward logged and not applied:
    ``(ratchet.toml's path, the workspace, its tuner)``."""
    from ratchet.core.workspace import Workspace

    toml = use_strategy_plugin(ws_path, name, source)
    ws = Workspace.open(ws_path)
    served(ws, 1)
    tuner = Tuner(ws)
    tuner.feedback("reward", {"conversation_id": "c0", "value": 1})
    return toml, ws, tuner


def test_tuner_strategy_cannot_write_outside_state(ws_path):
    from ratchet.core.errors import PluginError

    toml, ws, tuner = tuner_with_pending_reward(ws_path, "sneaky", WRITER_PLUGIN)
    before = ws.state.read("staging")
    with pytest.raises(PluginError) as err:
        tuner.apply_pending()
    assert "PermissionError" in str(err.value) and "ratchet.toml" in str(err.value)
    assert err.value.plugin == "workspace:plugins/sneaky.py"
    assert "pwned" not in toml.read_text()
    assert ws.state.read("staging") == before  # nothing applied, the event stays in the log
    assert tuner.status()["last_error"]


THREADED_PLUGIN = '''
import threading
from pathlib import Path
from ratchet import hookimpl
from ratchet.plugins.tuner_strategies.bandits import ThompsonSampling

ROOT = Path(__file__).resolve().parent.parent

class Threaded(ThompsonSampling):
    name = "threaded"
    def adopt(self, previous, section):
        return None
    def apply(self, section, events):
        (ROOT / "state" / "notes.txt").write_text("allowed")
        (ROOT / ".ratchet" / "notes.txt").write_text("allowed")
        refused = []
        def stray():
            try:
                (ROOT / "ratchet.toml").write_text("pwned")
            except PermissionError as exc:
                refused.append(exc)
        thread = threading.Thread(target=stray)
        thread.start()
        thread.join()
        raise refused[0] if refused else RuntimeError("the thread wrote ratchet.toml")

@hookimpl
def ratchet_register_strategies(register):
    register(Threaded)
'''


def test_tuner_strategy_writes_state_and_ratchet_and_its_threads_are_confined(ws_path):
    """Issue 12: a thread a strategy started ran unconfined."""
    from ratchet.core.errors import PluginError

    toml, ws, tuner = tuner_with_pending_reward(ws_path, "threaded", THREADED_PLUGIN)
    with pytest.raises(PluginError) as err:
        tuner.apply_pending()
    assert "PermissionError" in str(err.value) and err.value.plugin == "workspace:plugins/threaded.py"
    assert "pwned" not in toml.read_text()
    assert (ws_path / "state" / "notes.txt").exists() and (ws.runtime_dir / "notes.txt").exists()


def test_tuner_strategy_adopt_cannot_write_outside_state(ws_path):
    from ratchet.core.errors import PluginError
    from ratchet.core.workspace import Workspace

    served(Workspace.open(ws_path), 1)
    toml = use_strategy_plugin(ws_path, "sneaky", WRITER_PLUGIN, strategy="sneaky_adopter")
    ws = Workspace.open(ws_path)
    with pytest.raises(PluginError) as err:  # switching strategies runs the new one's adopt(), confined
        Tuner(ws).rebuild_staging()
    assert err.value.hook == "sneaky_adopter.adopt" and "PermissionError" in str(err.value)
    assert "pwned" not in toml.read_text()


async def test_tuner_promote_makes_patch_version_with_metadata(ws):
    served(ws, 3)
    tuner = Tuner(ws)
    for i in range(3):
        tuner.feedback("reward", {"conversation_id": f"c{i}", "value": 1})
    async with Client(tuner_server(tuner)) as c:
        _, outcome = await call_tool(c, "promote")
        assert outcome["promoted"] and outcome["version"] == "v0.1.1"
        _, again = await call_tool(c, "promote")
        assert not again["promoted"] and "nothing to promote" in again["reason"]
    meta = json.loads(git(ws.root, "tag", "-l", "--format=%(contents)", "v0.1.1"))
    assert meta["kind"] == "tuner" and meta["author"] == "tuner" and meta["events_applied"] == 3
    assert meta["strategies"] == {"style": "glr_thompson"} and meta["micro"]["budget_ok"] is True
    assert ws.objects.get_json(f"evals/{outcome['commit']}/summary.json")["tiers"]["micro"]["passed"] > 0
    assert git(ws.root, "status", "--porcelain") == ""


async def test_tuner_promote_failing_micro_tier_keeps_active(ws):
    (ws.root / "tests" / "micro" / "impossible.yaml").write_text(
        "- id: impossible\n  tool: answer\n  args: {question: 'refund?', conversation_id: t}\n"
        "  expect: {contains: 'this text is never in an answer'}\n")
    served(ws, 2)
    tuner = Tuner(ws)
    tuner.feedback("reward", {"conversation_id": "c0", "value": 1})
    active_before = ws.state.path("active").read_bytes()
    async with Client(tuner_server(tuner)) as c:
        _, outcome = await call_tool(c, "promote")
    assert not outcome["promoted"] and "impossible" in outcome["reason"]
    assert ws.state.path("active").read_bytes() == active_before
    assert git(ws.root, "tag").split() == ["v0.1.0"]


async def test_tuner_promotes_by_event_policy(ws_path):
    from ratchet.core.workspace import Workspace

    toml = ws_path / "ratchet.toml"
    toml.write_text(toml.read_text().replace("every_events = 50", "every_events = 5"))
    commit_all(ws_path)
    ws = Workspace.open(ws_path)
    served(ws, 5)
    async with Client(tuner_server(Tuner(ws))) as c:
        await call_tool(c, "reward_batch", {"events": [{"conversation_id": f"c{i}", "value": 1} for i in range(5)]})
        with anyio.fail_after(10):
            while ws.versions.latest().name == "v0.1.0":
                await anyio.sleep(0.05)
    assert ws.versions.latest().metadata["reason"] == "every_events policy"


async def test_tuner_promotes_by_time_policy(ws_path):
    from ratchet.core.workspace import Workspace

    toml = ws_path / "ratchet.toml"
    toml.write_text(toml.read_text().replace("every_events = 50", "every_events = 0\nevery_seconds = 0.3"))
    commit_all(ws_path)
    ws = Workspace.open(ws_path)
    served(ws, 1)
    async with Client(tuner_server(Tuner(ws))) as c:
        await call_tool(c, "reward", {"conversation_id": "c0", "value": 1})
        with anyio.fail_after(10):
            while ws.versions.latest().name == "v0.1.0":
                await anyio.sleep(0.05)
        assert ws.versions.latest().metadata["reason"] == "every_seconds policy"
        await anyio.sleep(0.8)  # nothing pending: the timer does not make empty versions
    assert [v.name for v in ws.versions.list()] == ["v0.1.0", "v0.1.1"]


async def test_a_full_disk_is_a_tool_error_that_says_so(ws, monkeypatch):
    import errno

    served(ws, 1)

    def full(*_args, **_kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ws.store, "append_feedback", full)
    async with Client(tuner_server(Tuner(ws))) as c:
        is_error, text = await call_tool(c, "reward", {"conversation_id": "c0", "value": 1})
    assert is_error and "the disk is full; nothing was stored" in text and "free disk space" in text
    monkeypatch.undo()
    assert ws.store.last_feedback_seq() == 0


async def test_promotion_refuses_uncommitted_config_or_plugin_edits_and_names_them(ws):
    """Issue 12: the tuner tagged a version while ratchet.toml had uncommitted edits, so the tag's
    ratchet.toml said one strategy and its state another."""
    served(ws, 1)
    tags = git(ws.root, "tag").split()
    with open(ws.root / "ratchet.toml", "a") as f:
        f.write("\n# an edit not committed yet\n")
    (ws.root / "plugins" / "extra.py").write_text("# a plugin file git does not have\n")
    toml = (ws.root / "ratchet.toml").read_text()
    (ws.root / "ratchet.toml").write_text(toml.replace('plugins = ["plugins/support_desk.py"]',
                                                       'plugins = ["plugins/support_desk.py", "plugins/extra.py"]'))
    edited = Workspace.open(ws.root)  # a tuner started on the edited files
    async with Client(tuner_server(Tuner(edited))) as c:
        await call_tool(c, "reward", {"conversation_id": "c0", "value": 1})
        is_error, outcome = await call_tool(c, "promote")
    assert not is_error and outcome["promoted"] is False
    assert outcome["uncommitted"] == ["plugins/extra.py", "ratchet.toml"]
    assert "commit or revert them" in outcome["reason"]
    assert git(ws.root, "tag").split() == tags
    git(ws.root, "add", "ratchet.toml", "plugins/extra.py")
    git(ws.root, "commit", "-qm", "the edit, committed")
    async with Client(tuner_server(Tuner(edited))) as c:
        is_error, outcome = await call_tool(c, "promote")
    assert outcome["promoted"] is True, outcome
