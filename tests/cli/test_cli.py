"""The ``ratchet`` command through click's CliRunner: outputs, exit codes, and nothing written on errors."""

import json

import pytest
from click.testing import CliRunner

from helpers import git, ratchet_distribution, tree_snapshot
from ratchet.cli import cli


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


def test_cli_help_lists_commands(run):
    out = run("--help").output
    for cmd in ("init", "state", "rollback", "versions", "plugins", "templates", "demo"):
        assert cmd in out


def test_cli_init_makes_versioned_workspace(run, tmp_path):
    dest = tmp_path / "desk"
    result = run("init", dest, "--data", "default_style=concise", "--data", "promote_every=10")
    assert result.exit_code == 0, result.output
    assert "v0.1.0" in result.output
    assert (dest / ".copier-answers.yml").read_text().count("default_style: concise") == 1
    assert git(dest, "status", "--porcelain") == ""
    meta = json.loads(git(dest, "tag", "-l", "--format=%(contents)", "v0.1.0"))
    assert meta["kind"] == "init" and meta["bump"] == "initial" and meta["author"] == "cli" and meta["reason"]
    assert ratchet_distribution() in meta["plugin_distributions"]  # the installed plugin code that made it
    state = json.loads((dest / "state" / "active.state.json").read_text())
    assert state["params"]["style"] == "concise"
    assert "style" in state["strategies"]  # the bandit's initial section is part of v0.1.0
    assert "every_events = 10" in (dest / "ratchet.toml").read_text()


@pytest.mark.parametrize("args, fragment, code", [
    (["--template", "nope"], "unknown template 'nope'", 6),
    (["--data", "nonsense"], "is not KEY=VALUE", 3),
    (["--data", "colour=red"], "has no question 'colour'", 3),
    (["--data", "default_style=shouty"], "'shouty' is not a valid default_style", 3),
    (["--data", "promote_every=many"], "'many' is not a valid int", 3),
    (["--data", "promote_every=0"], "must be at least 1", 3),
    (["--data", "project_name=Bad Name"], "lowercase", 3),
])
def test_cli_init_refuses_bad_input_and_writes_nothing(run, tmp_path, args, fragment, code):
    before = sorted(tmp_path.iterdir())
    result = run("init", tmp_path / "desk", *args)
    assert result.exit_code == code, result.output
    assert fragment in result.output
    assert sorted(tmp_path.iterdir()) == before


def test_cli_init_refuses_non_empty_dir(run, tmp_path):
    dest = tmp_path / "desk"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    result = run("init", dest)
    assert result.exit_code == 3 and "not empty" in result.output
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


def test_cli_init_into_empty_dir(run, tmp_path):
    dest = tmp_path / "empty"
    dest.mkdir()
    assert run("init", dest).exit_code == 0
    assert (dest / "ratchet.toml").exists()


def test_cli_state_show_json(run, ws_path):
    result = run("state", "show", "--json", "-w", ws_path)
    data = json.loads(result.output)
    assert data["name"] == "active" and data["revision"] == 1 and data["version"] == "v0.1.0"
    assert data["document"]["params"]["style"] == "friendly"


def test_cli_state_set_promote_rollback_versions(run, ws_path, tmp_path):
    doc = json.loads(run("state", "show", "staging", "--json", "-w", ws_path).output)["document"]
    doc["params"]["style"] = "formal"
    new = tmp_path / "new.json"
    new.write_text(json.dumps(doc))
    assert run("state", "set", "staging", new, "-w", ws_path).exit_code == 0
    result = run("state", "promote", "--reason", "formal wins", "-w", ws_path)
    assert result.exit_code == 0 and "v0.1.1" in result.output
    result = run("rollback", "v0.1.0", "-w", ws_path)
    assert result.exit_code == 0 and "v0.1.2" in result.output
    listed = json.loads(run("versions", "--json", "-w", ws_path).output)
    assert [v["version"] for v in listed] == ["v0.1.0", "v0.1.1", "v0.1.2"]
    assert listed[1]["metadata"]["reason"] == "formal wins"
    assert listed[2]["metadata"]["rolled_back_to"] == "v0.1.0"
    shown = json.loads(run("versions", "show", "0.1.1", "-w", ws_path).output)
    assert shown["state"]["params"]["style"] == "formal"


