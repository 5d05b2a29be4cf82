"""The default workspace's runner plugin (scaffolds/workspace/template/plugins/support_desk.py).

The plugin is copied verbatim into each workspace and loaded there as a workspace module, so it is
imported here by file path. The last tests run every YAML case of the template's test tiers against
``SupportDesk.answer`` with a small evaluator of the case format (equals/contains/regex/schema/metric).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import sys
import threading
import time
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ratchet.runner.context import RunContext

TEMPLATE = Path(__file__).resolve().parents[2] / "src" / "ratchet" / "scaffolds" / "workspace" / "template"
PLUGIN = TEMPLATE / "plugins" / "support_desk.py"
KB = TEMPLATE / "data" / "kb.jsonl"
TIERS = ("micro", "fast", "full")

# The state's params of a fresh workspace (what each YAML case's overrides are merged into), read from
# the scaffold's initial state with the template's default style.
DEFAULT_PARAMS = json.loads(
    (TEMPLATE / "state" / "active.state.json.jinja").read_text().replace("{{ default_style }}", "friendly"))["params"]
OFF_TOPIC = [
    "What's the weather like in Paris tomorrow?",
    "Who won the football world cup in 2018?",
    "recommend a good pizza recipe",
    "how tall is mount everest",
]


def _load_plugin() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("ratchet_workspace_support_desk", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # The template is copied into workspaces verbatim: leave no __pycache__ in it.
    previous, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = previous
    return module


sd = _load_plugin()


@pytest.fixture(scope="module")
def desk():
    return sd.SupportDesk(KB).build()


def ask(desk, question: str, **params: Any) -> tuple[dict, RunContext]:
    run = RunContext(conversation_id="c-1", params={**DEFAULT_PARAMS, **params})
    return desk.answer(question, "c-1", run), run


# ---------------------------------------------------------------------------------- knowledge base


def test_kb_entries_are_valid():
    rows = [json.loads(line) for line in KB.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) == 40
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    topics = {r["topic"] for r in rows}
    assert topics == {
        "orders", "shipping", "returns", "billing", "accounts",
        "subscriptions", "privacy", "warranty", "technical", "contact",
    }
    for r in rows:
        assert set(r) == {"id", "topic", "question", "answer", "keywords"}
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", r["id"])
        assert 2 <= len(sd.split_sentences(r["answer"])) <= 4, r["id"]
        assert r["keywords"] and all(isinstance(k, str) and k for k in r["keywords"])


def test_every_kb_question_retrieves_its_own_entry(desk):
    for entry in desk.entries:
        result, _ = ask(desk, entry["question"])
        assert result["entry_id"] == entry["id"], (entry["question"], result)
        assert not result["fallback"]


def test_search_returns_scored_entries_best_first(desk):
    hits = desk.search("how many days to send something back?", top_k=5)
    assert len(hits) == 5
    assert hits[0]["id"] == "refund-window"
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert {"id", "topic", "question", "answer", "keywords", "score"} <= set(hits[0])


def test_kb_errors_name_the_line(tmp_path):
    good = KB.read_text(encoding="utf-8").splitlines()[0]
    bad = tmp_path / "kb.jsonl"
    bad.write_text(good + "\n" + good + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"kb\.jsonl:2: duplicate id"):
        sd.SupportDesk(bad).build()
    bad.write_text('{"id": "Not Kebab", "topic": "x", "question": "q", "answer": "a", "keywords": []}\n')
    with pytest.raises(ValueError, match=r":1: id 'Not Kebab' is not kebab-case"):
        sd.SupportDesk(bad).build()
    with pytest.raises(FileNotFoundError):
        sd.SupportDesk(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------------------------- styles


def test_concise_is_one_sentence_with_the_core_fact(desk):
    result, _ = ask(desk, "how many days to send something back?", style="concise")
    assert result["style"] == "concise"
    assert len(sd.split_sentences(result["answer"])) == 1
    assert "30 days" in result["answer"]


def test_friendly_greets_answers_and_offers_help(desk):
    result, _ = ask(desk, "How much does shipping cost?")
    text = result["answer"]
    assert text.startswith("Hi there, thanks for reaching out! Standard shipping is free on orders of $50")
    assert text.endswith("Is there anything else I can help you with? I'm happy to help!")


def test_detailed_adds_a_related_entry(desk):
    result, _ = ask(desk, "When will I get my refund?", style="detailed")
    text = result["answer"]
    entry = next(e for e in desk.entries if e["id"] == "refund-timing")
    assert text.startswith(entry["answer"])
    related = text[len(entry["answer"]):]
    assert related.startswith(" Related: ")
    assert "When will I get my refund?" not in related  # not the entry itself


def test_formal_register(desk):
    result, _ = ask(desk, "I can't log in, my account is locked", style="formal")
    text = result["answer"]
    assert text.startswith("Dear customer, thank you for your enquiry. ")
    assert text.endswith("Kind regards, Acme Customer Support.")
    assert "n't" not in text and "I'm" not in text


def test_replies_are_deterministic(desk):
    for style in sd.STYLES:
        first, _ = ask(desk, "my card expired, how do I put in a new one?", style=style)
        again, _ = ask(desk, "my card expired, how do I put in a new one?", style=style)
        assert first == again


def test_max_sentences_caps_the_content_and_keeps_the_frame(desk):
    full, _ = ask(desk, "How do I start a return?", style="detailed")
    two, _ = ask(desk, "How do I start a return?", style="detailed", max_sentences=2)
    assert len(sd.split_sentences(full["answer"])) > 2
    assert len(sd.split_sentences(two["answer"])) == 2
    assert full["answer"].startswith(two["answer"])
    friendly, _ = ask(desk, "How do I start a return?", max_sentences=1)
    assert friendly["answer"] == (
        "Hi there, thanks for reaching out! Go to Account > Orders, select the order, choose Return items, "
        "then pick the items and a reason. Is there anything else I can help you with? I'm happy to help!"
    )


# ---------------------------------------------------------------------------------- fallback


@pytest.mark.parametrize("style", sd.STYLES)
def test_off_topic_questions_fall_back_to_a_human(desk, style):
    for question in OFF_TOPIC:
        result, run = ask(desk, question, style=style)
        assert result["fallback"] is True
        assert result["entry_id"] is None
        assert result["score"] < DEFAULT_PARAMS["min_score"]
        assert result["style"] == style
        assert "human agent" in result["answer"]
        assert run.features["topic"] is None


def test_min_score_controls_the_fallback(desk):
    result, _ = ask(desk, "How do I delete my account?", min_score=1.01)
    assert result["fallback"] and result["entry_id"] is None
    result, _ = ask(desk, "What's the weather like in Paris tomorrow?", min_score=0.0)
    assert not result["fallback"] and result["entry_id"] is not None


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("question", ["", "   ", "\n\t", None, 42])
def test_question_must_be_a_non_empty_string(desk, question):
    with pytest.raises(ValueError, match="question must be a non-empty string"):
        desk.answer(question, "c-1", RunContext("c-1", dict(DEFAULT_PARAMS)))


def test_unknown_style_names_it_and_lists_the_valid_ones(desk):
    with pytest.raises(ValueError) as info:
        ask(desk, "How do I delete my account?", style="pirate")
    message = str(info.value)
    assert "'pirate'" in message
    for style in sd.STYLES:
        assert style in message


def test_styles_from_data_files(tmp_path):
    """A style of data/styles/ (what the reply-style template writes): greeting, the answer's sentences
    as a list, closing; it counts as a valid style, and the built-ins keep working."""
    (tmp_path / "bullets.yaml").write_text("name: bullets\nlayout: bullets\ngreeting: 'In short:'\nclosing: ''\n")
    (tmp_path / "steps.yaml").write_text("name: steps\nlayout: numbered\nclosing: Anything else?\n")
    desk = sd.SupportDesk(KB, styles=sd.load_styles(tmp_path)).build()
    result, _ = ask(desk, "How do I reset my password?", style="bullets")
    lines = result["answer"].split("\n")
    assert result["style"] == "bullets" and lines[0] == "In short:" and len(lines) >= 3
    assert all(line.startswith("- ") for line in lines[1:])
    numbered = ask(desk, "How do I reset my password?", style="steps")[0]["answer"].split("\n")
    assert numbered[0].startswith("1. ") and numbered[1].startswith("2. ") and numbered[-1] == "Anything else?"
    assert ask(desk, "write me a poem about the sea", style="bullets")[0]["fallback"] is True
    assert ask(desk, "How do I reset my password?", style="concise")[0]["style"] == "concise"
    with pytest.raises(ValueError, match="'pirate'.*bullets"):
        ask(desk, "How do I delete my account?", style="pirate")
    assert sd.load_styles(tmp_path / "none") == {}


@pytest.mark.parametrize("text, fragment", [
    ("name: other\nlayout: bullets\n", "name must be the file's name"),
    ("name: bad\nlayout: table\n", "layout must be one of bullets, numbered"),
    ("name: bad\nlayout: bullets\ncolour: red\n", "unknown key 'colour'"),
    ("- a list\n", "a style is a mapping"),
])
def test_bad_style_files_name_the_file(tmp_path, text, fragment):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ValueError, match="bad.yaml") as info:
        sd.load_styles(tmp_path)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "params",
    [{"max_sentences": 0}, {"max_sentences": "2"}, {"top_k": 0}, {"w_question": -1}, {"w_question": 0, "w_answer": 0}],
)
def test_invalid_params_are_rejected(desk, params):
    with pytest.raises(ValueError):
        ask(desk, "How do I delete my account?", **params)


# ---------------------------------------------------------------------------------- features


def test_log_features_is_called(desk):
    calls: list[dict] = []

    class SpyContext(RunContext):
        def log_features(self, **features: Any) -> None:
            calls.append(features)
            super().log_features(**features)

    run = SpyContext(conversation_id="c-9", params=dict(DEFAULT_PARAMS))
    result = desk.answer("Where is order AC-10482937? It has not arrived", "c-9", run)
    assert len(calls) == 1
    assert calls[0] == {
        "topic": "orders",
        "score": result["score"],
        "question_length": 8,
        "has_order_number": True,
    }
    assert run.features == calls[0]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Where is order AC-10482937?", True),
        ("my order #48213 never came", True),
        ("order number 5512093 is late", True),
        ("How long does delivery take?", False),
        ("I ordered 2 shirts", False),
    ],
)
def test_has_order_number(desk, question, expected):
    _, run = ask(desk, question)
    assert run.features["has_order_number"] is expected


# ---------------------------------------------------------------------------------- plugin hook


def test_hook_registers_the_bound_answer_method():
    registered: list = []
    workspace = types.SimpleNamespace(root=TEMPLATE)
    sd.ratchet_register_runner_tools(register=registered.append, workspace=workspace)
    assert len(registered) == 1
    tool = registered[0]
    assert tool.__name__ == "answer" and isinstance(tool.__self__, sd.SupportDesk)
    assert hasattr(sd.ratchet_register_runner_tools, "ratchet_impl")  # marked by ratchet.hookimpl
    # The framework builds the schema from the hints minus the RunContext parameter.
    hints = typing.get_type_hints(tool)
    params = [p for p in inspect.signature(tool).parameters if hints[p] is not RunContext]
    assert params == ["question", "conversation_id"]
    assert hints["question"] is str and hints["conversation_id"] is str
    result = tool("How do I delete my account?", "c-1", RunContext("c-1", dict(DEFAULT_PARAMS)))
    assert result["entry_id"] == "delete-account"


def test_index_is_lazy_built_once_and_fast():
    import sklearn.feature_extraction.text  # noqa: F401  (time the build, not the import)

    desk = sd.SupportDesk(KB)
    assert desk._index is None
    builds = []
    original = desk._build_index

    def counting_build():
        builds.append(1)
        return original()

    desk._build_index = counting_build
    threads = [threading.Thread(target=desk.search, args=("refund",)) for _ in range(8)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    assert builds == [1]
    assert elapsed < 1.0  # ~40 ms on a laptop; generous for slow CI


# ---------------------------------------------------------------------------------- YAML cases


def _resolve(result: Any, path: str | None) -> Any:
    value = result
    for part in path.split(".") if path else []:
        value = value[part]
    return value


def _check(expect: dict, result: dict) -> tuple[bool, str]:
    value = _resolve(result, expect.get("path"))
    if "equals" in expect:
        return value == expect["equals"], f"{value!r} != {expect['equals']!r}"
    if "contains" in expect:
        return isinstance(value, str) and expect["contains"] in value, f"{expect['contains']!r} not in {value!r}"
    if "regex" in expect:
        return isinstance(value, str) and re.search(expect["regex"], value) is not None, (
            f"{expect['regex']!r} does not match {value!r}"
        )
    if "schema" in expect:
        try:
            jsonschema.validate(value, expect["schema"])
        except jsonschema.ValidationError as exc:
            return False, exc.message
        return True, ""
    raise AssertionError(f"unknown expectation {expect}")


def _run_case(desk, case: dict, base: dict) -> tuple[bool, str, dict]:
    assert case["tool"] == "answer"
    params = {**base, **case.get("state", {}).get("params", {})}
    args = case["args"]
    run = RunContext(conversation_id=args["conversation_id"], params=params)
    result = desk.answer(**args, run=run)
    ok, why = _check(case["expect"], result)
    return ok, why, result


def _load_cases(tier: str) -> list[dict]:
    cases = yaml.safe_load((TEMPLATE / "tests" / tier / "answer.yaml").read_text(encoding="utf-8"))
    assert isinstance(cases, list) and cases
    return cases


# The state's style comes from `ratchet init` (copier's default_style): the cases must pass whichever it is.
@pytest.mark.parametrize("base_style", ["friendly", *(s for s in sd.STYLES if s != "friendly")])
@pytest.mark.parametrize("tier", TIERS)
def test_yaml_cases_pass_with_default_params(desk, tier, base_style):
    base = {**DEFAULT_PARAMS, "style": base_style}
    cases = _load_cases(tier)
    ids = [c["id"] for c in cases]
    assert len(set(ids)) == len(ids), "case ids must be unique"
    outcomes: dict[str, bool] = {}
    failures = []
    for case in cases:
        if "cases_from" in case:
            continue
        ok, why, _ = _run_case(desk, case, base)
        outcomes[case["id"]] = ok
        if not ok:
            failures.append(f"{case['id']}: {why}")
    for case in cases:
        if "cases_from" not in case:
            continue
        expect = case["expect"]
        assert expect["metric"] == "accuracy"
        group = [c["id"] for c in cases if c.get("group") == case["cases_from"]]
        assert group, f"{case['id']}: no cases in group {case['cases_from']!r}"
        accuracy = sum(outcomes[i] for i in group) / len(group)
        if accuracy < expect["min"]:
            failures.append(f"{case['id']}: accuracy {accuracy:.3f} < {expect['min']}")
    assert not failures, "\n".join(failures)


def test_tier_sizes_and_coverage():
    micro, fast, full = (_load_cases(t) for t in TIERS)
    assert 6 <= len(micro) <= 10 and 18 <= len(fast) <= 25 and len(full) >= 41
    kb_ids = {json.loads(line)["id"] for line in KB.read_text(encoding="utf-8").splitlines() if line.strip()}
    retrieval = [c for c in full if c.get("group") == "retrieval"]
    assert {c["expect"]["equals"] for c in retrieval} == kb_ids  # one paraphrase per entry
    styles = {c.get("state", {}).get("params", {}).get("style", "friendly") for c in fast}
    assert styles == set(sd.STYLES)
    assert sum("schema" in c["expect"] for c in micro + fast + full) >= 1
    assert any("metric" in c["expect"] for c in full)
