"""``ci/budgets.json``: what each test tier may cost and must reach, and the serving SLO.

Every key is required (no defaults): a budget that silently fell back to a default would hide a typo.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ratchet.core.errors import ConfigError, NotFoundError, config_error

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

BUDGETS_PATH = "ci/budgets.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LatencyBudget(_Strict):
    p50: float = Field(gt=0, description="median call latency ceiling, ms")
    p95: float = Field(gt=0, description="95th percentile call latency ceiling, ms")

    @model_validator(mode="after")
    def _ordered(self) -> LatencyBudget:
        if self.p50 > self.p95:
            raise ValueError(f"p50 ({self.p50:g}) is above p95 ({self.p95:g}); the median cannot exceed the p95")
        return self


class TierBudget(_Strict):
    max_seconds: float = Field(gt=0, description="wall-clock ceiling for the whole tier")
    min_pass_rate: float = Field(ge=0, le=1, description="fraction of cases that must pass")
    latency_ms: LatencyBudget
    metrics: dict[str, float] = Field(description="metric name -> floor, e.g. {'accuracy': 0.9}")


class TierBudgets(_Strict):
    micro: TierBudget
    fast: TierBudget
    full: TierBudget


class SloBudget(_Strict):
    window_seconds: float = Field(gt=0)
    reward_rate_min: float = Field(ge=0, le=1)
    error_rate_max: float = Field(ge=0, le=1)
    latency_p95_ms: float = Field(gt=0)


class Budgets(_Strict):
    tiers: TierBudgets
    slo: SloBudget

    def tier(self, name: str) -> TierBudget:
        return getattr(self.tiers, name)


def load_budgets(workspace: Workspace) -> Budgets:
    path = workspace.root / BUDGETS_PATH
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{BUDGETS_PATH} does not exist in {workspace.root}", field=BUDGETS_PATH,
                            fix=f"create {BUDGETS_PATH} with 'tiers' (micro, fast, full) and 'slo' "
                            "(see the default workspace template)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{BUDGETS_PATH} is not valid JSON: {exc}", field=BUDGETS_PATH,
                          fix=f"fix the JSON syntax at line {exc.lineno}, column {exc.colno}") from None
    try:
        return Budgets.model_validate(raw)
    except ValidationError as exc:
        error = config_error(exc, BUDGETS_PATH, Budgets)
        first = exc.errors()[0]
        if first["type"] not in ("extra_forbidden", "missing"):  # the generic fix would not say how
            msg = first["msg"].removeprefix("Value error, ")
            error.fix = f"change {error.field} so that: {msg[:1].lower()}{msg[1:]}"
        raise error from None
