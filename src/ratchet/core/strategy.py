"""The tuner strategy contract.

A strategy owns one *section* of the state document (``state["strategies"][key]``). The runner asks
it to ``decide`` with the active section; the tuner feeds it feedback events through ``apply``, a pure
function from (section, events) to a new section, so staging can always be rebuilt from active plus
the event log. Feedback arrives late and in batches: ``apply`` must accept any number of events, each
carrying the decision it joins.

Register strategy classes with the ``ratchet_register_strategies`` hook::

    from ratchet import Strategy, hookimpl

    @hookimpl
    def ratchet_register_strategies(register):
        register(MyStrategy)
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from ratchet.core.belief import Belief
    from ratchet.core.plugins import Plugins
    from ratchet.core.workspace import Workspace


def copy_json(o: Any) -> Any:
    """Copy a JSON tree, e.g. a state section before ``apply`` changes it (``apply`` must stay pure).

    Lists of scalars are sliced, which is much cheaper than ``copy.deepcopy``.
    """
    if isinstance(o, dict):
        return {k: copy_json(v) for k, v in o.items()}
    if isinstance(o, list):
        return [copy_json(v) for v in o] if o and isinstance(o[0], (list, dict)) else o[:]
    return o


def choice_key(choice: Any) -> Any:
    """How a choice is named in off-policy evaluation: a string as it is, anything else (e.g. a dict of
    parameters) as its canonical JSON text, so that logged choices and ``choice_probabilities`` keys match."""
    return choice if isinstance(choice, str) else json.dumps(choice, sort_keys=True)


class StrategyConfig(BaseModel):
    """Base of every strategy's config (the ``[[tuner.strategies]]`` table minus ``key``/``strategy``)."""

    model_config = ConfigDict(extra="forbid")
    param: str | None = Field(
        default=None,
        description="the key of the state's params that this strategy's choice sets; "
        "a dict choice is merged into params when omitted",
    )


class Decision(BaseModel):
    """What a strategy chose for one runner call; written to the decision log before the reply leaves."""

    strategy: str = Field(description="the state section key of the strategy that decided")
    choice: Any = Field(description="the arm, candidate parameters or rule that was used")
    propensity: float | None = Field(default=None, description="probability of this choice, if known")
    sticky: bool = Field(default=True, description="reuse this decision for later calls of the conversation")
    info: dict[str, Any] = Field(default_factory=dict, description="extra data apply() needs, e.g. context")


class FeedbackEvent(BaseModel):
    """One feedback event, joined to the decisions it is about.

    ``decision`` is this strategy's decision in the conversation named by the tool's first join field
    (``conversation_id`` by default), or None. ``joined`` has one entry per join field that named a
    conversation with a decision of this strategy, e.g. ``{"winner_conversation_id": ..., "loser_...": ...}``.
    ``features`` are what the runner logged for the first joined conversation.
    """

    event_id: str
    tool: str
    conversation_id: str | None = None
    payload: dict[str, Any]
    decision: Decision | None = None
    joined: dict[str, Decision] = Field(default_factory=dict)
    features: dict[str, Any] = Field(default_factory=dict)
    ts: float = 0.0


class FeedbackTool(BaseModel):
    """A tuner tool a strategy contributes. ``input_schema`` is its JSON Schema (the MCP inputSchema)."""

    name: str
    description: str
    input_schema: dict[str, Any]
    needs_decision: bool = Field(
        default=True, description="every join field must name a conversation with a logged decision"
    )
    join: list[str] = Field(
        default_factory=lambda: ["conversation_id"],
        description="argument names that hold conversation ids to join to their logged decisions",
    )
    batch_of: str | None = Field(
        default=None,
        description="this tool carries many events of the named tool in its ``events`` array; the tuner "
        "acknowledges and applies them as one batch",
    )


