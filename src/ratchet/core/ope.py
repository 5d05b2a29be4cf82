"""Off-policy evaluation: how a candidate policy would have done on the calls the active one logged.

Every logged call of a strategy carries the context, the choice and its propensity (the logging policy's
probability of that choice); joined with its reward it is one sample. A candidate (another strategy,
other parameters, a staged state) gives, through :meth:`Strategy.choice_probabilities`, its own
probability of each choice for each logged context. Three estimators of the candidate's mean reward:

- **IPS** (inverse propensity scoring): the mean of w r, with w = candidate probability / propensity.
  Unbiased when the logging policy gave every choice the candidate makes a positive probability.
- **SNIPS** (self-normalised IPS): sum w r / sum w. Slightly biased, much less variance.
- **DR** (doubly robust): a reward model's prediction under the candidate plus the IPS correction of its
  error on the logged choice. The model is per-(context, choice) means, falling back to per-choice means,
  fitted with 2-fold cross-fitting (each half is scored by the model of the other), so its errors do
  not bias the correction.

Each comes with a 95% confidence interval by the normal approximation (the delta method for SNIPS),
the effective sample size (sum w)^2 / sum w^2 and the number of logged calls used.

**Choices never logged.** A choice no logged call in the window made (a new arm, added after the calls
were served, or one the logging policy never tried) has no propensity and no reward: nothing says what it
would earn. Its share of the candidate's probability is not counted as good or bad: the estimates are of
the candidate's *other* choices, its probabilities on the logged choices renormalised in each context
(what it serves whenever it does not serve a never-logged choice), and the share is reported
(``unobserved``, per choice in ``unobserved_choices``). The candidate's whole value is then
(1 - share) x estimate + share x (the unknown value of the new choices). Calls in whose context the
candidate would only make never-logged choices are left out (``new_only``); if that is every call, there
is nothing to judge and :class:`OPEError` says so.

A deterministic logging policy (UCB family: propensity 1 for its choice, 0 for every other) never shows
what another choice would have earned, so no estimator can evaluate a candidate that chooses otherwise;
they refuse with :class:`OPEError` instead of dividing by zero. Log with a policy that explores
(Thompson sampling, EXP3, epsilon-greedy) to evaluate candidates off-policy.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ratchet.core.errors import UserError

ESTIMATORS = ("ips", "snips", "dr")
Z95 = 1.959963984540054


class OPEError(UserError):
    """The logged calls cannot answer the question (too few, no propensities, no exploration)."""


@dataclass(frozen=True)
class LoggedCall:
    """One logged decision joined with one reward of its conversation."""

    choice: Any
    propensity: float | None
    reward: float
    features: dict[str, Any] = field(default_factory=dict)
    version: str | None = None


@dataclass(frozen=True)
class Estimate:
    """One estimator's answer: the candidate's mean reward per call and its 95% interval."""

    estimator: str
    value: float
    low: float
    high: float
    ess: float  # effective sample size of the importance weights
    n: int  # logged calls used
    ci: str = "normal"  # how the interval was made

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Evaluation:
    """The candidate's estimates beside what the logging policy earned on the same calls."""

    estimates: dict[str, Estimate]
    observed: Estimate  # the logged rewards' mean (the logging policy, on policy)
    n: int
    skipped: int  # logged calls without a propensity (e.g. from versions that did not log one)
    unsupported: float  # candidate probability, per call, on choices the logging policy could not make
    warnings: list[str] = field(default_factory=list)
    # candidate probability, per call, on choices no call in the window made (not estimated: see above)
    unobserved: float = 0.0
    unobserved_choices: dict[str, float] = field(default_factory=dict)  # that share, per choice
    new_only: int = 0  # calls left out: in their context the candidate makes only never-logged choices

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "skipped": self.skipped, "unsupported": self.unsupported,
                "unobserved": self.unobserved, "unobserved_choices": dict(self.unobserved_choices),
                "new_only": self.new_only, "observed": self.observed.to_dict(), "warnings": list(self.warnings),
                "estimates": {k: e.to_dict() for k, e in self.estimates.items()}}


def context_key(features: dict[str, Any]) -> str:
    """Calls with equal features share a context (for the reward model and for caching probabilities)."""
    return json.dumps(features or {}, sort_keys=True, default=str)


def _normal(name: str, values: np.ndarray, ess: float) -> Estimate:
    n = len(values)
    mean = float(values.mean())
    se = float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    return Estimate(name, mean, mean - Z95 * se, mean + Z95 * se, ess, n)


