"""The CLI's first-hour options: a global -w, init's scaffolds and name, versions diff."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ratchet.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("before", [True, False])
def test_workspace_option_goes_before_or_after_the_command(ws_path, before):
    for command in (["state", "show", "--json"], ["versions", "--json"], ["jobs", "--json"]):
        args = ["-w", ws_path, *command] if before else [*command, "-w", ws_path]
        result = run(*args)
        assert result.exit_code == 0, (command, result.output)
    assert json.loads(run(*(["-w", ws_path] if before else []), "state", "show", "--json",
                          *([] if before else ["-w", ws_path])).output)["version"] == "v0.1.0"


def test_a_commands_own_workspace_option_wins_over_the_global_one(ws_path, tmp_path):
    result = run("-w", tmp_path, "state", "show", "--json", "-w", ws_path)
    assert result.exit_code == 0 and json.loads(result.output)["version"] == "v0.1.0"
    result = run("-w", tmp_path, "state", "show")  # the global one is used
    assert result.exit_code == 6 and str(tmp_path) in result.output


def test_init_suggests_only_workspace_scaffolds(tmp_path):
    unknown = run("init", tmp_path / "a", "-t", "nope")
    assert unknown.exit_code == 6 and "choose one of: workspace\n" in unknown.output + "\n"
    runner_template = run("init", tmp_path / "b", "-t", "llm-chat")
    assert runner_template.exit_code == 3
    assert "'llm-chat' is a runner template, not a workspace scaffold" in runner_template.output
    assert "ratchet templates render llm-chat WORKSPACE" in runner_template.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    listed = {t["name"]: t["workspace"] for t in json.loads(run("templates", "list", "--json").output)}
    assert [name for name, is_workspace in listed.items() if is_workspace] == ["workspace"]


def workspace_name(root) -> str:
    from ratchet.core.workspace import Workspace

    return Workspace.open(root).name


def test_init_names_the_workspace_after_its_folder_or_name(tmp_path):
    assert run("init", tmp_path / "billing-bot").exit_code == 0
    assert workspace_name(tmp_path / "billing-bot") == "billing-bot"
    assert run("init", tmp_path / "My Desk", "--name", "help-desk").exit_code == 0
    assert workspace_name(tmp_path / "My Desk") == "help-desk"
    assert run("init", tmp_path / "Sales Desk").exit_code == 0  # made a valid name
    assert workspace_name(tmp_path / "Sales Desk") == "sales-desk"
    both = run("init", tmp_path / "c", "--name", "x-y", "-d", "project_name=z-w")
    assert both.exit_code == 3 and "both name the workspace" in both.output
    bad = run("init", tmp_path / "d", "--name", "Bad Name")
    assert bad.exit_code == 3 and "lowercase" in bad.output


def test_versions_diff_shows_state_and_tool_changes_as_the_api_does(ws_path, tmp_path):
    from ratchet.versions.catalog import Catalog
    from ratchet.core.workspace import Workspace

    doc = json.loads(run("state", "show", "staging", "-w", ws_path).stdout)  # the header is on stderr
    doc["params"]["style"] = "formal"
    (tmp_path / "s.json").write_text(json.dumps(doc))
    assert run("state", "set", "staging", tmp_path / "s.json", "-w", ws_path).exit_code == 0
    assert run("state", "promote", "-w", ws_path).exit_code == 0
    as_json = run("versions", "diff", "v0.1.0", "v0.1.1", "--json", "-w", ws_path)
    assert as_json.exit_code == 0, as_json.output
    diff = json.loads(as_json.output)
    assert diff == json.loads(json.dumps(Catalog(Workspace.open(ws_path)).diff("v0.1.0", "v0.1.1")))
    assert {"path": "/params/style", "op": "replace", "old": "friendly", "new": "formal"} in diff["state"]
    assert diff["tools"]["breaking"] is False
    table = run("versions", "diff", "0.1.0", "0.1.1", "-w", ws_path)
    assert table.exit_code == 0 and "/params/style" in table.output and "formal" in table.output
    missing = run("versions", "diff", "v0.1.0", "v9.9.9", "-w", ws_path)
    assert missing.exit_code == 6


def test_rendering_llm_chat_into_a_workspace_wires_it_and_the_micro_tier_passes(ws_path):
    rendered = run("templates", "render", "llm-chat", ws_path)
    assert rendered.exit_code == 0, rendered.output
    assert "Added plugins/llm_chat.py to [workspace] plugins" in rendered.output
    from ratchet.core.workspace import Workspace

    assert "plugins/llm_chat.py" in Workspace.open(ws_path).config.workspace.plugins
    tested = run("test", "--tier", "micro", "--json", "--no-summary", "-w", ws_path)
    tier = json.loads(tested.stdout[:tested.stdout.rindex("}") + 1])["tiers"][0]
    assert tier["failed"] == 0 and tier["passed"] >= 13, tier  # the llm_chat cases call `chat`
    again = run("templates", "render", "bandit", ws_path, "-d", "param=prompt_variant", "--no-wire")
    assert again.exit_code == 0 and "Added" not in again.output
    assert len(Workspace.open(ws_path).config.workspace.plugins) == 2
