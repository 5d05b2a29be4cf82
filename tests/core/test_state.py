import json

import pytest

from helpers import git
from ratchet.core.documents import ACTIVE_PATH, dumps
from ratchet.core.errors import ConflictError, GitError, NotFoundError, StateValidationError, UserError


def with_style(style):
    return lambda doc: {**doc, "params": {**doc["params"], "style": style}}


def test_state_read_staging_starts_as_active(ws):
    staging, active = ws.state.read("staging"), ws.state.read("active")
    assert staging.document == active.document
    assert staging.revision == 1 and active.revision == 1


def test_state_write_compare_and_swap(ws):
    doc = ws.state.read("staging")
    written = ws.state.write("staging", with_style("concise")(doc.document), doc.revision)
    assert written.revision == doc.revision + 1
    with pytest.raises(ConflictError) as err:
        ws.state.write("staging", with_style("formal")(doc.document), doc.revision)
    assert "revision" in str(err.value)
    assert ws.state.read("staging").document["params"]["style"] == "concise"


def test_state_write_rejects_schema_violation_with_json_path(ws):
    doc = ws.state.read("staging")
    with pytest.raises(StateValidationError) as err:
        ws.state.write("staging", with_style("shouty")(doc.document), doc.revision)
    assert err.value.field == "$.params.style"
    assert "shouty" in str(err.value)
    assert ws.state.read("staging").document == doc.document
    assert ws.state.read("staging").revision == doc.revision


def test_state_update_retries_on_conflict(ws):
    calls = []

    def change(doc):
        calls.append(1)
        if len(calls) == 1:  # someone else writes between our read and our swap
            other = ws.state.read("staging")
            ws.state.write("staging", with_style("formal")(other.document), other.revision)
        return {**doc, "params": {**doc["params"], "top_k": doc["params"]["top_k"] + 1}}

    result = ws.state.update("staging", change)
    assert len(calls) == 2
    assert result.document["params"]["style"] == "formal" and result.document["params"]["top_k"] == 4


def test_state_lives_in_the_store_seeded_from_the_latest_version(ws_path):
    """A new store takes active from the latest version (with its label), and staging from the staging
    file an older Ratchet kept in state/ (it may hold folded feedback), else from active."""
    from ratchet.core.workspace import Workspace

    legacy = json.loads((ws_path / ACTIVE_PATH).read_text())
    (ws_path / "state" / "staging.state.json").write_bytes(dumps(with_style("formal")(legacy)))
    ws = Workspace.open(ws_path)
    active, staging = ws.state.read("active"), ws.state.read("staging")
    assert (active.version, active.commit) == ("v0.1.0", ws.versions.get("v0.1.0").commit)
    assert dumps(active.document) == ws.versions.read_file("v0.1.0", ACTIVE_PATH)
    assert staging.document["params"]["style"] == "formal" and staging.revision == 1
    with pytest.raises(UserError, match="only through a version"):
        ws.state.write("active", active.document, active.revision)


def test_state_promote_commits_and_tags_patch_with_exact_bytes(ws):
    ws.state.update("staging", with_style("concise"))
    staged_bytes = dumps(ws.state.read("staging").document)
    v = ws.state.promote(reason="users like short replies", author="test", extra={"events_applied": 3})
    assert v.name == "v0.1.1"
    assert v.metadata["kind"] == "tuner" and v.metadata["bump"] == "patch" and v.metadata["events_applied"] == 3
    assert ws.state.path("active").read_bytes() == staged_bytes
    assert ws.versions.read_file("v0.1.1", ACTIVE_PATH) == staged_bytes
    assert git(ws.root, "status", "--porcelain") == ""


def test_state_promote_nothing_changed_is_refused(ws):
    with pytest.raises(UserError, match="nothing to promote"):
        ws.state.promote(reason="x", author="test")
    assert [v.name for v in ws.versions.list()] == ["v0.1.0"]


def test_state_failed_promotion_leaves_state_history_and_tags(ws, monkeypatch):
    ws.state.update("staging", with_style("concise"))
    active_before = ws.state.path("active").read_bytes()
    head_before = git(ws.root, "rev-parse", "HEAD")
    real_git = type(ws.versions).git

    def failing_git(self, *args, **kw):
        if args[0] == "tag":
            raise GitError("simulated tag failure")
        return real_git(self, *args, **kw)

    monkeypatch.setattr(type(ws.versions), "git", failing_git)
    with pytest.raises(GitError):
        ws.state.promote(reason="x", author="test")
    monkeypatch.undo()
    assert ws.state.path("active").read_bytes() == active_before
    assert git(ws.root, "rev-parse", "HEAD") == head_before
    assert git(ws.root, "tag").split() == ["v0.1.0"]
    assert git(ws.root, "status", "--porcelain") == ""


