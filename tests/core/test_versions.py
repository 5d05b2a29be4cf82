import json
from pathlib import Path

import pytest

from helpers import errors_at_once, git
from ratchet.core.errors import GitError, NotFoundError, UserError
from ratchet.core.versions import VersionStore, parse_version


@pytest.fixture
def repo(tmp_path) -> VersionStore:
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "f.txt").write_text("0\n")
    store = VersionStore(tmp_path)
    store.make_version("initial", paths=["."], reason="start", kind="init", author="test")
    return store


def bump_file(store: VersionStore, text: str, bump="patch", **kw):
    (store.root / "f.txt").write_text(text)
    return store.make_version(bump, paths=["f.txt"], reason=f"set {text.strip()}", kind="test", author="test", **kw)


def test_versions_make_version_annotated_tag_with_json_metadata(repo):
    v = bump_file(repo, "1\n", extra={"events_applied": 7})
    assert v.name == "v0.1.1"
    message = git(repo.root, "tag", "-l", "--format=%(contents)", "v0.1.1")
    meta = json.loads(message)
    assert meta["kind"] == "test" and meta["bump"] == "patch" and meta["author"] == "test"
    assert meta["reason"] == "set 1" and meta["events_applied"] == 7
    assert git(repo.root, "cat-file", "-t", "v0.1.1").strip() == "tag"  # annotated, not lightweight


def test_versions_list_semver_order_ignores_non_semver(repo):
    bump_file(repo, "1\n", "minor")  # v0.2.0
    for i in range(2, 11):
        bump_file(repo, f"{i}\n", "patch")  # v0.2.1 .. v0.2.9
    bump_file(repo, "x\n", "minor")  # v0.3.0
    git(repo.root, "tag", "not-a-version")
    git(repo.root, "tag", "v1.0")  # not semver: ignored
    git(repo.root, "tag", "-a", "v0.3.0-rc.1", "-m", "not json")  # semver prerelease, message not JSON
    names = [v.name for v in repo.list()]
    assert names[:3] == ["v0.1.0", "v0.2.0", "v0.2.1"]
    assert names[-3:] == ["v0.2.9", "v0.3.0-rc.1", "v0.3.0"]
    rc = repo.get("0.3.0-rc.1")
    assert rc.metadata == {"message": "not json"}


def test_versions_read_file_exact_bytes(repo):
    bump_file(repo, "no trailing newline")
    assert repo.read_file("v0.1.1", "f.txt") == b"no trailing newline"
    assert repo.read_file("0.1.0", "f.txt") == b"0\n"


def test_versions_read_version_not_found(repo):
    with pytest.raises(NotFoundError, match="v0.9.0 does not exist"):
        repo.read_file("v0.9.0", "f.txt")
    with pytest.raises(NotFoundError, match="missing.txt"):
        repo.read_file("v0.1.0", "missing.txt")


def test_versions_parse_version_rejects_garbage():
    assert str(parse_version("v1.2.3")) == str(parse_version("1.2.3")) == "1.2.3"
    with pytest.raises(UserError) as err:
        parse_version("latest")
    assert err.value.field == "version"


def test_versions_next_version(repo):
    assert repo.next_version("patch") == "v0.1.1"
    assert repo.next_version("minor") == "v0.2.0"
    assert repo.next_version("major") == "v1.0.0"
    with pytest.raises(UserError):
        repo.next_version("huge")


def test_versions_nothing_changed_is_refused(repo):
    with pytest.raises(UserError, match="nothing changed"):
        repo.make_version("patch", paths=["f.txt"], reason="x", kind="t", author="t")
    assert [v.name for v in repo.list()] == ["v0.1.0"]


def test_versions_commit_only_named_paths(repo):
    (repo.root / "other.txt").write_text("untracked work\n")
    bump_file(repo, "2\n")
    assert "other.txt" in git(repo.root, "status", "--porcelain")


def test_versions_concurrent_makers_are_serialised(repo):
    def make(i):
        (repo.root / f"t{i}.txt").write_text(str(i))
        VersionStore(repo.root).make_version("patch", paths=[f"t{i}.txt"], reason=str(i), kind="t", author="t")

    errors = errors_at_once(make, [(i,) for i in range(8)])
    assert not errors
    assert [v.name for v in repo.list()] == ["v0.1.0"] + [f"v0.1.{i}" for i in range(1, 9)]


def test_versions_not_a_git_repo(tmp_path: Path):
    with pytest.raises(GitError) as err:
        VersionStore(tmp_path).list()
    assert "not a git repository" in str(err.value) and err.value.fix


def test_versions_precedence_agrees_with_semver():
    import random

    import semver

    from ratchet.core.versions import precedence

    tags = ["v1.0.0-alpha", "v1.0.0-alpha.1", "v1.0.0-alpha.beta", "v1.0.0-beta", "v1.0.0-beta.2",
            "v1.0.0-beta.11", "v1.0.0-rc.1", "v1.0.0", "v0.10.0", "v0.2.0", "v0.2.0-rc.1", "v2.0.0+build.5",
            "v1.0.0-1", "v1.0.0-a1", "v0.0.1"]
    random.Random(3).shuffle(tags)
    assert sorted(tags, key=precedence) == sorted(tags, key=lambda t: semver.Version.parse(t[1:]))
    assert precedence("v1.0") is None and precedence("v01.0.0") is None and precedence("1.0.0") is None


def test_versions_tag_cache_follows_new_tags(repo):
    assert [v.name for v in repo.list()] == ["v0.1.0"]
    bump_file(repo, "1\n")
    fresh = VersionStore(repo.root)  # reads the persisted cache, then parses only the new tag
    assert [v.metadata["reason"] for v in fresh.list()] == ["start", "set 1"]
