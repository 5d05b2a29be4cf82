"""A job's own git worktree and branch, so that an Architect job never touches main until it merges.

The worktree lives under ``.ratchet/jobs/<id>/worktree`` (git-ignored) on branch ``ratchet/job-<id>``,
started from main's head. It shares the repository's objects, so its commits can be merged into main
by a fast-forward once they contain main (see ``Architect._merge``).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from typing import TYPE_CHECKING

from ratchet.core.errors import GitError

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

BRANCH_PREFIX = "ratchet/job-"
# Jobs run in parallel ([architect] max_parallel_jobs), and adding or removing a worktree or a branch
# writes the repository's shared files (.git/worktrees, refs, packed-refs) under git's own lock files,
# which a second git fails on instead of waiting: one such change at a time in this process.
_repository = threading.Lock()


class JobWorktree:
    def __init__(self, workspace: Workspace, job_id: str):
        self.workspace = workspace
        self.job_id = job_id
        self.branch = f"{BRANCH_PREFIX}{job_id}"
        self.path = workspace.runtime_dir / "jobs" / job_id / "worktree"

    # --- git in the worktree ---

    def git(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["git", *args], cwd=self.path, capture_output=True, text=True,
                              env=self._env())
        if check and proc.returncode != 0:
            raise GitError(f"git {args[0]} failed in the job's worktree: "
                           f"{(proc.stderr or proc.stdout).strip()}", field="worktree")
        return proc.stdout.strip()

    def _env(self) -> dict[str, str]:
        import os

        return {**os.environ, **self.workspace.versions._identity_env}

    def create(self, base: str) -> None:
        """Check out ``base`` on a new branch in a fresh worktree (a leftover of an earlier run is removed)."""
        self.remove()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _repository:
            self.workspace.versions.git("worktree", "add", "-q", "-b", self.branch, str(self.path), base)

    def open(self) -> Workspace:
        from ratchet.core.workspace import Workspace

        return Workspace.open(self.path, search_parents=False)

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def commit(self, message: str) -> str | None:
        """Commit everything in the worktree; the new commit, or None if nothing changed."""
        self.git("add", "-A")
        if subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=self.path).returncode == 0:
            return None
        self.git("commit", "-q", "--no-verify", "-m", message)
        return self.head()

    def changed(self, base: str) -> list[str]:
        """Paths that differ between ``base`` and the worktree's head."""
        out = self.git("diff", "--name-only", base, "HEAD")
        return sorted(p for p in out.splitlines() if p)

    def merge(self, commit: str, message: str) -> list[str]:
        """Merge ``commit`` (main's head) into the job branch. Returns the conflicting paths; with
        conflicts the merge is left in progress for the caller to resolve or abort."""
        proc = subprocess.run(["git", "merge", "--no-ff", "--no-edit", "-m", message, commit], cwd=self.path,
                              capture_output=True, text=True, env=self._env())
        if proc.returncode == 0:
            return []
        conflicts = self.git("diff", "--name-only", "--diff-filter=U").splitlines()
        if not conflicts:
            raise GitError(f"git merge failed in the job's worktree: {(proc.stderr or proc.stdout).strip()}",
                           field="worktree")
        return conflicts

    def abort_merge(self) -> None:
        self.git("merge", "--abort", check=False)

    def remove(self, *, keep_branch: bool = False) -> None:
        """Remove the worktree and, unless ``keep_branch`` (a failed job's, for inspection), its branch;
        nothing on main refers to either."""
        versions = self.workspace.versions
        with _repository:
            if self.path.exists():
                versions.git("worktree", "remove", "--force", str(self.path), check=False)
                shutil.rmtree(self.path, ignore_errors=True)
            versions.git("worktree", "prune", check=False)
            if not keep_branch:
                versions.git("branch", "-D", self.branch, check=False)
