"""The template library as a whole: every template is listed with its family and summary, follows the
conventions (copier.yml, answers file, README sections, no tasks), and renders its exact file set."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from click.testing import CliRunner

from helpers import tree_snapshot
from ratchet.core import templates as tl
from ratchet.core.errors import UserError
from template_helpers import SRC, render, tree

FAMILIES = {
    "workspace": "scaffold", "strategy-plugin": "scaffold", "runner-plugin": "scaffold", "test-tier": "scaffold",
    "support-desk": "runner", "llm-chat": "runner", "tool-router": "runner", "reply-style": "runner",
    "bandit": "strategy", "drift-bandit": "strategy", "cmaes": "strategy", "optuna": "strategy",
    "preference": "strategy", "rules": "strategy",
}

# What each template renders with its defaults (and with the data given), file by file.
RENDERS = {
    "workspace": ({}, {".copier-answers.yml", ".gitignore", "README.md", "architect/playbook.yaml", "ci/budgets.json",
                       "data/kb.jsonl", "plugins/support_desk.py", "ratchet.toml", "state/active.state.json",
                       "state/schema.json", "tests/fast/answer.yaml", "tests/full/answer.yaml",
                       "tests/micro/answer.yaml"}),
    "strategy-plugin": ({"name": "bandits-foo"}, {".copier-answers.yml", ".gitignore", "README.md", "pyproject.toml",
                                                  "src/ratchet_bandits_foo/__init__.py", "tests/test_plugin.py"}),
    "runner-plugin": ({"name": "faq-search"}, {".copier-answers.yml", ".gitignore", "README.md", "pyproject.toml",
                                               "src/ratchet_faq_search/__init__.py", "tests/test_plugin.py"}),
    "test-tier": ({}, {".copier-answers.golden_cases.yml", "plugins/golden_cases.py", "tests/full/golden.jsonl"}),
    "support-desk": ({}, {".copier-answers.support_desk.yml", "plugins/support_desk.py", "data/kb.jsonl",
                          "tests/micro/support_desk.yaml"}),
    "llm-chat": ({}, {".copier-answers.llm_chat.yml", "plugins/llm_chat.py", "data/llm_chat_prompts.yaml",
                      "tests/micro/llm_chat.yaml"}),
    "tool-router": ({}, {".copier-answers.tool_router.yml", "plugins/tool_router.py", "tests/micro/tool_router.yaml"}),
    "reply-style": ({}, {".copier-answers.style-bullets.yml", "data/styles/bullets.yaml", "tests/fast/style_bullets.yaml"}),
    "bandit": ({}, {".copier-answers.style_thompson.yml", "plugins/style_thompson.py"}),
    "drift-bandit": ({}, {".copier-answers.drift-bandit.yml", "plugins/drift_bandit.py"}),
    "cmaes": ({}, {".copier-answers.params_cmaes.yml", "plugins/params_cmaes.py"}),
    "optuna": ({}, {".copier-answers.params_tpe.yml", "plugins/params_tpe.py"}),
    "preference": ({}, {".copier-answers.style_preference.yml", "plugins/style_preference.py"}),
    "rules": ({}, {".copier-answers.escalation_rules.yml", "plugins/escalation_rules.py"}),
}

# Answers that change which files a template renders.
VARIANTS = [
    ("support-desk", {"module": "desk", "sample_kb": False}, {".copier-answers.desk.yml", "plugins/desk.py"}),
    ("llm-chat", {"module": "assistant", "smoke_cases": False},
     {".copier-answers.assistant.yml", "plugins/assistant.py", "data/assistant_prompts.yaml"}),
    ("tool-router", {"smoke_cases": False}, {".copier-answers.tool_router.yml", "plugins/tool_router.py"}),
    ("test-tier", {"dataset": "routing", "tier": "fast", "sample": False},
     {".copier-answers.routing_cases.yml", "plugins/routing_cases.py", "tests/fast/routing.jsonl"}),
    ("reply-style", {"style": "steps", "layout": "numbered", "tier": "micro"},
     {".copier-answers.style-steps.yml", "data/styles/steps.yaml", "tests/micro/style_steps.yaml"}),
    ("bandit", {"policy": "kl_ucb", "param": "tone", "arms": "plain, formal"},
     {".copier-answers.tone_kl_ucb.yml", "plugins/tone_kl_ucb.py"}),
]

SECTIONS = ["## Render it", "## Questions", "## What you get", "## What to look at", "## Updating", "## See also"]


def test_every_template_is_listed_with_family_and_summary(library):
    assert {name: t.family for name, t in library.items()} == FAMILIES
    for t in library.values():
        assert t.summary and t.summary.endswith(".") and len(t.summary) < 250, t.name
        assert t.plugin == "templates" and t.questions


def test_cli_templates_list_json_shows_every_template():
    from ratchet.cli import cli

    listed = json.loads(CliRunner().invoke(cli, ["templates", "list", "--json"]).output)
    assert {t["name"]: t["family"] for t in listed} == FAMILIES
    assert all(t["summary"] for t in listed)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_template_follows_the_conventions(library, name):
    t = library[name]
    config = yaml.safe_load((t.path / "copier.yml").read_text(encoding="utf-8"))
    assert config["_subdirectory"] == "template"
    assert config["_min_copier_version"] and config.get("_ratchet_family", t.family) == t.family
    assert "_tasks" not in config and "_jinja_extensions" not in config
    assert (t.path / "template" / "{{ _copier_conf.answers_file }}.jinja").is_file()
    for key, spec in config.items():
        if key.startswith("_"):
            continue
        assert {"type", "help", "default"} <= set(spec), f"{name}.{key} needs type, help and default"
        if spec["type"] == "str" and "choices" not in spec and key not in ("description", "persona", "reason",
                                                                           "author"):
            assert "validator" in spec, f"{name}.{key}: free text that can be wrong needs a validator"
    readme = t.readme
    assert readme.startswith(f"# {name}\n")
    positions = [readme.find(s) for s in SECTIONS]
    assert all(p > 0 for p in positions) and positions == sorted(positions), f"{name}: README sections"
    render_command = "ratchet init" if name == "workspace" else f"ratchet templates render {name}"
    assert render_command in readme and "copier copy" in readme
    for q in t.questions:
        assert f"`{q.name}`" in readme, f"{name}: README's Questions table misses {q.name}"


@pytest.mark.parametrize("name", sorted(RENDERS))
def test_template_renders_its_exact_file_set(library, tmp_path, name):
    data, expected = RENDERS[name]
    files = render(library, name, tmp_path / "out", data)
    assert set(files) == expected and tree(tmp_path / "out") == expected
    answers = yaml.safe_load((tmp_path / "out" / next(f for f in files if ".copier-answers" in f)).read_text())
    assert answers["_commit"] == library[name].version or answers["_commit"].startswith(library[name].version)
    assert answers["_src_path"].startswith(str(tl.cache_dir()))  # the versioned copy: `copier update` works
    for f in files:
        if f.endswith(".py"):
            compile((tmp_path / "out" / f).read_text(encoding="utf-8"), f, "exec")
        elif f.endswith((".yaml", ".yml")):
            yaml.safe_load((tmp_path / "out" / f).read_text(encoding="utf-8"))
        elif f.endswith(".jsonl"):
            for line in (tmp_path / "out" / f).read_text(encoding="utf-8").splitlines():
                json.loads(line)
        text = (tmp_path / "out" / f).read_text(encoding="utf-8")
        assert "{{ " not in text and "{%" not in text, f"{f}: unrendered Jinja"


@pytest.mark.parametrize("name, data, expected", VARIANTS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(VARIANTS)])
def test_answers_choose_the_files(library, tmp_path, name, data, expected):
    assert set(render(library, name, tmp_path / "out", data)) == expected


BAD = [
    ("bandit", {"arms": "solo"}, "at least two arms"),
    ("bandit", {"policy": "exp3", "exploration": 1.5}, "in (0, 1] for exp3"),
    ("bandit", {"strategy_name": "thompson"}, "other than the first-party"),
    ("cmaes", {"dimensions": {"w": {"low": 1, "high": 0}}}, "w: needs numbers low < high"),
    ("cmaes", {"dimensions": "[1, 2]"}, "give a mapping"),
    ("optuna", {"space": {"k": {"type": "categorical", "choices": []}}}, "non-empty list of choices"),
    ("optuna", {"space": {"ratchet_x": {"type": "int", "low": 1, "high": 2}}}, "reserved"),
    ("preference", {"variants": "a, a"}, "must be unique"),
    ("rules", {"actions": {"exploded": {"style": "formal"}}}, "not one of the outcomes"),
    ("rules", {"max_depth": 5}, "must be 1, 2 or 3"),
    ("llm-chat", {"variants": "concise, Bad Name"}, "lowercase"),
    ("llm-chat", {"default_variant": "nope"}, "must be one of the variants"),
    ("llm-chat", {"temperature": 3.0}, "between 0 and 2"),
    ("tool-router", {"routes": "faq"}, "at least two routes"),
    ("tool-router", {"default_route": "elsewhere"}, "must be one of the routes"),
    ("test-tier", {"min_accuracy": 1.5}, "between 0 and 1"),
    ("reply-style", {"style": "concise"}, "built-in style"),
    ("reply-style", {"greeting": "x" * 121}, "one line of at most 120 characters"),
    ("strategy-plugin", {"name": "Bad_Name"}, "single dashes"),
    ("strategy-plugin", {"author_email": "nobody"}, "not an email address"),
    ("strategy-plugin", {"strategy_name": "glr_thompson"}, "first-party strategy's name"),
    ("runner-plugin", {"version": "one"}, "PEP 440"),
]


@pytest.mark.parametrize("name, data, fragment", BAD, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(BAD)])
def test_bad_answers_are_refused_and_write_nothing(library, ws_path, name, data, fragment):
    before = tree_snapshot(ws_path)
    with pytest.raises(UserError) as err:
        render(library, name, ws_path, data)
    assert fragment in str(err.value)
    assert tree_snapshot(ws_path) == before


def test_cli_data_parses_yaml_answers(library, tmp_path):
    """`--data dimensions=...` (a YAML question) arrives as a mapping."""
    t = tl.get(library, "cmaes")
    data = tl.parse_data(t, ["dimensions={top_k: {low: 1, high: 9}}", "repeats=2"])
    render(library, "cmaes", tmp_path / "out", data)
    text = (tmp_path / "out" / "plugins" / "params_cmaes.py").read_text()
    assert re.search(r'"top_k": \{"low": 1, "high": 9\}', text) and "repeats: int = Field(default=2" in text


def test_answers_files_are_per_module_so_templates_can_be_rendered_twice(library, ws_path):
    render(library, "bandit", ws_path, {"param": "style"})
    render(library, "bandit", ws_path, {"param": "tone", "arms": "plain, formal"})
    assert {p.name for p in (ws_path / "plugins").iterdir()} >= {"style_thompson.py", "tone_thompson.py"}


def test_support_desk_template_is_the_workspace_scaffolds_runner(library, tmp_path):
    """The default workspace's runner and knowledge base are exactly what the support-desk template
    renders with its defaults (the scaffold's files are links to the template's)."""
    render(library, "support-desk", tmp_path / "out")
    scaffold = SRC / "scaffolds" / "workspace" / "template"
    for rel in ("plugins/support_desk.py", "data/kb.jsonl"):
        assert (tmp_path / "out" / rel).read_bytes() == (scaffold / rel).read_bytes(), (
            f"{rel} differs between the workspace scaffold and src/ratchet/plugins/runner_templates/support-desk: "
            "make the scaffold's file a link to the template's again")


def test_workspace_offers_every_context_free_bandit(library):
    """`ratchet init --data tuner_policy=...` accepts each first-party bandit that needs no features,
    glr_thompson (change detection) included."""
    from ratchet.plugins.tuner_strategies.bandits import BANDITS

    choices = next(q for q in tl.get(library, "workspace").questions if q.name == "tuner_policy").choices
    names = {cls.name for cls in BANDITS if not cls.name.startswith("lin_")}
    assert "glr_thompson" in names and set(choices) == names


def test_workspace_with_glr_thompson(library, tmp_path):
    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins

    create_workspace(tmp_path / "desk", data=["tuner_policy=glr_thompson"], plugins=load_plugins())
    assert 'strategy = "glr_thompson"' in (tmp_path / "desk" / "ratchet.toml").read_text()
    section = json.loads((tmp_path / "desk" / "state" / "active.state.json").read_text())["strategies"]["style"]
    assert section["policy"] == "glr_thompson" and section["alarms"] == [0, 0, 0, 0]