def test_cli_state_set_invalid_state_changes_nothing(run, ws_path, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 1, "params": {"style": "shouty"}, "strategies": {}}))
    before = tree_snapshot(ws_path / "state")
    result = run("state", "set", "staging", bad, "-w", ws_path)
    assert result.exit_code == 3
    assert "$.params" in result.output and "Fix:" in result.output
    assert tree_snapshot(ws_path / "state") == before


def test_cli_state_set_stale_revision_conflicts(run, ws_path, tmp_path):
    doc = json.loads(run("state", "show", "staging", "--json", "-w", ws_path).output)
    new = tmp_path / "new.json"
    new.write_text(json.dumps(doc["document"]))
    result = run("state", "set", "staging", new, "--revision", "99", "-w", ws_path)
    assert result.exit_code == 5 and "not 99" in result.output


def test_cli_not_a_workspace(run, tmp_path):
    result = run("state", "show", "-w", tmp_path)
    assert result.exit_code == 6 and "ratchet init" in result.output


def test_cli_workspace_not_a_git_repo(run, ws_path):
    import shutil

    shutil.rmtree(ws_path / ".git")
    result = run("versions", "-w", ws_path)
    assert result.exit_code == 7 and "not a git repository" in result.output


def test_cli_malformed_toml(run, ws_path):
    (ws_path / "ratchet.toml").write_text("[workspace\n")
    result = run("state", "show", "-w", ws_path)
    assert result.exit_code == 3 and "not valid TOML" in result.output


def test_cli_plugins_json(run, ws_path):
    data = json.loads(run("plugins", "--json", "-w", ws_path).output)
    names = {p["name"] for p in data}
    assert {"bandits", "templates", "workspace:plugins/support_desk.py"} <= names
    hooks = json.loads(run("plugins", "--hooks", "--json").output)
    assert "ratchet_register_strategies" in hooks


def test_cli_state_pin_unpin(run, ws_path):
    assert "Pinned to v0.1.0" in run("state", "pin", "0.1.0", "-w", ws_path).output
    assert json.loads(run("state", "show", "--json", "-w", ws_path).output)["pinned"] == "v0.1.0"
    run("state", "unpin", "-w", ws_path)
    assert json.loads(run("state", "show", "--json", "-w", ws_path).output)["pinned"] is None


def test_cli_templates_list_show_render(run, tmp_path):
    listed = json.loads(run("templates", "list", "--json").output)
    assert any(t["name"] == "workspace" and t["family"] == "scaffold" for t in listed)
    assert "project_name" in run("templates", "show", "workspace").output
    result = run("templates", "render", "workspace", tmp_path / "out", "--data", "project_name=abc")
    assert result.exit_code == 0 and (tmp_path / "out" / "ratchet.toml").exists()



def test_cli_state_promote_refuses_uncommitted_behaviour_files_and_changes_nothing(run, ws_path, tmp_path):
    """Issue 12: like the tuner, `ratchet state promote` must not tag a version while the files that
    decide behaviour (ratchet.toml, the state schema, workspace plugins) differ from what git holds."""
    doc = json.loads(run("state", "show", "staging", "--json", "-w", ws_path).output)["document"]
    doc["params"]["style"] = "formal"
    new = tmp_path / "new.json"
    new.write_text(json.dumps(doc))
    assert run("state", "set", "staging", new, "-w", ws_path).exit_code == 0
    with open(ws_path / "ratchet.toml", "a") as f:
        f.write("\n# not committed yet\n")
    with open(ws_path / "plugins" / "support_desk.py", "a") as f:
        f.write("\n# not committed yet\n")

    def observed():
        return (git(ws_path, "tag"), git(ws_path, "rev-parse", "HEAD"), git(ws_path, "status", "--porcelain"),
                run("state", "show", "active", "--json", "-w", ws_path).output,
                run("state", "show", "staging", "--json", "-w", ws_path).output,
                (ws_path / "ratchet.toml").read_bytes(), (ws_path / "state" / "active.state.json").read_bytes())

    before = observed()
    result = run("state", "promote", "-w", ws_path)
    assert result.exit_code == 7, result.output
    assert "uncommitted changes to plugins/support_desk.py, ratchet.toml" in result.output
    assert "Fix: commit or revert them" in result.output
    assert observed() == before
    git(ws_path, "commit", "-qam", "the edits, committed")
    result = run("state", "promote", "-w", ws_path)
    assert result.exit_code == 0 and "v0.1.1" in result.output


