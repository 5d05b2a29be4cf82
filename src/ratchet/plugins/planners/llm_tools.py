"""The LLM planner's tools: the job's steps, each with a schema that describes every argument.

The model sees these schemas and nothing else about the steps, so each argument says what it is, with an
example where the shape is not obvious. A step the job refuses (a bad pointer, a value the state schema
rejects, an unknown template) returns the error as its result, with the field and the fix, marked as an
error, so that the model can correct itself; the job's time limit is not such an error: it ends the job.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema

from ratchet import JobSession, RatchetError, TimeLimitError

# Any JSON value, spelled out: an empty schema would tell the model nothing.
AnyJson = Annotated[JsonValue, WithJsonSchema({"anyOf": [
    {"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    {"type": "array", "items": {}}, {"type": "object"}]})]
FINISH = "finish"
Tier = Literal["micro", "fast", "full"]
TIER_HELP = "micro (a few quick cases, also run on every tuner promotion), fast or full"


class ShowTemplateArgs(BaseModel):
    name: str = Field(description="a template's name, as list_templates gives it, e.g. drift-bandit")


class ReadFileArgs(BaseModel):
    path: str = Field(description="a path relative to the workspace root, as list_files gives it, e.g. ratchet.toml")


class SetStateArgs(BaseModel):
    pointer: str = Field(description="JSON pointer (RFC 6901) into state/active.state.json, e.g. "
                         "/params/max_sentences; its parent object must exist")
    value: AnyJson = Field(description="the new value: any JSON value (number, string, boolean, null, array or "
                           "object) that state/schema.json allows at the pointer, e.g. 2 or \"formal\"")


class RenderTemplateArgs(BaseModel):
    template: str = Field(description="the template's name, as list_templates gives it")
    data: dict[str, AnyJson] = Field(default_factory=dict, description="answers to the template's questions, by "
                                     "question name (show_template lists them with their types and defaults); "
                                     "a question left out takes its default")


class WriteFileArgs(BaseModel):
    path: str = Field(description="a path relative to the workspace root; its folders are created")
    content: str = Field(description="the whole new content of the file")


class ReplaceTextArgs(BaseModel):
    path: str = Field(description="a path relative to the workspace root, of an existing file")
    old: str = Field(description="the text to replace; it must occur exactly once in the file")
    new: str = Field(description="the text to put in its place")


class EditConfigArgs(BaseModel):
    set: dict[str, AnyJson] = Field(default_factory=dict, description="dotted key of ratchet.toml -> new value, "
                                    "e.g. {\"tuner.promotion.every_events\": 20}; "
                                    "tuner.strategies[key=style].strategy selects the table whose key is style")
    append: dict[str, AnyJson] = Field(default_factory=dict, description="dotted key of a list -> an item to add "
                                       "to it, e.g. {\"workspace.plugins\": \"plugins/drift_style.py\"}")


class Expectation(BaseModel):
    """How the tool's result is checked: ``path`` (optional) and exactly one check."""

    model_config = ConfigDict(extra="allow")  # plugins register more kinds of check; the job validates them
    path: str | None = Field(default=None, description="dotted path into the tool's structured result, e.g. "
                             "entry_id or items.0.title; leave it out to check the whole result")
    equals: AnyJson = Field(default=None, description="the value must equal this")
    contains: AnyJson = Field(default=None, description="the string (or list) must contain this")
    regex: str | None = Field(default=None, description="the string must match this regular expression")
    schema_: dict[str, Any] | None = Field(default=None, alias="schema",
                                           description="the value must be valid against this JSON Schema")


class TierCase(BaseModel):
    """A case of a test tier: one call of a runner tool and one check of its result."""

    model_config = ConfigDict(extra="allow")  # the job validates every key a case may have
    id: str = Field(description="unique within the tier, e.g. refund-window-formal")
    tool: str = Field(description="the runner tool to call, e.g. answer")
    args: dict[str, AnyJson] = Field(default_factory=dict, description="the tool's arguments, e.g. "
                                     "{\"question\": \"How long do I have to return an item?\", "
                                     "\"conversation_id\": \"case-1\"}")
    state: dict[str, AnyJson] | None = Field(default=None, description="state overrides for this call only, e.g. "
                                             "{\"params\": {\"style\": \"formal\"}}")
    expect: Expectation = Field(description="exactly one of equals, contains, regex or schema, and optionally "
                                "path, e.g. {\"path\": \"entry_id\", \"equals\": \"refund-window\"}")


