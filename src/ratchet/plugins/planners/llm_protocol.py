"""The LLM planner's protocol, as a langchain agent middleware: how a plan ends, what the model is told
when a tool call is malformed, and the job's transcript (see :mod:`ratchet.plugins.planners.llm`)."""

from __future__ import annotations

import concurrent.futures
import contextvars
import json
import threading
import time

from langchain.agents.middleware import AgentMiddleware, hook_config
from langchain_core.messages import AIMessage, ToolMessage

from ratchet import JobSession, RatchetError, UserError
from ratchet.plugins.planners.llm import text_of
from ratchet.plugins.planners.llm_tools import FINISH


def refusal(call_id: str, name: str, error: RatchetError) -> ToolMessage:
    """A tool call's result saying it was not run, and why (the shape of a step's refusal)."""
    return ToolMessage(json.dumps({"error": error.to_dict()}), tool_call_id=call_id, name=name, status="error")


class JobProtocol(AgentMiddleware):
    """Ends the plan once ``finish`` is accepted, answers malformed tool calls, refuses a ``finish`` sent
    with other calls, and records every model and tool call in the job's transcript."""

    def __init__(self, session: JobSession, *, call_timeout: float | None = None, key_variable: str | None = None,
                 base_url: str | None = None, attempts: int | None = None):
        super().__init__()
        # The HTTP requests one call may make, when the client takes a timeout with each request: each gets
        # its share of the call's wait, so none runs on past the job's time limit (None: the client's own)
        self.attempts = attempts
        self.session = session
        self.call_timeout = call_timeout  # [architect] model_timeout_seconds
        self.key_variable = key_variable  # where the model's key comes from, for the fix of a 401
        self.base_url = base_url
        self.finished: tuple[str, str] | None = None  # (summary, rationale) once finish was accepted
        self._calls_this_turn = 0
        self._model_calls = 0

    def finish(self, summary: str, rationale: str) -> str:
        """What the ``finish`` tool does."""
        self.finished = (summary.strip().splitlines()[0], rationale)
        return "Finished: the job now commits your changes, runs every tier and, if they pass, makes a version."

    def wrap_model_call(self, request, handler):
        self._model_calls += 1
        try:
            left = self.session.time_left("planning")
        except RatchetError:
            raise self.session.out_of_time(f"planning, before the model's call {self._model_calls}") from None
        wait = min(left, self.call_timeout) if self.call_timeout else left
        started = time.monotonic()
        if self.attempts:
            request = request.override(model_settings={**request.model_settings, "timeout": wait / self.attempts})
        try:
            response = self._within(wait, handler, request)
        except Exception as exc:  # the provider refused or failed: the transcript says so, the job fails
            name = getattr(request.model, "model_name", None) or type(request.model).__name__
            if isinstance(exc, concurrent.futures.TimeoutError):
                exc = self._late(wait, left)
            elif not isinstance(exc, RatchetError):
                exc = self._refused(exc) or exc
            self.session.record("model", name=name, text=f"{type(exc).__name__}: {exc}",
                                seconds=round(time.monotonic() - started, 3), ok=False)
            if isinstance(exc, RatchetError):
                raise exc from None
            raise
        for message in response.result:
            if isinstance(message, AIMessage):
                usage = message.usage_metadata
                self.session.record(
                    "model", name=message.response_metadata.get("model_name") or "model", text=text_of(message),
                    calls=[c["name"] for c in message.tool_calls]
                    + [c["name"] or "?" for c in message.invalid_tool_calls],
                    tokens={"input": usage["input_tokens"], "output": usage["output_tokens"],
                            "total": usage["total_tokens"]} if usage else None,
                    seconds=round(time.monotonic() - started, 3))
        return response

    @staticmethod
    def _within(seconds: float, handler, request):
        """``handler(request)``, or a TimeoutError after ``seconds``. The call runs on a thread of its own
        so that the job stops waiting even where the provider's client has no timeout (or its retries add
        up past it); the thread is left to the client's own timeout."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        context = contextvars.copy_context()  # the agent's run config travels in context variables

        def call() -> None:
            try:
                done.set_result(context.run(handler, request))
            except BaseException as exc:  # noqa: BLE001 -- handed to the waiting thread
                done.set_exception(exc)

        threading.Thread(target=call, name="ratchet-model-call", daemon=True).start()
        return done.result(timeout=max(seconds, 0))

    def _late(self, waited: float, left: float) -> RatchetError:
        said = f"the model's call {self._model_calls} did not answer within {waited:.3g} s"
        if waited >= left:
            error = self.session.out_of_time(f"planning: {said}")
            error.fix = ("raise [architect] job_timeout_seconds, or use a faster model; see the job's transcript "
                         "for what the model did")
            return error
        return UserError(said, field="architect.model_timeout_seconds",
                         fix="raise [architect] model_timeout_seconds, or use a faster model or endpoint")

    def _refused(self, exc: Exception) -> RatchetError | None:
        """The provider's error as the job's, naming the setting to fix (None: not a provider's error)."""
        status = getattr(exc, "status_code", None)
        said = f"the model's call {self._model_calls} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        key = self.key_variable or "the provider's key variable"
        if status in (401, 403):
            return UserError(said, field="architect.api_key_env",
                             fix=f"check the key in {key} (set in the Architect's environment), or name the variable "
                             "that holds the right one in [architect] api_key_env")
        if status == 404:
            return UserError(said, field="architect.model", fix="check the model's name in [architect] model, and "
                             "[architect] base_url if you set it")
        if status == 429 or (isinstance(status, int) and status >= 500):
            return UserError(said, field="architect.model", fix="the provider is failing or rate-limiting: submit "
                             "the request again later, or raise [architect] model_retries")
        if isinstance(status, int):
            return UserError(said, field="architect.model", fix="the provider refused the request: check [architect] "
                             "model and its settings (temperature, base_url); see the job's transcript")
        if "Connection" in type(exc).__name__ or "Timeout" in type(exc).__name__:
            where = self.base_url or "the provider's default endpoint"
            return UserError(f"{said}: could not reach {where}", field="architect.base_url",
                             fix="check [architect] base_url and that the model's server is running and reachable "
                             "from the Architect")
        return None

    @hook_config(can_jump_to=["end"])
    def before_model(self, state, runtime):
        return {"jump_to": "end"} if self.finished is not None else None

    @hook_config(can_jump_to=["model"])
    def after_model(self, state, runtime):
        """Answer each malformed tool call with what was wrong. With no valid call to run, the model goes
        again: langchain would otherwise end the agent there, as if the model had answered."""
        message = state["messages"][-1]
        if not isinstance(message, AIMessage):
            return None
        self._calls_this_turn = len(message.tool_calls) + len(message.invalid_tool_calls)
        replies = []
        for bad in message.invalid_tool_calls:
            name = bad.get("name") or "?"
            why = " ".join((bad.get("error") or "").split("For troubleshooting")[0].split())  # one line, no link
            error = RatchetError(f"the arguments of your {name} call are not valid JSON, so it was not run: "
                                 f"{why[:300]}", field=name,
                                 fix=f"call {name} again with complete, valid JSON arguments")
            self.session.record("invalid_call", name=name, call_id=bad.get("id"), args=bad.get("args"),
                                text=error.message, ok=False)
            if bad.get("id"):  # a call without an id cannot be answered; the model sees its own message
                replies.append(refusal(bad["id"], name, error))
        if not message.invalid_tool_calls:
            return None
        return {"messages": replies, **({} if message.tool_calls else {"jump_to": "model"})}

    def wrap_tool_call(self, request, handler):
        call = request.tool_call
        if call["name"] == FINISH and self._calls_this_turn > 1:
            result = refusal(call["id"], FINISH, RatchetError(
                "finish was called with other tool calls, before their results were in", field=FINISH,
                fix="call finish on its own, once you have seen the other calls' results"))
        else:
            result = handler(request)
        if isinstance(result, ToolMessage):
            self.session.record("tool", name=call["name"], call_id=call.get("id"), args=call.get("args"),
                                text=text_of(result), ok=result.status != "error")
        return result
