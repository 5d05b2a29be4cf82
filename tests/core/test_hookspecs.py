"""Meta-tests: every hook is prefixed, documented with its exact parameters, and tested."""

import inspect
import re
from pathlib import Path

from ratchet.core import hookspecs

HOOKS = [name for name, fn in vars(hookspecs).items() if name.startswith("ratchet_") and callable(fn)]


def test_hookspecs_are_prefixed_and_documented():
    assert len(HOOKS) >= 10
    for name in HOOKS:
        fn = getattr(hookspecs, name)
        doc = inspect.getdoc(fn) or ""
        assert doc.split("\n")[0].endswith("."), f"{name}: summary line"
        for param in inspect.signature(fn).parameters:
            assert f":param {param}:" in doc, f"{name} does not document {param}"


def test_every_hook_has_a_test():
    tests = "\n".join(p.read_text() for p in Path(__file__).parents[1].rglob("test_*.py"))
    untested = [name for name in HOOKS if not re.search(rf"def test_hook_{name}\w*\(", tests)
                and not re.search(rf"def test_hook_{name.removeprefix('ratchet_')}\w*\(", tests)]
    assert not untested, f"hooks without a test_hook_ test: {sorted(untested)}"


def test_hook_register_template_libraries_first_party():
    from ratchet.core import templates
    from ratchet.core.plugins import load_plugins

    library = templates.discover(load_plugins())
    assert library["workspace"].family == "scaffold" and library["workspace"].plugin == "templates"
