"""First-party template libraries: workspace and plugin scaffolds, runner and strategy templates."""

from pathlib import Path

from ratchet import hookimpl

_ROOT = Path(__file__).resolve().parent.parent


@hookimpl
def ratchet_register_template_libraries(register):
    register(_ROOT / "scaffolds", family="scaffold")
    register(_ROOT / "plugins" / "runner_templates", family="runner")
    register(_ROOT / "plugins" / "tuner_strategies" / "templates", family="strategy")
