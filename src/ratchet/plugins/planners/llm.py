"""The LLM planner: a langchain agent whose tools are the Architect's job steps.

Used when ``[architect] model`` names a chat model (an ``init_chat_model`` string such as
``"openai:gpt-4o-mini"``; install the ``llm`` extra and the provider's package, e.g. the ``openai`` extra).
The agent reads the request, looks at the workspace and the template library, applies actions to the
job's worktree, may run tiers to check its work, and ends by calling ``finish`` with a one-line summary.
Its tools are the same steps an external agent drives over REST (``/jobs/{id}/...``), so both paths
apply, test and record changes identically.

The plan holds to a protocol (``llm_protocol.JobProtocol``, a langchain middleware):

* the tool calls of one model turn run one at a time, in the order the model sent them;
* a tool that fails returns the error text (what failed, the field, the fix), so the model can correct
  itself; so does a tool call whose arguments are not valid JSON (e.g. cut off), and the model goes again;
* planning ends only with a ``finish`` call made on its own. A model that answers without it, or that
  makes ``[architect] max_steps`` model calls without it, fails the job: nothing is merged or tagged;
* a model call waits at most ``[architect] model_timeout_seconds`` and never past the job's time limit
  (``job_timeout_seconds``): a call that does not answer in time fails the job, saying which call;
* every model call (with its token counts) and every tool call (arguments, result, refusals) is recorded
  in the job's transcript.
"""

from __future__ import annotations

import json
from typing import Any

from ratchet import ConfigError, JobSession, Plan, PlanRequest, RatchetError
from ratchet.plugins.planners.llm_tools import job_tools

SYSTEM_PROMPT = """\
You are the Architect of a Ratchet workspace: a git repo that holds one agent service (runner plugins,
tuner strategies, state/active.state.json validated by state/schema.json, test tiers under tests/, and
ratchet.toml). You get feedback about the service or a report of breached KPIs, followed by a brief of
the workspace. Make the smallest change that addresses it, using the tools: prefer a state change
(set_state) when a parameter can address it (a patch version: no test needed); for new behaviour use a
template from the library (list_templates, show_template, render_template), wire rendered plugins into
ratchet.toml with edit_config, and add a test case (add_test) that pins down what was asked. Run the
micro tier (run_tiers) to check your work. When done, call finish, on its own, with a one-line summary
of the change: nothing you changed is kept unless you call finish.
"""


class PlanningError(RatchetError):
    """The model did not finish its plan: nothing it changed is merged."""


class LlmPlanner:
    """Plan with a chat model through langchain's ``create_agent``."""

    def __init__(self, model: Any = None, *, name: str = "llm", max_steps: int = 25,
                 timeout: float | None = None):
        self.name = name
        self.model = model  # an init_chat_model string, or a chat model object
        self.max_steps = max_steps  # model calls in one job ([architect] max_steps)
        self.timeout = timeout  # seconds one model call may take ([architect] model_timeout_seconds)

    @property
    def model_name(self) -> str | None:
        """The model, as ``[architect] model`` names it (the job and its version record it)."""
        if self.model is None or isinstance(self.model, str):
            return self.model
        named = getattr(self.model, "model_name", None) or getattr(self.model, "model", None)
        return named if isinstance(named, str) else type(self.model).__name__

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
            return init_chat_model(self.model, temperature=0,
                                   **({"timeout": self.timeout} if self.timeout else {}))
        except (ImportError, ValueError) as exc:
            raise ConfigError(f"cannot make chat model {self.model!r}: {exc}", field="architect.model",
                              fix="check the provider prefix and install its langchain package") from None

    def plan(self, request: PlanRequest, session: JobSession) -> Plan:
        from langchain.agents import create_agent
        from langchain.agents.middleware import ModelCallLimitMiddleware
        from langchain.agents.middleware.model_call_limit import ModelCallLimitExceededError
        from langchain_core.messages import HumanMessage
        from langgraph.errors import GraphRecursionError

        from ratchet.plugins.planners.llm_protocol import JobProtocol

        protocol = JobProtocol(session, call_timeout=self.timeout)
        agent = create_agent(self.chat_model(), tools=job_tools(session, protocol.finish), system_prompt=SYSTEM_PROMPT,
                             # the protocol first: a plan that has finished ends before the limit is checked
                             middleware=[protocol, ModelCallLimitMiddleware(run_limit=self.max_steps,
                                                                            exit_behavior="error")])
        try:
            result = agent.invoke({"messages": [HumanMessage(f"{describe(request)}\n\n# The workspace\n\n"
                                                             f"{session.brief()}")]},
                                  # one tool call at a time, in the model's order; the recursion limit is a
                                  # backstop (a model call is at most six graph steps)
                                  config={"max_concurrency": 1, "recursion_limit": 6 * self.max_steps + 10})
        except (ModelCallLimitExceededError, GraphRecursionError):
            raise PlanningError(f"the model reached its limit of {self.max_steps} calls without finishing its plan, "
                                "so its change may be half done; nothing was merged", field="architect.max_steps",
                                fix="raise [architect] max_steps if the change needs more steps, or make the "
                                "request narrower; see the job's transcript for what the model did") from None
        if protocol.finished is None:
            said = text_of(result["messages"][-1]).strip()
            raise PlanningError(f"the model stopped without calling finish, so its change may be half done; "
                                f"nothing was merged. It said: {said[:300]!r}", field="architect.model",
                                fix="submit the request again, or use a model that follows tool-calling "
                                "instructions; see the job's transcript for what the model did")
        # The actions were applied through the tools and are already in the job.
        return Plan(summary=protocol.finished[0], rationale=protocol.finished[1], actions=[])


def describe(request: PlanRequest) -> str:
    if request.text:
        about = f" about version {request.version}" if request.version else ""
        return f"Feedback{about}:\n{request.text}"
    return "The Triggerer woke you: these KPIs breached their SLO:\n" + json.dumps(request.report, indent=2)


def text_of(message: Any) -> str:
    content = getattr(message, "content", "")
    return content if isinstance(content, str) else json.dumps(content)
