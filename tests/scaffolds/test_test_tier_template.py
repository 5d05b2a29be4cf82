"""The test-tier scaffold: a golden dataset joins a tier through its case collector, and runs for real."""

from __future__ import annotations

import json

import pytest

from ratchet.core.errors import PluginError
from ratchet.tiers.harness import load_cases
from template_helpers import render, run_tier, wire


def test_golden_dataset_joins_the_full_tier_and_passes(library, ws_path, no_bytecode):
    render(library, "test-tier", ws_path)
    ws = wire(ws_path, plugins=["plugins/golden_cases.py"])
    cases = {c.id: c for c in load_cases(ws, "full", ws.plugins)}
    golden = [c for c in cases.values() if c.group == "golden"]
    assert len(golden) == 10 and cases["golden-accuracy"].cases_from == "golden"
    assert cases["golden-cancel-order"].args == {"question": "I changed my mind, can I stop the order I placed five "
                                                             "minutes ago?", "conversation_id": "golden-cancel-order"}
    assert cases["golden-delete-account"].state == {"params": {"style": "formal"}}
    assert not any(c.id.startswith("golden") for c in load_cases(ws, "fast", ws.plugins))  # only its own tier
    result = run_tier(ws, "full")
    assert result.failed == 0, result.failures
    assert result.metrics["accuracy.golden"] == 1.0


def test_accuracy_gate_fails_the_tier_when_rows_regress(library, ws_path, no_bytecode):
    render(library, "test-tier", ws_path, {"dataset": "hard", "tier": "fast", "min_accuracy": 0.8})
    rows = (ws_path / "tests" / "fast" / "hard.jsonl").read_text().splitlines()
    wrong = [json.dumps({**json.loads(r), "expected": "order-status"}) for r in rows[:3]]  # 3 of 10 now fail
    (ws_path / "tests" / "fast" / "hard.jsonl").write_text("\n".join(wrong + rows[3:]) + "\n")
    ws = wire(ws_path, plugins=["plugins/hard_cases.py"])
    result = run_tier(ws, "fast")
    reasons = {f["id"]: f["reason"] for f in result.failures}
    assert set(reasons) == {"hard-cancel-order", "hard-damaged-item", "hard-shipping-costs", "hard-accuracy"}
    assert "accuracy 0.700 < 0.8" in reasons["hard-accuracy"]


def test_other_tools_and_checks(library, ws_path, no_bytecode):
    render(library, "test-tier", ws_path, {"dataset": "styles", "tier": "micro", "path": "answer",
                                           "check": "regex", "min_accuracy": 0.0})
    assert (ws_path / "tests" / "micro" / "styles.jsonl").read_text() == ""  # no sample rows for this check
    (ws_path / "tests" / "micro" / "styles.jsonl").write_text(
        '{"input": "What payment methods do you accept?", "expected": "^Dear customer", '
        '"state": {"params": {"style": "formal"}}}\n')
    ws = wire(ws_path, plugins=["plugins/styles_cases.py"])
    cases = [c for c in load_cases(ws, "micro", ws.plugins) if c.group == "styles"]
    assert [c.id for c in cases] == ["styles-1"] and cases[0].expect.kind == "regex"
    assert not any(c.id == "styles-accuracy" for c in load_cases(ws, "micro", ws.plugins))
    assert run_tier(ws, "micro").failed == 0


@pytest.mark.parametrize("line, fragment", [
    ("{not json", "tests/full/golden.jsonl:11: invalid JSON"),
    ('{"input": "x"}', "tests/full/golden.jsonl:11: each line must be an object with at least 'input' and 'expected'"),
    ('{"input": "x", "expected": "y", "colour": 1}', "tests/full/golden.jsonl:11: unknown key(s) colour"),
])
def test_a_bad_row_names_the_file_and_line(library, ws_path, no_bytecode, line, fragment):
    render(library, "test-tier", ws_path)
    with open(ws_path / "tests" / "full" / "golden.jsonl", "a") as fh:
        fh.write(line + "\n")
    ws = wire(ws_path, plugins=["plugins/golden_cases.py"])
    with pytest.raises(PluginError) as err:
        load_cases(ws, "full", ws.plugins)
    assert fragment in str(err.value) and "golden_cases.py" in str(err.value)
