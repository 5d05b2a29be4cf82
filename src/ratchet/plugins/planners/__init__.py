"""First-party Architect planners: the offline playbook (the default) and the LLM agent.

Registered through the ``ratchet`` entry point ``planners``, as a third party's planners would be.
"""

from __future__ import annotations

from ratchet import hookimpl
from ratchet.plugins.planners.llm import LlmPlanner
from ratchet.plugins.planners.playbook import PlaybookPlanner


@hookimpl
def ratchet_register_planners(register, workspace):
    register(PlaybookPlanner())
    cfg = workspace.config.architect if workspace is not None else None
    register(LlmPlanner.from_config(cfg) if cfg is not None else LlmPlanner())


@hookimpl(trylast=True)
def ratchet_select_planner(workspace, available):
    """``[architect] planner`` if set; else ``llm`` when a chat model is configured; else ``playbook``."""
    cfg = workspace.config.architect
    if cfg.planner:
        return cfg.planner
    return "llm" if cfg.model and "llm" in available else "playbook"