class Strategy(ABC):
    """Base class of tuner strategies. Subclasses set ``name``, ``family`` and ``Config``."""

    name: ClassVar[str]
    family: ClassVar[str]
    Config: ClassVar[type[StrategyConfig]] = StrategyConfig

    def __init__(self, key: str, config: StrategyConfig):
        self.key = key
        self.config = config

    @abstractmethod
    def initial_state(self) -> dict[str, Any]:
        """The section a fresh workspace starts with."""

    @abstractmethod
    def state_schema(self) -> dict[str, Any]:
        """JSON Schema of this strategy's section."""

    @abstractmethod
    def decide(self, section: dict[str, Any], context: dict[str, Any], rng: np.random.Generator) -> Decision:
        """Choose for one call. ``context`` holds the call's arguments and any features the runner logged."""

    @abstractmethod
    def feedback_tools(self) -> list[FeedbackTool]:
        """The tuner tools that feed this strategy."""

    @abstractmethod
    def apply(self, section: dict[str, Any], events: list[FeedbackEvent]) -> dict[str, Any]:
        """Return a new section with ``events`` applied. Pure: never mutate ``section``, no I/O."""

    def kpis(self, section: dict[str, Any]) -> dict[str, Any]:
        """Numbers for ``status`` and the Triggerer (e.g. reward rate, best arm)."""
        return {}

    def choice_probabilities(self, section: dict[str, Any], context: dict[str, Any],
                             rng: np.random.Generator) -> dict[Any, float] | None:
        """``{choice: probability}`` that ``decide`` makes each choice for ``context`` with this section.

        Off-policy evaluation (:mod:`ratchet.core.ope`) weighs logged calls by it. An unbiased estimate
        (e.g. Monte Carlo over a posterior) is enough. Keys are :func:`choice_key` of the choices (a dict
        choice as its canonical JSON); choices left out have probability 0. A deterministic choice is
        ``{choice: 1.0}``. Defaults to None: this strategy cannot say, and it cannot be evaluated
        off-policy. Raise ``ratchet.OPEError`` (with ``field`` and ``fix``) when only this section cannot
        say (e.g. a continuous random draw before a search has candidates).
        """
        return None

    def belief(self, section: dict[str, Any]) -> list[Belief] | None:
        """What this strategy believes in ``section``, for people: a list of :mod:`ratchet.core.belief`
        descriptions (intervals per item, points of a search, or rules), which the dashboard draws by kind.
        Defaults to None: the dashboard shows :meth:`kpis` as tables only."""
        return None

    def served(self, section: dict[str, Any]) -> Any:
        """What is served with exploration off (e.g. the best arm). Defaults to None (no such notion)."""
        return None

    def adopt(self, previous: str, section: dict[str, Any]) -> dict[str, Any] | None:
        """Carry over what another strategy learned when a workspace switches to this one.

        Called when the section under this strategy's key was made by strategy ``previous`` (a name).
        Return a section valid for this strategy (e.g. keep arm statistics, warm-start from the best
        point), or None to start from ``initial_state()``. Pure, like ``apply``.
        """
        return None


def registered_strategies(plugins: Plugins, workspace: Workspace | None = None) -> dict[str, tuple[str, type[Strategy]]]:
    """``{name: (plugin, class)}`` from every ``ratchet_register_strategies`` impl."""

    def validate(cls: Any) -> type[Strategy]:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"{cls!r} must subclass ratchet.Strategy")
        for attr in ("name", "family"):
            if not isinstance(getattr(cls, attr, None), str):
                raise TypeError(f"{cls.__name__} must set the class attribute {attr!r} to a string")
        return cls

    return plugins.collect("ratchet_register_strategies", validate, key=lambda cls: cls.name, workspace=workspace)


def build_strategies(workspace: Workspace, plugins: Plugins) -> dict[str, Strategy]:
    """The workspace's configured strategies, ``{state section key: instance}``, in config order."""
    from pydantic import ValidationError

    from ratchet.core.errors import ConfigError, config_error

    available = registered_strategies(plugins, workspace)
    built: dict[str, Strategy] = {}
    for i, entry in enumerate(workspace.config.tuner.strategies):
        where = f"tuner.strategies[{i}]"
        if entry.strategy not in available:
            raise ConfigError(f"ratchet.toml: {where}.strategy: unknown strategy {entry.strategy!r}",
                              field=f"{where}.strategy",
                              fix=f"use one of: {', '.join(sorted(available)) or '(none installed)'}")
        plugin, cls = available[entry.strategy]
        try:
            config = cls.Config.model_validate(entry.options())
        except ValidationError as exc:
            err = config_error(exc, "ratchet.toml", cls.Config)
            field = f"{where}.{err.field}"
            raise ConfigError(err.message.replace(f"{err.field!r}", repr(field)).replace(
                f": {err.field}:", f": {field}:"), field=field, fix=err.fix) from None
        built[entry.key] = cls(entry.key, config)
    return built
