"""The version lineage: one linear history of versions, made in recoverable steps, one maker at a time.

Whoever makes a version (a tuner promotion, a rollback, an Architect merge) first takes its **turn**:
the store's ``versions`` lease (one process on any host; a holder that dies loses it within seconds)
and this host's repository lock. Inside the turn it finishes what an interrupted maker left (below),
then:

1. records an **intent** in the store: the version's name, its tag metadata, the commit it builds on
   and what to do to staging afterwards;
2. makes the **commit**: for a state change, the parent's tree with the new ``state/active.state.json``,
   built in a temporary index, so the workspace's index, work tree and uncommitted edits are untouched
   and a crash leaves only an unreachable object; for a merge, the Architect job's tested commit;
3. makes the **tag**, the commit point: from here on the version exists and will be finished;
4. **fast-forwards** main (index and work tree too) to it and, with ``[workspace] remote``, pushes main
   and the tag there (a turn starts by fetching it, so every host builds on the last version made);
5. moves the store's **active** document to it (document, version, commit), which runners pick up, so a
   runner never serves a state under a label that does not hold it; applies the staging changes;
6. closes the intent.

At every turn, an open intent whose tag exists is finished from step 4, and one without its tag is
closed as undone (nothing anyone could see had changed). Both say so in the log and in the intent's
note, which an Architect job's record quotes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ratchet.core.documents import ACTIVE_PATH, REMOVED, apply_changes, dumps
from ratchet.core.errors import ConflictError, GitError, UserError
from ratchet.core.versions import precedence

if TYPE_CHECKING:
    from ratchet.core.stores.coordination import Intent
    from ratchet.core.versions import Version
    from ratchet.core.workspace import Workspace

LEASE = "versions"
log = logging.getLogger("ratchet.lineage")

_process_locks: dict[str, threading.Lock] = {}  # per workspace root: this process's threads take turns
_process_locks_lock = threading.Lock()


class VersionMakerBusy(ConflictError):
    """Another process or thread holds the turn to make versions."""


class Lineage:
    """Makes the versions of one workspace: ``with Lineage(ws).turn() as turn: turn.make_...``."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.versions = workspace.versions
        self.coordination = workspace.store.coordination

    @contextmanager
    def turn(self, wait: float = 30.0) -> Iterator[Turn]:
        """Hold the right to make versions, waiting up to ``wait`` seconds for it; raises
        :class:`VersionMakerBusy` if another process or thread keeps it. Interrupted versions are
        finished or undone first."""
        with _process_locks_lock:
            lock = _process_locks.setdefault(str(self.workspace.root), threading.Lock())
        if not lock.acquire(timeout=max(wait, 0.001)):
            raise VersionMakerBusy("another thread of this process is making a version", fix="retry in a moment")
        try:
            with self.coordination.leased(LEASE, wait=wait) as lease:
                if lease is None:
                    raise VersionMakerBusy("another process is making a version (the store's versions lease)",
                                           field="versions", fix="retry in a moment")
                with self.versions.lock():
                    turn = Turn(self, lease)
                    turn.catch_up()
                    turn.finish_interrupted()
                    yield turn
        finally:
            lock.release()


