"""CMA-ES over continuous runner parameters (family ``cmaes``), by pycma's ask/tell.

Each generation's candidates are handed out by ``decide`` (those with the fewest scores first) and
scored by ``score`` feedback (higher is better; several scores of one candidate are averaged). The
generation is told to pycma (which minimises, so scores are negated) and the next one asked inside
``apply``, when every candidate has ``repeats`` scores or when the deadline passed. The runner hands
out the active section's candidates until the next promotion, so ``repeats`` near ``every_events /
popsize`` wastes fewest scores (those for a past generation are dropped) and averages out noise.

Section layout (plain JSON, committed with the state):

* ``names``, ``low``, ``high``: the dimensions in config order; other values restart the search.
* ``generation`` (counted across restarts, so unique), ``restarts``, ``popsize``, ``asked_ts``.
* ``candidates``: the generation's points as lists, exactly as pycma asked them (JSON keeps float64
  exactly, so pycma recognises them when told); ``points``: the same as ``{name: value}``;
  ``scores``: every score each candidate received.
* ``mean`` (pycma's favourite, in bounds), ``sigma`` (step size as a fraction of each dimension's
  range), ``best`` (``x``, ``point``, ``value``: best mean score of a told candidate), ``stall``
  (generations since ``best`` improved), ``evaluations``, ``dropped`` (scores for a past generation),
  ``skipped`` (events without a usable decision or value).
* ``es``: base64 of the zlib-compressed pickle of the ``cma.CMAEvolutionStrategy`` (covariance, paths,
  step size, termination histories), ``pycma``: the version that wrote it. Only this module reads it,
  from the workspace's own state, which is trusted as much as the plugin code the workspace already
  runs. A pickle that cannot be read (another pycma) restarts the search at ``mean`` with ``sigma``.

Determinism: pycma draws from a picklable ``randn`` seeded from ``(seed, generation)`` before each
tell/ask, the pickle's wall-clock timers are zeroed and its solution archives (keyed by hash(bytes),
which PYTHONHASHSEED changes) are stored by position and re-hashed on load, so the same section and
events give the same section, byte for byte, in any process.

Deadlines are judged by the events' ``ts``, never by a clock: ``asked_ts`` is the ``ts`` of the event
that closed the previous generation (for the first generation, of its first event), and a generation
whose deadline passed is told at the next event (``apply`` only runs on events).

Unscored candidates at a deadline: pycma needs the whole population, so they are told the worst mean
score of their generation, if at least ``mu = popsize // 2`` candidates have scores (else the
generation stays open). Ranked last, they get no positive recombination weight, so the mean moves on
scored candidates only; active CMA's negative weights on these random samples shrink the covariance
slightly, about evenly, which step-size adaptation absorbs.
"""

from __future__ import annotations

import base64
import math
import pickle
import threading
import warnings
import zlib
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ratchet import (Axis, Decision, FeedbackEvent, FeedbackTool, Points, ScoredPoint, Strategy, StrategyConfig,
                     choice_key, copy_json, hookimpl)

_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_INT = {"type": "integer", "minimum": 0}
_NUM = {"type": "number"}
_lock = threading.Lock()  # around pycma calls: warnings.catch_warnings is process-wide, not thread-safe


