"""What a strategy believes now, described for people: :meth:`ratchet.Strategy.belief` returns a list of
these, and the dashboard's Strategies page draws each by its ``kind`` without knowing the strategy's
section layout.

Three kinds, each drawn its own way:

- :class:`Intervals` (``kind = "intervals"``): one labelled estimate per item with its interval, e.g. a
  bandit's posterior mean reward per arm with a 95% credible interval, or Bradley–Terry log-strengths
  with their 95% Laplace intervals. Drawn as a forest plot: a dot and a bar per item, on one axis.
- :class:`Points` (``kind = "points"``): a search over named continuous dimensions, e.g. CMA-ES: each
  dimension's range, the search's centre and spread, and scored points. Drawn as one strip per dimension.
- :class:`RulesTable` (``kind = "rules"``): if-then rules with their support and confidence. Drawn as a
  table with a bar for each rule's confidence.

Every number is a plain float (or None where there is none yet), so a belief is JSON as it is.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interval(_Model):
    """One item's estimate and interval; ``value`` None: nothing is known yet (drawn as "no data")."""

    label: str
    value: float | None = None
    low: float | None = None
    high: float | None = None
    n: float | None = Field(default=None, description="observations behind it (pulls, comparisons)")
    note: str | None = None


class Intervals(_Model):
    """A strategy's belief as one estimate and interval per item (arms, variants), drawn as a forest plot."""

    kind: Literal["intervals"] = "intervals"
    title: str = Field(description="what the values are, e.g. 'posterior mean reward per arm'")
    interval: str = Field(description="what the bars are, e.g. '95% credible interval (Beta posterior)'")
    items: list[Interval]
    highlight: str | None = Field(default=None, description="the label of the item served now")
    reference: float | None = Field(default=None, description="a value drawn as a vertical line (e.g. 0)")


class Axis(_Model):
    """One dimension of a search (:class:`Points`): its name and range."""

    name: str
    low: float
    high: float


class ScoredPoint(_Model):
    """A point of the search: ``values`` by dimension name, its mean ``score`` if it has one."""

    values: dict[str, float]
    score: float | None = None
    label: str | None = None


class Points(_Model):
    """A strategy's belief as a search over named dimensions: its centre, spread and scored points."""

    kind: Literal["points"] = "points"
    title: str
    dimensions: list[Axis]
    center: dict[str, float] | None = Field(default=None, description="e.g. the CMA-ES mean")
    spread: dict[str, float] | None = Field(default=None, description="half-width around ``center`` per "
                                            "dimension, in its units (e.g. sigma times its range)")
    spread_label: str | None = None
    points: list[ScoredPoint] = Field(default_factory=list)
    best: ScoredPoint | None = None


class Rule(_Model):
    """One if-then rule of a :class:`RulesTable`, with the examples it matches and the share it gets right."""

    text: str
    support: float
    confidence: float
    status: str | None = None


class RulesTable(_Model):
    """A strategy's belief as if-then rules with their support and confidence, drawn as a table."""

    kind: Literal["rules"] = "rules"
    title: str
    rules: list[Rule]


Belief = Annotated[Union[Intervals, Points, RulesTable], Field(discriminator="kind")]
