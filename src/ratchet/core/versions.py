"""Versions: annotated git tags ``vMAJOR.MINOR.PATCH`` whose message is JSON metadata.

Listing reads every tag with one ``git for-each-ref`` call and sorts by semver precedence; reading a
file at a version is one ``git cat-file``. Both stay cheap with thousands of tags, where walking
GitPython's object model per tag does not. Tags that are not semver are ignored. Version makers are
serialised by a lock in the repository's common git folder, so worktrees of one repo share it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import semver

from ratchet.core.errors import GitError, NotFoundError, UserError
from ratchet.core.fsutil import locked

Bump = Literal["major", "minor", "patch"]
BUMPS: tuple[str, ...] = ("major", "minor", "patch")
INITIAL = semver.Version(0, 1, 0)
FALLBACK_IDENTITY = ("Ratchet", "ratchet@localhost")


def parse_version(text: str) -> semver.Version:
    """``v1.2.3`` and ``1.2.3`` both name a version."""
    try:
        return semver.Version.parse(text.removeprefix("v"))
    except (ValueError, TypeError):
        raise UserError(f"{text!r} is not a version", field="version",
                        fix="write it like v1.2.3 or 1.2.3 (see `ratchet versions`)") from None


def tag_name(version: semver.Version) -> str:
    return f"v{version}"


@dataclass(frozen=True)
class Version:
    name: str
    semver: semver.Version = field(compare=False)
    commit: str
    metadata: dict[str, Any] = field(compare=False)
    created: str | None = None

    @property
    def kind(self) -> str | None:
        return self.metadata.get("kind")

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.name, "commit": self.commit, "created": self.created, "metadata": self.metadata}


_FORMAT = "%(refname:strip=2)%00%(objectname)%00%(*objectname)%00%(taggerdate:iso-strict)%00%(contents)%00%1e"


class VersionStore:
    """The versions of one workspace repository."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # --- git plumbing ---

    def git(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> bytes:
        proc = subprocess.run(["git", *args], cwd=self.root, capture_output=True,
                              env={**os.environ, **env} if env else None)
        if check and proc.returncode != 0:
            msg = proc.stderr.decode(errors="replace").strip() or proc.stdout.decode(errors="replace").strip()
            if "not a git repository" in msg:
                raise GitError(f"{self.root} is not a git repository", field="workspace",
                               fix="run `git init` there, or make a workspace with `ratchet init DIR`")
            raise GitError(f"git {args[0]} failed in {self.root}: {msg}")
        return proc.stdout

    @cached_property
    def _common_dir(self) -> Path:
        out = self.git("rev-parse", "--git-common-dir").decode().strip()
        return (self.root / out).resolve()

    @cached_property
    def _identity_env(self) -> dict[str, str]:
        """Use the user's git identity when there is one, else a fallback, so commits never fail on it."""
        if self.git("config", "user.email", check=False).strip():
            return {}
        name, email = FALLBACK_IDENTITY
        return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}

    def head(self) -> str | None:
        out = self.git("rev-parse", "--verify", "-q", "HEAD", check=False).strip()
        return out.decode() or None

    # --- reading ---

    def list(self) -> list[Version]:
        """Every semver tag, oldest to newest by semver precedence."""
        raw = self.git("for-each-ref", f"--format={_FORMAT}", "refs/tags/")
        versions = []
        for record in raw.split(b"\x1e"):
            record = record.lstrip(b"\n")
            if not record:
                continue
            name, obj, peeled, date, contents, _ = record.decode(errors="replace").split("\x00")
            if not (name.startswith("v") and semver.Version.is_valid(name[1:])):
                continue
            versions.append(Version(name, semver.Version.parse(name[1:]), peeled or obj,
                                    _parse_metadata(contents) if peeled else {}, date or None))
        versions.sort(key=lambda v: v.semver)
        return versions

    def latest(self) -> Version | None:
        versions = self.list()
        return versions[-1] if versions else None

    def get(self, name: str) -> Version:
        wanted = parse_version(name)
        for v in self.list():
            if v.semver == wanted:
                return v
        raise NotFoundError(f"version {tag_name(wanted)} does not exist", field="version",
                            fix="list the versions with `ratchet versions`")

    def read_file(self, version: str, path: str) -> bytes:
        """The exact bytes of ``path`` at ``version``."""
        v = self.get(version)
        proc = subprocess.run(["git", "cat-file", "blob", f"{v.commit}:{path}"], cwd=self.root, capture_output=True)
        if proc.returncode != 0:
            raise NotFoundError(f"{path} does not exist at {v.name}", field="path")
        return proc.stdout

    def next_version(self, bump: Bump) -> str:
        latest = self.latest()
        if latest is None:
            return tag_name(INITIAL)
        if bump not in BUMPS:
            raise UserError(f"unknown bump {bump!r}", field="bump", fix="use major, minor or patch")
        return tag_name(getattr(latest.semver, f"bump_{bump}")())

    # --- writing ---

    def lock(self):
        """The lock that serialises version makers across processes and worktrees."""
        return locked(self._common_dir / "ratchet-versions.lock")

    def make_version(
        self,
        bump: Bump | Literal["initial"],
        *,
        paths: list[str],
        reason: str,
        kind: str,
        author: str,
        extra: dict[str, Any] | None = None,
        allow_empty: bool = False,
    ) -> Version:
        """Commit ``paths`` and tag the next version. On any failure, history and tags are left as they were."""
        with self.lock():
            return self._make_version_locked(bump, paths=paths, reason=reason, kind=kind, author=author,
                                             extra=extra or {}, allow_empty=allow_empty)

    def _make_version_locked(self, bump, *, paths, reason, kind, author, extra, allow_empty) -> Version:
        name = tag_name(INITIAL) if bump == "initial" else self.next_version(bump)
        if bump == "initial" and self.latest() is not None:
            raise UserError(f"{self.root} already has versions", fix="make a new version with a bump instead")
        metadata = {"kind": kind, "bump": "initial" if bump == "initial" else bump, "reason": reason,
                    "author": author, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
        old_head = self.head()
        changed = False
        if paths:
            self.git("add", "--", *paths)
            quiet = subprocess.run(["git", "diff", "--cached", "--quiet", "--", *paths], cwd=self.root)
            changed = quiet.returncode != 0
        if not changed and not allow_empty and old_head is not None:
            raise UserError("nothing changed since the last version", fix="change state or files before versioning")
        message = f"{kind}: {reason}\n\nRatchet-Version: {name}\n"
        try:
            commit_args = ["commit", "-q", "--no-verify", "-m", message]
            if not changed:
                commit_args.append("--allow-empty")
            self.git(*commit_args, *(["--", *paths] if changed else []), env=self._identity_env)
            commit = self.head()
            self.git("tag", "-a", name, "-m", json.dumps(metadata, sort_keys=True), commit,
                     env=self._identity_env)
        except BaseException:
            if old_head is not None and self.head() != old_head:
                self.git("reset", "-q", "--soft", old_head, check=False)
            if old_head is not None and paths:
                self.git("reset", "-q", old_head, "--", *paths, check=False)  # unstage, keep the files
            raise
        return Version(name, parse_version(name), commit, metadata, metadata["created"])


def _parse_metadata(contents: str) -> dict[str, Any]:
    text = contents.strip()
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else {"message": text}
    except json.JSONDecodeError:
        return {"message": text}