def _ess(w: np.ndarray) -> float:
    sq = float((w * w).sum())
    return float(w.sum()) ** 2 / sq if sq > 0 else 0.0


def ips(w: np.ndarray, r: np.ndarray) -> Estimate:
    """Inverse propensity scoring: mean(w r), normal interval."""
    return _normal("ips", w * r, _ess(w))


def snips(w: np.ndarray, r: np.ndarray) -> Estimate:
    """Self-normalised IPS: sum(w r) / sum(w); interval by the delta method."""
    total = float(w.sum())
    if total <= 0:
        raise OPEError("snips: the candidate gives probability 0 to every logged choice",
                       fix="evaluate on a window where the logging policy made choices the candidate also makes")
    value = float((w * r).sum()) / total
    se = math.sqrt(float((w * w * (r - value) ** 2).sum())) / total
    return Estimate("snips", value, value - Z95 * se, value + Z95 * se, _ess(w), len(w))


def reward_model(contexts: Sequence[str], choices: np.ndarray, r: np.ndarray, k: int,
                 min_cell: int = 5) -> Callable[[str], np.ndarray]:
    """Predicted reward of each of ``k`` choices in a context: the (context, choice) mean when that cell has
    ``min_cell`` rewards, else the choice's mean over all contexts, else the overall mean."""
    overall = float(r.mean()) if len(r) else 0.0
    arm_n, arm_sum = np.zeros(k), np.zeros(k)
    np.add.at(arm_n, choices, 1.0)
    np.add.at(arm_sum, choices, r)
    arm_mean = np.where(arm_n > 0, arm_sum / np.maximum(arm_n, 1), overall)
    cells: dict[str, tuple[np.ndarray, np.ndarray]] = defaultdict(lambda: (np.zeros(k), np.zeros(k)))
    for c, a, v in zip(contexts, choices, r):
        n, s = cells[c]
        n[a] += 1
        s[a] += v

    def predict(context: str) -> np.ndarray:
        if context not in cells:
            return arm_mean
        n, s = cells[context]
        return np.where(n >= min_cell, s / np.maximum(n, 1), arm_mean)

    return predict


def doubly_robust(w: np.ndarray, r: np.ndarray, choices: np.ndarray, target: np.ndarray,
                  contexts: Sequence[str]) -> Estimate:
    """DR with a cross-fitted per-(context, choice) mean reward model; normal interval.

    ``target[i]`` is the candidate's probability of every choice in call i's context.
    """
    n, k = target.shape
    fold = np.arange(n) % 2
    values = np.empty(n)
    for f in (0, 1):
        fit, score = fold != f, np.flatnonzero(fold == f)
        model = reward_model([contexts[i] for i in np.flatnonzero(fit)], choices[fit], r[fit], k)
        for i in score:
            q = model(contexts[i])
            values[i] = float(target[i] @ q) + w[i] * (r[i] - q[choices[i]])
    return _normal("dr", values, _ess(w))