def _cma():
    """pycma, imported on first use (keeps `ratchet --help` fast); it warns without matplotlib."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Could not import matplotlib")
        import cma
    return cma


def score_value(payload: dict[str, Any]) -> float | None:
    v = payload.get("value")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def fewest_scored(score_lists: list[list[Any]]) -> np.ndarray:
    """The indices of the candidates with the fewest scores: ``decide`` hands out one of them, uniformly
    (CMA-ES's generation, Optuna's pool of trials)."""
    counts = np.array([len(scores) for scores in score_lists])
    return np.flatnonzero(counts == counts.min())


def uniform_over(points: list[Any]) -> dict[str, float]:
    """``{choice_key(point): probability}`` of a uniform draw among ``points``; equal points (rare) share."""
    out: dict[str, float] = {}
    for point in points:
        key = choice_key(point)
        out[key] = out.get(key, 0.0) + 1.0 / len(points)
    return out


def score_tools(what: str) -> list[FeedbackTool]:
    """``score`` and ``score_batch``; identical schemas, so one ``score`` tool can feed several strategies."""
    item = {
        "type": "object",
        "properties": {
            "conversation_id": {"type": "string", "description": "conversation the score is about"},
            "value": {"type": "number", "description": "the conversation's score; higher is better"},
            "event_id": {"type": "string", "description": "idempotency key; repeats are ignored"},
        },
        "required": ["conversation_id", "value"],
        "additionalProperties": False,
    }
    events = {"type": "array", "items": item, "maxItems": 10000,
              "description": "the events, each as the one-event tool takes it"}
    batch = {"type": "object", "properties": {"events": events},
             "required": ["events"], "additionalProperties": False}
    return [
        FeedbackTool(name="score", description=f"Report the score of one conversation (higher is better); {what}.",
                     input_schema=item),
        FeedbackTool(name="score_batch", description="Report many scores at once (at most 10000).",
                     input_schema=batch, batch_of="score"),
    ]


class Dimension(BaseModel):
    """One tuned runner param: its range and, optionally, where the search starts."""

    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    x0: float | None = Field(default=None, description="start value; the middle of [low, high] when omitted")

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError("low must be < high, both finite")
        if self.x0 is not None and not self.low <= self.x0 <= self.high:
            raise ValueError("x0 must lie in [low, high]")
        return self


class CMAESConfig(StrategyConfig):
    """Options of ``cmaes``: CMA-ES over continuous runner params, candidates scored by feedback."""

    dimensions: dict[str, Dimension] = Field(min_length=1, description="runner params tuned: name -> {low, high, x0?}")
    sigma0: float = Field(default=0.3, gt=0, le=1, description="initial step size, a fraction of each range")
    popsize: int | None = Field(default=None, ge=2,
                                description="candidates per generation; pycma's 4 + int(3 ln n) if omitted")
    seed: int = Field(default=0, ge=0)
    repeats: int = Field(default=1, ge=1, description="scores per candidate before its generation is told")
    deadline_seconds: float | None = Field(default=None, gt=0,
                                           description="tell a generation this long (by event ts) after it was asked")
    explore: bool = Field(default=True, description="False: decide serves the mean")
    restart_after: int | None = Field(default=None, ge=1,
                                      description="restart after this many generations without a better best")
    restart_popsize_factor: float = Field(default=1.0, ge=1, description="popsize multiplier per restart (2: IPOP)")


_HASHED = ("data", "data_with_same_key", "_unhashed_keys")  # the dicts of a SolutionDict keyed by hash


def _members(es) -> list[Any]:
    """The attributes of ``es`` and of its attributes (the logger's timers, the rounding archive)."""
    out = []
    for v in vars(es).values():
        out.append(v)
        if hasattr(v, "__dict__") and v is not es:
            out.extend(vars(v).values())
    return out


def _solution_dicts(es) -> list[Any]:
    """pycma's solution archives. Made portable across processes when pickled (keys become ("#", position)
    of their unhashed key) and re-hashed when loaded, so lookups keep finding the asked genotypes."""
    from cma.utilities.utils import SolutionDict

    seen: dict[int, Any] = {}
    for v in _members(es):
        if isinstance(v, SolutionDict):
            seen.setdefault(id(v), v)
    return list(seen.values())


class _Randn:
    """pycma's ``randn`` option: normal draws from a Generator that apply re-seeds (a lambda would not pickle)."""

    def __init__(self) -> None:
        self.gen: np.random.Generator | None = None

    def __call__(self, *shape: int) -> np.ndarray:
        return self.gen.standard_normal(shape)


class CMAES(Strategy):
    """CMA-ES (Hansen) with pycma's ask/tell; see the module docstring for the section and deadlines."""

    name: ClassVar[str] = "cmaes"
    family: ClassVar[str] = "cmaes"
    Config: ClassVar[type[StrategyConfig]] = CMAESConfig

    def __init__(self, key: str, config: StrategyConfig):
        super().__init__(key, config)
        dims = config.dimensions  # type: ignore[attr-defined]
        self.names = list(dims)
        self.low = [float(d.low) for d in dims.values()]
        self.high = [float(d.high) for d in dims.values()]
        self.x0 = [d.x0 if d.x0 is not None else (d.low + d.high) / 2 for d in dims.values()]
        self._initial: dict[str, Any] | None = None

    # --- pycma ---

    def _new_es(self, x0: list[float], sigma: float, popsize: int | None):
        opts = {"bounds": [self.low, self.high], "CMA_stds": [h - lo for lo, h in zip(self.low, self.high)],
                "seed": float("nan"), "randn": _Randn(), "verbose": -9, "verb_log": 0, "verb_disp": 0}
        if popsize:
            opts["popsize"] = popsize
        return _cma().CMAEvolutionStrategy(list(x0), sigma, opts)

    def _load(self, s: dict[str, Any]):
        try:
            es = pickle.loads(zlib.decompress(base64.b64decode(s["es"])))
        except Exception:  # noqa: BLE001 -- another pycma version: restart at the stored mean and sigma
            es = self._new_es(s["mean"], s["sigma"], s["popsize"])
            self._seed(es, s["generation"])
            es.ask()  # pycma tells only after an ask; the stored candidates are then told as given
            return es
        for sd in _solution_dicts(es):
            keys = {k: sd.key(x) for k, x in sd._unhashed_keys.items() if isinstance(k, tuple)}
            for attr in _HASHED:
                setattr(sd, attr, {keys.get(k, k): v for k, v in getattr(sd, attr).items()})
        return es

    def _seed(self, es, generation: int) -> None:
        randn = es.opts["randn"]
        randn.gen = np.random.default_rng([self.config.seed, generation])
        es.sm.randn = randn

    @staticmethod
    def _dump(es) -> str:
        es.opts["randn"].gen = None  # re-seeded before each use; not worth storing
        for obj in _members(es):
            if type(obj).__name__ == "ElapsedWCTime":  # wall-clock times would differ run to run
                obj.__dict__.update({k: 0.0 for k, v in vars(obj).items() if isinstance(v, float)})
        for sd in _solution_dicts(es):  # keys are hash(bytes), which differ between processes
            pos = {k: ("#", i) for i, k in enumerate(sd._unhashed_keys)}
            for attr in _HASHED:
                setattr(sd, attr, {pos.get(k, k): v for k, v in getattr(sd, attr).items()})
        return base64.b64encode(zlib.compress(pickle.dumps(es, protocol=4), 6)).decode("ascii")

    def _ask(self, s: dict[str, Any], es) -> None:
        """Ask the next generation into ``s`` (``s["generation"]`` already set) and store ``es``."""
        self._seed(es, s["generation"])
        xs = es.ask()
        s["candidates"] = [[float(v) for v in x] for x in xs]
        s["points"] = [self._point(x) for x in s["candidates"]]
        s["scores"] = [[] for _ in xs]
        s["popsize"] = len(xs)
        s["mean"] = [float(v) for v in np.clip(es.result.xfavorite, self.low, self.high)]
        s["sigma"] = float(es.sigma)
        s["es"] = self._dump(es)
        s["pycma"] = _cma().__version__

    def _point(self, x) -> dict[str, float]:
        return {n: float(min(max(v, lo), hi)) for n, v, lo, hi in zip(self.names, x, self.low, self.high)}

    def _tell(self, s: dict[str, Any], ts: float) -> None:
        """Tell the current generation, restart if stalled or pycma stops, then ask the next one."""
        means = [sum(sc) / len(sc) if sc else None for sc in s["scores"]]
        worst = min(m for m in means if m is not None)
        es = self._load(s)
        self._seed(es, s["generation"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pycma warns about e.g. flat fitness; the kpis show it
            es.tell([np.asarray(c, float) for c in s["candidates"]], [-(worst if m is None else m) for m in means])
            stop = bool(es.stop())
        i = max((j for j, m in enumerate(means) if m is not None), key=lambda j: means[j])
        if s["best"] is None or means[i] > s["best"]["value"]:
            s["best"] = {"x": list(s["candidates"][i]), "point": dict(s["points"][i]), "value": means[i]}
            s["stall"] = 0
        else:
            s["stall"] += 1
        c = self.config
        if stop or (c.restart_after is not None and s["stall"] >= c.restart_after):
            s["restarts"] += 1
            s["stall"] = 0
            popsize = max(2, round(s["popsize"] * c.restart_popsize_factor))
            es = self._new_es(s["best"]["x"], c.sigma0, popsize)  # from the best point, initial sigma
        s["generation"] += 1
        s["asked_ts"] = ts
        self._ask(s, es)

    # --- contract ---

    def initial_state(self) -> dict[str, Any]:
        if self._initial is None:  # the runner asks for it on every call until a section is promoted
            self._initial = self._start(self.x0)
        return copy_json(self._initial)

    def _start(self, x0: list[float]) -> dict[str, Any]:
        s = {"policy": self.name, "names": list(self.names), "low": list(self.low), "high": list(self.high),
             "generation": 0, "restarts": 0, "asked_ts": None, "best": None, "stall": 0,
             "evaluations": 0, "dropped": 0, "skipped": 0}
        with _lock:
            self._ask(s, self._new_es(x0, self.config.sigma0, self.config.popsize))
        return s

    def adopt(self, previous: str, section: dict[str, Any]) -> dict[str, Any] | None:
        """Warm-start from another search's best point (a CMA-ES ``best.point`` or an Optuna
        ``best.params``): dimensions it has are started there, clipped to bounds; the others at ``x0``.
        The search itself (covariance, step size) starts afresh with ``sigma0``."""
        best = section.get("best") if isinstance(section, dict) else None
        point = (best or {}).get("point") or (best or {}).get("params") or {}
        known = {n: float(v) for n, v in point.items() if n in self.names and isinstance(v, (int, float))}
        if not known:
            return None
        x0 = [min(max(known[n], lo), hi) if n in known else d
              for n, lo, hi, d in zip(self.names, self.low, self.high, self.x0)]
        return self._start(x0)

    def state_schema(self) -> dict[str, Any]:
        n = len(self.names)
        vec = {"type": "array", "items": _NUM, "minItems": n, "maxItems": n}
        point = {"type": "object", "properties": {k: _NUM for k in self.names}, "required": list(self.names),
                 "additionalProperties": False}
        props = {
            "policy": {"const": self.name}, "names": {"const": list(self.names)},
            "low": {"const": list(self.low)}, "high": {"const": list(self.high)},
            "generation": _INT, "restarts": _INT, "popsize": {"type": "integer", "minimum": 2},
            "asked_ts": {"type": ["number", "null"]},
            "candidates": {"type": "array", "items": vec}, "points": {"type": "array", "items": point},
            "scores": {"type": "array", "items": {"type": "array", "items": _NUM}},
            "mean": vec, "sigma": {"type": "number", "minimum": 0},
            "best": {"oneOf": [{"type": "null"}, {
                "type": "object", "properties": {"x": vec, "point": point, "value": _NUM},
                "required": ["x", "point", "value"], "additionalProperties": False}]},
            "stall": _INT, "evaluations": _INT, "dropped": _INT, "skipped": _INT,
            "es": {"type": "string", "description": "base64 zlib pickle of the pycma CMAEvolutionStrategy"},
            "pycma": {"type": "string"},
        }
        return {"$schema": _SCHEMA, "title": "cmaes section", "type": "object", "properties": props,
                "required": list(props), "additionalProperties": False}

    def _view(self, section: dict[str, Any] | None) -> dict[str, Any]:
        """The section, or a fresh one if it was made for other dimensions (never a mutable alias)."""
        if section and section.get("policy") == self.name and section.get("names") == self.names \
                and section.get("low") == self.low and section.get("high") == self.high:
            return section
        return self.initial_state()

    def decide(self, section: dict[str, Any], context: dict[str, Any], rng: np.random.Generator) -> Decision:
        s = self._view(section)
        if not self.config.explore:  # deterministic: the mean, propensity 1
            return Decision(strategy=self.key, choice=self.served(s), propensity=1.0,
                            info={"generation": s["generation"], "mean": True})
        fewest = fewest_scored(s["scores"])
        i = int(fewest[rng.integers(len(fewest))])
        return Decision(strategy=self.key, choice=dict(s["points"][i]), propensity=1.0 / len(fewest),
                        info={"generation": s["generation"], "candidate": i})

    def choice_probabilities(self, section: dict[str, Any], context: dict[str, Any],
                             rng: np.random.Generator) -> dict[str, float]:
        """Exact: uniform over the generation's candidates with the fewest scores (the mean with probability
        1 when ``explore`` is off). The choices are points of this generation: a candidate state can be
        judged only on logged calls that served the same points (see docs/evaluation.md)."""
        s = self._view(section)
        if not self.config.explore:
            return {choice_key(self.served(s)): 1.0}
        return uniform_over([s["points"][int(i)] for i in fewest_scored(s["scores"])])

    def feedback_tools(self) -> list[FeedbackTool]:
        return score_tools("folded into the conversation's CMA-ES candidate")

    def apply(self, section: dict[str, Any], events: list[FeedbackEvent]) -> dict[str, Any]:
        s = copy_json(self._view(section))
        deadline, repeats = self.config.deadline_seconds, self.config.repeats
        for ev in events:
            d = ev.decision
            info = d.info if d is not None else {}
            i, v = info.get("candidate"), score_value(ev.payload)
            if v is None or not isinstance(i, int) or isinstance(i, bool):
                s["skipped"] += 1
            elif info.get("generation") != s["generation"] or not 0 <= i < s["popsize"] \
                    or d.choice != s["points"][i]:  # an older generation (or another run's)
                s["dropped"] += 1
            else:
                s["scores"][i].append(v)
                s["evaluations"] += 1
            if s["asked_ts"] is None:
                s["asked_ts"] = ev.ts
            done = all(len(sc) >= repeats for sc in s["scores"])
            late = deadline is not None and ev.ts - s["asked_ts"] >= deadline \
                and sum(1 for sc in s["scores"] if sc) >= s["popsize"] // 2
            if done or late:
                with _lock:
                    self._tell(s, ev.ts)
        return s

    def served(self, section: dict[str, Any]) -> dict[str, float]:
        """The distribution mean, clipped to the bounds."""
        return self._point(self._view(section)["mean"])

    def belief(self, section: dict[str, Any]) -> list[Points]:
        """The search now: the mean and sigma (times each range: the step size, the covariance's shape
        left out), this generation's candidates with their mean scores so far, and the best told point."""
        s = self._view(section)
        spread = {n: s["sigma"] * (hi - lo) for n, lo, hi in zip(self.names, self.low, self.high)}
        points = [ScoredPoint(values=p, score=sum(sc) / len(sc) if sc else None, label=f"candidate {i}")
                  for i, (p, sc) in enumerate(zip(s["points"], s["scores"]))]
        best = s["best"]
        return [Points(
            title=f"generation {s['generation']}: mean, sigma and candidates (mean score so far)",
            dimensions=[Axis(name=n, low=lo, high=hi) for n, lo, hi in zip(self.names, self.low, self.high)],
            center=self.served(s), spread=spread, spread_label="sigma × range (step size)", points=points,
            best=ScoredPoint(values=best["point"], score=best["value"], label="best told") if best else None)]

    def kpis(self, section: dict[str, Any]) -> dict[str, Any]:
        s = self._view(section)
        return {"generation": s["generation"], "best_value": s["best"]["value"] if s["best"] else None,
                "best_point": s["best"]["point"] if s["best"] else None, "sigma": s["sigma"],
                "evaluations": s["evaluations"], "restarts": s["restarts"], "popsize": s["popsize"],
                "dropped": s["dropped"], "skipped": s["skipped"]}


@hookimpl
def ratchet_register_strategies(register):
    register(CMAES)
