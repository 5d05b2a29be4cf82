"""The LLM planner: a langchain agent whose tools are the Architect's job steps.

Used when ``[architect] model`` names a chat model (an ``init_chat_model`` string such as
``"openai:gpt-4o-mini"``; install the ``llm`` extra and the provider's package). The agent reads the
request, looks at the workspace and the template library, applies actions to the job's worktree, may
run tiers to check its work, and ends with a one-line summary. Its tools are the same steps an external
agent drives over REST (``/jobs/{id}/...``), so both paths apply, test and record changes identically.

A tool that fails returns the error text (what failed, the field, the fix) instead of raising, so the
model can correct itself. The agent stops after ``max_steps`` model calls.
"""

from __future__ import annotations

import json
from typing import Any

from ratchet import ConfigError, JobSession, Plan, PlanRequest, RatchetError

SYSTEM_PROMPT = """\
You are the Architect of a Ratchet workspace: a git repo that holds one agent service (runner plugins,
tuner strategies, state/active.state.json validated by state/schema.json, test tiers under tests/, and
ratchet.toml). You get feedback about the service or a report of breached KPIs. Make the smallest change
that addresses it, using the tools: prefer a state change (set_state) for tuning, a template from the
library (list_templates, show_template, render_template) for new behaviour, and add a test case
(add_test) that pins down what was asked. Wire rendered plugins into ratchet.toml with edit_config.
Run the micro tier (run_tiers) to check your work. When done, answer with one line summarising the change.
"""


class LlmPlanner:
    """Plan with a chat model through langchain's ``create_agent``."""

    def __init__(self, model: Any = None, *, name: str = "llm", max_steps: int = 25):
        self.name = name
        self.model = model  # an init_chat_model string, or a chat model object
        self.max_steps = max_steps

    def chat_model(self):
        if self.model is None:
            raise ConfigError("the llm planner needs a chat model", field="architect.model",
                              fix="set [architect] model, e.g. model = \"openai:gpt-4o-mini\"")
        if not isinstance(self.model, str):
            return self.model
        try:
            from langchain.chat_models import init_chat_model
        except ImportError:
            raise ConfigError("the llm planner needs langchain", field="architect.model",
                              fix="pip install 'ratchet[llm]' and your provider's package") from None
        try:
            return init_chat_model(self.model, temperature=0)
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"cannot make chat model {self.model!r}: {exc}", field="architect.model",
                              fix="check the provider prefix and install its langchain package") from None

    def plan(self, request: PlanRequest, session: JobSession) -> Plan:
        from langchain.agents import create_agent
        from langchain_core.messages import HumanMessage

        agent = create_agent(self.chat_model(), tools=job_tools(session), system_prompt=SYSTEM_PROMPT)
        result = agent.invoke({"messages": [HumanMessage(describe(request))]},
                              config={"recursion_limit": 2 * self.max_steps + 1})
        final = result["messages"][-1]
        text = final.content if isinstance(final.content, str) else json.dumps(final.content)
        summary = (text.strip().splitlines() or ["(no summary)"])[0][:200]
        # The actions were applied through the tools and are already in the job.
        return Plan(summary=summary or "(no summary)", rationale=text, actions=[])


def describe(request: PlanRequest) -> str:
    if request.text:
        about = f" about version {request.version}" if request.version else ""
        return f"Feedback{about}:\n{request.text}"
    return "The Triggerer woke you: these KPIs breached their SLO:\n" + json.dumps(request.report, indent=2)


def job_tools(session: JobSession) -> list:
    """The job steps as langchain tools (each returns JSON text, or the error)."""
    from langchain_core.tools import tool

    def run(fn, *args) -> str:
        try:
            return json.dumps(fn(*args), default=str)
        except RatchetError as exc:
            return json.dumps({"error": exc.to_dict()})

    @tool
    def list_templates() -> str:
        """List the template library: name, family (runner, strategy, scaffold) and summary of each."""
        return run(lambda: [{k: t[k] for k in ("name", "family", "summary")} for t in session.templates()])

    @tool
    def show_template(name: str) -> str:
        """Show one template: its questions (name, type, help, default) and its README."""
        return run(session.template, name)

    @tool
    def list_files() -> str:
        """List the files of the workspace."""
        return run(session.files)

    @tool
    def read_file(path: str) -> str:
        """Read a file of the workspace (path relative to its root)."""
        return run(session.read_file, path)

    @tool
    def set_state(pointer: str, value: Any) -> str:
        """Set one value of the active state by JSON pointer, e.g. pointer=/params/max_sentences, value=2."""
        return run(session.apply, {"kind": "set_state", "pointer": pointer, "value": value})

    @tool
    def render_template(template: str, data: dict[str, Any] | None = None) -> str:
        """Render a template of the library into the workspace, with answers to its questions in data."""
        return run(session.apply, {"kind": "render_template", "template": template, "data": data or {}})

    @tool
    def write_file(path: str, content: str) -> str:
        """Write a whole file of the workspace (created or replaced)."""
        return run(session.apply, {"kind": "write_file", "path": path, "content": content})

    @tool
    def replace_text(path: str, old: str, new: str) -> str:
        """Replace the one occurrence of old with new in a file of the workspace."""
        return run(session.apply, {"kind": "replace_text", "path": path, "old": old, "new": new})

    @tool
    def edit_config(set: dict[str, Any] | None = None, append: dict[str, Any] | None = None) -> str:
        """Edit ratchet.toml: set maps dotted keys to values (tuner.strategies[key=style].strategy selects
        a table by a value); append adds an item to a list (e.g. workspace.plugins)."""
        return run(session.apply, {"kind": "edit_config", "set": set or {}, "append": append or {}})

    @tool
    def add_test(tier: str, case: dict[str, Any]) -> str:
        """Add a test case to tier micro, fast or full: {id, tool, args, expect: {path?, equals|contains|regex}}."""
        return run(session.apply, {"kind": "add_test", "tier": tier, "case": case})

    @tool
    def run_tiers(tiers: list[str]) -> str:
        """Run test tiers (micro, fast, full) on the workspace as it is now; returns pass counts and failures."""
        return run(lambda: [{k: r[k] for k in ("tier", "passed", "total", "ok", "violations", "failures")}
                            for r in session.run_tiers(tiers)])

    return [list_templates, show_template, list_files, read_file, set_state, render_template, write_file,
            replace_text, edit_config, add_test, run_tiers]
