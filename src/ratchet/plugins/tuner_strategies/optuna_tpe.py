"""Optuna TPE over a mixed space (family ``optuna``): categorical variants plus int/float params, by ask/tell.

Where the study lives: in an Optuna ``RDBStorage`` on the workspace store's database (the same SQLite
file by default), so a restarted tuner resumes it. The strategy is built from ``(key, config)`` only,
so the registration hook binds the workspace: it registers :meth:`OptunaTPE.for_workspace`, a subclass
whose default ``storage`` is the store's URL (relative SQLite paths resolved against the workspace) and
whose default ``study`` name is ``"<workspace name>:<key>"``. An explicit ``storage`` URL in the config
wins; without a workspace and without ``storage`` (simulations, benchmarks) the study is in memory.

Reconciling an outside study with a pure ``apply`` (staging = active + the log): the section keeps
the asked-but-untold trials (``pool``: trial number, ask index, params, scores) and everything
``decide``/``served`` need, so the runner never touches the database. ``apply`` is idempotent against
the study: a trial is told with ``skip_if_finished`` (the study's first value wins), and the k-th ask
of a section first looks for the trial tagged ``ratchet_ask = "<space digest>:<k>"`` and reuses it,
so rebuilding staging from active plus the log re-tells nothing and re-asks nothing: it yields the
same section. The trade-off: the study is shared state outside staging and git. A section rolled back
to an older version re-uses that version's later asks (tagged trials) and cannot change values the
study already holds; two tuners racing on one ask may leave one orphan RUNNING trial (harmless: TPE
ignores it beyond the constant liar).

Flow: ``decide`` hands out the pooled trial with the fewest scores (the choice is its params dict).
``score`` events for it are averaged; after ``repeats`` scores the trial is told, leaves the pool and
one new trial is asked (each ask's TPE sampler seeded from ``(seed, k)``, so asks are reproducible).
Before the first promotion the pool is empty: ``decide`` samples uniformly (a random warm-up, as TPE
starts anyway). Such scores, and scores for a trial told already (the runner hands out the active
pool until the next promotion), are added to the study as complete trials of their own with the
decision's params, idempotent by event id: no feedback is dropped, TPE just sees more observations.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ratchet import (Axis, Decision, FeedbackEvent, FeedbackTool, OPEError, Points, ScoredPoint, Strategy,
                     StrategyConfig, choice_key, copy_json, hookimpl)
from ratchet.plugins.tuner_strategies.cmaes import fewest_scored, score_tools, score_value, uniform_over

if TYPE_CHECKING:
    from ratchet import Workspace

_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
_INT = {"type": "integer", "minimum": 0}
_ASK_ATTR = "ratchet_ask"
_EVENT_ATTR = "ratchet_event"
_storages: dict[str, Any] = {}
_storages_lock = threading.Lock()


def _optuna():
    """Optuna, imported on first use (it is slow to import); its INFO log line per trial is silenced."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def resolve_url(url: str, root: Path | None) -> str:
    """A SQLAlchemy URL with a relative SQLite path made absolute against ``root`` (like the store does)."""
    prefix = "sqlite:///"
    if root is not None and url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str(Path(root) / url[len(prefix):])
    return url


