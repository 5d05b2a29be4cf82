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


# `RATCHET_TEST_STORE_URL=postgresql+psycopg://postgres@127.0.0.1/ratchet_test` runs the suite on PostgreSQL:
# every test gets a schema of its own in that database (through RATCHET_STORE_URL, which its servers'
# processes inherit), so tests see only their own rows, as each has its own SQLite file otherwise.
TEST_STORE_URL = os.environ.get("RATCHET_TEST_STORE_URL")


@pytest.fixture(scope="session")
def _test_database():
    if not TEST_STORE_URL:
        yield None
        return
    import sqlalchemy as sa

    engine = sa.create_engine(TEST_STORE_URL, isolation_level="AUTOCOMMIT")
    schemas: list[str] = []
    yield engine, schemas
    with engine.connect() as conn:  # a test's server that outlived it must not hold the suite up
        conn.exec_driver_sql("SET lock_timeout = '2s'")
        for schema in schemas:
            try:
                conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            except sa.exc.DBAPIError:
                pass
    engine.dispose()


@pytest.fixture(autouse=True)
def _store_per_test(_test_database, monkeypatch):
    """On PostgreSQL, a fresh schema for this test's stores; on SQLite nothing (each workspace has its file)."""
    if _test_database is None:
        yield
        return
    import uuid

    from sqlalchemy.engine import make_url

    engine, schemas = _test_database
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    schemas.append(schema)
    url = make_url(TEST_STORE_URL).update_query_dict({"options": f"-csearch_path={schema}",
                                                     "application_name": schema})
    monkeypatch.setenv("RATCHET_STORE_URL", url.render_as_string(hide_password=False))
    yield
    with engine.connect() as conn:  # the idle pooled connections of this test's stores: close them
        conn.exec_driver_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = %(name)s AND pid <> pg_backend_pid()", {"name": schema})


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



@pytest.fixture
def ssh_keys(tmp_path) -> dict[str, Path]:
    """SSH keys made by ssh-keygen: ``trusted`` (listed in the allowed signers file ``signers``) and
    ``stranger`` (not listed)."""
    from helpers import allowed_signers, ssh_key

    folder = tmp_path / "keys"
    folder.mkdir()
    trusted, stranger = ssh_key(folder, "trusted"), ssh_key(folder, "stranger")
    return {"trusted": trusted, "stranger": stranger, "signers": allowed_signers(folder / "allowed", trusted)}
