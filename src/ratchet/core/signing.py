"""Signed versions: git's own SSH signing of version tags, and verifying them.

With ``[versions] signing_key`` every tag is made with ``git tag -s`` and ``gpg.format=ssh`` (one place:
:meth:`ratchet.core.versions.VersionStore.tag` and ``make_version`` both end there). A tag's status
is ``verified`` (``git verify-tag`` accepts it against ``[versions] allowed_signers``), ``unverified``
(it is signed, but by a key that file does not list, or the signature is bad) or ``unsigned``.

Verifying costs a ``git`` and an ``ssh-keygen`` process, so tags are verified only when asked (a page
of the Versions API, not every tag) and the result is kept per tag object id, which names the tag's
exact bytes, signature included, for as long as the allowed signers file is unchanged. Results stay in
memory only: a cache on disk could be edited to call a tag verified.
"""

from __future__ import annotations

import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ratchet.core.errors import ConfigError

Status = Literal["verified", "unverified", "unsigned"]
VERIFIED: Status = "verified"
UNVERIFIED: Status = "unverified"
UNSIGNED: Status = "unsigned"

# git appends the signature to a tag's message: SSH, OpenPGP or X.509 (gpgsm)
_SIGNATURE_START = re.compile(r"^-----BEGIN (?:SSH SIGNATURE|PGP SIGNATURE|SIGNED MESSAGE)-----$", re.M)


def split_signature(message: str) -> tuple[str, bool]:
    """A tag's message without the signature git appended to it, and whether there was one."""
    found = _SIGNATURE_START.search(message)
    return (message, False) if found is None else (message[:found.start()], True)


@dataclass(frozen=True)
class Signing:
    """How a repository's version tags are signed and verified (``[versions]`` in ``ratchet.toml``)."""

    key: Path | None = None
    allowed_signers: Path | None = None

    def tag_command(self) -> list[str]:
        """``git`` arguments that make an annotated tag, signed with the key when there is one."""
        if self.key is None:
            return ["tag", "-a"]
        if not self.key.is_file():
            raise ConfigError(f"versions.signing_key: {self.key} does not exist", field="versions.signing_key",
                              fix="make a key with `ssh-keygen -t ed25519 -N '' -f PATH`, or fix the path")
        return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.key}", "tag", "-s"]


class Verifier:
    """Verifies tags against an allowed signers file, remembering each tag object's status."""

    def __init__(self, root: Path, allowed_signers: Path | None):
        self.root, self.allowed_signers = root, allowed_signers
        self._lock = threading.Lock()  # the Versions API verifies from several threads
        self._known: dict[str, Status] = {}
        self._signers_stamp: tuple | None = None

    def status(self, tag_object: str, signed: bool) -> Status:
        """The status of the tag object ``tag_object``; ``signed``: whether it carries a signature."""
        if not signed:
            return UNSIGNED
        stamp = self._stamp()
        with self._lock:
            if stamp != self._signers_stamp:  # another allowed signers file: every verdict may change
                self._known, self._signers_stamp = {}, stamp
            known = self._known.get(tag_object)
        if known is not None:
            return known
        found = self._verify(tag_object) if stamp is not None else UNVERIFIED
        with self._lock:
            if stamp == self._signers_stamp:
                self._known[tag_object] = found
        return found

    def _stamp(self) -> tuple | None:
        """Identifies the allowed signers file's content; None if there is none (nothing verifies)."""
        if self.allowed_signers is None:
            return None
        try:
            st = self.allowed_signers.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _verify(self, tag_object: str) -> Status:
        proc = subprocess.run(["git", "-c", f"gpg.ssh.allowedSignersFile={self.allowed_signers}", "verify-tag",
                               tag_object], cwd=self.root, capture_output=True)
        return VERIFIED if proc.returncode == 0 else UNVERIFIED