def test_state_rollback_round_trips_exact_bytes(ws):
    v0_bytes = ws.state.path("active").read_bytes()
    ws.state.update("staging", with_style("concise"))
    ws.state.promote(reason="a", author="test")
    ws.state.update("staging", with_style("formal"))
    v2 = ws.state.promote(reason="b", author="test")
    v2_bytes = ws.state.path("active").read_bytes()
    back = ws.state.rollback("v0.1.0", author="test")
    assert back.name == "v0.1.3" and back.metadata["rolled_back_to"] == "v0.1.0"
    assert back.metadata["kind"] == "rollback"
    assert ws.state.path("active").read_bytes() == v0_bytes
    assert dumps(ws.state.read("staging").document) == v0_bytes
    forward = ws.state.rollback(v2.name, author="test")
    assert ws.state.path("active").read_bytes() == v2_bytes
    assert [v.name for v in ws.versions.list()] == ["v0.1.0", "v0.1.1", "v0.1.2", "v0.1.3", forward.name]


def test_state_rollback_unknown_version(ws):
    with pytest.raises(NotFoundError, match="v9.9.9"):
        ws.state.rollback("9.9.9")


def test_state_pin_and_unpin(ws):
    ws.state.update("staging", with_style("concise"))
    ws.state.promote(reason="a", author="test")
    assert ws.state.pin("0.1.0") == "v0.1.0"
    assert ws.state.pinned() == "v0.1.0"
    assert ws.state.at_version(ws.state.pinned())["params"]["style"] == "friendly"
    ws.state.unpin()
    assert ws.state.pinned() is None


def test_state_migration_chain_applies_on_promote(ws):
    schema = json.loads(ws.schema_path.read_text())
    schema["x-schema-version"] = 3
    ws.schema_path.write_text(json.dumps(schema))

    def one_to_two(doc):
        return {**doc, "params": {**doc["params"], "top_k": 5}}

    def two_to_three(doc):
        return {**doc, "params": {**doc["params"], "min_score": 0.2}}

    ws.state._migrations = {1: (2, one_to_two), 2: (3, two_to_three)}
    migrated = ws.state.migrate(ws.state.read("active").document)
    assert migrated["schema_version"] == 3
    assert migrated["params"]["top_k"] == 5 and migrated["params"]["min_score"] == 0.2


def test_state_migration_missing_is_named(ws):
    schema = json.loads(ws.schema_path.read_text())
    schema["x-schema-version"] = 2
    ws.schema_path.write_text(json.dumps(schema))
    ws.state._migrations = {}
    with pytest.raises(StateValidationError, match="no migration from 1"):
        ws.state.migrate(ws.state.read("active").document)


def test_hook_ratchet_register_migrations_applies_plugin_migration(ws):
    from ratchet import hookimpl

    class Migrations:
        @hookimpl
        def ratchet_register_migrations(self, register):
            register(1, 2, lambda doc: {**doc, "params": {**doc["params"], "top_k": 7}})

    ws.plugins.register(Migrations(), "migrations-fixture")
    schema = json.loads(ws.schema_path.read_text())
    schema["x-schema-version"] = 2
    ws.schema_path.write_text(json.dumps(schema))
    assert ws.state.migrate(ws.state.read("active").document)["params"]["top_k"] == 7


def test_state_promote_and_rollback_refuse_uncommitted_behaviour_files(ws):
    """A version tagged over uncommitted config could not be reproduced from its tag (issue 12)."""
    from ratchet.core.errors import UncommittedError

    ws.state.update("staging", with_style("concise"))
    schema = json.loads(ws.schema_path.read_text())
    ws.schema_path.write_text(json.dumps({**schema, "title": "edited"}))
    staging, active = ws.state.read("staging"), ws.state.read("active")
    head = git(ws.root, "rev-parse", "HEAD")
    with pytest.raises(UncommittedError, match=r"uncommitted changes to state/schema\.json") as raised:
        ws.state.promote(reason="x", author="test")
    assert raised.value.paths == ["state/schema.json"] and raised.value.exit_code == 7
    with pytest.raises(UncommittedError):
        ws.state.rollback("v0.1.0")
    assert ws.state.read("staging") == staging and ws.state.read("active") == active
    assert git(ws.root, "rev-parse", "HEAD") == head and git(ws.root, "tag").split() == ["v0.1.0"]
    assert git(ws.root, "status", "--porcelain").split() == ["M", "state/schema.json"]


def test_state_of_a_tagged_version_is_read_through_its_own_schema(ws):
    """A newer schema (and its migrations) applies to serving old state, not to showing it."""
    schema = json.loads(ws.schema_path.read_text())
    ws.schema_path.write_text(json.dumps({**schema, "x-schema-version": 2}))
    git(ws.root, "commit", "-qam", "schema version 2, no migration registered yet")
    ws.state._migrations = {}
    tagged = json.loads(ws.versions.read_file("v0.1.0", ACTIVE_PATH))
    assert ws.as_tagged("0.1.0").active_state() == tagged
    with pytest.raises(StateValidationError, match="no migration from 1"):
        ws.state.at_version("v0.1.0")
