"""The workspace brief a planner gets before it plans: every section, each bounded."""

from __future__ import annotations

import json

from ratchet.architect.brief import workspace_brief
from ratchet.architect.service import Architect, JobSession
from ratchet.runner.service import Runner
from ratchet.tuner.service import Tuner

Q = "How long do I have to return an item?"


def served_and_rewarded(ws, n: int = 3) -> None:
    runner, tuner = Runner(ws, seed=0), Tuner(ws)
    for i in range(n):
        runner.call("answer", {"question": Q, "conversation_id": f"brief-{i}"})
        tuner.feedback("reward", {"conversation_id": f"brief-{i}", "value": float(i % 2)})


def test_the_brief_tells_the_rules_files_config_state_tools_tiers_kpis_and_recent_feedback(ws):
    served_and_rewarded(ws)
    arch = Architect(ws)
    job = arch.open_job("brief")
    brief = JobSession(arch, arch.jobs.get(job.id)).brief()

    assert "PATCH" in brief and "MINOR" in brief and "MAJOR" in brief  # state-only changes are patches
    assert "plugins/support_desk.py" in brief and "tests/micro/answer.yaml" in brief
    assert "[[tuner.strategies]]" in brief  # ratchet.toml, verbatim
    state = json.loads((ws.root / "state/active.state.json").read_text())
    assert json.dumps(state["params"], separators=(",", ":")) in brief
    assert '"max_sentences":{"type":["integer","null"],"minimum":1}' in brief  # the schema
    assert "- runner.answer(" in brief and "'question', 'conversation_id'" in brief
    assert "- tuner.reward(" in brief and "the reward in [0, 1]" in brief  # arguments with descriptions
    assert "id: micro-kb-question-entry" in brief and '"min_pass_rate"' in brief
    assert '"reward_count": 3' in brief and '"reward_rate_min"' in brief
    assert '- reward {"value": 1.0} on brief-1' in brief
    assert f'call: answer({{"question": "{Q}", "conversation_id": "brief-1"}})' in brief
    assert "unavailable" not in brief


def test_the_brief_is_bounded_and_each_section_says_where_it_was_cut(ws):
    served_and_rewarded(ws, 1)
    full = workspace_brief(ws.root, ws, ws.versions.head())
    short = workspace_brief(ws.root, ws, ws.versions.head(), limit=4000)
    assert len(full) > 4000
    assert len(short) <= 4000 + 80
    assert "more characters; read_file shows the rest" in short
    assert short.count("## ") >= 5  # every section keeps its share instead of the first taking all


def test_a_section_that_cannot_be_made_says_so_and_the_rest_is_there(ws, monkeypatch):
    import ratchet.architect.toolschemas as toolschemas
    from ratchet.core.errors import RatchetError

    def broken(*_args):
        raise RatchetError("the tools of abc could not be listed")

    monkeypatch.setattr(toolschemas, "tool_schemas_at", broken)
    brief = workspace_brief(ws.root, ws, ws.versions.head())
    assert "(unavailable: the tools of abc could not be listed)" in brief
    assert "[[tuner.strategies]]" in brief and "## Recent feedback" in brief and "(none yet)" in brief
