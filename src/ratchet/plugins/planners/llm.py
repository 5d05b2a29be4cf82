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
* a model call the provider refuses or fails (a bad key, a server error after the client's retries, an
  endpoint that cannot be reached) fails the job, naming the setting to fix (``architect.api_key_env``,
  ``architect.model``, ``architect.base_url``);
* every model call (with its token counts) and every tool call (arguments, result, refusals) is recorded
  in the job's transcript.
"""

from __future__ import annotations

import concurrent.futures
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


# The variable each hosted provider's package reads its key from, when [architect] api_key_env is not set.
KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "google_genai": "GOOGLE_API_KEY",
                 "mistralai": "MISTRAL_API_KEY", "groq": "GROQ_API_KEY", "deepseek": "DEEPSEEK_API_KEY",
                 "xai": "XAI_API_KEY", "fireworks": "FIREWORKS_API_KEY", "together": "TOGETHER_API_KEY"}
NO_KEY = {"ollama"}  # local servers
NO_RETRIES = {"ollama"}  # its client does not retry
DEFAULT_RETRIES = 2  # what the openai and anthropic clients do when max_retries is not given
# Providers whose client takes a timeout with each request (the openai and anthropic SDKs' create(timeout=)).
PER_REQUEST_TIMEOUT = {"openai", "azure_openai", "anthropic"}


class PlanningError(RatchetError):
    """The model did not finish its plan: nothing it changed is merged."""


def provider_of(model: str) -> str | None:
    """The langchain provider an ``init_chat_model`` string names (``openai`` for ``openai:gpt-4o``)."""
    try:
        from langchain.chat_models.base import _parse_model  # langchain's own rule, prefixes and inference
    except ImportError:
        return model.split(":", 1)[0] if ":" in model else None
    try:
        return _parse_model(model, None)[1]
    except ValueError:
        return None


class LlmPlanner:
    """Plan with a chat model through langchain's ``create_agent``."""

    def __init__(self, model: Any = None, *, name: str = "llm", max_steps: int = 25,
                 timeout: float | None = None, base_url: str | None = None, api_key_env: str | None = None,
                 temperature: float | None = None, retries: int | None = None):
        self.name = name
        self.model = model  # an init_chat_model string, or a chat model object
        self.max_steps = max_steps  # model calls in one job ([architect] max_steps)
        self.timeout = timeout  # seconds one model call may take ([architect] model_timeout_seconds)
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.temperature = temperature  # None: left out (reasoning models reject it)
        self.retries = retries

    @classmethod
    def from_config(cls, cfg) -> LlmPlanner:
        """The planner ``[architect]`` describes."""
        return cls(model=cfg.model, max_steps=cfg.max_steps, timeout=cfg.model_timeout_seconds,
                   base_url=cfg.base_url, api_key_env=cfg.api_key_env, temperature=cfg.temperature,
                   retries=cfg.model_retries)

    def key_variable(self) -> str | None:
        """The environment variable the model's key is read from (None: the provider needs none, or
        ratchet does not know which it reads)."""
        if self.api_key_env:
            return self.api_key_env
        provider = provider_of(self.model) if isinstance(self.model, str) else None
        return None if provider in NO_KEY else KEY_VARIABLES.get(provider)

    def check(self) -> None:
        """Check the model's configuration without calling it: the provider's package imports, the key's
        variable is set, the chat model can be made. A ``ConfigError`` names the field and the fix."""
        import os

        variable = self.key_variable()
        missing = isinstance(self.model, str) and variable and not os.environ.get(variable)
        try:
            self.chat_model()
        except ConfigError as exc:  # a missing package first; without the key the client may refuse too
            if not missing or "package is not installed" in exc.message:
                raise
        if missing:
            field = "architect.api_key_env" if self.api_key_env else "architect.model"
            raise ConfigError(f"the model {self.model!r} needs its key in the environment variable {variable}, "
                              "which is not set", field=field,
                              fix=f"set {variable} in the Architect's environment (`ratchet up` passes its own to "
                              "the Architect), or name the variable that holds it in [architect] api_key_env")

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
                              fix="pip install 'ratchet-agents[llm]' and your provider's package") from None
        settings = self.client_settings(provider_of(self.model))
        try:
            return init_chat_model(self.model, **settings)
        except ImportError as exc:
            provider = provider_of(self.model) or "?"
            raise ConfigError(f"cannot make chat model {self.model!r}: the {provider} provider's package is not "
                              f"installed ({exc})", field="architect.model",
                              fix=f"pip install langchain-{provider.replace('_', '-')} in the Architect's "
                              "environment") from None
        except Exception as exc:  # noqa: BLE001 -- each provider validates its settings its own way
            raise ConfigError(f"cannot make chat model {self.model!r}: {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}", field="architect.model",
                              fix="check the provider prefix and the model's settings in [architect] (base_url, "
                              "api_key_env, temperature, model_timeout_seconds, model_retries)") from None

    def attempts(self) -> int:
        """How many HTTP requests one model call may make: the first and the client's retries."""
        if isinstance(self.model, str) and provider_of(self.model) in NO_RETRIES:
            return 1
        return (DEFAULT_RETRIES if self.retries is None else self.retries) + 1

    def client_settings(self, provider: str | None) -> dict[str, Any]:
        """The chat model's constructor arguments: only those its class takes (ChatOllama ignores the others).

        The timeout is per HTTP request, and each of the client's attempts gets its share of
        ``model_timeout_seconds``, so a call's requests, retries included, end when the planner stops
        waiting for it instead of running on in the background."""
        import os

        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        per_attempt = self.timeout / self.attempts() if self.timeout else None
        if provider == "ollama":  # ChatOllama: the timeout and any headers go to its httpx client; no retries
            client = {"timeout": per_attempt} if per_attempt else {}
            if key:  # an Ollama behind a proxy that wants a bearer token
                client["headers"] = {"Authorization": f"Bearer {key}"}
            settings = {"base_url": self.base_url, "temperature": self.temperature, "client_kwargs": client or None}
        else:  # ChatOpenAI and ChatAnthropic take these (timeout and base_url as aliases), as do most others
            settings = {"base_url": self.base_url, "temperature": self.temperature, "timeout": per_attempt,
                        "max_retries": self.retries, "api_key": key}
        return {k: v for k, v in settings.items() if v is not None}

    def per_request_attempts(self) -> int | None:
        """The attempts to share a call's wait among, when the provider's client takes a timeout per request
        (sent with each call, so no request outlives the job's time limit); None when it does not."""
        if isinstance(self.model, str) and provider_of(self.model) in PER_REQUEST_TIMEOUT:
            return self.attempts()
        return None

    def plan(self, request: PlanRequest, session: JobSession) -> Plan:
        from langchain_core.messages import HumanMessage

        # The brief (its tool listing runs in a process of its own) is made while langchain and the
        # provider's package are imported
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ratchet-brief") as pool:
            brief = pool.submit(session.brief)
            agent, protocol = self._agent(session)
            first = HumanMessage(f"{describe(request)}\n\n# The workspace\n\n{brief.result()}")
        return self._run(agent, protocol, first)

    def _agent(self, session: JobSession):
        from langchain.agents import create_agent
        from langchain.agents.middleware import ModelCallLimitMiddleware

        from ratchet.plugins.planners.llm_protocol import JobProtocol

        protocol = JobProtocol(session, call_timeout=self.timeout, key_variable=self.key_variable(),
                               base_url=self.base_url, attempts=self.per_request_attempts())
        agent = create_agent(self.chat_model(), tools=job_tools(session, protocol.finish), system_prompt=SYSTEM_PROMPT,
                             # the protocol first: a plan that has finished ends before the limit is checked
                             middleware=[protocol, ModelCallLimitMiddleware(run_limit=self.max_steps,
                                                                            exit_behavior="error")])
        return agent, protocol

    def _run(self, agent, protocol, first) -> Plan:
        from langchain.agents.middleware.model_call_limit import ModelCallLimitExceededError
        from langgraph.errors import GraphRecursionError

        try:
            result = agent.invoke({"messages": [first]},
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
