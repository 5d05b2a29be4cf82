"""Off-policy estimates per candidate for the Strategies page, as ``ratchet evaluate`` makes them
(:mod:`ratchet.core.evaluation`): for one strategy key, the active state and a few other policies of the
same family (each starting from what the active state learned), on the last ``last`` logged calls.

Computed when asked for, over at most :data:`MAX_LAST` calls, and kept (:class:`Cache`) until the active
state or the feedback log changes. Fewer than :data:`MIN_CALLS` usable calls: refused, with the reason.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

import sqlalchemy as sa

from ratchet.core.belief import Interval, Intervals
from ratchet.core.errors import NotFoundError, UserError

DEFAULT_LAST = 1000
MAX_LAST = 5000  # logged calls read at most per request: bounds the work of one page view
MIN_CALLS = 20  # fewer usable calls give intervals too wide to draw anything from
OTHERS = 5  # other policies of the family evaluated beside the active state, in registration order
DRAWN = "dr"  # the estimator drawn (all three are in the table)


def candidates(workspace, key: str) -> list[tuple[str, Any]]:
    """``[(label, make)]``: the active state, then up to :data:`OTHERS` other policies of the family."""
    from ratchet.core import evaluation as ev
    from ratchet.core.strategy import build_strategies, registered_strategies

    strategies = build_strategies(workspace, workspace.plugins)
    if key not in strategies:
        raise NotFoundError(f"key: no strategy {key!r} in ratchet.toml", field="key",
                            fix=f"use one of: {', '.join(strategies) or '(none configured)'}")
    current = strategies[key]
    found = [(f"active state ({current.name})", lambda: ev.state_candidate(workspace, "active"))]
    # the others start from what the active state learned (their ``adopt``): the page says so once
    family = [name for name, (_, cls) in registered_strategies(workspace.plugins, workspace).items()
              if cls.family == current.family and name != current.name]
    for name in family[:OTHERS]:
        found.append((name, lambda name=name: ev.strategy_candidate(workspace, name, {}, key)))
    return found


def estimates(workspace, key: str, last: int = DEFAULT_LAST) -> dict[str, Any]:
    """Each candidate's IPS, SNIPS and DR estimates of its mean reward per call, with 95% intervals,
    beside what the logging policy earned on the same calls."""
    from ratchet.core import evaluation as ev

    if not 1 <= last <= MAX_LAST:
        raise UserError(f"last: {last} is out of range", field="last", fix=f"ask for 1 to {MAX_LAST} calls")
    made = candidates(workspace, key)
    started = time.perf_counter()
    calls = ev.logged_calls(workspace, key, last=last)
    usable = sum(c.propensity is not None for c in calls)
    out: dict[str, Any] = {"key": key, "last": last, "calls": len(calls), "usable": usable,
                           "version": workspace.state.read("active").version, "estimator_drawn": DRAWN,
                           "min_calls": MIN_CALLS, "refused": None, "observed": None, "candidates": []}
    if usable < MIN_CALLS:
        out["refused"] = (f"{usable} of the last {last} rewarded calls of {key!r} have a logged propensity; "
                          f"at least {MIN_CALLS} are needed for an estimate worth showing")
        return out
    for label, make in made:
        try:
            result = ev.evaluate_candidate(workspace, make(), key, calls, seed=0, min_samples=MIN_CALLS)
        except UserError as exc:  # OPEError: e.g. a deterministic logging policy, no support
            out["candidates"].append({"label": label, "error": exc.message, "fix": exc.fix})
            continue
        found = result.to_dict()
        out["observed"] = out["observed"] or found["observed"]
        out["candidates"].append({"label": label, "error": None, **found})
    out["seconds"] = round(time.perf_counter() - started, 3)
    return out


def drawing(result: dict[str, Any]) -> Intervals | None:
    """The candidates' drawn estimates as intervals, the observed mean as the reference line."""
    items = [Interval(label=c["label"], value=e["value"], low=e["low"], high=e["high"], n=e["n"])
             for c in result["candidates"] if not c["error"] for e in [c["estimates"][DRAWN]]]
    if not items:
        return None
    observed = result["observed"]["value"] if result["observed"] else None
    return Intervals(title=f"estimated mean reward per call ({DRAWN.upper()}) on {result['usable']} logged calls",
                     interval="95% confidence interval (normal approximation); dashed: what was observed",
                     items=items, reference=observed)


def feedback_mark(store) -> int | None:
    """The newest feedback event's sequence number: the estimates change only when it or active does."""
    from ratchet.core.stores.schema import feedback

    with store.reader.connect() as conn:
        return conn.execute(sa.select(sa.func.max(feedback.c.seq))).scalar()


class Cache:
    """The last few answers, keyed by what they depend on (key, window, active revision, feedback)."""

    def __init__(self, size: int = 16):
        self.size = size
        self._found: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, workspace, key: str, last: int = DEFAULT_LAST) -> dict[str, Any]:
        ident = (key, last, workspace.state.read("active").revision, feedback_mark(workspace.store))
        with self._lock:
            if ident in self._found:
                self._found.move_to_end(ident)
                return {**self._found[ident], "cached": True}
        result = estimates(workspace, key, last)
        with self._lock:
            self._found[ident] = result
            while len(self._found) > self.size:
                self._found.popitem(last=False)
        return {**result, "cached": False}
