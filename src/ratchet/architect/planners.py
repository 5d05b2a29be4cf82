"""The Architect's planner contract: what a planner is given, what it returns, and how one is chosen.

A planner is any object with a ``name`` and ``plan(request, session) -> Plan``, registered through
``ratchet_register_planners``. ``request`` says what woke the Architect (free text or a KPI report);
``session`` is the job's workbench: the same steps an external agent drives over REST (list and show
templates, read files, apply actions to the job's worktree, run tiers). A planner may return its
actions in the plan (the job applies them), or apply them itself through the session (the LLM planner
does, so that it can look at the result and try again); either way every action ends up in the job.
A planner that plans with a chat model names it in ``model_name`` (the job and its version's metadata
record it) and records its model and tool calls with ``session.record`` (the job's transcript). A planner
that waits (on a model, say) waits no longer than ``session.time_left()`` and then raises
``session.out_of_time(...)``, a ``TimeLimitError`` that fails the job.

Which planner runs: ``ratchet_select_planner`` (``firstresult``); the first-party impl picks
``[architect] planner`` if set, else ``llm`` when ``[architect] model`` is set, else ``playbook``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from ratchet.core.errors import ConfigError

if TYPE_CHECKING:
    from ratchet.architect.plans import Action, Plan
    from ratchet.core.errors import TimeLimitError
    from ratchet.core.workspace import Workspace


class PlanRequest(BaseModel):
    """What the Architect was asked: free-text feedback, or a Triggerer's wake-up with its KPI report."""

    source: str = Field(description="feedback or wake")
    text: str | None = Field(default=None, description="the feedback text")
    report: dict[str, Any] | None = Field(default=None, description="the Triggerer's report: breaches, kpis")
    version: str | None = Field(default=None, description="the version the feedback is about")
    conversation_id: str | None = None

    def breached(self) -> list[str]:
        """The KPIs the report says are breached (e.g. ``reward_rate``)."""
        return [b.get("kpi") for b in (self.report or {}).get("breaches", []) if isinstance(b, dict)]


class JobSession(Protocol):
    """The steps a planner (or an external agent, over REST) can take on a job's worktree."""

    workspace: Workspace  # the job's worktree, opened as a workspace

    def brief(self, limit: int | None = None) -> str: ...

    def templates(self) -> list[dict[str, Any]]: ...

    def template(self, name: str) -> dict[str, Any]: ...

    def files(self) -> list[str]: ...

    def read_file(self, path: str) -> str: ...

    def apply(self, action: Action | dict[str, Any]) -> list[str]: ...

    def run_tiers(self, tiers: list[str]) -> list[dict[str, Any]]: ...

    def record(self, kind: str, **fields: Any) -> None: ...

    def time_left(self, during: str = "planning") -> float: ...

    def out_of_time(self, during: str) -> TimeLimitError: ...


@runtime_checkable
class Planner(Protocol):
    """A planner: a ``name`` and ``plan(request, session)``, registered with ``ratchet_register_planners``."""

    name: str

    def plan(self, request: PlanRequest, session: JobSession) -> Plan: ...


def registered_planners(workspace: Workspace) -> dict[str, tuple[str, Planner]]:
    """``{name: (plugin, planner)}`` from every ``ratchet_register_planners`` impl."""

    def validate(planner: Any) -> Planner:
        if not isinstance(getattr(planner, "name", None), str) or not callable(getattr(planner, "plan", None)):
            raise TypeError(f"{planner!r} must have a string `name` and a `plan(request, session)` method")
        return planner

    return workspace.plugins.collect("ratchet_register_planners", validate, key=lambda p: p.name,
                                     workspace=workspace)


def select_planner(workspace: Workspace, override: str | None = None) -> Planner:
    """The planner for ``workspace``: ``override``, else what ``ratchet_select_planner`` chooses."""
    planners = registered_planners(workspace)
    available = sorted(planners)
    name = override
    if name is None:
        chosen = workspace.plugins.call("ratchet_select_planner", workspace=workspace, available=available)
        name = chosen[0] if chosen else None
    if name is None:
        raise ConfigError("no planner is registered or selected", field="architect.planner",
                          fix="install ratchet's first-party planners, or set [architect] planner")
    if name not in planners:
        raise ConfigError(f"unknown planner {name!r}", field="architect.planner",
                          fix=f"use one of: {', '.join(available) or '(none registered)'}")
    return planners[name][1]