class Turn:
    """The right to make versions, held (see :meth:`Lineage.turn`)."""

    def __init__(self, lineage: Lineage, lease):
        self.workspace, self.lease = lineage.workspace, lease
        self.versions, self.coordination = lineage.versions, lineage.coordination

    @property
    def remote(self) -> str | None:
        return self.workspace.config.workspace.remote

    def catch_up(self) -> None:
        """With a remote, start from what the other hosts made: fetch it and fast-forward main to it."""
        if self.remote is None:
            return
        theirs, head = self.versions.fetch(self.remote), self._head()
        if theirs is None or theirs == head or self.versions.is_ancestor(theirs, head):
            return  # nothing new there (or this host's last push is still to be retried)
        if not self.versions.is_ancestor(head, theirs):
            raise GitError(f"main ({head[:12]}) and {self.remote}'s ({theirs[:12]}) have diverged", field="git",
                           fix=f"versions are made only by Ratchet: reset main to {self.remote}'s and restart")
        self.versions.fast_forward(theirs)

    def make_state_version(self, document: dict[str, Any], *, bump: str, reason: str, author: str, kind: str,
                           extra: dict[str, Any] | None = None, allow_empty: bool = False,
                           reset_staging: bool = False) -> Version:
        """A version whose only change is the active state ``document`` (a promotion or a rollback)."""
        body = dumps(document)
        active = self.workspace.state.read("active")
        if dumps(active.document) == body and not allow_empty:
            raise UserError("staging equals active: nothing to promote",
                            fix="send feedback to the tuner first, or `ratchet state set staging FILE`")
        base = self._head()
        name = self.versions.next_version(bump)
        metadata = self._metadata(name, bump, reason=reason, kind=kind, author=author, extra=extra)
        intent = self.coordination.open_intent(kind, name, {"base": base, "metadata": metadata,
                                                            "reset_staging": reset_staging})
        message = f"{kind}: {reason}\n\nRatchet-Version: {name}\n"
        return self._commit_point(intent, lambda: self.versions.commit_file(ACTIVE_PATH, body, message, base))

    def make_merge_version(self, commit: str, *, bump: str, reason: str, author: str, kind: str,
                           extra: dict[str, Any] | None = None, staging_changes: list[tuple[str, Any]] = (),
                           on_intent=None) -> Version:
        """Tag ``commit`` (a tested Architect job, a descendant of main) and fast-forward main to it;
        ``staging_changes`` (from :func:`ratchet.core.state.state_changes`) are applied to staging.
        ``on_intent(intent)`` is called once the intent is recorded, before anything else changes."""
        base = self._head()
        if not self.versions.is_ancestor(base, commit):
            raise ConflictError(f"main moved to {base[:12]} and {commit[:12]} does not contain it",
                                field="merge", fix="bring main into the job first")
        name = self.versions.next_version(bump)
        metadata = self._metadata(name, bump, reason=reason, kind=kind, author=author, extra=extra)
        changes = [{"pointer": p, "value": None if v is REMOVED else v, "removed": v is REMOVED}
                   for p, v in staging_changes]
        intent = self.coordination.open_intent(kind, name, {"base": base, "metadata": metadata,
                                                            "commit": commit, "staging_changes": changes})
        if on_intent is not None:
            on_intent(intent)
        return self._commit_point(intent, lambda: commit)

    def _metadata(self, name: str, bump: str, *, extra: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
        """The tag's metadata, with the plugin distributions this workspace loads: the code that made the
        version beside its files."""
        extra = {"plugin_distributions": self.workspace.plugins.distributions(), **(extra or {})}
        return self.versions._metadata(name, bump, extra=extra, **fields)

    def _commit_point(self, intent: Intent, make_commit) -> Version:
        name, metadata = intent.version, intent.payload["metadata"]
        try:
            commit = make_commit()
            if not self.lease.held():  # fenced: a maker that stalled past its lease must not tag
                raise ConflictError("this process lost the versions lease while making a version",
                                    fix="retry: the next turn starts from the current main")
            version = self.versions.tag(name, commit, metadata)
        except BaseException as exc:
            self.coordination.close_intent(intent.id, "undone", f"failed before its tag: {exc}")
            raise
        self._finish(intent, commit)  # if this fails, the intent stays open and the next turn finishes it
        self.coordination.close_intent(intent.id, "done")
        self.workspace.versioned(version)
        return version

    def _finish(self, intent: Intent, commit: str) -> None:
        """Steps 4-5 for a tagged version; each is idempotent, so a crash anywhere can run them again."""
        versions, state = self.versions, self.workspace.state
        head = self._head()
        if head != commit and not versions.is_ancestor(commit, head):
            if not versions.is_ancestor(head, commit):
                raise GitError(f"{intent.version} ({commit[:12]}) cannot be fast-forwarded from main "
                               f"({head[:12]}): main moved while the version was made", field="git",
                               fix=f"merge {intent.version} into main by hand, then restart")
            versions.fast_forward(commit)
        if self.remote is not None:  # the record the other hosts fetch, before any of them is told
            versions.push(self.remote, intent.version)
        body = versions.read_file(intent.version, ACTIVE_PATH)
        active = state.read("active")
        if active.version != intent.version and not _newer(active.version, intent.version):
            self.coordination.swap("active", body, None, version=intent.version, commit=commit)
        payload = intent.payload
        if payload.get("reset_staging"):
            state.write("staging", json.loads(body), None)
        if payload.get("staging_changes"):  # the next promotion starts from staging: it must carry them
            changes = [(c["pointer"], REMOVED if c["removed"] else c["value"]) for c in payload["staging_changes"]]
            state.update("staging", lambda doc: apply_changes(doc, changes))

    def finish_interrupted(self) -> None:
        """Finish or undo every intent a crashed maker left open (and log which)."""
        for intent in self.coordination.open_intents():
            commit = self.versions.tagged_commit(intent.version)
            if commit is None:
                note = "interrupted before its tag: main, the tags and the active state were not changed"
                self.coordination.close_intent(intent.id, "undone", note)
            else:
                self._finish(intent, commit)
                note = "interrupted after its tag: finished at the next start"
                self.coordination.close_intent(intent.id, "done", note)
                self.workspace.versioned(self.versions.get(intent.version))
            log.warning("%s %s: %s", intent.kind, intent.version, note)

    def _head(self) -> str:
        head = self.versions.head()
        if head is None:
            raise GitError(f"{self.workspace.root} has no commit yet", field="workspace",
                           fix="make the workspace with `ratchet init`")
        return head


def _newer(current: str | None, candidate: str) -> bool:
    """Whether version ``current`` is already past ``candidate`` (the store moved on: do not go back)."""
    return current is not None and (precedence(current) or ()) > (precedence(candidate) or ())
