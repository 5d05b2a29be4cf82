"""Ratchet: serve an agent service from a git repo and improve it from feedback.

This module is Ratchet's public API, the one place plugins, templates and scaffolds import from::

    from ratchet import hookimpl, RunContext, Strategy, StrategyConfig, Decision, FeedbackEvent, FeedbackTool

Every name in ``__all__`` is the stable surface and has this one public location. Everything under
``ratchet.core``, ``ratchet.runner``, ``ratchet.tuner``, ``ratchet.architect`` and the other packages is
internal and may move between releases. Names are imported on first use (PEP 562), so that
``ratchet --help`` and plugin discovery stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("ratchet")

# The API by section (the docs' API page follows it): public name -> "module" (same name there) or
# "module:name".
_SECTIONS: dict[str, dict[str, str]] = {
    "Runner tools": {
        "RunContext": "ratchet.runner.context",
    },
    "The strategy contract": {
        "Strategy": "ratchet.core.strategy",
        "StrategyConfig": "ratchet.core.strategy",
        "Decision": "ratchet.core.strategy",
        "FeedbackEvent": "ratchet.core.strategy",
        "FeedbackTool": "ratchet.core.strategy",
        "copy_json": "ratchet.core.strategy",
        "choice_key": "ratchet.core.strategy",
        "registered_strategies": "ratchet.core.strategy",
        "Intervals": "ratchet.core.belief",
        "Axis": "ratchet.core.belief",
        "Interval": "ratchet.core.belief",
        "Points": "ratchet.core.belief",
        "ScoredPoint": "ratchet.core.belief",
        "RulesTable": "ratchet.core.belief",
        "Rule": "ratchet.core.belief",
    },
    "Planners and the Architect's actions": {
        "Planner": "ratchet.architect.planners",
        "PlanRequest": "ratchet.architect.planners",
        "JobSession": "ratchet.architect.planners",
        "Plan": "ratchet.architect.plans",
        "ACTION_KINDS": "ratchet.architect.plans",
        "parse_action": "ratchet.architect.plans",
        "config_key": "ratchet.architect.plans",
        "config_value": "ratchet.architect.plans",
    },
    "Errors: what failed, which thing, how to fix it": {
        "RatchetError": "ratchet.core.errors",
        "UserError": "ratchet.core.errors",
        "ConfigError": "ratchet.core.errors",
        "NotFoundError": "ratchet.core.errors",
        "PluginError": "ratchet.core.errors",
        "TimeLimitError": "ratchet.core.errors",
        "config_error": "ratchet.core.errors",
        "OPEError": "ratchet.core.ope",
    },
    "Workspaces, for a plugin's own tests": {
        "Workspace": "ratchet.core.workspace",
        "create_workspace": "ratchet.core.create",
        "load_plugins": "ratchet.core.plugins",
        "Runner": "ratchet.runner.service",
        "build_runner_server": "ratchet.runner.server:build_server",
    },
    "First-party strategies, to subclass (the strategy templates do)": {
        "BanditConfig": "ratchet.plugins.tuner_strategies.bandits",
        "BanditStrategy": "ratchet.plugins.tuner_strategies.bandits",
        "ThompsonSampling": "ratchet.plugins.tuner_strategies.bandits",
        "ThompsonConfig": "ratchet.plugins.tuner_strategies.bandits",
        "GaussianThompsonSampling": "ratchet.plugins.tuner_strategies.bandits",
        "GaussianThompsonConfig": "ratchet.plugins.tuner_strategies.bandits",
        "KLUCB": "ratchet.plugins.tuner_strategies.bandits",
        "KLUCBConfig": "ratchet.plugins.tuner_strategies.bandits",
        "UCB1": "ratchet.plugins.tuner_strategies.bandits",
        "UCB1Config": "ratchet.plugins.tuner_strategies.bandits",
        "Exp3": "ratchet.plugins.tuner_strategies.bandits",
        "Exp3Config": "ratchet.plugins.tuner_strategies.bandits",
        "DiscountedThompson": "ratchet.plugins.tuner_strategies.bandits",
        "DiscountedThompsonConfig": "ratchet.plugins.tuner_strategies.bandits",
        "SlidingWindowUCB": "ratchet.plugins.tuner_strategies.bandits",
        "SWUCBConfig": "ratchet.plugins.tuner_strategies.bandits",
        "LinUCB": "ratchet.plugins.tuner_strategies.bandits",
        "LinUCBConfig": "ratchet.plugins.tuner_strategies.bandits",
        "LinThompson": "ratchet.plugins.tuner_strategies.bandits",
        "LinThompsonConfig": "ratchet.plugins.tuner_strategies.bandits",
        "CMAES": "ratchet.plugins.tuner_strategies.cmaes",
        "CMAESConfig": "ratchet.plugins.tuner_strategies.cmaes",
        "Dimension": "ratchet.plugins.tuner_strategies.cmaes",
        "OptunaTPE": "ratchet.plugins.tuner_strategies.optuna_tpe",
        "OptunaConfig": "ratchet.plugins.tuner_strategies.optuna_tpe",
        "Dim": "ratchet.plugins.tuner_strategies.optuna_tpe",
        "Preference": "ratchet.plugins.tuner_strategies.preference",
        "PreferenceConfig": "ratchet.plugins.tuner_strategies.preference",
        "Rules": "ratchet.plugins.tuner_strategies.rules",
        "RulesConfig": "ratchet.plugins.tuner_strategies.rules",
    },
}
_API = {name: where for names in _SECTIONS.values() for name, where in names.items()}

__all__ = ["__version__", "hookimpl", *_API]


def __getattr__(name: str) -> Any:
    try:
        module, _, attr = _API[name].partition(":")
    except KeyError:
        raise AttributeError(f"module 'ratchet' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from ratchet.architect.planners import JobSession, Planner, PlanRequest
    from ratchet.architect.plans import ACTION_KINDS, Plan, parse_action
    from ratchet.core.belief import Axis, Interval, Intervals, Points, Rule, RulesTable, ScoredPoint
    from ratchet.core.create import create_workspace
    from ratchet.core.errors import ConfigError, NotFoundError, PluginError, RatchetError, UserError, config_error
    from ratchet.core.plugins import load_plugins
    from ratchet.core.strategy import (
        Decision,
        FeedbackEvent,
        FeedbackTool,
        Strategy,
        StrategyConfig,
        copy_json,
        registered_strategies,
    )
    from ratchet.core.workspace import Workspace
    from ratchet.plugins.tuner_strategies.bandits import (
        KLUCB,
        UCB1,
        BanditConfig,
        BanditStrategy,
        DiscountedThompson,
        DiscountedThompsonConfig,
        Exp3,
        Exp3Config,
        GaussianThompsonConfig,
        GaussianThompsonSampling,
        KLUCBConfig,
        LinThompson,
        LinThompsonConfig,
        LinUCB,
        LinUCBConfig,
        SlidingWindowUCB,
        SWUCBConfig,
        ThompsonConfig,
        ThompsonSampling,
        UCB1Config,
    )
    from ratchet.plugins.tuner_strategies.cmaes import CMAES, CMAESConfig, Dimension
    from ratchet.plugins.tuner_strategies.optuna_tpe import Dim, OptunaConfig, OptunaTPE
    from ratchet.plugins.tuner_strategies.preference import Preference, PreferenceConfig
    from ratchet.plugins.tuner_strategies.rules import Rules, RulesConfig
    from ratchet.runner.context import RunContext
    from ratchet.runner.server import build_server as build_runner_server
    from ratchet.runner.service import Runner