def test_cli_versions_show_reads_a_version_through_its_own_tagged_config(run, ws_path):
    """Issue 12: `versions show v0.1.0` converted the tagged state through the current ratchet.toml
    (here another strategy), showing a state that was never tagged."""
    from helpers import set_strategy
    from ratchet.core.documents import ACTIVE_PATH
    from ratchet.core.versions import VersionStore

    tagged = json.loads(VersionStore(ws_path).read_file("v0.1.0", ACTIVE_PATH))
    set_strategy(ws_path, '[[tuner.strategies]]\nkey = "style"\nstrategy = "ucb1"\nparam = "style"\n'
                          'arms = ["concise", "friendly", "detailed", "formal"]\n')
    shown = json.loads(run("versions", "show", "v0.1.0", "-w", ws_path).output)
    assert shown["state"] == tagged
    assert shown["state"]["strategies"]["style"].get("policy") != "ucb1"


def test_cli_versions_show_signature_status_and_serve_runner_require_signed(run, ws_path, tmp_path, ssh_keys):
    from helpers import sign_versions

    sign_versions(ws_path, ssh_keys["trusted"], ssh_keys["signers"])
    doc = json.loads(run("state", "show", "staging", "--json", "-w", ws_path).output)["document"]
    doc["params"]["style"] = "formal"
    (tmp_path / "new.json").write_text(json.dumps(doc))
    run("state", "set", "staging", tmp_path / "new.json", "-w", ws_path)
    assert run("state", "promote", "-w", ws_path).exit_code == 0
    listed = json.loads(run("versions", "--json", "-w", ws_path).output)
    assert [(v["version"], v["signature"]) for v in listed] == [("v0.1.0", "unsigned"), ("v0.1.1", "verified")]
    assert listed[1]["metadata"]["reason"] == "promoted from the command line"  # the signature is not in it
    assert json.loads(run("versions", "show", "v0.1.1", "-w", ws_path).output)["signature"] == "verified"
    table = run("versions", "-w", ws_path).output
    assert "signature" in table and "verified" in table and "unsigned" in table
    run("state", "pin", "v0.1.0", "-w", ws_path)
    result = run("serve", "runner", "--transport", "stdio", "--require-signed", "-w", ws_path)
    assert result.exit_code == 7
    assert "version v0.1.0 is unsigned: its tag has no signature" in result.output and "Fix:" in result.output


def test_cli_serve_architect_logs_each_job_step_to_its_console(ws_path, monkeypatch):
    """The server's console (stderr) shows the ``ratchet.architect`` logger's INFO lines: job steps."""
    import contextlib
    import logging

    logger = logging.getLogger("ratchet.architect")
    handlers, level = list(logger.handlers), logger.level

    def serve_app(app, **kwargs):  # instead of serving: a job step, as the Architect logs it
        logger.info("job abc123 plan: planner llm on branch ratchet/job-abc123")

    monkeypatch.setattr("ratchet.rest.serve_app", serve_app)
    monkeypatch.setattr("ratchet.core.telemetry.serving", lambda *a: contextlib.nullcontext())
    try:
        result = CliRunner().invoke(cli, ["serve", "architect", "-w", str(ws_path)], catch_exceptions=False)
    finally:
        logger.handlers[:], logger.level = handlers, level
    assert result.exit_code == 0, result.output
    assert "ratchet.architect INFO job abc123 plan: planner llm" in result.stderr
