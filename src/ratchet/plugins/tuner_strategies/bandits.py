"""Multi-armed bandit strategies (family ``bandit``), plain numpy.

Every policy keeps its section as plain JSON: ``arms`` plus one list per statistic, indexed like
``arms`` (``pulls``, ``reward_sum`` and the policy's own, e.g. ``alpha``/``beta``). ``decide`` reads the
section, ``apply`` folds joined ``reward`` events into a copy of it. Feedback is delayed and batched,
so everything ``apply`` needs (the arm, EXP3's propensity, the linear policies' context ``x``) travels
in the decision.

If the configured arms differ from the section's (an arm was added, removed or reordered), the
section is re-keyed by arm name: statistics of kept arms survive, new arms start fresh.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Literal, NamedTuple

import numpy as np
from pydantic import Field, field_validator

from ratchet import (Decision, FeedbackEvent, FeedbackTool, Interval, Intervals, Strategy, StrategyConfig, copy_json,
                     hookimpl)

_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_INT = {"type": "integer", "minimum": 0}
_NUM = {"type": "number"}
_NONNEG = {"type": "number", "minimum": 0}
_POS = {"type": "number", "exclusiveMinimum": 0}


def _array(item: dict[str, Any], n: int | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "array", "items": item}
    if n is not None:
        s["minItems"] = s["maxItems"] = n
    return s


def _unique(v: list[str], what: str) -> list[str]:
    dup = sorted({a for a in v if v.count(a) > 1})
    if dup:
        raise ValueError(f"{what} must be unique; repeated: {', '.join(dup)}")
    return v


def _argmax(values: np.ndarray, rng: np.random.Generator) -> tuple[int, float]:
    """Index of the maximum, ties broken uniformly by ``rng``; returns (index, its probability)."""
    ties = np.flatnonzero(values >= values.max() - 1e-12)
    if len(ties) == 1:
        return int(ties[0]), 1.0
    return int(ties[rng.integers(len(ties))]), 1.0 / len(ties)


Z95 = 1.959963984540054


def wilson(mean: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """95% Wilson score interval of a [0, 1] mean over ``n`` observations (NaN where n is 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z2n = Z95**2 / n
        centre = (mean + z2n / 2) / (1 + z2n)
        half = Z95 / (1 + z2n) * np.sqrt(mean * (1 - mean) / n + z2n / (4 * n))
    return np.where(n > 0, centre - half, np.nan), np.where(n > 0, centre + half, np.nan)


def beta_interval(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and central 95% interval of Beta(a, b), per arm."""
    from scipy.special import betaincinv

    a, b = np.asarray(a, float), np.asarray(b, float)
    return a / (a + b), betaincinv(a, b, 0.025), betaincinv(a, b, 0.975)


def kl_bernoulli(p: np.ndarray | float, q: np.ndarray | float) -> np.ndarray:
    """KL(Ber(p) || Ber(q)), clipped away from 0 and 1 so it stays finite."""
    p = np.clip(p, 1e-15, 1 - 1e-15)
    q = np.clip(q, 1e-15, 1 - 1e-15)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def kl_ucb_index(p: np.ndarray, d: np.ndarray, rounds: int = 3, grid: int = 32) -> np.ndarray:
    """max{q in [p, 1] : kl(p, q) <= d}, for all arms at once (to ~1e-5).

    Grid refinement instead of scalar bisection: each round evaluates ``grid`` points per arm in one
    numpy call and keeps the cell holding the root, so 3 rounds narrow the bracket 32768-fold for the
    numpy overhead of ~3 bisection steps. Pinsker (kl >= 2 (q-p)^2) gives the bracket's upper end.
    """
    p = lo = np.asarray(p, float)
    d = np.asarray(d, float)
    hi = np.minimum(1.0, lo + np.sqrt(d / 2))
    pc = np.clip(p, 1e-15, 1 - 1e-15)[:, None]
    # kl(p, q) <= d  <=>  p log q + (1-p) log(1-q) >= p log p + (1-p) log(1-p) - d
    floor = pc * np.log(pc) + (1 - pc) * np.log1p(-pc) - d[:, None]
    steps = np.linspace(0.0, 1.0, grid + 1)[1:]  # right ends of the cells
    for _ in range(rounds):
        q = np.minimum(lo[:, None] + (hi - lo)[:, None] * steps, 1 - 1e-15)
        # kl(p, .) increases on [p, 1], so the grid points within budget form a prefix
        k = (pc * np.log(q) + (1 - pc) * np.log1p(-q) >= floor).sum(axis=1)
        width = (hi - lo) / grid
        lo, hi = lo + k * width, np.minimum(hi, lo + (k + 1) * width)
    return (lo + hi) / 2


# --- configs ----------------------------------------------------------------------------------------


class BanditConfig(StrategyConfig):
    """Fields every bandit shares."""

    arms: list[str] = Field(min_length=2, description="arm names; the chosen one is the decision's choice")
    param: str | None = Field(default=None, description="state param the chosen arm sets (used by the runner)")

    @field_validator("arms")
    @classmethod
    def _arms_unique(cls, v: list[str]) -> list[str]:
        return _unique(v, "arms")


class SamplingConfig(BanditConfig):
    """Fields of the policies that choose by sampling a posterior (the Thompson family)."""

    propensity_draws: int = Field(default=256, ge=0, le=100_000, description=(
        "posterior draws per decision that estimate the logged propensity of the chosen arm (for off-policy "
        "evaluation); 0 logs none"))


class ThompsonConfig(SamplingConfig):
    """Options of ``thompson``: Beta-Bernoulli Thompson sampling."""

    prior: tuple[float, float] = Field(default=(1.0, 1.0), description="Beta(alpha, beta) prior of each arm")

    @field_validator("prior")
    @classmethod
    def _prior_positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        if min(v) <= 0:
            raise ValueError("prior parameters must be > 0")
        return v


class GaussianThompsonConfig(SamplingConfig):
    """Options of ``gaussian_thompson``: Thompson sampling with a Gaussian posterior per arm."""

    sigma: float | None = Field(default=None, gt=0, description="known reward sd; None estimates it per arm")
    prior_mean: float = 0.0
    prior_n: float = Field(default=1.0, gt=0, description="weight of the prior, in pseudo-observations")
    prior_sigma: float = Field(default=1.0, gt=0, description="sd guess blended into the estimate")


class KLUCBConfig(BanditConfig):
    """Options of ``kl_ucb``: the KL upper confidence bound (Garivier & Cappé)."""

    c: float = Field(default=0.0, ge=0, description="exploration log(t) + c log(log(t))")


class UCB1Config(BanditConfig):
    """Options of ``ucb1`` (Auer et al.)."""

    alpha: float = Field(default=2.0, gt=0, description="index mean + sqrt(alpha ln t / n); 2 is Auer et al.")


class Exp3Config(BanditConfig):
    """Options of ``exp3``: exponential weights for adversarial rewards (Auer et al.)."""

    gamma: float = Field(default=0.1, gt=0, le=1, description="uniform exploration mixed into the weights")
    eta: float | None = Field(default=None, gt=0, description="learning rate; None is gamma / K (Auer et al.)")


class DiscountedThompsonConfig(ThompsonConfig):
    """Options of ``discounted_thompson``: Thompson sampling that forgets old rewards."""

    gamma: float = Field(default=0.99, gt=0, le=1, description="discount applied to all arms per event")


class SWUCBConfig(BanditConfig):
    """Options of ``sw_ucb``: UCB over a sliding window of recent events."""

    window: int = Field(default=500, ge=1, description="number of most recent events kept")
    xi: float = Field(default=0.6, gt=0, description="index mean + sqrt(xi log(min(t, window)) / n)")


class GLRThompsonConfig(ThompsonConfig):
    """Options of ``glr_thompson``: Thompson sampling restarted by a GLR change detector on each arm.

    Defaults are the benchmark's choice (bench/bandit_regret.py, docs/strategies.md): delta 0.1 raised false
    alarms on stationary arms, 0.001 detected later; a 2000-reward window missed the slow drift; 'local'
    restarts recovered slowly from the reversal.
    """

    delta: float = Field(default=0.01, gt=0, lt=1, description=(
        "false-alarm level of each arm's test, threshold log(3 n^1.5 / delta) on its n kept rewards; smaller "
        "means fewer false alarms and later detection"))
    window: int = Field(default=5000, ge=2, description=(
        "rewards per arm the detector keeps; longer sees slower drifts, at window / block numbers per arm"))
    block: int = Field(default=50, ge=1, description=(
        "older rewards are kept as sums of this many (a change is placed to a block there); the newest "
        "block to two blocks of rewards are kept one by one"))
    restart: Literal["global", "local"] = Field(default="global", description=(
        "on an alarm, 'global' resets every arm to the prior except the alarmed arm's rewards since the "
        "change; 'local' resets only the alarmed arm"))

    @field_validator("block")
    @classmethod
    def _block_fits(cls, v: int, info) -> int:
        window = info.data.get("window")
        if window is not None and v * 2 > window:
            raise ValueError("block must be at most window / 2")
        return v


class LinearConfig(BanditConfig):
    features: list[str] = Field(default_factory=list, description="context['features'] keys; missing are 0")
    intercept: bool = Field(default=True, description="prepend a constant 1 to the context vector")
    lam: float = Field(default=1.0, gt=0, description="ridge prior: A starts as lam * I")
    gamma: float = Field(default=1.0, gt=0, le=1, description=(
        "discount per event on every arm's model (weights gamma^age, the ridge prior kept); 1 never forgets"))

    @field_validator("features")
    @classmethod
    def _features_unique(cls, v: list[str]) -> list[str]:
        return _unique(v, "features")


class LinUCBConfig(LinearConfig):
    """Options of ``lin_ucb``: a linear contextual bandit with upper confidence bounds."""

    alpha: float = Field(default=1.0, ge=0, description="index theta.x + alpha sqrt(x' A^-1 x)")


class LinThompsonConfig(LinearConfig, SamplingConfig):
    """Options of ``lin_thompson``: linear Thompson sampling over the context."""

    v: float = Field(default=0.5, gt=0, description="posterior scale: theta ~ N(A^-1 b, v^2 A^-1)")


# --- base -------------------------------------------------------------------------------------------


class BanditStrategy(Strategy):
    """Shared parts: arm bookkeeping, the section layout and schema, reward tools, apply loop, kpis."""

    family: ClassVar[str] = "bandit"
    Config: ClassVar[type[StrategyConfig]] = BanditConfig
    bounded: ClassVar[bool] = True  # rewards must lie in [0, 1]

    def __init__(self, key: str, config: StrategyConfig):
        super().__init__(key, config)
        self.arms: list[str] = list(config.arms)  # type: ignore[attr-defined]
        self.K = len(self.arms)
        self._index = {a: i for i, a in enumerate(self.arms)}

    # per-arm lists: name -> (item schema, factory of the initial value)
    def _arm_fields(self) -> dict[str, tuple[dict[str, Any], Callable[[], Any]]]:
        return {"pulls": (_INT, lambda: 0), "reward_sum": (_NUM, lambda: 0.0)}

    # other policy fields: name -> (schema, initial value)
    def _extra_fields(self) -> dict[str, tuple[dict[str, Any], Any]]:
        return {}

    def initial_state(self) -> dict[str, Any]:
        s: dict[str, Any] = {"policy": self.name, "arms": list(self.arms), "t": 0, "skipped": 0}
        s.update({k: [make() for _ in self.arms] for k, (_, make) in self._arm_fields().items()})
        s.update({k: copy_json(v) for k, (_, v) in self._extra_fields().items()})
        return s

    def state_schema(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "policy": {"const": self.name},
            "arms": {"const": list(self.arms)},
            "t": {**_INT, "description": "feedback events applied"},
            "skipped": {**_INT, "description": "events without a decision, for an unknown arm or invalid"},
        }
        props.update({k: _array(item, self.K) for k, (item, _) in self._arm_fields().items()})
        props.update({k: schema for k, (schema, _) in self._extra_fields().items()})
        return {"$schema": _SCHEMA, "title": f"{self.name} bandit section", "type": "object",
                "properties": props, "required": list(props), "additionalProperties": False}

    # --- switching strategies ---

    ADOPT_CAP: ClassVar[int] = 10_000  # synthetic events replayed per arm at most

    def adopt(self, previous: str, section: dict[str, Any]) -> dict[str, Any] | None:
        """Keep what another bandit learned: every bandit section has per-arm ``pulls`` and
        ``reward_sum``, and replaying each arm's pulls at its mean reward through this policy's own
        ``apply`` rebuilds its statistics (exactly for Beta-Thompson, UCB1 and kl-UCB; approximately
        for the discounted, windowed, adversarial and linear policies, whose extra state cannot be
        recovered from totals). Arms are matched by name; new arms start fresh."""
        arms, pulls, sums = section.get("arms"), section.get("pulls"), section.get("reward_sum")
        if not (isinstance(arms, list) and isinstance(pulls, list) and isinstance(sums, list)):
            return None
        queues = []
        for arm, n, total in zip(arms, pulls, sums):
            if arm in self._index and n:
                value = float(total) / n
                queues.append((arm, min(int(n), self.ADOPT_CAP), min(max(value, 0.0), 1.0) if self.bounded else value))
        # Each arm's pulls are spread evenly over the replayed time (the j-th of n at (j + 0.5) / n), so a
        # forgetting policy weighs the arms by their share of the pulls, not by which arm ran out last.
        timeline = sorted(((j + 0.5) / n, k, arm, value) for k, (arm, n, value) in enumerate(queues)
                          for j in range(n))
        events = [FeedbackEvent.model_construct(
            event_id=f"adopt-{i}", tool="reward", conversation_id=None, payload={"value": value},
            decision=Decision.model_construct(strategy=self.key, choice=arm, propensity=1.0 / self.K,
                                              sticky=True, info=self._adopt_info()),
            joined={}, features={}, ts=0.0) for i, (_, _, arm, value) in enumerate(timeline)]
        adopted = self.apply(self.initial_state(), events)
        return adopted if adopted.get("t", 0) > 0 else None

    def _adopt_info(self) -> dict[str, Any]:
        return {}

    # --- arm changes ---

    def _compatible(self, section: dict[str, Any]) -> bool:
        return section.get("arms") == self.arms

    def _view(self, section: dict[str, Any]) -> dict[str, Any]:
        """The section as this config sees it (re-keyed if the arms changed); never a mutable alias."""
        return section if self._compatible(section) else self._rekey(section)

    def _rekey(self, old: dict[str, Any]) -> dict[str, Any]:
        fresh = self.initial_state()
        where = {a: i for i, a in enumerate(old.get("arms") or [])}
        for k in self._arm_fields():
            if k in old:
                fresh[k] = [copy_json(old[k][where[a]]) if a in where else fresh[k][j] for j, a in enumerate(self.arms)]
        fresh["t"], fresh["skipped"] = old.get("t", 0), old.get("skipped", 0)
        return fresh

    # --- feedback ---

    def feedback_tools(self) -> list[FeedbackTool]:
        value: dict[str, Any] = {"type": "number", "description": "the reward of the conversation's arm"}
        if self.bounded:
            value.update(minimum=0, maximum=1, description="the reward in [0, 1] (1 = success)")
        item = {
            "type": "object",
            "properties": {
                "conversation_id": {"type": "string", "description": "conversation the reward is about"},
                "value": value,
                "event_id": {"type": "string", "description": "idempotency key; repeats are ignored"},
            },
            "required": ["conversation_id", "value"],
            "additionalProperties": False,
        }
        batch = {
            "type": "object",
            "properties": {"events": {"type": "array", "items": item, "maxItems": 10000,
                                      "description": "the events, each as the one-event tool takes it"}},
            "required": ["events"],
            "additionalProperties": False,
        }
        return [
            FeedbackTool(name="reward", description="Report the reward of one conversation.",
                         input_schema=item, needs_decision=True),
            FeedbackTool(name="reward_batch", description="Report many rewards at once (at most 10000).",
                         input_schema=batch, needs_decision=True, batch_of="reward"),
        ]

    def _value(self, payload: dict[str, Any]) -> float | None:
        v = payload.get("value")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        if self.bounded and not 0.0 <= v <= 1.0:
            return None
        return float(v)

    def apply(self, section: dict[str, Any], events: list[FeedbackEvent]) -> dict[str, Any]:
        s = copy_json(section) if self._compatible(section) else self._rekey(section)
        pulls, sums = s["pulls"], s["reward_sum"]
        for ev in events:
            d = ev.decision
            i = self._index.get(d.choice) if d is not None and isinstance(d.choice, str) else None
            v = self._value(ev.payload) if i is not None else None
            if v is None or not self._update(s, i, v, d):
                s["skipped"] += 1
                continue
            pulls[i] += 1
            sums[i] += v
            s["t"] += 1
        return s

    def _update(self, s: dict[str, Any], i: int, v: float, decision: Decision) -> bool:
        """Policy-specific update of the (already copied) section; False rejects the event."""
        return True

    # --- decisions ---

    def decide(self, section: dict[str, Any], context: dict[str, Any], rng: np.random.Generator) -> Decision:
        s = self._view(section)
        i, p, info = self._choose(s, context, rng)
        return Decision(strategy=self.key, choice=self.arms[i], propensity=p, info=info)

    def _choose(self, s: dict[str, Any], context: dict[str, Any], rng: np.random.Generator
                ) -> tuple[int, float | None, dict[str, Any]]:
        raise NotImplementedError

    def choice_probabilities(self, section: dict[str, Any], context: dict[str, Any],
                             rng: np.random.Generator) -> dict[str, float]:
        """``{arm: probability}`` that ``decide`` picks each arm for this context (for off-policy evaluation).

        Exact for the index policies (ties and untried arms shared uniformly) and EXP3; for the Thompson
        family an unbiased Monte Carlo estimate from ``CANDIDATE_DRAWS`` posterior draws.
        """
        return dict(zip(self.arms, (float(p) for p in self._probabilities(self._view(section), context, rng))))

    def _probabilities(self, s: dict[str, Any], context: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _ucb_choose(self, s: dict[str, Any], rng: np.random.Generator, index: Callable[[np.ndarray], np.ndarray],
                    counts: str = "pulls") -> tuple[int, float, dict[str, Any]]:
        """Untried arms first (uniformly), else the largest index; propensity is exact (ties included)."""
        n = np.asarray(s[counts], float)
        if (n == 0).any():
            i, p = _argmax((n == 0).astype(float), rng)
            return i, p, {}
        i, p = _argmax(index(n), rng)
        return i, p, {}

    @staticmethod
    def _ucb_probabilities(s: dict[str, Any], index: Callable[[np.ndarray], np.ndarray],
                           counts: str = "pulls") -> np.ndarray:
        """The distribution ``_ucb_choose`` draws from: uniform over the untried arms, else over the maxima."""
        n = np.asarray(s[counts], float)
        values = (n == 0).astype(float) if (n == 0).any() else index(n)
        ties = values >= values.max() - 1e-12
        return ties / ties.sum()

    # --- reporting ---

    def _means(self, s: dict[str, Any]) -> np.ndarray:
        """Per-arm estimate of the mean reward; NaN for arms without data."""
        n = np.asarray(s["pulls"], float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.asarray(s["reward_sum"], float) / n, np.nan)

    def _reward_rate(self, s: dict[str, Any]) -> float | None:
        n = sum(s["pulls"])
        return sum(s["reward_sum"]) / n if n else None

    def served(self, section: dict[str, Any]) -> Any:
        """The arm with the best estimated mean among arms with data; the first arm before any data."""
        m = self._means(self._view(section))
        return self.arms[0] if np.isnan(m).all() else self.arms[int(np.nanargmax(m))]

    def belief(self, section: dict[str, Any]) -> list[Intervals]:
        """Each arm's estimated mean reward with its interval (:meth:`_intervals`), the served arm marked."""
        s = self._view(section)
        mean, low, high = self._intervals(s)
        title, interval = self._interval_labels()
        notes = self._arm_notes(s)

        def num(v: float) -> float | None:
            return None if not np.isfinite(v) else float(v)

        items = [Interval(label=a, value=num(mean[i]), low=num(low[i]), high=num(high[i]), n=float(s["pulls"][i]),
                          note=notes[i] if notes else None) for i, a in enumerate(self.arms)]
        return [Intervals(title=title, interval=interval, items=items, highlight=self.served(s))]

    def _intervals(self, s: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per arm: (mean, low, high); NaN where unknown. Default: the observed mean, 95% Wilson interval
        for rewards in [0, 1] (none for unbounded ones, whose spread the section does not keep)."""
        n = np.asarray(s["pulls"], float)
        mean = self._means(s)
        if not self.bounded:
            return mean, np.full(self.K, np.nan), np.full(self.K, np.nan)
        return (mean, *wilson(mean, n))

    def _interval_labels(self) -> tuple[str, str]:
        return ("observed mean reward per arm",
                "95% Wilson interval of the mean" if self.bounded else "no interval kept for unbounded rewards")

    def _arm_notes(self, s: dict[str, Any]) -> list[str] | None:
        return None

    def kpis(self, section: dict[str, Any]) -> dict[str, Any]:
        s = self._view(section)
        m = self._means(s)
        return {
            "pulls": int(sum(s["pulls"])),
            "reward_rate": self._reward_rate(s),
            "best_arm": self.served(s),
            "skipped": s["skipped"],
            "per_arm": {a: {"pulls": int(s["pulls"][i]), "mean": None if np.isnan(m[i]) else float(m[i])}
                        for i, a in enumerate(self.arms)},
        }


# --- stationary policies ----------------------------------------------------------------------------


class PosteriorSampling(BanditStrategy):
    """Policies that play the arm whose posterior draw is largest (the Thompson family).

    P(arm is the argmax) has no closed form for K > 2, so the logged propensity is estimated from
    ``propensity_draws`` further draws of the same posterior, vectorised: (wins + 1) / (draws + 1),
    counting the served draw, which the chosen arm won, among them. This is never 0 for the chosen arm and
    is off by at most 1 / (draws + 1) (see bench/propensity_cost.py for the cost). Those draws come from a
    generator seeded with the served draw, so the decision stream (and a seeded run's choices) is the same
    with or without them.
    """

    CANDIDATE_DRAWS: ClassVar[int] = 2000  # per context, when another policy's log is evaluated against this one

    def _posterior_params(self, s: dict[str, Any], context: dict[str, Any]) -> tuple[Any, ...]:
        """What ``_draw`` needs, computed once per decision."""
        raise NotImplementedError

    def _draw(self, params: tuple[Any, ...], rng: np.random.Generator, size: int | None) -> np.ndarray:
        """One posterior draw per arm, shape (K,), or ``size`` of them, shape (size, K)."""
        raise NotImplementedError

    def _info(self, context: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _choose(self, s, context, rng):
        params = self._posterior_params(s, context)
        scores = np.asarray(self._draw(params, rng, None), float)
        i = int(np.argmax(scores))
        draws = self.config.propensity_draws
        if not draws:
            return i, None, self._info(context)
        mc = np.random.default_rng(np.frombuffer(scores.tobytes(), np.uint32))
        wins = int(np.count_nonzero(self._draw(params, mc, draws).argmax(axis=1) == i))
        return i, (wins + 1) / (draws + 1), self._info(context)

    def _probabilities(self, s, context, rng):
        n = self.CANDIDATE_DRAWS
        wins = np.bincount(self._draw(self._posterior_params(s, context), rng, n).argmax(axis=1), minlength=self.K)
        return wins / n


class ThompsonSampling(PosteriorSampling):
    """Beta-Bernoulli Thompson sampling; a fractional reward r adds r to alpha and 1-r to beta."""

    name = "thompson"
    Config = ThompsonConfig

    def _arm_fields(self):
        a0, b0 = self.config.prior
        return {**super()._arm_fields(), "alpha": (_POS, lambda: float(a0)), "beta": (_POS, lambda: float(b0))}

    def _update(self, s, i, v, decision):
        s["alpha"][i] += v
        s["beta"][i] += 1.0 - v
        return True

    def _posterior_params(self, s, context):
        return s["alpha"], s["beta"]

    def _draw(self, params, rng, size):
        a, b = params
        return rng.beta(a, b) if size is None else rng.beta(a, b, size=(size, self.K))

    def _means(self, s):
        a, b = np.asarray(s["alpha"]), np.asarray(s["beta"])
        return np.where(np.asarray(s["pulls"]) > 0, a / (a + b), np.nan)

    def _intervals(self, s):
        return beta_interval(s["alpha"], s["beta"])

    def _interval_labels(self):
        return "posterior mean reward per arm", "95% credible interval of the Beta posterior (the prior before data)"


class GaussianThompsonSampling(PosteriorSampling):
    """Gaussian Thompson sampling: mean ~ N(posterior mean, var / (prior_n + n)), var known or estimated.

    The estimated variance of an arm is its sample variance shrunk towards ``prior_sigma``^2, floored at the
    variance of all rewards so far (every arm pooled). Without the floor, an arm whose first rewards are
    equal (three 0s from a Bernoulli arm) has an estimate shrinking like prior_sigma^2 / (1 + n) and a
    posterior sd like 1/n: it is all but never tried again however good it is (2 runs in 100 on 0.45 / 0.55
    ended with regret 764 and 375 at T = 10,000). Arms of one decision usually share a noise scale, so the
    pooled variance is the natural floor; where they do not, it only makes quiet arms explore more.
    A Normal-Inverse-Gamma posterior (Student-t draws) was measured too: its heavier tails explored more on
    9 arms (regret 72 vs 52, 20 seeds) and it still let the equal-rewards estimate shrink. Honda & Takemura
    (2014) show how Gaussian Thompson sampling with unknown variance depends on this part of the prior.
    """

    name = "gaussian_thompson"
    Config = GaussianThompsonConfig
    bounded = False

    def _arm_fields(self):
        return {**super()._arm_fields(), "reward_sq_sum": (_NONNEG, lambda: 0.0)}

    def _update(self, s, i, v, decision):
        s["reward_sq_sum"][i] += v * v
        return True

    def _posterior(self, s) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        n, tot = np.asarray(s["pulls"], float), np.asarray(s["reward_sum"], float)
        w = c.prior_n + n
        mean = (c.prior_n * c.prior_mean + tot) / w
        if c.sigma is not None:
            var = np.full(self.K, c.sigma**2)
        else:  # sample variance shrunk towards prior_sigma^2 so one pull is not taken as zero noise
            sq = np.asarray(s["reward_sq_sum"], float)
            m2 = np.maximum(sq - tot**2 / np.maximum(n, 1), 0.0)
            var = (c.prior_n * c.prior_sigma**2 + m2) / w
            N = n.sum()
            if N > 1:  # ... and never below the pooled variance (see the class docstring)
                var = np.maximum(var, sq.sum() / N - (tot.sum() / N) ** 2)
        return mean, np.sqrt(var / w)

    def _posterior_params(self, s, context):
        return self._posterior(s)

    def _draw(self, params, rng, size):
        mean, sd = params
        return rng.normal(mean, sd) if size is None else rng.normal(mean, sd, size=(size, self.K))

    def _means(self, s):
        return np.where(np.asarray(s["pulls"]) > 0, self._posterior(s)[0], np.nan)

    def _intervals(self, s):
        mean, sd = self._posterior(s)
        return mean, mean - Z95 * sd, mean + Z95 * sd

    def _interval_labels(self):
        return "posterior mean reward per arm", "95% credible interval of the Gaussian posterior (mean ± 1.96 sd)"


class UCB1(BanditStrategy):
    """UCB1 (Auer, Cesa-Bianchi & Fischer 2002): mean + sqrt(alpha ln t / n)."""

    name = "ucb1"
    Config = UCB1Config

    def _ucb_index(self, s, n):
        return np.asarray(s["reward_sum"]) / n + np.sqrt(self.config.alpha * math.log(n.sum()) / n)

    def _choose(self, s, context, rng):
        return self._ucb_choose(s, rng, lambda n: self._ucb_index(s, n))

    def _probabilities(self, s, context, rng):
        return self._ucb_probabilities(s, lambda n: self._ucb_index(s, n))


class KLUCB(BanditStrategy):
    """kl-UCB for Bernoulli rewards (Garivier & Cappé 2011): max q with n kl(mean, q) <= log t + c log log t."""

    name = "kl_ucb"
    Config = KLUCBConfig

    def _ucb_index(self, s, n):
        t = n.sum()
        budget = math.log(t) + (self.config.c * math.log(math.log(t)) if t > math.e else 0.0)
        return kl_ucb_index(np.asarray(s["reward_sum"]) / n, budget / n)

    def _choose(self, s, context, rng):
        return self._ucb_choose(s, rng, lambda n: self._ucb_index(s, n))

    def _probabilities(self, s, context, rng):
        return self._ucb_probabilities(s, lambda n: self._ucb_index(s, n))


class Exp3(BanditStrategy):
    """EXP3 (Auer et al. 2002). Rewards are importance-weighted by the propensity in the decision."""

    name = "exp3"
    Config = Exp3Config

    def _arm_fields(self):
        return {**super()._arm_fields(), "gain": (_NUM, lambda: 0.0)}  # sum of reward / propensity

    def probabilities(self, section: dict[str, Any]) -> np.ndarray:
        c = self.config
        eta = c.eta if c.eta is not None else c.gamma / self.K
        z = eta * np.asarray(self._view(section)["gain"], float)
        w = np.exp(z - z.max())
        return (1 - c.gamma) * w / w.sum() + c.gamma / self.K

    def _arm_notes(self, s):
        return [f"plays with probability {p:.3f}" for p in self.probabilities(s)]

    def _update(self, s, i, v, decision):
        p = decision.propensity
        if p is None or not 0 < p <= 1:
            return False  # without the draw probability the estimate would be biased
        s["gain"][i] += v / p
        return True

    def _choose(self, s, context, rng):
        p = self.probabilities(s)
        i = min(int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right")), self.K - 1)
        return i, float(p[i]), {}

    def _probabilities(self, s, context, rng):
        return self.probabilities(s)


# --- non-stationary policies ------------------------------------------------------------------------


class DiscountedThompson(PosteriorSampling):
    """Discounted Thompson sampling (Raj & Kalyani 2017): per event all arms' counts *= gamma, then the
    pulled arm gets r successes and 1-r failures; arms are sampled from Beta(prior + counts)."""

    name = "discounted_thompson"
    Config = DiscountedThompsonConfig

    def _arm_fields(self):
        return {**super()._arm_fields(), "successes": (_NONNEG, lambda: 0.0), "failures": (_NONNEG, lambda: 0.0)}

    def _update(self, s, i, v, decision):
        g = self.config.gamma
        sc, fl = s["successes"], s["failures"]
        for j in range(self.K):
            sc[j] *= g
            fl[j] *= g
        sc[i] += v
        fl[i] += 1.0 - v
        return True

    def _ab(self, s):
        a0, b0 = self.config.prior
        return np.asarray(s["successes"]) + a0, np.asarray(s["failures"]) + b0

    def _posterior_params(self, s, context):
        return self._ab(s)

    _draw = ThompsonSampling._draw

    def _means(self, s):
        a, b = self._ab(s)
        return np.where(np.asarray(s["pulls"]) > 0, a / (a + b), np.nan)

    def _intervals(self, s):
        return beta_interval(*self._ab(s))

    def _interval_labels(self):
        return ("posterior mean reward per arm (discounted counts)",
                f"95% credible interval of the Beta posterior, past rewards weighted by gamma = {self.config.gamma}")

    def _reward_rate(self, s):
        tot = sum(s["successes"]) + sum(s["failures"])  # the discounted (effective) event count
        return sum(s["successes"]) / tot if tot > 0 else None


class SlidingWindowUCB(BanditStrategy):
    """SW-UCB (Garivier & Moulines 2011): UCB on the last ``window`` events only.

    The window is kept as two parallel lists, ``recent_arm`` (names) and ``recent_reward``, and the
    per-arm window totals ``w_pulls``/``w_reward_sum`` are maintained incrementally so decide is O(K).
    """

    name = "sw_ucb"
    Config = SWUCBConfig

    def _arm_fields(self):
        return {**super()._arm_fields(), "w_pulls": (_INT, lambda: 0), "w_reward_sum": (_NUM, lambda: 0.0)}

    def _extra_fields(self):
        w = self.config.window
        return {"recent_arm": (_array({"enum": list(self.arms)}) | {"maxItems": w}, []),
                "recent_reward": (_array(_NUM) | {"maxItems": w}, [])}

    def _compatible(self, section):
        return super()._compatible(section) and len(section.get("recent_arm", ())) <= self.config.window

    def _rekey(self, old):
        s = super()._rekey(old)
        pairs = [(a, r) for a, r in zip(old.get("recent_arm", []), old.get("recent_reward", [])) if a in self._index]
        pairs = pairs[len(pairs) - self.config.window:] if len(pairs) > self.config.window else pairs
        s["recent_arm"], s["recent_reward"] = [a for a, _ in pairs], [r for _, r in pairs]
        s["w_pulls"], s["w_reward_sum"] = [0] * self.K, [0.0] * self.K
        for a, r in pairs:
            s["w_pulls"][self._index[a]] += 1
            s["w_reward_sum"][self._index[a]] += r
        return s

    def _update(self, s, i, v, decision):
        ra, rr, wn, ws = s["recent_arm"], s["recent_reward"], s["w_pulls"], s["w_reward_sum"]
        ra.append(self.arms[i])
        rr.append(v)
        wn[i] += 1
        ws[i] += v
        if len(ra) > self.config.window:
            j = self._index[ra.pop(0)]
            wn[j] -= 1
            # subtracting leaves float dust; reset exactly when the arm leaves the window
            r = rr.pop(0)
            ws[j] = ws[j] - r if wn[j] else 0.0
        return True

    def _ucb_index(self, s, n):
        t = max(min(s["t"], self.config.window), 1)
        return np.asarray(s["w_reward_sum"]) / n + np.sqrt(self.config.xi * math.log(t) / n)

    def _choose(self, s, context, rng):
        return self._ucb_choose(s, rng, lambda n: self._ucb_index(s, n), counts="w_pulls")

    def _probabilities(self, s, context, rng):
        return self._ucb_probabilities(s, lambda n: self._ucb_index(s, n), counts="w_pulls")

    def _means(self, s):
        n = np.asarray(s["w_pulls"], float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.asarray(s["w_reward_sum"]) / n, np.nan)

    def _intervals(self, s):
        mean = self._means(s)
        return (mean, *wilson(mean, np.asarray(s["w_pulls"], float)))

    def _interval_labels(self):
        return (f"observed mean reward per arm over the last {self.config.window} events",
                "95% Wilson interval of the window's mean")

    def _reward_rate(self, s):
        r = s["recent_reward"]
        return sum(r) / len(r) if r else None


class GLRThompson(ThompsonSampling):
    """Thompson sampling restarted by a Bernoulli GLR change-point detector on each arm: the test of
    Besson, Kaufmann, Maillard & Seznec (2020, "Efficient change-point detection for tackling
    piecewise-stationary bandits", GLR-klUCB), here driving Thompson sampling instead of kl-UCB.

    After each reward of arm a, the test looks at a's last ``window`` rewards (n of them) for a split
    into a before and an after with different means, and raises an alarm when for some split s
    s kl(mean_1..s, mean_1..n) + (n - s) kl(mean_s+1..n, mean_1..n) > log(3 n^1.5 / delta)
    (their threshold for experiments). Older rewards are stored as sums of ``block`` rewards and splits
    there are tried between blocks (the "Delta s" subsampling of Besson et al.); the newest ``block`` to
    2 ``block`` - 1 rewards are stored one by one, so a change detected within ``block`` rewards of it is
    located exactly. (With only the unfinished block kept one by one, a change shortly before a block
    completed was summed into it before its alarm, placed at the block's start, and the arm kept the
    block's rewards from before the change.) The section holds at most window / block + 2 block - 1
    numbers per arm, and a test costs one numpy pass over as many.

    On an alarm the alarmed arm's posterior is rebuilt from its rewards after the split: they are still
    valid, and the arm that just got worse is not tried again from scratch. ``restart = "global"`` also
    resets the other arms to the prior, as an arm that rose while it was not pulled gives no alarm of its
    own; ``"local"`` keeps them. There is no forced exploration: until an alarm the policy draws exactly
    as ``thompson`` does (same section statistics, same random numbers), so on stationary rewards it pays
    only for false alarms; the price is that a change on an arm no longer pulled is seen only after a
    global restart or when its own posterior draws bring it back.
    """

    name = "glr_thompson"
    Config = GLRThompsonConfig

    @property
    def _nblocks(self) -> int:
        return self.config.window // self.config.block

    def _arm_fields(self):
        c = self.config
        blocks = _array({"type": "number", "minimum": 0, "maximum": c.block}) | {"maxItems": self._nblocks}
        recent = _array({"type": "number", "minimum": 0, "maximum": 1}) | {"maxItems": 2 * c.block - 1}
        return {**super()._arm_fields(),
                "blocks": (blocks, list),  # sums of the arm's last completed blocks of rewards, oldest first
                "recent": (recent, list),  # the newest rewards, one by one (the last block and the one filling)
                "alarms": (_INT, lambda: 0)}

    def _extra_fields(self):
        return {"block": ({"const": self.config.block}, self.config.block),
                "last_alarm": ({"type": ["integer", "null"], "description": "t of the latest alarm"}, None)}

    def _compatible(self, section):
        return (super()._compatible(section) and section.get("block") == self.config.block
                and all(len(b) <= self._nblocks for b in section.get("blocks", ()))
                and all(len(r) < 2 * self.config.block for r in section.get("recent", ())))

    def _rekey(self, old):
        s = super()._rekey(old)
        if old.get("block") != self.config.block:  # other block sums cannot be re-cut: the detector restarts
            fresh = self.initial_state()
            s["blocks"], s["recent"] = fresh["blocks"], fresh["recent"]
        s["blocks"] = [b[len(b) - self._nblocks:] if len(b) > self._nblocks else b for b in s["blocks"]]
        s["last_alarm"] = old.get("last_alarm")
        return s

    def _update(self, s, i, v, decision):
        super()._update(s, i, v, decision)
        blocks, recent = s["blocks"][i], s["recent"][i]
        recent.append(v)
        b = self.config.block
        if len(recent) == 2 * b:  # the older half becomes a block; the newest block stays one by one
            blocks.append(float(sum(recent[:b])))
            del recent[:b]
            if len(blocks) > self._nblocks:
                blocks.pop(0)
        split = self._change(blocks, recent)
        if split is not None:
            self._restart(s, i, split)
        return True

    def _change(self, blocks: list[float], recent: list[float]) -> int | None:
        """Where the most likely change is (rewards before it, counted from the oldest kept) if the GLR test
        fires, else None. Splits are tried after every completed block and after every reward of ``recent``."""
        b = self.config.block
        sums = np.concatenate((blocks, recent))
        sizes = np.concatenate((np.full(len(blocks), float(b)), np.ones(len(recent))))
        cum, n1 = np.cumsum(sums)[:-1], np.cumsum(sizes)[:-1]  # the "before" parts; "after" is never empty
        if not len(cum):
            return None
        n, total = n1[-1] + sizes[-1], float(cum[-1] + sums[-1])
        w = np.concatenate((n1, n - n1))
        p = np.clip(np.concatenate((cum, total - cum)) / w, 1e-15, 1 - 1e-15)
        mu = min(max(total / n, 1e-15), 1 - 1e-15)
        # both parts' n kl(p, mu) in one pass (this runs on every reward): kl_bernoulli with mu a scalar
        q = 1 - p
        stat = w * (p * np.log(p) + q * np.log(q) - p * math.log(mu) - q * math.log(1 - mu))
        stat = stat[:len(cum)] + stat[len(cum):]
        j = int(stat.argmax())
        return int(n1[j]) if stat[j] > math.log(3 * n**1.5 / self.config.delta) else None

    def _restart(self, s, i, split):
        c = self.config
        a0, b0 = c.prior
        for k in range(self.K) if c.restart == "global" else (i,):
            if k == i:  # keep the rewards after the change (the split is at a block end or inside recent)
                nb = split // c.block
                if nb <= len(s["blocks"][i]) and split % c.block == 0:
                    s["blocks"][i] = s["blocks"][i][nb:]
                else:
                    s["recent"][i] = s["recent"][i][split - len(s["blocks"][i]) * c.block:]
                    s["blocks"][i] = []
                kept = s["blocks"][i]
                n, r = len(kept) * c.block + len(s["recent"][i]), sum(kept) + sum(s["recent"][i])
            else:
                s["blocks"][k], s["recent"][k], n, r = [], [], 0, 0.0
            s["alpha"][k], s["beta"][k] = a0 + r, b0 + n - r
        s["alarms"][i] += 1
        s["last_alarm"] = s["t"] + 1  # this event's t (the base class counts it after _update)

    def kpis(self, section):
        s = self._view(section)
        return {**super().kpis(s), "alarms": int(sum(s["alarms"])), "last_alarm": s["last_alarm"]}


# --- contextual policies ----------------------------------------------------------------------------


class _LinearBandit(BanditStrategy):
    """Disjoint linear model per arm: A = lam I + sum x x', b = sum r x (Li et al. 2010).

    ``decide`` records the context vector in ``info["x"]``; ``apply`` updates with that vector, so
    delayed feedback uses the context the decision saw.
    """

    Config = LinearConfig
    bounded = False

    @property
    def d(self) -> int:
        return len(self.config.features) + int(self.config.intercept)

    def _arm_fields(self):
        d, lam = self.d, self.config.lam
        return {**super()._arm_fields(),
                "A": (_array(_array(_NUM, d), d), lambda: (lam * np.eye(d)).tolist()),
                "b": (_array(_NUM, d), lambda: [0.0] * d)}

    def _extra_fields(self):
        return {"features": ({"const": list(self.config.features)}, list(self.config.features))}

    def _compatible(self, section):
        return super()._compatible(section) and section.get("features") == self.config.features

    def _rekey(self, old):
        s = super()._rekey(old)
        if old.get("features") != self.config.features:  # a different feature space: restart the models
            fresh = self.initial_state()
            s["A"], s["b"] = fresh["A"], fresh["b"]
        return s

    def _adopt_info(self) -> dict[str, Any]:
        return {"x": self.context_vector({})}  # totals carry no context: they teach the intercept only

    def context_vector(self, context: dict[str, Any]) -> list[float]:
        feats = context.get("features") or {}
        x = [float(feats.get(f) or 0.0) for f in self.config.features]
        return [1.0] + x if self.config.intercept else x

    def _update(self, s, i, v, decision):
        x = decision.info.get("x")
        if not isinstance(x, list) or len(x) != self.d:
            return False
        xa = np.asarray(x, float)
        if not np.isfinite(xa).all():
            return False
        g = self.config.gamma
        if g < 1:  # discounted ridge regression (Russac, Vernade & Cappe 2019): old rewards fade, lam I stays
            shrink = (1 - g) * self.config.lam * np.eye(self.d)
            for k in range(self.K):
                if k != i:
                    s["A"][k] = (g * np.asarray(s["A"][k]) + shrink).tolist()
                    s["b"][k] = (g * np.asarray(s["b"][k])).tolist()
            s["A"][i] = (g * np.asarray(s["A"][i]) + shrink + np.outer(xa, xa)).tolist()
            s["b"][i] = (g * np.asarray(s["b"][i]) + v * xa).tolist()
            return True
        s["A"][i] = (np.asarray(s["A"][i]) + np.outer(xa, xa)).tolist()
        s["b"][i] = (np.asarray(s["b"][i]) + v * xa).tolist()
        return True

    def _intervals(self, s):
        mean, width = self._model(s, np.asarray(self.context_vector({})))
        return mean, mean - Z95 * width, mean + Z95 * width

    def _interval_labels(self):
        return ("predicted reward per arm with every feature 0 (the intercept)",
                "θ·x ± 1.96 √(x' A⁻¹ x) of each arm's ridge model (in units of the reward noise)")

    def _model(self, s, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per arm: predicted reward theta.x and the width sqrt(x' A^-1 x)."""
        A = np.asarray(s["A"], float)
        rhs = np.stack([np.asarray(s["b"], float), np.broadcast_to(x, (self.K, self.d))], axis=2)
        sol = np.linalg.solve(A, rhs)  # [A^-1 b, A^-1 x] for all arms in one call
        return sol[:, :, 0] @ x, np.sqrt(np.maximum(sol[:, :, 1] @ x, 0.0))


class LinUCB(_LinearBandit):
    """LinUCB with disjoint models (Li, Chu, Langford & Schapire 2010)."""

    name = "lin_ucb"
    Config = LinUCBConfig

    def _choose(self, s, context, rng):
        x = self.context_vector(context)
        mean, width = self._model(s, np.asarray(x))
        i, p, _ = self._ucb_choose(s, rng, lambda n: mean + self.config.alpha * width)
        return i, p, {"x": x}

    def _probabilities(self, s, context, rng):
        mean, width = self._model(s, np.asarray(self.context_vector(context)))
        return self._ucb_probabilities(s, lambda n: mean + self.config.alpha * width)


class LinThompson(_LinearBandit, PosteriorSampling):
    """Linear Thompson sampling (Agrawal & Goyal 2013), one model per arm.

    Only x.theta matters for the choice, so the scalar x.theta ~ N(x.A^-1 b, v^2 x'A^-1 x) is drawn
    instead of the full vector theta: the same distribution of decisions, without a Cholesky per arm.
    """

    name = "lin_thompson"
    Config = LinThompsonConfig

    def _posterior_params(self, s, context):
        mean, width = self._model(s, np.asarray(self.context_vector(context)))
        return mean, self.config.v * width

    def _draw(self, params, rng, size):
        mean, sd = params
        return rng.normal(mean, sd) if size is None else rng.normal(mean, sd, size=(size, self.K))

    def _info(self, context):
        return {"x": self.context_vector(context)}


BANDITS = (ThompsonSampling, GaussianThompsonSampling, KLUCB, UCB1, Exp3, DiscountedThompson, SlidingWindowUCB,
           GLRThompson, LinUCB, LinThompson)


@hookimpl
def ratchet_register_strategies(register):
    for cls in BANDITS:
        register(cls)


# --- simulation -------------------------------------------------------------------------------------


class SimResult(NamedTuple):
    regret: np.ndarray  # cumulative expected regret after each step
    choices: np.ndarray  # arm index chosen at each step
    section: dict[str, Any]  # the final section, all feedback applied


def _run(strategy: BanditStrategy, mu: np.ndarray, contexts: list[dict[str, Any]] | None, seed: int,
         batch: int, bernoulli: bool, noise_sd: float, start: dict[str, Any] | None = None) -> SimResult:
    """Run decide -> reward -> apply from ``start`` (default: the initial state); ``mu[t]`` holds the arm
    means at step t."""
    horizon = len(mu)
    if getattr(strategy.config, "propensity_draws", 0):  # the regret does not depend on them: skip their cost
        strategy = type(strategy)(strategy.key, strategy.config.model_copy(update={"propensity_draws": 0}))
    rng_policy, rng_env = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    # rewards of every arm drawn up front: common random numbers across policies with the same seed
    draws = rng_env.random(mu.shape) < mu if bernoulli else mu + noise_sd * rng_env.standard_normal(mu.shape)
    draws = draws.astype(float)
    choices = np.empty(horizon, dtype=np.int64)
    section = strategy.initial_state() if start is None else start
    pending, index = [], strategy._index
    for t in range(horizon):
        d = strategy.decide(section, contexts[t] if contexts else {}, rng_policy)
        k = choices[t] = index[d.choice]
        pending.append(FeedbackEvent(event_id=str(t), tool="reward", conversation_id=str(t),
                                     payload={"value": draws[t, k]}, decision=d))
        if len(pending) >= batch:  # decisions in between saw the section of the last promotion
            section, pending = strategy.apply(section, pending), []
    regret = mu.max(axis=1) - mu[np.arange(horizon), choices]
    return SimResult(np.cumsum(regret), choices, strategy.apply(section, pending))


def simulate(strategy: BanditStrategy, arm_means, horizon: int, seed: int, batch: int = 1,
             change_at: int | None = None, new_means=None, bernoulli: bool = True, *,
             noise_sd: float = 1.0, full: bool = False, end_means=None, start: dict[str, Any] | None = None):
    """Cumulative expected regret per step of ``strategy`` on a (piecewise) stationary or drifting problem.

    Feedback is applied every ``batch`` events (promotion every ``batch`` events). From step
    ``change_at`` on the means are ``new_means``; with ``end_means`` they move linearly from ``arm_means``
    at the first step to ``end_means`` at the last. Rewards are Bernoulli, or Gaussian with ``noise_sd``.
    ``start`` is the section to start from (default: the initial state).
    Returns the regret array, or with ``full`` a :class:`SimResult` (regret, choices, final section).
    """
    mu = np.tile(np.asarray(arm_means, float), (horizon, 1))
    if end_means is not None:
        mu += np.linspace(0.0, 1.0, horizon)[:, None] * (np.asarray(end_means, float) - mu[0])
    if change_at is not None:
        mu[change_at:] = np.asarray(new_means, float)
    res = _run(strategy, mu, None, seed, batch, bernoulli, noise_sd, start)
    return res if full else res.regret


def simulate_contextual(strategy: BanditStrategy, means, horizon: int, seed: int, batch: int = 1,
                        features: list[str] | None = None, *, full: bool = False, change_at: int | None = None,
                        new_means=None):
    """Like :func:`simulate` with a context drawn uniformly from ``len(means)`` kinds each step.

    ``means[c][k]`` is arm k's success rate in context c; context c > 0 sets feature ``features[c-1]``
    to 1 (others 0), context 0 sets none. Context-free strategies simply ignore the features. From step
    ``change_at`` on the rates are ``new_means``.
    """
    means = np.asarray(means, float)
    features = features if features is not None else [f"f{j}" for j in range(1, len(means))]
    c = np.random.default_rng([seed, 1]).integers(len(means), size=horizon)
    contexts = [{"features": {f: float(ci == j + 1) for j, f in enumerate(features)}} for ci in c]
    mu = means[c]
    if change_at is not None:
        mu[change_at:] = np.asarray(new_means, float)[c[change_at:]]
    res = _run(strategy, mu, contexts, seed, batch, True, 1.0)
    return res if full else res.regret
