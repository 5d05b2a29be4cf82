"""Signed versions: with [versions] signing_key every tag is signed with git's SSH signing, wherever it
is made, and each tag's status (verified, unverified, unsigned) comes from git verify-tag against
[versions] allowed_signers, verified once per tag object."""

from __future__ import annotations

import pytest

from helpers import allowed_signers, code_version, git, sign_versions, with_style
from ratchet.core.errors import ConfigError
from ratchet.core.signing import Verifier
from ratchet.core.workspace import Workspace


@pytest.fixture
def keys(ssh_keys):
    return ssh_keys


def signed_ws(ws_path, keys, key="trusted") -> Workspace:
    sign_versions(ws_path, keys[key], keys["signers"])
    return Workspace.open(ws_path)


def test_signing_every_tag_is_signed_and_verifies(ws_path, keys):
    ws = signed_ws(ws_path, keys)
    ws.state.update("staging", with_style("formal"))
    promoted = ws.state.promote(reason="formal", author="tuner")
    rolled_back = ws.state.rollback("v0.1.0")
    (ws_path / "NOTES.md").write_text("new\n")
    merged = code_version(ws, ["NOTES.md"])
    assert [v.name for v in (promoted, rolled_back, merged)] == ["v0.1.1", "v0.1.2", "v0.2.0"]
    for made in (promoted, rolled_back, merged):
        assert "-----BEGIN SSH SIGNATURE-----" in git(ws_path, "cat-file", "tag", made.name)
        git(ws_path, "-c", f"gpg.ssh.allowedSignersFile={keys['signers']}", "verify-tag", made.name)  # git agrees
        listed = ws.versions.get(made.name)
        assert listed.signed and listed.metadata == made.metadata  # the signature is not part of the metadata
        assert ws.versions.signature(listed) == ws.versions.signature(made) == "verified"
    assert ws.versions.signature(ws.versions.get("v0.1.0")) == "unsigned"  # made before the key was set


def test_signing_by_a_key_not_in_allowed_signers_is_unverified(ws_path, keys):
    ws = signed_ws(ws_path, keys, key="stranger")
    ws.state.update("staging", with_style("formal"))
    made = ws.state.promote(reason="formal", author="test")
    assert ws.versions.get(made.name).signed
    assert ws.versions.signature(ws.versions.get(made.name)) == "unverified"


def test_signing_a_tag_whose_message_was_changed_is_unverified(ws_path, keys):
    ws = signed_ws(ws_path, keys)
    ws.state.update("staging", with_style("formal"))
    ws.state.promote(reason="formal", author="test")
    forged = git(ws_path, "cat-file", "tag", "v0.1.1").replace('"reason": "formal"', '"reason": "forged"')
    obj = _mktag(ws_path, forged)
    git(ws_path, "update-ref", "refs/tags/v0.1.1", obj)
    found = Workspace.open(ws_path).versions.get("v0.1.1")
    assert found.metadata["reason"] == "forged" and found.signed
    assert ws.versions.signature(found) == "unverified"


def _mktag(root, body: str) -> str:
    import subprocess

    return subprocess.run(["git", "mktag"], cwd=root, input=body, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_signing_unsigned_tags_without_a_key(ws_path, keys):
    sign_versions(ws_path, None, keys["signers"])
    ws = Workspace.open(ws_path)
    ws.state.update("staging", with_style("formal"))
    made = ws.state.promote(reason="formal", author="test")
    assert not ws.versions.get(made.name).signed
    assert ws.versions.signature(ws.versions.get(made.name)) == "unsigned"


def test_signing_without_allowed_signers_nothing_verifies(ws_path, keys):
    sign_versions(ws_path, keys["trusted"], None)
    ws = Workspace.open(ws_path)
    ws.state.update("staging", with_style("formal"))
    made = ws.state.promote(reason="formal", author="test")
    assert ws.versions.signature(ws.versions.get(made.name)) == "unverified"


def test_signing_a_missing_key_fails_the_promotion_and_changes_nothing(ws_path, keys):
    ws = signed_ws(ws_path, keys)
    keys["trusted"].unlink()
    ws.state.update("staging", with_style("formal"))
    staging, active = ws.state.read("staging"), ws.state.read("active")
    head, tags = git(ws_path, "rev-parse", "HEAD"), git(ws_path, "tag")
    with pytest.raises(ConfigError, match="versions.signing_key") as raised:
        ws.state.promote(reason="formal", author="test")
    assert raised.value.field == "versions.signing_key" and "ssh-keygen" in raised.value.fix
    assert (git(ws_path, "rev-parse", "HEAD"), git(ws_path, "tag")) == (head, tags)
    assert ws.state.read("staging") == staging and ws.state.read("active") == active
    assert git(ws_path, "status", "--porcelain") == ""
    assert not ws.store.coordination.open_intents()


def test_signing_verification_is_cached_per_tag_object_until_the_signers_change(ws_path, keys, monkeypatch):
    ws = signed_ws(ws_path, keys)
    ws.state.update("staging", with_style("formal"))
    ws.state.promote(reason="formal", author="test")
    calls = []
    real = Verifier._verify
    monkeypatch.setattr(Verifier, "_verify", lambda self, obj: calls.append(obj) or real(self, obj))
    versions = Workspace.open(ws_path).versions
    for _ in range(3):
        assert [versions.signature(v) for v in versions.list()] == ["unsigned", "verified"]
    assert len(calls) == 1  # one signed tag, verified once; an unsigned one needs no git at all
    allowed_signers(keys["signers"], keys["stranger"])  # the trusted key is no longer listed
    assert [versions.signature(v) for v in versions.list()] == ["unsigned", "unverified"]
    assert len(calls) == 2