def _storage(url: str):
    """One RDBStorage per URL and process: creating one checks the schema (alembic), ~100 ms."""
    with _storages_lock:
        if url not in _storages:
            optuna = _optuna()
            # SQLite: wait for the store's writers instead of failing with "database is locked"
            kw = {"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {"pool_pre_ping": True}
            _storages[url] = optuna.storages.RDBStorage(url, engine_kwargs=kw)
        return _storages[url]


# --- config -----------------------------------------------------------------------------------------


class _Dim(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CategoricalDim(_Dim):
    type: Literal["categorical"]
    choices: list[str | int | float | bool] = Field(min_length=1)
    default: str | int | float | bool | None = Field(default=None, description="served before any data")

    @model_validator(mode="after")
    def _check(self) -> CategoricalDim:
        if len({json.dumps(c) for c in self.choices}) != len(self.choices):
            raise ValueError("choices must be unique")
        if self.default is not None and self.default not in self.choices:
            raise ValueError("default must be one of the choices")
        return self


class FloatDim(_Dim):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    default: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatDim:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError("low must be < high, both finite")
        if self.log and self.low <= 0:
            raise ValueError("log needs low > 0")
        if self.default is not None and not self.low <= self.default <= self.high:
            raise ValueError("default must lie in [low, high]")
        return self


class IntDim(_Dim):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    default: int | None = None

    @model_validator(mode="after")
    def _check(self) -> IntDim:
        if self.low >= self.high:
            raise ValueError("low must be < high")
        if self.log and self.low <= 0:
            raise ValueError("log needs low > 0")
        if self.default is not None and not self.low <= self.default <= self.high:
            raise ValueError("default must lie in [low, high]")
        return self


Dim = Annotated[Union[CategoricalDim, FloatDim, IntDim], Field(discriminator="type")]


class OptunaConfig(StrategyConfig):
    """Options of ``optuna``: Optuna's TPE sampler over a mixed space, its study in the store."""

    space: dict[str, Dim] = Field(min_length=1, description="name -> {type: categorical|float|int, ...}")
    seed: int = Field(default=0, ge=0)
    pool: int = Field(default=8, ge=1, le=1000, description="trials asked ahead and handed out by decide")
    repeats: int = Field(default=1, ge=1, description="scores averaged per trial before it is told")
    study: str | None = Field(default=None, description="study name; default '<workspace name>:<key>'")
    storage: str | None = Field(default=None, description="SQLAlchemy URL of the study's database; default the "
                                "workspace store's (in memory without a workspace)")
    explore: bool = Field(default=True, description="False: decide serves the best params")

    @field_validator("space")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = [n for n in v if n.startswith("ratchet_") or not n]
        if bad:
            raise ValueError(f"invalid space names: {', '.join(map(repr, bad))}")
        return v


# --- strategy ---------------------------------------------------------------------------------------


class OptunaTPE(Strategy):
    """Optuna's TPE by ask/tell; see the module docstring for the section and the study storage."""

    name: ClassVar[str] = "optuna"
    family: ClassVar[str] = "optuna"
    Config: ClassVar[type[StrategyConfig]] = OptunaConfig
    # Bound by for_workspace(): the defaults of ``storage`` and ``study`` for that workspace.
    workspace_storage: ClassVar[str | None] = None
    workspace_name: ClassVar[str | None] = None
    workspace_root: ClassVar[Path | None] = None

    @classmethod
    def for_workspace(cls, workspace: Workspace | None) -> type[OptunaTPE]:
        """This class bound to ``workspace``: its study defaults to the store's database (see the module doc)."""
        if workspace is None:
            return cls
        return _bound(cls, workspace.store_url, workspace.name, workspace.root)

    def __init__(self, key: str, config: StrategyConfig):
        super().__init__(key, config)
        c = config
        self.storage_url = resolve_url(c.storage, self.workspace_root) if c.storage else self.workspace_storage
        self.study_name = c.study or f"{self.workspace_name or 'ratchet'}:{key}"
        self.names = list(c.space)
        self.space_json = {n: d.model_dump(mode="json") for n, d in c.space.items()}
        self.digest = hashlib.sha1(json.dumps(self.space_json, sort_keys=True).encode()).hexdigest()[:12]
        self._study = None
        self._lock = threading.Lock()

    # --- the study ---

    def distributions(self) -> dict[str, Any]:
        d = _optuna().distributions
        out = {}
        for n, dim in self.config.space.items():
            if dim.type == "categorical":
                out[n] = d.CategoricalDistribution(list(dim.choices))
            elif dim.type == "float":
                out[n] = d.FloatDistribution(dim.low, dim.high, log=dim.log)
            else:
                out[n] = d.IntDistribution(dim.low, dim.high, log=dim.log)
        return out

    def study(self):
        """The study, created on first use (``load_if_exists``: a restarted tuner resumes it)."""
        if self._study is None:
            optuna = _optuna()
            storage = _storage(self.storage_url) if self.storage_url else optuna.storages.InMemoryStorage()
            self._study = optuna.create_study(study_name=self.study_name, storage=storage, direction="maximize",
                                              load_if_exists=True)
        return self._study

    def _ask(self, study, k: int):
        optuna = _optuna()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate/constant_liar are "experimental" in older Optuna
            study.sampler = optuna.samplers.TPESampler(
                seed=int(np.random.SeedSequence([self.config.seed, k]).generate_state(1)[0]),
                multivariate=True, constant_liar=True)
            trial = study.ask(self.distributions())
        trial.set_user_attr(_ASK_ATTR, f"{self.digest}:{k}")
        return trial.number, trial.params

    # --- contract ---

    def initial_state(self) -> dict[str, Any]:
        return {"policy": self.name, "study": self.study_name, "space": copy_json(self.space_json), "asked": 0,
                "pool": [], "trials": 0, "added": 0, "best": None, "skipped": 0}

    def state_schema(self) -> dict[str, Any]:
        params = {"type": "object", "properties": {n: {} for n in self.names}, "required": list(self.names),
                  "additionalProperties": False}
        entry = {"type": "object", "properties": {"number": _INT, "ask": _INT, "params": params,
                                                  "scores": {"type": "array", "items": {"type": "number"}}},
                 "required": ["number", "ask", "params", "scores"], "additionalProperties": False}
        best = {"type": "object", "properties": {"number": _INT, "params": params, "value": {"type": "number"}},
                "required": ["number", "params", "value"], "additionalProperties": False}
        props = {"policy": {"const": self.name}, "study": {"const": self.study_name},
                 "space": {"const": self.space_json}, "asked": {**_INT, "description": "asks so far (next ask index)"},
                 "pool": {"type": "array", "items": entry}, "trials": {**_INT, "description": "trials told"},
                 "added": {**_INT, "description": "scores told as trials of their own (warm-up, late)"},
                 "best": {"oneOf": [{"type": "null"}, best]}, "skipped": _INT}
        return {"$schema": _SCHEMA, "title": "optuna section", "type": "object", "properties": props,
                "required": list(props), "additionalProperties": False}

    def _view(self, section: dict[str, Any] | None) -> dict[str, Any]:
        if section and section.get("policy") == self.name and section.get("study") == self.study_name \
                and section.get("space") == self.space_json:
            return section
        return self.initial_state()  # another space or study: start over

    def decide(self, section: dict[str, Any], context: dict[str, Any], rng: np.random.Generator) -> Decision:
        s = self._view(section)
        if not self.config.explore:  # deterministic: the best params, propensity 1
            return Decision(strategy=self.key, choice=self.served(s), propensity=1.0, info={"served": True})
        pool = s["pool"]
        if not pool:  # warm-up: no trials asked yet (nothing promoted)
            choice = self._random(rng)
            return Decision(strategy=self.key, choice=choice, propensity=self._random_probability(choice),
                            info={"trial": None})
        fewest = fewest_scored([e["scores"] for e in pool])
        e = pool[int(fewest[rng.integers(len(fewest))])]
        return Decision(strategy=self.key, choice=dict(e["params"]), propensity=1.0 / len(fewest),
                        info={"trial": e["number"]})

    WARM_UP_ENUMERATED: ClassVar[int] = 10_000  # most points of a discrete space listed for off-policy evaluation

    @staticmethod
    def _value_probability(d: Any, v: Any) -> float:
        """P(``_random`` draws ``v`` in the discrete dimension ``d``)."""
        if d.type == "categorical":
            return 1.0 / len(d.choices) if v in d.choices else 0.0
        if v not in range(d.low, d.high + 1):
            return 0.0
        if not d.log:  # uniform on [low - 0.5, high + 0.5], rounded: every integer equally likely
            return 1.0 / (d.high - d.low + 1)
        lo, hi = math.log(d.low - 0.5 + 1e-9), math.log(d.high + 0.5)  # as _random draws
        return (math.log(v + 0.5) - max(math.log(v - 0.5) if v - 0.5 > 0 else -math.inf, lo)) / (hi - lo)

    def _value_probabilities(self, d: Any) -> dict[Any, float] | None:
        """P(``_random`` draws each value of one dimension); None for a float dimension (a density, not a
        probability: any given value has probability 0)."""
        if d.type == "float":
            return None
        values = d.choices if d.type == "categorical" else range(d.low, d.high + 1)
        return {v: self._value_probability(d, v) for v in values}

    def _random_probability(self, choice: dict[str, Any]) -> float | None:
        """The exact probability of a warm-up draw when every dimension is discrete, else None (see
        ``choice_probabilities``). On the runner's path: one value per dimension, not the whole range."""
        if any(d.type == "float" for d in self.config.space.values()):
            return None
        return math.prod(self._value_probability(d, choice[n]) for n, d in self.config.space.items())

    def choice_probabilities(self, section: dict[str, Any], context: dict[str, Any],
                             rng: np.random.Generator) -> dict[str, float]:
        """Exact: uniform over the pooled trials with the fewest scores (the best params with probability 1
        when ``explore`` is off). Before the first promotion the pool is empty and ``decide`` draws at
        random: the product of each dimension's probabilities when every dimension is discrete (listed up
        to ``WARM_UP_ENUMERATED`` points); with a float dimension the draw has a density, not a probability,
        and it is refused (:class:`OPEError`)."""
        s = self._view(section)
        if not self.config.explore:
            return {choice_key(self.served(s)): 1.0}
        if pool := s["pool"]:
            return uniform_over([pool[int(i)]["params"] for i in fewest_scored([e["scores"] for e in pool])])
        per_dim = {n: self._value_probabilities(d) for n, d in self.config.space.items()}
        floats = [n for n, p in per_dim.items() if p is None]
        if floats:
            raise OPEError(
                f"state: strategy {self.key!r} has asked no trials yet and draws {', '.join(floats)} at random from "
                "a continuous range: a density, not a probability of any point, which the estimators cannot "
                "weigh against the logged choices", field="state",
                fix="evaluate a section with a pool of trials (after the first promotion), or pass --key for "
                    "another strategy")
        size = math.prod(len(p) for p in per_dim.values())
        if size > self.WARM_UP_ENUMERATED:
            raise OPEError(f"state: strategy {self.key!r} draws at random from {size} points (before its first "
                           f"trials); at most {self.WARM_UP_ENUMERATED} are listed for off-policy evaluation",
                           field="state", fix="evaluate a section with a pool of trials (after the first promotion)")
        points: list[tuple[dict[str, Any], float]] = [({}, 1.0)]
        for n, probs in per_dim.items():
            points = [({**pt, n: v}, p * q) for pt, p in points for v, q in probs.items() if q > 0]
        return {choice_key(pt): p for pt, p in points}

    def _random(self, rng: np.random.Generator) -> dict[str, Any]:
        out = {}
        for n, d in self.config.space.items():
            if d.type == "categorical":
                out[n] = d.choices[int(rng.integers(len(d.choices)))]
            else:
                lo, hi = (math.log(d.low), math.log(d.high)) if d.log else (d.low, d.high)
                if d.type == "int":  # widen by half a step so both ends are as likely as the rest
                    lo, hi = (math.log(d.low - 0.5 + 1e-9), math.log(d.high + 0.5)) if d.log else (lo - 0.5, hi + 0.5)
                v = float(rng.uniform(lo, hi))
                v = math.exp(v) if d.log else v
                out[n] = min(max(int(round(v)), d.low), d.high) if d.type == "int" else min(max(v, d.low), d.high)
        return out

    def _valid(self, params: Any) -> bool:
        if not isinstance(params, dict) or set(params) != set(self.names):
            return False
        for n, d in self.config.space.items():
            v = params[n]
            if d.type == "categorical":
                if v not in d.choices:
                    return False
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not d.low <= v <= d.high \
                    or (d.type == "int" and v != int(v)):
                return False
        return True

    def feedback_tools(self) -> list[FeedbackTool]:
        return score_tools("folded into the conversation's Optuna trial")

    def apply(self, section: dict[str, Any], events: list[FeedbackEvent]) -> dict[str, Any]:
        s = copy_json(self._view(section))
        with self._lock:
            study = self.study()
            tagged = {}
            for t in study.get_trials(deepcopy=False):
                for attr in (_ASK_ATTR, _EVENT_ATTR):
                    if attr in t.user_attrs:
                        tagged[(attr, t.user_attrs[attr])] = t
            self._refill(s, study, tagged)
            for ev in events:
                self._fold(s, ev, study, tagged)
        return s

    def _fold(self, s: dict[str, Any], ev: FeedbackEvent, study, tagged: dict) -> None:
        d = ev.decision
        info = d.info if d is not None else {}
        v = score_value(ev.payload)
        if v is None or "trial" not in info or not self._valid(d.choice):
            s["skipped"] += 1
            return
        e = next((e for e in s["pool"] if e["number"] == info["trial"] and e["params"] == d.choice), None)
        if e is not None:
            e["scores"].append(v)
            if len(e["scores"]) >= self.config.repeats:
                value = sum(e["scores"]) / len(e["scores"])
                study.tell(e["number"], value, skip_if_finished=True)
                s["pool"].remove(e)
                self._told(s, e["number"], e["params"], value)
                self._refill(s, study, tagged)
            return
        # A warm-up sample, or a trial told already (the runner serves the active pool until the next
        # promotion): the score becomes a complete trial of its own, idempotent by event id.
        t = tagged.get((_EVENT_ATTR, ev.event_id))
        if t is None:
            study.add_trial(_optuna().trial.create_trial(
                params=dict(d.choice), distributions=self.distributions(), value=v,
                user_attrs={_EVENT_ATTR: ev.event_id}))
            t = next(t for t in reversed(study.get_trials(deepcopy=False))
                     if t.user_attrs.get(_EVENT_ATTR) == ev.event_id)
            tagged[(_EVENT_ATTR, ev.event_id)] = t
        s["added"] += 1
        self._told(s, t.number, dict(d.choice), v)

    def _told(self, s: dict[str, Any], number: int, params: dict[str, Any], value: float) -> None:
        s["trials"] += 1
        if s["best"] is None or value > s["best"]["value"]:
            s["best"] = {"number": number, "params": dict(params), "value": value}

    def _refill(self, s: dict[str, Any], study, tagged: dict) -> None:
        while len(s["pool"]) < self.config.pool:
            k = s["asked"]
            t = tagged.get((_ASK_ATTR, f"{self.digest}:{k}"))  # asked before (staging rebuilt): reuse it
            number, params = (t.number, t.params) if t is not None else self._ask(study, k)
            s["pool"].append({"number": number, "ask": k, "params": dict(params), "scores": []})
            s["asked"] += 1

    def served(self, section: dict[str, Any]) -> dict[str, Any]:
        """The best told params; before any, each dimension's default (else first choice / middle)."""
        best = self._view(section)["best"]
        if best is not None:
            return dict(best["params"])
        out = {}
        for n, d in self.config.space.items():
            if d.default is not None:
                out[n] = d.default
            elif d.type == "categorical":
                out[n] = d.choices[0]
            else:
                mid = math.sqrt(d.low * d.high) if d.log else (d.low + d.high) / 2
                out[n] = int(round(mid)) if d.type == "int" else mid
        return out

    def belief(self, section: dict[str, Any]) -> list[Points]:
        """The pooled trials with their mean scores so far and the best told params, over the numeric
        dimensions (TPE keeps no centre or spread of its own; categorical choices are named in the title)."""
        s = self._view(section)
        numeric = [(n, d) for n, d in self.config.space.items() if isinstance(d, (FloatDim, IntDim))]
        names = {n for n, _ in numeric}

        def values(params: dict[str, Any]) -> dict[str, float]:
            return {n: float(v) for n, v in params.items() if n in names and isinstance(v, (int, float))}

        def label(what: str, params: dict[str, Any]) -> str:
            other = ", ".join(f"{n}={params[n]}" for n in self.names if n not in names and n in params)
            return f"{what} ({other})" if other else what

        points = [ScoredPoint(values=values(e["params"]), score=sum(e["scores"]) / len(e["scores"]) if e["scores"]
                              else None, label=label(f"trial {e['number']}", e["params"])) for e in s["pool"]]
        best = s["best"]
        skipped = [n for n in self.names if n not in names]
        return [Points(
            title=f"{s['trials']} trials told: the pooled trials (mean score so far) and the best"
                  + (f"; categorical {', '.join(skipped)} in each point's label" if skipped else ""),
            dimensions=[Axis(name=n, low=float(d.low), high=float(d.high)) for n, d in numeric],
            points=points, best=ScoredPoint(values=values(best["params"]), score=best["value"],
                                            label=label(f"best, trial {best['number']}", best["params"]))
            if best else None)]

    def kpis(self, section: dict[str, Any]) -> dict[str, Any]:
        s = self._view(section)
        best = s["best"]
        return {"trials": s["trials"], "best_value": best["value"] if best else None,
                "best_params": best["params"] if best else None, "best_trial": best["number"] if best else None,
                "pool": len(s["pool"]), "asked": s["asked"], "added": s["added"], "skipped": s["skipped"]}


@lru_cache(maxsize=64)
def _bound(cls: type[OptunaTPE], storage: str, name: str, root: Path) -> type[OptunaTPE]:
    return type(cls.__name__, (cls,), {"__module__": cls.__module__, "__doc__": cls.__doc__,
                                       "workspace_storage": storage, "workspace_name": name, "workspace_root": root})


@hookimpl
def ratchet_register_strategies(register, workspace):
    register(OptunaTPE.for_workspace(workspace))
