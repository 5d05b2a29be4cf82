"""A job's transcript: each call its planner made to a chat model, and each tool call the model made.

A planner that plans with a model records it through its session (``JobSession.record``); the job
keeps it in ``transcript``, so that you can see what the model was told, what it asked for, what it was
refused and what it cost. Long texts are cut to :data:`MAX_TEXT` characters so that a job's record
stays small (the model saw them whole).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

MAX_TEXT = 2000  # characters kept of a text (a result, a file's content in a write_file call, ...)


class TranscriptEntry(BaseModel):
    """One model call, one tool call, or one tool call the model sent malformed."""

    at: float = Field(description="Unix time")
    kind: Literal["model", "tool", "invalid_call"] = Field(
        description="model: a call to the chat model; tool: a tool call and its result; invalid_call: a tool "
        "call whose arguments were not valid JSON (the model was told, and went again)")
    name: str = Field(description="the model as its provider named it, or the tool")
    call_id: str | None = Field(default=None, description="the tool call's id (tool, invalid_call)")
    args: Any = Field(default=None, description="the tool call's arguments (invalid_call: the raw text)")
    text: str | None = Field(default=None, description="model: what it said; tool: the result; invalid_call: "
                             "what was wrong")
    calls: list[str] = Field(default_factory=list, description="model: the tools it called, in order")
    tokens: dict[str, int] | None = Field(default=None, description="model: input, output and total tokens, "
                                          "when the provider reports them")
    seconds: float | None = Field(default=None, description="how long the call took")
    ok: bool = Field(default=True, description="false for a refused tool call (its result says why) or an "
                     "invalid one")

    def summary(self) -> str:
        """One line for the architect's console."""
        text = " ".join((self.text or "").split())
        if self.kind == "model":
            tokens = f", {self.tokens['total']} tokens" if self.tokens and "total" in self.tokens else ""
            asked = f"calls {', '.join(self.calls)}" if self.calls else f"answers {clip(text, 80)!r}"
            return f"model {self.name}: {asked}{tokens}"
        what = "invalid call to" if self.kind == "invalid_call" else "tool" if self.ok else "refused"
        return f"{what} {self.name}: {clip(text, 160)}"


def clip(value: Any, limit: int = MAX_TEXT) -> Any:
    """``value`` with every string longer than ``limit`` cut (and marked), inside lists and dicts too."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}… [{len(value) - limit} more characters]"
    if isinstance(value, dict):
        return {k: clip(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [clip(v, limit) for v in value]
    return value
