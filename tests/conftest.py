"""Shared fixtures: a hermetic template cache, a fresh default workspace per test, a bare plugin manager."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _template_cache(tmp_path_factory):
    """Keep the versioned template cache out of the user's home."""
    os.environ["RATCHET_CACHE_DIR"] = str(tmp_path_factory.mktemp("ratchet-cache"))
    yield


@pytest.fixture(scope="session")
def library(_template_cache):
    """Every template of the library (first-party plugins), by name."""
    from ratchet.core import templates as tl
    from ratchet.core.plugins import load_plugins

    return tl.discover(load_plugins())


@pytest.fixture(scope="session")
def _pristine_workspace(tmp_path_factory, _template_cache) -> Path:
    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins

    root = tmp_path_factory.mktemp("pristine") / "ws"
    create_workspace(root, plugins=load_plugins(), author="test")
    return root


@pytest.fixture
def ws_path(_pristine_workspace, tmp_path) -> Path:
    """A fresh copy of the default workspace (git history and tag v0.1.0 included)."""
    dest = tmp_path / "ws"
    shutil.copytree(_pristine_workspace, dest, symlinks=True)
    return dest


@pytest.fixture
def ws(ws_path):
    from ratchet.core.workspace import Workspace

    return Workspace.open(ws_path)


@pytest.fixture
def plugins_off(monkeypatch):
    """Load no entry-point plugins (hermetic plugin tests)."""
    monkeypatch.setenv("RATCHET_LOAD_PLUGINS", "")