class AddTestArgs(BaseModel):
    tier: Tier = Field(description=f"the tier the case joins: {TIER_HELP}")
    case: TierCase = Field(description="the case: id, tool, args, optional state, and expect")


class RunTiersArgs(BaseModel):
    tiers: list[Tier] = Field(min_length=1, description=f"the tiers to run, in order: {TIER_HELP}")


class FinishArgs(BaseModel):
    summary: str = Field(min_length=1, max_length=200, pattern=r"\S",
                         description="one line saying what you changed and why; it becomes the version's reason")
    rationale: str = Field(default="", description="more detail, if it helps a reviewer")


def job_tools(session: JobSession, finish: Callable[[str, str], str]) -> list:
    """The job's steps as langchain tools, and ``finish``, which ends the plan by calling ``finish``."""
    from langchain_core.tools import StructuredTool, ToolException

    def step(fn: Callable, args: type[BaseModel] | None = None, name: str | None = None) -> StructuredTool:
        # A refusal becomes the call's result, marked as an error (handle_tool_error), not an exception.
        return StructuredTool.from_function(fn, name=name, description=inspect.cleandoc(fn.__doc__ or ""),
                                            args_schema=args, handle_tool_error=True)

    def run(fn, *args) -> str:
        try:
            return json.dumps(fn(*args), default=str)
        except TimeLimitError:
            raise  # the job is over: nothing for the model to correct
        except RatchetError as exc:
            raise ToolException(json.dumps({"error": exc.to_dict()})) from None

    def list_templates() -> str:
        """List the template library: name, family (runner, strategy, scaffold) and summary of each."""
        return run(lambda: [{k: t[k] for k in ("name", "family", "summary")} for t in session.templates()])

    def show_template(name: str) -> str:
        """Show one template: its questions (name, type, help, default) and its README."""
        return run(session.template, name)

    def list_files() -> str:
        """List the files of the workspace."""
        return run(session.files)

    def read_file(path: str) -> str:
        """Read a file of the workspace."""
        return run(session.read_file, path)

    def set_state(pointer: str, value: Any) -> str:
        """Set one value of the active state (state/active.state.json, validated by state/schema.json)."""
        return run(session.apply, {"kind": "set_state", "pointer": pointer, "value": value})

    def render_template(template: str, data: dict[str, Any] | None = None) -> str:
        """Render a template of the library into the workspace (it never overwrites a file)."""
        return run(session.apply, {"kind": "render_template", "template": template, "data": data or {}})

    def write_file(path: str, content: str) -> str:
        """Write a whole file of the workspace (created or replaced)."""
        return run(session.apply, {"kind": "write_file", "path": path, "content": content})

    def replace_text(path: str, old: str, new: str) -> str:
        """Replace the one occurrence of a text in a file of the workspace."""
        return run(session.apply, {"kind": "replace_text", "path": path, "old": old, "new": new})

    def edit_config(set: dict[str, Any] | None = None, append: dict[str, Any] | None = None) -> str:
        """Edit ratchet.toml (comments are kept; the result is validated): set keys, append to lists. Wire a
        rendered plugin in by appending its module to workspace.plugins."""
        return run(session.apply, {"kind": "edit_config", "set": set or {}, "append": append or {}})

    def add_test(tier: str, case: TierCase) -> str:
        """Add a test case to a tier (tests/<tier>/architect.yaml): it pins down what was asked."""
        return run(session.apply, {"kind": "add_test", "tier": tier,
                                   "case": case.model_dump(mode="json", by_alias=True, exclude_unset=True)})

    def run_tiers(tiers: list[str]) -> str:
        """Run test tiers on the workspace as it is now; returns pass counts and failures."""
        return run(lambda: [{k: r[k] for k in ("tier", "passed", "total", "ok", "violations", "failures")}
                            for r in session.run_tiers(tiers)])

    def finish_plan(summary: str, rationale: str = "") -> str:
        """Finish the plan, once your changes are applied: call it alone, as your last call. The job then
        commits the changes, runs every tier and, if they pass, makes a version with your summary as its reason.
        Planning ends only here: an answer without this call fails the job."""
        return finish(summary, rationale)

    return [step(list_templates), step(show_template, ShowTemplateArgs), step(list_files),
            step(read_file, ReadFileArgs), step(set_state, SetStateArgs), step(render_template, RenderTemplateArgs),
            step(write_file, WriteFileArgs), step(replace_text, ReplaceTextArgs), step(edit_config, EditConfigArgs),
            step(add_test, AddTestArgs), step(run_tiers, RunTiersArgs), step(finish_plan, FinishArgs, FINISH)]

