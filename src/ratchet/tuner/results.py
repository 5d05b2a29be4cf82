"""What the tuner's tools return: their MCP output schemas, so a client knows each result's fields.

The server validates every structured result against these types and drops keys they do not name, so a
key the tuner returns must be declared here (``tests/servers/test_tool_schemas.py`` compares each
structured result with its text twin).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from ratchet.core.workspace import PromotionPolicy


class FeedbackAck(TypedDict):
    """A feedback tool's acknowledgement: the events are durably in the log."""

    accepted: Annotated[int, Field(description="events stored by this call")]
    duplicates: Annotated[int, Field(description="events whose event_id was already logged (stored once, "
                                                 "not again)")]
    last_seq: Annotated[int | None, Field(description="the log sequence number of the last event; null when "
                                                      "the call carried no event")]
    event_id: NotRequired[Annotated[str, Field(description="the event's id (the one sent, or one the tuner "
                                                           "made); single-event tools only")]]


class PromoteResult(TypedDict):
    """What ``promote`` did: a patch version, or why not."""

    promoted: Annotated[bool, Field(description="whether staging became active and was tagged")]
    reason: NotRequired[Annotated[str, Field(description="why it did not promote")]]
    version: NotRequired[Annotated[str, Field(description="the new patch version's tag")]]
    commit: NotRequired[Annotated[str, Field(description="the git commit the tag points at")]]
    events_applied: NotRequired[Annotated[int, Field(description="feedback events the version adds to the "
                                                                 "previous active state")]]
    micro: NotRequired[Annotated[dict[str, Any], Field(
        description="the micro tier's result: passed, failed, pass_rate, latency_ms, seconds, budget_ok "
                    "(and the failures when it failed)")]]
    at: NotRequired[Annotated[float, Field(description="when it promoted (Unix seconds)")]]
    uncommitted: NotRequired[Annotated[list[str], Field(
        description="behaviour files with uncommitted changes, which a tag would misrepresent")]]


class StateRef(TypedDict):
    revision: Annotated[int, Field(description="the state document's revision (its compare-and-swap number)")]
    applied_seq: Annotated[int, Field(description="the last feedback log sequence number folded into it")]


class ActiveRef(StateRef):
    version: Annotated[str | None, Field(description="the version tag active state came from")]


class StrategyStatus(TypedDict):
    strategy: Annotated[str, Field(description="the strategy's registered name")]
    family: Annotated[str, Field(description="its family: bandit, cmaes, preference, rules, …")]
    served: Annotated[Any, Field(description="what it serves with exploration off (e.g. the best arm), from "
                                             "staging; null where the family has no such notion")]
    kpis: Annotated[dict[str, Any], Field(description="its KPIs over staging")]


class TunerStatus(TypedDict):
    """Staging against active, what is pending, the last promotion and each strategy's KPIs."""

    staging: Annotated[StateRef, Field(description="the staging state")]
    active: Annotated[ActiveRef, Field(description="the active state")]
    pending_events: Annotated[int, Field(description="events in staging that active lacks (the next "
                                                     "promotion's)")]
    unapplied_events: Annotated[int, Field(description="logged events not yet folded into staging")]
    last_promotion: Annotated[dict[str, Any] | None, Field(
        description="the last promotion's outcome (as promote returns it), null before the first")]
    policy: Annotated[PromotionPolicy, Field(description="the workspace's promotion policy")]
    strategies: Annotated[dict[str, StrategyStatus], Field(description="each strategy, by its state key")]
    last_error: Annotated[str | None, Field(description="the last error folding feedback, null when the "
                                                        "last fold worked")]


class RebuildResult(TypedDict):
    """Staging rebuilt from active and the log."""

    revision: Annotated[int, Field(description="staging's new revision")]
    from_seq: Annotated[int, Field(description="the log sequence number it started after (active's)")]
    events_applied: Annotated[int, Field(description="events folded in")]
    applied_seq: Annotated[int, Field(description="the last sequence number folded in")]
