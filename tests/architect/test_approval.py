"""Which jobs wait for approval ([architect] approval): by default (agents) a major change, and a change
beyond the active state that an agent wrote; the workspace's own playbook merges the rest unattended."""

from __future__ import annotations

import pytest

from ratchet.architect.jobs import new_job
from ratchet.architect.service import Architect

KINDS = {  # (source, planner, bump)
    "playbook patch": ("feedback", "playbook", "patch"),
    "playbook minor": ("wake", "playbook", "minor"),  # the demo's drift-bandit version
    "playbook major": ("feedback", "playbook", "major"),
    "agent patch": ("agent", None, "patch"),
    "agent minor": ("agent", None, "minor"),  # an external agent's code, tests or config
    "llm minor": ("feedback", "llm", "minor"),  # a model's code, from anyone's feedback text
    "agent major": ("agent", None, "major"),
}
WAITS = {
    "none": set(),
    "major": {"playbook major", "agent major"},
    "agents": {"playbook major", "agent major", "agent minor", "llm minor"},
    "all": set(KINDS),
}


def test_agents_is_the_default_approval(ws):
    assert ws.config.architect.approval == "agents"


@pytest.mark.parametrize("gate", list(WAITS))
def test_approval_gate_holds_exactly_these_jobs(ws, gate):
    arch = Architect(ws)
    arch.config = arch.config.model_copy(update={"approval": gate})
    held = set()
    for kind, (source, planner, bump) in KINDS.items():
        job = new_job(source, {}, 60)
        job.planner, job.bump = planner, bump
        if arch._needs_approval(job):
            held.add(kind)
    assert held == WAITS[gate]
