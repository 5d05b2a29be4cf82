"""Pairwise preference strategy (family ``preference``): Bradley–Terry over variants.

Feedback says which of two conversations (``prefer``) or which of two named variants
(``prefer_variants``) was better. The section keeps the win counts ``wins[i][j]`` (times variant i beat
variant j) and the current fit: P(i beats j) = sigmoid(theta_i - theta_j), fitted by scikit-learn's
``LogisticRegression`` on the pairwise design (+1 winner, -1 loser, no intercept) with a mild L2
penalty ``l2`` (a N(0, 1/l2) prior on each log-strength). Every design row sums to 0, so the penalised
optimum has sum(theta) = 0: the log-strengths come out centred.

Uncertainty is a Laplace approximation: the posterior covariance is the inverse of the penalised
Fisher information ``H = sum_pairs n_ij p_ij (1 - p_ij) (e_i - e_j)(e_i - e_j)' + l2 I``, projected onto
the centred parametrisation (the common shift is not identified by comparisons and would otherwise add
a constant prior variance to every variant). ``se`` are the square roots of its diagonal.

``decide`` is Thompson-style: draw theta_i ~ N(theta_i, (exploration * se_i)^2) independently and serve
the argmax; the propensity of that choice is computed by Gauss-Hermite quadrature. With no data every
variant is equally likely.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from ratchet import Decision, FeedbackEvent, FeedbackTool, Interval, Intervals, Strategy, StrategyConfig, hookimpl

_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_INT = {"type": "integer", "minimum": 0}
_EVENT_ID = {"type": "string", "description": "idempotency key; repeats are ignored"}
_GH = np.polynomial.hermite.hermgauss(48)  # nodes and weights for E[f(X)], X ~ N(mu, s^2)


class PreferenceConfig(StrategyConfig):
    """Options of ``preference``: a Bradley–Terry fit of pairwise preferences between variants."""

    variants: list[str] = Field(min_length=2, description="variant names; the served one is the decision's choice")
    param: str | None = Field(default=None, description="state param the served variant sets (used by the runner)")
    exploration: float = Field(default=1.0, ge=0, description="scale of the Thompson draw's sd (0: always argmax)")
    l2: float = Field(default=0.1, gt=0, description="L2 penalty on log-strengths (LogisticRegression C = 1/l2)")
    refit_every: int = Field(default=10, ge=1, description="refit after this many new comparisons")

    @field_validator("variants")
    @classmethod
    def _variants_unique(cls, v: list[str]) -> list[str]:
        dup = sorted({a for a in v if v.count(a) > 1})
        if dup:
            raise ValueError(f"variants must be unique; repeated: {', '.join(dup)}")
        return v


def fit_bradley_terry(wins: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """Centred log-strengths and their standard errors from a K x K win-count matrix."""
    K = len(wins)
    wins = np.asarray(wins, float)
    theta = np.zeros(K)
    i, j = np.nonzero(wins)
    if len(i):
        from sklearn.linear_model import LogisticRegression

        # One row per ordered (winner, loser) count, plus its mirror with label 0 at the same weight,
        # halved: the likelihood is unchanged (no intercept: P(y=1 | -x) = 1 - P(y=1 | x)) and both
        # classes are always present, which LogisticRegression requires.
        X = np.zeros((2 * len(i), K))
        X[np.arange(len(i)), i], X[np.arange(len(i)), j] = 1.0, -1.0
        X[len(i):] = -X[:len(i)]
        y = np.r_[np.ones(len(i)), np.zeros(len(i))]
        w = np.r_[wins[i, j], wins[i, j]] / 2
        model = LogisticRegression(C=1.0 / l2, fit_intercept=False, tol=1e-10, max_iter=1000)
        theta = model.fit(X, y, sample_weight=w).coef_[0]
        theta = theta - theta.mean()  # already ~centred; remove solver dust
    n = wins + wins.T
    p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
    W = n * p * (1 - p)  # symmetric; Fisher information is the weighted graph Laplacian
    H = np.diag(W.sum(axis=1)) - W + l2 * np.eye(K)
    P = np.eye(K) - 1.0 / K
    cov = P @ np.linalg.inv(H) @ P
    return theta, np.sqrt(np.maximum(np.diag(cov), 0.0))


def win_probabilities(mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """P(argmax of independent N(mean_i, sd_i^2) is i), by Gauss-Hermite quadrature (sd > 0)."""
    from scipy.special import ndtr

    t, w = _GH
    out = np.empty(len(mean))
    for i in range(len(mean)):
        x = mean[i] + math.sqrt(2) * sd[i] * t  # quadrature points of X_i
        others = np.delete(np.arange(len(mean)), i)
        cdf = ndtr((x[:, None] - mean[others]) / sd[others])
        out[i] = (w * cdf.prod(axis=1)).sum() / math.sqrt(math.pi)
    return out / out.sum()


class Preference(Strategy):
    """Bradley–Terry over ``variants`` from pairwise feedback; serves by Thompson-style draws."""

    name: ClassVar[str] = "preference"
    family: ClassVar[str] = "preference"
    Config: ClassVar[type[StrategyConfig]] = PreferenceConfig

    def __init__(self, key: str, config: StrategyConfig):
        super().__init__(key, config)
        self.variants: list[str] = list(config.variants)  # type: ignore[attr-defined]
        self.K = len(self.variants)
        self._index = {v: i for i, v in enumerate(self.variants)}

    # --- section ---

    def _fit(self, wins: list[list[int]], n: int) -> dict[str, Any]:
        theta, se = fit_bradley_terry(np.asarray(wins), self.config.l2)
        return {"theta": theta.tolist(), "se": se.tolist(), "n": n}

    def initial_state(self) -> dict[str, Any]:
        wins = [[0] * self.K for _ in range(self.K)]
        return {"policy": self.name, "variants": list(self.variants), "wins": wins, "n": 0, "since_fit": 0,
                "skipped": 0, "same_variant": 0, "fit": self._fit(wins, 0)}

    def state_schema(self) -> dict[str, Any]:
        K = self.K
        row = {"type": "array", "items": _INT, "minItems": K, "maxItems": K}
        vec = {"type": "array", "items": {"type": "number"}, "minItems": K, "maxItems": K}
        props = {
            "policy": {"const": self.name},
            "variants": {"const": list(self.variants)},
            "wins": {"type": "array", "items": row, "minItems": K, "maxItems": K,
                     "description": "wins[i][j]: times variant i beat variant j"},
            "n": {**_INT, "description": "comparisons counted"},
            "since_fit": {**_INT, "description": "comparisons since the last fit"},
            "skipped": {**_INT, "description": "events without a usable decision or with an unknown variant"},
            "same_variant": {**_INT, "description": "comparisons of a variant with itself (no information)"},
            "fit": {"type": "object", "additionalProperties": False, "required": ["theta", "se", "n"],
                    "properties": {"theta": vec, "se": {**vec, "items": {"type": "number", "minimum": 0}},
                                   "n": {**_INT, "description": "comparisons the fit used"}}},
        }
        return {"$schema": _SCHEMA, "title": f"{self.name} section", "type": "object", "properties": props,
                "required": list(props), "additionalProperties": False}

    def _view(self, section: dict[str, Any]) -> dict[str, Any]:
        """The section for this config's variants: counts of kept variants survive a change, then refit."""
        if section.get("variants") == self.variants:
            return section
        old = section.get("variants") or []
        where = {v: i for i, v in enumerate(old)}
        wins = [[section["wins"][where[a]][where[b]] if a in where and b in where else 0 for b in self.variants]
                for a in self.variants]
        n = sum(map(sum, wins))
        return {**self.initial_state(), "wins": wins, "n": n, "skipped": section.get("skipped", 0),
                "same_variant": section.get("same_variant", 0), "fit": self._fit(wins, n)}

    # --- feedback ---

    def feedback_tools(self) -> list[FeedbackTool]:
        def one(props: dict[str, Any]) -> dict[str, Any]:
            return {"type": "object", "properties": {**props, "event_id": _EVENT_ID},
                    "required": list(props), "additionalProperties": False}

        def batch(item: dict[str, Any]) -> dict[str, Any]:
            events = {"type": "array", "items": item, "maxItems": 10000,
                      "description": "the events, each as the one-event tool takes it"}
            return {"type": "object", "properties": {"events": events},
                    "required": ["events"], "additionalProperties": False}

        cid = {"type": "string", "minLength": 1}
        by_conv = one({"winner_conversation_id": {**cid, "description": "the conversation that was better"},
                       "loser_conversation_id": {**cid, "description": "the conversation that was worse"}})
        variant = {"enum": list(self.variants)}
        by_name = one({"winner": {**variant, "description": "the variant that was better"},
                       "loser": {**variant, "description": "the variant that was worse"}})
        join = ["winner_conversation_id", "loser_conversation_id"]
        return [
            FeedbackTool(name="prefer", description="Report that one served conversation was better than "
                         "another; each is joined to the variant it was served.", input_schema=by_conv, join=join),
            FeedbackTool(name="prefer_batch", description="Report many `prefer` comparisons at once (at most "
                         "10000).", input_schema=batch(by_conv), join=join, batch_of="prefer"),
            FeedbackTool(name="prefer_variants", description="Report that variant `winner` beat variant `loser` "
                         "(e.g. from a side-by-side review).", input_schema=by_name, needs_decision=False, join=[]),
            FeedbackTool(name="prefer_variants_batch", description="Report many `prefer_variants` comparisons at "
                         "once (at most 10000).", input_schema=batch(by_name), needs_decision=False, join=[],
                         batch_of="prefer_variants"),
        ]

    def _pair(self, ev: FeedbackEvent) -> tuple[Any, Any]:
        if ev.tool == "prefer_variants":
            return ev.payload.get("winner"), ev.payload.get("loser")
        w, l = ev.joined.get("winner_conversation_id"), ev.joined.get("loser_conversation_id")
        return (w.choice if w else None), (l.choice if l else None)

    def apply(self, section: dict[str, Any], events: list[FeedbackEvent]) -> dict[str, Any]:
        s = self._view(section)
        s = {**s, "wins": [r[:] for r in s["wins"]], "fit": {k: (v[:] if isinstance(v, list) else v)
                                                             for k, v in s["fit"].items()}}
        for ev in events:
            w, l = self._pair(ev)
            i = self._index.get(w) if isinstance(w, str) else None
            j = self._index.get(l) if isinstance(l, str) else None
            if i is None or j is None:
                s["skipped"] += 1
            elif i == j:
                s["same_variant"] += 1
            else:
                s["wins"][i][j] += 1
                s["n"] += 1
                s["since_fit"] += 1
                # refit at fixed counts, so one batch and the same events one by one give the same section
                if s["since_fit"] >= self.config.refit_every:
                    s["fit"], s["since_fit"] = self._fit(s["wins"], s["n"]), 0
        return s

    # --- decisions ---

    def decide(self, section: dict[str, Any], context: dict[str, Any], rng: np.random.Generator) -> Decision:
        fit = self._view(section)["fit"]
        theta, sd = np.asarray(fit["theta"]), self.config.exploration * np.asarray(fit["se"])
        if (sd > 0).all():
            i = int(np.argmax(rng.normal(theta, sd)))
            p = float(win_probabilities(theta, sd)[i])
        else:  # no exploration: the argmax, ties broken uniformly
            ties = np.flatnonzero(theta >= theta.max() - 1e-12)
            i, p = int(ties[rng.integers(len(ties))]), 1.0 / len(ties)
        return Decision(strategy=self.key, choice=self.variants[i], propensity=p)

    def choice_probabilities(self, section: dict[str, Any], context: dict[str, Any],
                             rng: np.random.Generator) -> dict[str, float]:
        """Exact up to the quadrature, as ``decide`` logs them: P(variant's draw is the largest); with no
        exploration the argmax (ties shared uniformly). Context plays no part."""
        fit = self._view(section)["fit"]
        theta, sd = np.asarray(fit["theta"]), self.config.exploration * np.asarray(fit["se"])
        if (sd > 0).all():
            p = win_probabilities(theta, sd)
        else:
            ties = theta >= theta.max() - 1e-12
            p = ties / ties.sum()
        return {v: float(x) for v, x in zip(self.variants, p)}

    # --- reporting ---

    def served(self, section: dict[str, Any]) -> Any:
        """The variant with the largest fitted log-strength (the first one before any data)."""
        return self.variants[int(np.argmax(self._view(section)["fit"]["theta"]))]

    def belief(self, section: dict[str, Any]) -> list[Intervals]:
        """The fitted log-strengths with their 95% Laplace intervals (centred: 0 is the average variant)."""
        s = self._view(section)
        theta, se = s["fit"]["theta"], s["fit"]["se"]
        wins = np.asarray(s["wins"])
        played = wins.sum(axis=1) + wins.sum(axis=0)
        items = [Interval(label=v, value=theta[i], low=theta[i] - 1.96 * se[i], high=theta[i] + 1.96 * se[i],
                          n=float(played[i])) for i, v in enumerate(self.variants)]
        return [Intervals(title=f"Bradley–Terry log-strength per variant (fitted on {s['fit']['n']} comparisons)",
                          interval="95% Laplace interval (theta ± 1.96 se)", items=items,
                          highlight=self.served(s), reference=0.0)]

    def kpis(self, section: dict[str, Any]) -> dict[str, Any]:
        s = self._view(section)
        theta, se = s["fit"]["theta"], s["fit"]["se"]
        wins = np.asarray(s["wins"])
        played = wins.sum(axis=1) + wins.sum(axis=0)
        order = sorted(range(self.K), key=lambda i: (-theta[i], i))
        return {
            "comparisons": s["n"],
            "fitted_on": s["fit"]["n"],
            "ranking": [self.variants[i] for i in order],
            "best": self.served(s),
            "strengths": dict(zip(self.variants, theta)),
            "se": dict(zip(self.variants, se)),
            "win_rate": {v: (float(wins[i].sum() / played[i]) if played[i] else None)
                         for i, v in enumerate(self.variants)},
            "skipped": s["skipped"],
            "same_variant": s["same_variant"],
        }


@hookimpl
def ratchet_register_strategies(register):
    register(Preference)
