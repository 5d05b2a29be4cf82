"""The ``ope`` case kind: a tier refuses a state whose off-policy estimate is worse than active's.

```yaml
- id: not-worse-than-active
  ope:
    estimator: dr          # ips, snips or dr
    margin: 0.02           # refuse when the estimate is below active's by more than this
    min_samples: 200       # fail, saying so, with fewer logged calls (with a reward and a propensity)
    min_ess: 30            # fail when the candidate's effective sample size is smaller (too unlike the log)
    candidate: tested      # the state under test (default), staging, or a state file in the workspace
    key: style             # a strategy key (default: every bandit key)
    last: 2000             # the window: the last N logged calls (default: all)
    max_unobserved: 0.5    # fail when more of the candidate's probability is on never-logged choices
    gate: true             # a failure fails the tier whatever min_pass_rate (default); false: counts in it
```

Both the candidate and the active state are estimated with the same estimator on the same logged calls
(the active state is usually, but not always, the policy that logged them). The case makes no runner
call. A choice no logged call made (a new arm) cannot be estimated: the candidate is judged on its
other choices (renormalised) and that share is reported as ``ope.<estimator>.<key>.unobserved``, counted
neither good nor bad; so a change that adds an arm passes if the traffic it leaves to the existing arms
is not estimated worse than active by more than ``margin``. A failed ope case fails its tier whatever the
budget's ``min_pass_rate`` (``gate: false`` counts it in the pass rate instead). The decision log is read
from the workspace's store; in an Architect job's worktree, from the store of the workspace the worktree
belongs to, since the worktree's own store has served nobody.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ratchet.core.errors import RatchetError

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace


class OPECheck(BaseModel):
    """The fields of an ``ope`` case."""

    model_config = ConfigDict(extra="forbid")
    candidate: str = Field(default="tested", min_length=1, description=(
        "'tested' (the state under test: the work tree's state/active.state.json, or the document the tuner "
        "promotes), 'staging', or a state file relative to the workspace"))
    estimator: Literal["ips", "snips", "dr"] = "dr"
    margin: float = Field(default=0.0, ge=0, description="how much worse than active the estimate may be")
    min_samples: int = Field(default=100, ge=2, description="logged calls needed; fewer fails the case")
    min_ess: float = Field(default=30.0, ge=0, description=(
        "effective sample size the candidate's estimate needs; smaller fails the case: the candidate chooses "
        "what the logging policy rarely did, and the interval cannot be trusted"))
    key: str | None = Field(default=None, description="strategy key (default: every bandit key)")
    last: int | None = Field(default=None, ge=1, description="use the last N logged calls (default: all)")
    gate: bool = Field(default=True, description=(
        "a failure fails the tier whatever its budget's min_pass_rate (false: it only counts in the pass rate)"))
    max_unobserved: float = Field(default=1.0, ge=0, le=1, description=(
        "the largest share of the candidate's probability on choices no logged call made (e.g. a new arm), "
        "which is not estimated; a larger share fails the case (default 1: any share, reported)"))


def log_workspace(workspace: Workspace) -> Workspace:
    """The workspace whose store holds the decision log: the main work tree's when ``workspace`` is a linked
    git worktree of it (an Architect job's), else ``workspace`` itself."""
    from ratchet.core.workspace import Workspace

    try:
        common = Path(workspace.versions.git("rev-parse", "--path-format=absolute", "--git-common-dir")
                      .decode().strip())
    except RatchetError:
        return workspace
    main = common.parent if common.name == ".git" else None
    if main is None or main.resolve() == workspace.root.resolve() or not (main / "ratchet.toml").is_file():
        return workspace
    return Workspace.open(main, search_parents=False)


def run_ope_case(workspace: Workspace, check: OPECheck,
                 document: dict[str, Any] | None = None) -> tuple[str | None, dict[str, float]]:
    """``(reason it failed or None, metrics)``. ``document`` is the state under test when it is not the work
    tree's file (the tuner's micro tier tests staging this way)."""
    from ratchet.core import evaluation as ev
    from ratchet.core.strategy import build_strategies

    try:
        logs = log_workspace(workspace)
        if check.candidate == "tested":
            candidate = (ev.Candidate("tested", document, build_strategies(workspace, workspace.plugins))
                         if document is not None else
                         ev.state_candidate(workspace, str(workspace.root / "state" / "active.state.json"), "tested"))
        elif check.candidate == "staging":
            candidate = ev.state_candidate(logs, "staging")
        else:
            candidate = ev.state_candidate(workspace, str(workspace.root / check.candidate), check.candidate)
        active = ev.state_candidate(logs, "active")
        keys = [check.key] if check.key else ev.evaluable_keys(workspace)
        if not keys:
            return "ope: no strategy of this workspace gives choice probabilities (none can be evaluated)", {}
        reasons, metrics = [], {}
        for key in keys:
            calls = ev.logged_calls(logs, key, last=check.last)
            try:
                mine = ev.evaluate_candidate(workspace, candidate, key, calls, min_samples=check.min_samples)
                theirs = ev.evaluate_candidate(logs, active, key, calls, min_samples=check.min_samples)
            except ev.OPEError as exc:
                reasons.append(f"ope {key}: {exc.message}" + (f" (min_samples {check.min_samples}). "
                                                              f"Fix: {exc.fix}" if exc.fix else ""))
                continue
            a, b = mine.estimates[check.estimator], theirs.estimates[check.estimator]
            metrics[f"ope.{check.estimator}.{key}"] = round(a.value, 4)
            metrics[f"ope.{check.estimator}.{key}.active"] = round(b.value, 4)
            if mine.unobserved_choices:
                metrics[f"ope.{check.estimator}.{key}.unobserved"] = round(mine.unobserved, 4)
            new = (f"; {mine.unobserved:.1%} of its probability is on choices no logged call made "
                   f"({', '.join(mine.unobserved_choices)}), not estimated" if mine.unobserved_choices else "")
            if mine.unobserved > check.max_unobserved:
                reasons.append(
                    f"ope {key}: {mine.unobserved:.1%} of {candidate.label}'s probability is on choices no logged "
                    f"call made ({', '.join(mine.unobserved_choices)}) > max_unobserved {check.max_unobserved:g}: "
                    "too much of it cannot be judged. Fix: raise max_unobserved on purpose, or let those choices "
                    "be served first")
            elif a.ess < check.min_ess:
                reasons.append(
                    f"ope {key}: {candidate.label} has an effective sample size of {a.ess:.1f} in {mine.n} logged "
                    f"calls (min_ess {check.min_ess:g}): it makes choices the logging policy rarely made, so its "
                    "estimate cannot be trusted. Fix: log more calls with a policy that explores those choices, "
                    "or lower min_ess on purpose")
            elif a.value < b.value - check.margin:
                reasons.append(
                    f"ope {key}: {check.estimator} estimate of {candidate.label} {a.value:.4f} "
                    f"[{a.low:.4f}, {a.high:.4f}] is below active's {b.value:.4f} [{b.low:.4f}, {b.high:.4f}] by "
                    f"{b.value - a.value:.4f} > margin {check.margin:g} ({mine.n} logged calls{new})")
        return ("; ".join(reasons) or None), metrics
    except RatchetError as exc:
        return f"ope: {exc}", {}