def _split_unlogged(target: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(target renormalised over the choices some call made, candidate probability per call and choice on
    the choices none made)``; rows with nothing left stay zero."""
    logged = np.zeros(target.shape[1], bool)
    logged[np.unique(a)] = True
    unlogged = np.where(logged, 0.0, target)
    kept = np.where(logged, target, 0.0)
    total = kept.sum(axis=1, keepdims=True)
    return np.divide(kept, total, out=np.zeros_like(kept), where=total > 1e-12), unlogged


def _refuse_deterministic_log(mu: np.ndarray, target: np.ndarray, a: np.ndarray) -> None:
    """Every logged propensity is 1 and the candidate chooses otherwise: no estimator can say anything."""
    other = float((1.0 - target[np.arange(len(a)), a]).mean())
    if (mu >= 1 - 1e-12).all() and other > 1e-9:
        raise OPEError(
            "propensity: the logging policy did not explore (every logged propensity is 1), so what the "
            f"candidate's other choices would have earned was never observed ({other:.0%} of its "
            "probability)", field="propensity",
            fix="log with a policy that explores (thompson, exp3, an epsilon-greedy strategy) before evaluating "
                "a different policy off-policy; an index policy (UCB family) can only be compared with itself; "
                "a deterministic candidate can be judged only where it agrees with the log")


def evaluate(calls: Sequence[LoggedCall], choices: Sequence[Any],
             probabilities: Callable[[dict[str, Any]], dict[Any, float]], *, min_samples: int = 2) -> Evaluation:
    """Estimate the candidate's mean reward per call from ``calls``.

    ``choices`` lists the possible choices (e.g. the arms); ``probabilities(features)`` is the candidate's
    ``{choice: probability}`` for a logged context (called once per distinct context). The candidate's
    probability on choices no call made is taken out and reported (see the module docstring).
    Raises :class:`OPEError` when the calls cannot answer (too few, no propensity, no exploration).
    """
    index = {c: i for i, c in enumerate(choices)}
    usable = [c for c in calls if c.propensity is not None and c.choice in index]
    skipped = len(calls) - len(usable)
    need = max(min_samples, 2)
    if len(usable) < need:
        raise OPEError(f"window: {len(usable)} logged calls with a reward and a propensity "
                       f"({skipped} without a propensity); at least {need} are needed",
                       field="window", fix="widen the window (--last N, --since VERSION) or wait for more feedback")
    mu = np.array([c.propensity for c in usable], float)
    if (mu <= 0).any() or (mu > 1 + 1e-9).any():
        raise OPEError("propensity: logged propensities must lie in (0, 1]", field="propensity",
                       fix="fix the strategy that logged them; its decide() must return the probability of its choice")
    r = np.array([c.reward for c in usable], float)
    a = np.array([index[c.choice] for c in usable])
    keys = [context_key(c.features) for c in usable]
    found: dict[str, dict[Any, float]] = {}
    for key, call in zip(keys, usable):
        if key not in found:
            found[key] = probabilities(call.features)
    # choices the candidate makes only in some contexts (e.g. a rule's action) join the list, so that their
    # probability is counted (as never logged, if no call made them) instead of dropped
    choices = [*choices, *dict.fromkeys(c for p in found.values() for c in p if c not in index)]
    rows_of = {key: np.array([float(p.get(c, 0.0)) for c in choices]) for key, p in found.items()}
    target = np.array([rows_of[key] for key in keys])

    _refuse_deterministic_log(mu, target, a)
    # Choices no call made: nothing says what they earn, so their share is reported, not estimated.
    target, unlogged = _split_unlogged(target, a)
    share = float(unlogged.sum(axis=1).mean())
    per_choice = {str(choices[j]): float(unlogged[:, j].mean()) for j in np.flatnonzero(unlogged.any(axis=0))}
    judged = target.sum(axis=1) > 0
    new_only = int((~judged).sum())
    if judged.sum() < need:
        raise OPEError(
            f"candidate: in {new_only} of {len(usable)} logged calls the candidate would only make choices no "
            f"logged call made ({', '.join(per_choice)}), which leaves {int(judged.sum())} calls to judge it on "
            f"(at least {need} are needed)", field="candidate",
            fix="serve those choices first (ship the change and let the tuner try them), or evaluate a candidate "
                "that also makes the logged choices")
    if new_only:
        mu, r, a, target = mu[judged], r[judged], a[judged], target[judged]
        keys = [k for k, j in zip(keys, judged) if j]
    rows = np.arange(len(a))
    w = target[rows, a] / mu

    # Where the logging policy was deterministic (propensity 1), it could not have made another choice: the
    # candidate's probability of other choices there is invisible to every estimator but DR's model.
    certain = mu >= 1 - 1e-12
    unsupported = float(np.where(certain, 1.0 - target[rows, a], 0.0).mean())
    warnings = []
    if share > 0.01:
        warnings.append(f"{share:.1%} of the candidate's probability is on choices no logged call made "
                        f"({', '.join(per_choice)}): not estimated, neither good nor bad; the estimates are of "
                        "its other choices" + (f" ({new_only} calls left out: it would make only those)"
                                               if new_only else ""))
    if unsupported > 0.01:
        warnings.append(f"{unsupported:.1%} of the candidate's probability is on choices the logging policy could "
                        "not make (its propensity was 1): IPS and SNIPS underestimate, DR relies on its reward model")
    ess = _ess(w)
    if ess < 0.1 * len(w):
        warnings.append(f"effective sample size {ess:.0f} of {len(w)}: the candidate differs much from the "
                        "logging policy; intervals are wide and the normal approximation is rough")
    estimates = {"ips": ips(w, r), "snips": snips(w, r), "dr": doubly_robust(w, r, a, target, keys)}
    observed = _normal("observed", r, float(len(r)))
    return Evaluation(estimates, observed, len(a), skipped, unsupported, warnings, share, per_choice, new_only)
