"""Fixtures of the template tests (helpers are in template_helpers.py)."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def no_bytecode():
    """Rendered modules are imported from the workspace: keep __pycache__ out of the asserted trees."""
    previous, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    yield
    sys.dont_write_bytecode = previous
