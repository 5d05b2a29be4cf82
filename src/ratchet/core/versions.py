"""Versions: annotated git tags ``vMAJOR.MINOR.PATCH`` whose message is JSON metadata.

Listing reads every tag with one ``git for-each-ref`` call and sorts by semver precedence; reading a
file at a version is one ``git cat-file``. Both stay cheap with thousands of tags, where walking
GitPython's object model per tag does not. Tags that are not semver are ignored. Version makers are
serialised by a lock in the repository's common git folder, so worktrees of one repo share it. Tags are
signed, and verified, as :mod:`ratchet.core.signing` says.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import semver

from ratchet.core.errors import GitError, NotFoundError, UserError
from ratchet.core.fsutil import locked
from ratchet.core.signing import Signing, Status, Verifier, split_signature

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


_IDENT = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
_SEMVER_TAG = re.compile(rf"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-({_IDENT}(?:\.{_IDENT})*))?"
                         r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?$")


def precedence(tag: str) -> tuple | None:
    """SemVer 2.0 precedence of a tag ``vX.Y.Z[-pre][+build]`` as a sortable tuple; None if not semver.

    Sorting by this key is what ``semver.Version`` comparisons do, without a Python call per comparison.
    """
    m = _SEMVER_TAG.match(tag)
    if m is None:
        return None
    pre = m.group(4)
    # a release sorts after its prereleases; numeric identifiers sort numerically, before alphanumeric ones
    pre_key = (1,) if pre is None else (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                                                 for p in pre.split(".")))
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), pre_key)


@dataclass(frozen=True)
class Version:
    name: str
    commit: str
    metadata: dict[str, Any] = field(compare=False)
    created: str | None = None
    key: tuple = field(default=(), compare=False, repr=False)
    tag_object: str = field(default="", compare=False, repr=False)  # the tag object's id (its exact bytes)
    signed: bool = field(default=False, compare=False)

    @property
    def semver(self) -> semver.Version:
        return semver.Version.parse(self.name[1:])

    @property
    def kind(self) -> str | None:
        return self.metadata.get("kind")

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.name, "commit": self.commit, "created": self.created, "metadata": self.metadata}


class VersionStore:
    """The versions of one workspace repository; ``signing`` says how its tags are signed and verified."""

    def __init__(self, root: Path, signing: Signing | None = None):
        self.root = Path(root)
        self.signing = signing or Signing()
        self._verifier = Verifier(self.root, self.signing.allowed_signers)
        self._cache: dict[str, tuple[str, str | None, dict[str, Any], bool]] | None = None
        self._cache_lock = threading.Lock()  # servers list versions from several threads

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

    def uncommitted(self, paths: list[str]) -> list[str]:
        """Which of ``paths`` (files or folders) differ from HEAD in the working tree or the index, or are
        not in git at all (ignored files aside), sorted."""
        if not paths:
            return []
        out = self.git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *paths)
        entries = out.decode(errors="replace").split("\0")
        changed, skip = set(), False
        for entry in entries:
            if skip or not entry:  # a rename's second name follows its entry
                skip = False
                continue
            changed.add(entry[3:])
            skip = entry[0] in "RC"
        return sorted(changed)

    # --- reading ---

    def list(self) -> list[Version]:
        """Every semver tag, oldest to newest by semver precedence."""
        versions = self._refs("refs/tags/")
        versions.sort(key=lambda v: v.key)
        return versions

    def _refs(self, pattern: str) -> list[Version]:
        # Names and object ids come from the refs alone (no object reads); the rest is parsed once per
        # tag object and cached by its id, which is immutable, so the cache can never go stale.
        raw = self.git("for-each-ref", "--format=%(refname:strip=2) %(objectname)", pattern).decode()
        refs = []
        for line in raw.splitlines():
            name, _, obj = line.partition(" ")
            key = precedence(name)
            if key is not None:
                refs.append((name, obj, key))
        with self._cache_lock:
            cache = self._tag_cache()
            missing = [obj for _, obj, _ in refs if obj not in cache]
            if missing:
                cache.update(self._read_tag_objects(missing))
                self._save_tag_cache()
            found = [(name, obj, cache[obj], key) for name, obj, key in refs]
        return [Version(name, commit, meta, created, key, obj, signed)
                for name, obj, (commit, created, meta, signed), key in found]

    def _cache_path(self) -> Path:
        return self._common_dir / "ratchet-tag-cache-2.json"  # 2: entries say whether the tag is signed

    def _tag_cache(self) -> dict[str, tuple[str, str | None, dict[str, Any], bool]]:
        if self._cache is None:
            try:
                self._cache = {k: tuple(v) for k, v in json.loads(self._cache_path().read_text()).items()}
            except (FileNotFoundError, ValueError):
                self._cache = {}
        return self._cache

    def _save_tag_cache(self) -> None:
        from ratchet.core.fsutil import atomic_write

        try:  # a cache: losing it costs time, never correctness, so no lock and errors are ignored
            atomic_write(self._cache_path(), json.dumps(self._cache).encode(), durable=False)
        except OSError:
            pass

    def _read_tag_objects(self, ids: list[str]) -> dict[str, tuple[str, str | None, dict[str, Any], bool]]:
        """Parse tag objects (or lightweight tags' commits) with one ``git cat-file --batch``."""
        proc = subprocess.run(["git", "cat-file", "--batch"], cwd=self.root, capture_output=True,
                              input="\n".join(ids).encode() + b"\n", check=True)
        data, pos, out = proc.stdout, 0, {}
        for obj in ids:
            eol = data.index(b"\n", pos)
            _sha, kind, size = data[pos:eol].decode().split()
            body = data[eol + 1:eol + 1 + int(size)]
            pos = eol + 1 + int(size) + 1
            if kind != "tag":  # a lightweight tag points at the commit itself
                out[obj] = (obj, None, {}, False)
                continue
            header, _, message = body.decode(errors="replace").partition("\n\n")
            fields = dict(line.split(" ", 1) for line in header.splitlines() if " " in line)
            message, signed = split_signature(message)
            out[obj] = (fields.get("object", obj), _tagger_date(fields.get("tagger")), _parse_metadata(message),
                        signed)
        return out

    def latest(self) -> Version | None:
        versions = self.list()
        return versions[-1] if versions else None

    def get(self, name: str) -> Version:
        """One version by name (one ref lookup, however many tags there are)."""
        tag = tag_name(parse_version(name))
        found = self._refs(f"refs/tags/{tag}")
        if not found:
            raise NotFoundError(f"version {tag} does not exist", field="version",
                                fix="list the versions with `ratchet versions`")
        return found[0]

    def signature(self, version: Version) -> Status:
        """Whether ``version``'s tag verifies against the allowed signers: verified, unverified or unsigned."""
        if version.signed and not version.tag_object:  # just made: read its tag object
            version = self.get(version.name)
        return self._verifier.status(version.tag_object, version.signed)

    def read_file(self, version: str, path: str) -> bytes:
        """The exact bytes of ``path`` at ``version``."""
        tag = tag_name(parse_version(version))
        proc = subprocess.run(["git", "cat-file", "blob", f"{tag}:{path}"], cwd=self.root, capture_output=True)
        if proc.returncode != 0:
            self.get(tag)  # raises if the version itself is unknown
            raise NotFoundError(f"{path} does not exist at {tag}", field="path")
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
        """Commit ``paths`` and tag the next version. On any failure, history and tags are left as they were.

        This is the plain git step (``ratchet init`` makes v0.1.0 with it). The versions of a running
        workspace are made by :mod:`ratchet.core.lineage`, which also moves the store's active state."""
        with self.lock():
            return self._make_version_locked(bump, paths=paths, reason=reason, kind=kind, author=author,
                                             extra=extra or {}, allow_empty=allow_empty)

    def _make_version_locked(self, bump, *, paths, reason, kind, author, extra, allow_empty) -> Version:
        name = tag_name(INITIAL) if bump == "initial" else self.next_version(bump)
        if bump == "initial" and self.latest() is not None:
            raise UserError(f"{self.root} already has versions", fix="make a new version with a bump instead")
        metadata = self._metadata(name, bump, reason=reason, kind=kind, author=author, extra=extra)
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
            self._tag(name, commit, metadata)
        except BaseException:
            if old_head is not None and self.head() != old_head:
                self.git("reset", "-q", "--soft", old_head, check=False)
            if old_head is not None and paths:
                self.git("reset", "-q", old_head, "--", *paths, check=False)  # unstage, keep the files
            raise
        return Version(name, commit, metadata, metadata["created"], precedence(name),
                       signed=self.signing.key is not None)

    # --- the steps of a version (ratchet.core.lineage) ---

    def commit_file(self, path: str, body: bytes, message: str, parent: str) -> str:
        """A commit of ``parent``'s tree with ``path`` set to ``body``, made in a temporary index: the
        workspace's index, work tree and refs are not touched (the commit is unreachable until tagged)."""
        import tempfile

        blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=self.root, input=body,
                              capture_output=True, check=True).stdout.decode().strip()
        with tempfile.TemporaryDirectory() as tmp:
            env = {**self._identity_env, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.git("read-tree", parent, env=env)
            self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            tree = self.git("write-tree", env=env).decode().strip()
        return self.git("commit-tree", tree, "-p", parent, "-m", message, env=self._identity_env).decode().strip()

    def tag(self, name: str, commit: str, metadata: dict[str, Any]) -> Version:
        """Tag ``commit`` as version ``name`` (annotated, the metadata as its JSON message; signed when a
        signing key is configured)."""
        self._tag(name, commit, metadata)
        return Version(name, commit, metadata, metadata.get("created"), precedence(name),
                       signed=self.signing.key is not None)

    def tagged_commit(self, name: str) -> str | None:
        """The commit version ``name`` tags, or None if there is no such tag."""
        out = self.git("rev-parse", "-q", "--verify", f"refs/tags/{name}^{{commit}}", check=False).strip()
        return out.decode() or None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return subprocess.run(["git", "merge-base", "--is-ancestor", ancestor, descendant], cwd=self.root,
                              capture_output=True).returncode == 0

    def fast_forward(self, commit: str) -> None:
        """Move the checked-out branch, its index and work tree forward to ``commit`` (``merge --ff-only``).
        A lock file that a killed git left behind is removed first (see :meth:`clear_stale_index_lock`)."""
        self.clear_stale_index_lock()
        self.git("merge", "--ff-only", "-q", commit)

    def branch(self) -> str:
        """The checked-out branch (``main``)."""
        out = self.git("symbolic-ref", "-q", "--short", "HEAD", check=False).strip().decode()
        if not out:
            raise GitError(f"{self.root} is not on a branch (detached HEAD)", field="git",
                           fix="check out the workspace's main branch")
        return out

    def fetch(self, remote: str) -> str | None:
        """Fetch ``remote``'s branch of the same name and its tags; returns the branch's commit there."""
        branch = self.branch()
        self.git("fetch", "-q", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}",
                 "refs/tags/*:refs/tags/*")
        out = self.git("rev-parse", "-q", "--verify", f"refs/remotes/{remote}/{branch}", check=False).strip()
        return out.decode() or None

    def push(self, remote: str, tag: str) -> None:
        """Push the branch and ``tag`` to ``remote`` together (both or neither; the branch only forward)."""
        self.git("push", "-q", "--atomic", remote, f"HEAD:refs/heads/{self.branch()}", f"refs/tags/{tag}")

    def clear_stale_index_lock(self) -> bool:
        """Remove ``index.lock`` if no live process has it open: git keeps the file open while it
        works, so a lock nobody holds was left by a git that was killed. Returns True if it removed one;
        raises if a live process holds it."""
        lock = Path(self.git("rev-parse", "--git-path", "index.lock").decode().strip())
        lock = lock if lock.is_absolute() else self.root / lock
        if not lock.exists():
            return False
        holders = _processes_holding(lock)
        if holders:
            raise GitError(f"{lock} is held by a running process (pid {', '.join(map(str, holders))})",
                           field="git", fix="let that git command finish, then retry")
        lock.unlink(missing_ok=True)
        logging.getLogger("ratchet").warning("removed %s, left by a git process that was killed", lock)
        return True

    @staticmethod
    def _metadata(name: str, bump: str, *, reason: str, kind: str, author: str, extra: dict[str, Any]) -> dict:
        return {"kind": kind, "bump": bump, "reason": reason, "author": author,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}

    def _tag(self, name: str, commit: str, metadata: dict[str, Any]) -> None:
        """Every version tag is made here, so every one is signed when a key is configured."""
        self.git(*self.signing.tag_command(), name, "-m", json.dumps(metadata, sort_keys=True), commit,
                 env=self._identity_env)


def _processes_holding(path: Path) -> list[int]:
    """The pids of live processes with ``path`` open (Linux ``/proc``; elsewhere none are known)."""
    target, found = str(path.resolve()), []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            fds = list(fd_dir.iterdir())
        except OSError:  # the process ended, or is not ours to look at
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    found.append(int(fd_dir.parent.name))
                    break
            except OSError:  # this descriptor closed meanwhile: the others still count
                continue
    return found


def _tagger_date(tagger: str | None) -> str | None:
    """``Name <email> 1700000000 +0100`` -> ISO 8601 in the tagger's offset."""
    if not tagger:
        return None
    try:
        epoch, tz = tagger.rsplit(" ", 2)[1:]
        sign = -1 if tz[0] == "-" else 1
        offset = timedelta(hours=int(tz[1:3]), minutes=int(tz[3:5])) * sign
        return datetime.fromtimestamp(int(epoch), timezone(offset)).isoformat()
    except (ValueError, IndexError):
        return None


def _parse_metadata(contents: str) -> dict[str, Any]:
    text = contents.strip()
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else {"message": text}
    except json.JSONDecodeError:
        return {"message": text}
