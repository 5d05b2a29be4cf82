"""The Architect: turns free-text feedback or a Triggerer wake-up into a tested, merged, tagged version.

A job (``architect/jobs.py``) runs in its own git worktree and branch (``architect/worktree.py``):

1. **plan**: the selected planner (``architect/planners.py``) turns the request into a :class:`Plan`;
2. **apply**: each action (``architect/plans.py``) is applied to the worktree, then committed on the branch;
3. **test**: micro → fast → full, each in a fresh ``ratchet test`` process against ``ci/budgets.json``,
   stopping at the first tier that fails or misses its budget;
4. **bump**: from what changed (active state only → patch; anything more → minor) and from the runner's
   and tuner's tool schemas at the base and at the job's commit (a breaking change → major);
5. **approve**: ``[architect] approval`` holds jobs in ``needs_approval``: by default (``agents``) major
   changes, and changes beyond the active state that an agent wrote (an external agent, or a planner
   other than the workspace's playbook);
6. **merge and tag**: in the turn to make versions (:mod:`ratchet.core.lineage`: the store's lease, so
   no tuner promotion on any host interleaves), main is merged into the branch if it moved (tuner
   promotions that landed meanwhile are kept: the job's state changes are re-applied on top of main's
   active state, and the micro tier runs again), then the branch is tagged, main fast-forwarded to it
   and the store's active state moved; staging gets the job's state changes too, so the next promotion
   keeps them. The job records the merge's intent first: an architect killed during the merge finds
   at its next start whether the tag was made, and the job says so (succeeded, or failed with main
   and the tags unchanged).

Every failure before the tag leaves main, the tags and active exactly as they were; the job
records why (``error``: detail, field, fix, step). The time limit (``[architect] job_timeout_seconds``)
covers planning (each model call included: the planner stops waiting at the limit), applying and
testing; its clock starts when the job starts running, not when it was queued, and restarts at
approval; a job waiting for approval does not expire.

An external agent drives the same steps over REST: open a job (``source = "agent"``), then apply
actions, read files and run tiers in its worktree (:meth:`Architect.session`), then release it.

Every step is logged in the job with who took it (``by``: a request's token id, ``anonymous``, or
``architect``). New jobs are admitted within ``[limits]`` (:mod:`ratchet.architect.limits`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ratchet.architect import limits
from ratchet.architect.jobs import ARCHITECT, Job, JobError, JobStore, new_job
from ratchet.architect.plans import (
    TIERS,
    Action,
    EditConfig,
    Plan,
    apply_action,
    bump_for,
    describe,
    inside_workspace,
    parse_action,
)
from ratchet.architect.transcript import TranscriptEntry, clip
from ratchet.architect.worktree import JobWorktree
from ratchet.core import telemetry
from ratchet.core.documents import ACTIVE_PATH, apply_changes, state_changes
from ratchet.core.errors import (
    ConflictError,
    NotFoundError,
    RatchetError,
    TestsFailedError,
    TimeLimitError,
    UserError,
)
from ratchet.tiers.harness import TierResult, ensure_ok, write_summary

if TYPE_CHECKING:
    from ratchet.architect.planners import Planner
    from ratchet.core.workspace import Workspace

log = logging.getLogger("ratchet.architect")

AUTHOR_KIND = "architect"
PLAYBOOK = "playbook"  # the workspace's own planner: its rules are committed and reviewed with the workspace
# A job interrupted in one of these states (the Architect stopped) cannot be resumed safely.
_IN_FLIGHT = ("planning", "testing")


class Architect:
    """The Architect service over one workspace. ``start()`` runs queued jobs on a pool of worker threads
    (``[architect] max_parallel_jobs``), so that a job waiting on a model that does not answer holds up no
    other; merges still take turns (:mod:`ratchet.core.lineage`)."""

    def __init__(self, workspace: Workspace, *, planner: str | None = None):
        self.workspace = workspace
        self.config = workspace.config.architect
        self.planner_name = planner or self.config.planner
        self.jobs = JobStore(workspace.store)
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._job_locks: dict[str, threading.RLock] = {}  # re-entrant: a step may look the job up again
        self._locks_guard = threading.Lock()
        self._admission = threading.Lock()  # counting open jobs and adding one is one step
        self._threads: list[threading.Thread] = []
        self._library = None

    # --- lifecycle ---

    def start(self) -> None:
        """Recover jobs a previous process left unfinished, prune what old finished jobs left, then start
        the worker threads."""
        self.recover()
        self.prune()
        self._threads = [threading.Thread(target=self._work, name=f"ratchet-architect-{i}", daemon=True)
                         for i in range(self.config.max_parallel_jobs)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers once their jobs end (a job still running past ``timeout`` is left to its limit)."""
        for _ in self._threads:
            self._queue.put(None)
        ends = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(ends - time.monotonic(), 0))
        self._threads = []

    def check(self) -> None:
        """Check the planner's configuration without running it (the LLM planner: its provider's package
        and key, without calling the model); a ``ConfigError`` names the field and the fix."""
        from ratchet.architect.planners import select_planner

        planner = select_planner(self.workspace, self.planner_name)
        check = getattr(planner, "check", None)
        if callable(check):
            check()

    def recover(self) -> None:
        """Queued jobs run again; a job cut off while planning or testing fails (its worktree is
        dropped; main was never touched); agent jobs and jobs awaiting approval carry on. The latest
        Triggerer wake-up that reached no Architect (it is kept as an event) becomes a job."""
        from ratchet.ops.triggerer import WAKE_EVENT

        jobs = self.jobs.list()
        woken = {j.request.get("report", {}).get("at") for j in jobs if j.source == "wake"}
        last_wake = self.workspace.store.last_event(WAKE_EVENT)
        if last_wake and last_wake["payload"].get("at") not in woken:  # owed, so not refused by the limits
            self._submit("wake", {"report": last_wake["payload"]}, by=ARCHITECT, admit=False)
        interrupted = [j for j in jobs if j.state in _IN_FLIGHT or (j.state == "applying" and j.source != "agent")]
        if any(j.intent for j in interrupted):  # a merge was cut off: finish or undo it first
            from ratchet.core.lineage import Lineage

            with Lineage(self.workspace).turn(wait=60):
                pass
        for job in jobs:
            if job.state == "queued":
                self._queue.put((job.id, "run"))
            elif job in interrupted:
                self._recover_interrupted(job)

    def _recover_interrupted(self, job: Job) -> None:
        """A job the architect was running when it stopped: what its record says must be true."""
        intent = self.workspace.store.coordination.intent(job.intent) if job.intent else None
        if intent is not None and intent.state == "done":
            commit = self.workspace.versions.tagged_commit(intent.version)
            self._succeeded(job, intent.version, commit, note=f"the architect stopped during the merge; {intent.note}")
            self._worktree(job).remove()
            return
        why = intent.note if intent is not None else "main and the tags are unchanged"
        self._fail(job, RatchetError(f"the architect stopped while the job was {job.state}: {why}",
                                     fix="submit the request again"), step=job.state)

    @property
    def library(self):
        """The template library (installed template libraries; loaded once)."""
        if self._library is None:
            from ratchet.core import templates

            self._library = templates.discover(self.workspace.plugins)
        return self._library

    # --- submitting ---
    # ``by`` names who asked (a token id, or anonymous); the job's log records it with each step.

    def submit_feedback(self, text: str, *, version: str | None = None, conversation_id: str | None = None,
                        by: str = ARCHITECT) -> Job:
        request = {"text": text, "version": version, "conversation_id": conversation_id}
        return self._submit("feedback", {k: v for k, v in request.items() if v is not None}, by=by)

    def submit_wake(self, report: dict[str, Any], *, by: str = ARCHITECT) -> Job:
        return self._submit("wake", {"report": report}, by=by)

    def _submit(self, source: str, request: dict[str, Any], *, by: str, admit: bool = True) -> Job:
        from opentelemetry import propagate

        with self._admitted() if admit else contextlib.nullcontext():
            job = new_job(source, request, self.config.job_timeout_seconds, by=by)  # type: ignore[arg-type]
            propagate.inject(job.trace)  # the job's spans continue the caller's trace
            self.jobs.save(job)
        self.workspace.emit("job.queued", {"job": job.id, "source": source})
        self._queue.put((job.id, "run"))
        return job

    def open_job(self, title: str, *, by: str = ARCHITECT) -> Job:
        """A job an external agent drives step by step: its worktree is ready when this returns."""
        with self._admitted():
            job = new_job("agent", {"title": title}, self.config.job_timeout_seconds, state="applying", by=by)
            wt = self._worktree(job)
            job.base = self.workspace.versions.head()
            wt.create(job.base)
            job.branch = wt.branch
            job.note("worktree", f"branch {wt.branch} from {job.base[:12]}", by=by)
            self.jobs.save(job)
        self.workspace.emit("job.opened", {"job": job.id})
        return job

    @contextlib.contextmanager
    def _admitted(self) -> Iterator[None]:
        """Room for one more job within [limits], or a TooManyError (429); held while the job is added."""
        with self._admission:
            self.prune(locked=True)
            # listed through get/list, so that an agent job past its time limit no longer counts
            limits.check_capacity(self.workspace, [j for state in limits.OPEN_STATES for j in self.list(state) if not j.final])
            yield

    def prune(self, *, locked: bool = False) -> list[str]:
        """Remove what jobs that finished over ``[limits] prune_after_days`` ago left (worktree, branch)."""
        with contextlib.nullcontext() if locked else self._admission:
            # a folder without a record may be a job being opened: spare it for a job's time limit at least
            return limits.prune(self.workspace, self.jobs, orphan_age=self.config.job_timeout_seconds)

    # --- reading ---

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        return self._expire_if_due(job)

    def list(self, state: str | None = None) -> list[Job]:
        return [self._expire_if_due(j) for j in self.jobs.list(state)]

    def _expire_if_due(self, job: Job) -> Job:
        """An agent job past its time limit fails when next looked at (nothing else is running it)."""
        if job.source == "agent" and job.state == "applying" and time.time() > job.deadline:
            with self._job_lock(job.id):
                job = self.jobs.get(job.id)
                if job.state == "applying" and time.time() > job.deadline:
                    self._fail(job, self._time_limit("applying"), step="applying")
        return job

    # --- the agent's steps ---

    @contextlib.contextmanager
    def session(self, job_id: str, *, by: str = ARCHITECT) -> Iterator[JobSession]:
        """The steps an agent may take on its open job, one request at a time per job."""
        with self._job_lock(job_id):
            job = self.get(job_id)
            if job.source != "agent" or job.state != "applying":
                raise ConflictError(f"job {job_id} is a {job.source} job in state {job.state}, not open for "
                                    "an agent's changes", field="job_id", fix="open a job with POST /jobs")
            yield JobSession(self, job, by=by)

    def release(self, job_id: str, *, by: str = ARCHITECT) -> Job:
        """Finish an agent's job: commit, test, bump, merge and tag (in the worker; poll the job)."""
        with self._job_lock(job_id):
            job = self.get(job_id)
            if job.source != "agent" or job.state != "applying":
                raise ConflictError(f"job {job_id} is a {job.source} job in state {job.state}; only an open "
                                    "agent job can be released", field="job_id",
                                    fix="open one with POST /jobs, or follow this one with GET /jobs/{id}")
            if not job.actions:
                raise ConflictError(f"job {job_id} has no changes to release", field="actions",
                                    fix="apply an action first, or abandon the job with DELETE /jobs/{id}")
            job.state = "testing"
            job.note("release", "released by the agent", by=by)
            self.jobs.save(job)
        self._queue.put((job_id, "finish"))
        return job

    def approve(self, job_id: str, *, by: str = ARCHITECT) -> Job:
        with self._job_lock(job_id):
            job = self.get(job_id)
            if job.state != "needs_approval":
                raise ConflictError(f"job {job_id} is {job.state}, not waiting for approval", field="job_id",
                                    fix="only a job in needs_approval can be approved")
            job.state = "testing"
            job.deadline = time.time() + self.config.job_timeout_seconds  # the clock restarts for the merge
            job.note("approve", "approved", by=by)
            self.jobs.save(job)
        self._queue.put((job_id, "merge"))
        return job

    def abandon(self, job_id: str, *, by: str = ARCHITECT) -> Job:
        with self._job_lock(job_id):
            job = self.get(job_id)
            if job.state not in ("applying", "needs_approval") or (job.state == "applying" and job.source != "agent"):
                raise ConflictError(f"job {job_id} is {job.state} and cannot be abandoned now", field="job_id",
                                    fix="abandon an open agent job, or one waiting for approval")
            self._fail(job, UserError("abandoned: nothing was merged", fix="open a new job to try again"),
                       step="abandon", by=by)
            return job

    # --- the worker ---

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._sweep()
                continue
            if item is None:
                return
            job_id, what = item
            try:
                with self._job_lock(job_id):
                    job = self.jobs.get(job_id)
                    if job.final:
                        continue
                    self.process(job, what)
            except Exception:  # noqa: BLE001 -- the worker must outlive any one job
                log.exception("architect job %s crashed", job_id)

    def _sweep(self) -> None:
        for job in self.jobs.list("applying"):
            self._expire_if_due(job)

    def process(self, job: Job, what: str = "run") -> Job:
        """Run ``job`` from where ``what`` says (run: plan first; finish: test and merge; merge: merge)."""
        from opentelemetry import context, propagate

        token = context.attach(propagate.extract(job.trace))
        try:
            return self._process(job, what)
        finally:
            context.detach(token)

    def _process(self, job: Job, what: str) -> Job:
        with telemetry.span("ratchet.architect.job", **{"ratchet.job": job.id, "ratchet.job.source": job.source,
                                                        "ratchet.job.step": what}):
            try:
                if what == "run":
                    self._plan_and_apply(job)
                if what in ("run", "finish"):
                    self._test(job)
                    if self._needs_approval(job):
                        job.state = "needs_approval"
                        job.note("approval", f"a {job.bump} change waits for POST /jobs/{job.id}/approve")
                        self.jobs.save(job)
                        self.workspace.emit("job.needs_approval", {"job": job.id, "bump": job.bump})
                        return job
                self._merge(job)
            except RatchetError as exc:
                self._fail(job, exc, step=job.log[-1].step if job.log else None)
            except subprocess.TimeoutExpired:
                self._fail(job, self._time_limit(job.state), step=job.state)
            except Exception as exc:  # noqa: BLE001 -- a bug or a broken plugin: record it, keep main intact
                log.exception("job %s failed unexpectedly", job.id)
                self._fail(job, RatchetError(f"{type(exc).__name__}: {exc}",
                                             fix="see the architect's log; main and the tags are unchanged"),
                           step=job.log[-1].step if job.log else None)
        return job

    def _set(self, job: Job, state: str, step: str, message: str) -> None:
        self._check_deadline(job, state)
        job.state = state  # type: ignore[assignment]
        job.note(step, message)
        self.jobs.save(job)

    def _plan_and_apply(self, job: Job) -> None:
        from ratchet.architect.planners import PlanRequest, select_planner

        wt = self._worktree(job)
        # the clock starts now: time spent queued behind other jobs is not the job's
        job.deadline = time.time() + self.config.job_timeout_seconds
        job.base = self.workspace.versions.head()
        wt.create(job.base)
        job.branch = wt.branch
        planner: Planner = select_planner(self.workspace, self.planner_name)
        job.planner = planner.name
        job.model = getattr(planner, "model_name", None)  # a planner that plans with a chat model names it
        self._set(job, "planning", "plan", f"planner {planner.name} on branch {wt.branch} from {job.base[:12]}")
        request = PlanRequest(source=job.source, **job.request)
        session = JobSession(self, job)
        with telemetry.span("ratchet.architect.plan", **{"ratchet.job": job.id, "ratchet.planner": planner.name}):
            plan = planner.plan(request, session)
        if not isinstance(plan, Plan):
            raise UserError(f"planner {planner.name!r} returned {type(plan).__name__}, not a Plan",
                            field="planner", fix="return ratchet.architect.plans.Plan from plan()")
        job.plan = plan
        self._set(job, "applying", "plan", plan.summary)
        for action in plan.actions:
            session.apply(action)
        if not job.actions:
            raise UserError(f"the planner found nothing to change: {plan.summary}", field="text",
                            fix="rephrase the request, or add a rule to the workspace's architect playbook")

    def _test(self, job: Job) -> None:
        wt = self._worktree(job)
        self._set(job, "testing", "commit", f"{len(job.actions)} action(s)")
        commit = wt.commit(self._commit_message(job))
        job.commit = wt.head()
        job.changed = wt.changed(job.base)
        if not job.changed:
            raise UserError("the job's actions changed nothing", field="actions",
                            fix="the requested change is already in place")
        job.note("commit", f"{job.commit[:12]}: {', '.join(job.changed)}" if commit else "nothing new to commit")
        self.jobs.save(job)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ratchet-schemas") as pool:
            # the tool schemas at the job's commit (a process of their own) are listed while the tiers run
            schemas = pool.submit(self._schemas, job) if self._code_changed(job) else None
            results = self._run_tiers(job, wt, list(TIERS))
            job.tiers = [r.to_dict() for r in results]
            self.jobs.save(job)
            ensure_ok(results)  # (a failure waits for the listing to end: no process is left behind)
            job.bump, job.schema_diff = self._bump(job, schemas.result() if schemas else None)
        job.note("bump", f"{job.bump}: " + ("breaking tool-schema change" if job.bump == "major" else
                                             "state only" if job.bump == "patch" else "code, tests or config"))
        self.jobs.save(job)

    def _needs_approval(self, job: Job) -> bool:
        gate = self.config.approval
        if gate == "all" or (gate != "none" and job.bump == "major"):
            return True
        # code, tests or config an agent wrote; the playbook's actions are the workspace's own, reviewed rules
        agent_wrote = job.source == "agent" or job.planner != PLAYBOOK
        return gate == "agents" and job.bump != "patch" and agent_wrote

    def _run_tiers(self, job: Job, wt: JobWorktree, tiers: list[str], *, by: str = ARCHITECT) -> list[TierResult]:
        """Run ``tiers`` in order in a fresh ``ratchet test`` process (the job's code never runs in the
        Architect), stopping at the first that fails or misses its budget."""
        remaining = self._check_deadline(job, "testing")
        argv = [sys.executable, "-m", "ratchet", "test", *(f"--tier={t}" for t in tiers), "--fail-fast", "--json",
                "--no-summary", "-w", str(wt.path)]
        with telemetry.span("ratchet.architect.tiers", **{"ratchet.job": job.id, "ratchet.tiers": ",".join(tiers)}):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=remaining)
        try:
            results = [TierResult.model_validate(r) for r in json.loads(proc.stdout)["tiers"]]
        except (ValueError, KeyError, TypeError):
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            job.note("tiers", f"{', '.join(tiers)}: could not run", ok=False, by=by)
            raise TestsFailedError(f"the tiers could not run on the job's worktree:\n{tail}",
                                   field=f"tiers.{tiers[0]}", fix="fix the error above in the planned change") from None
        for result in results:
            job.note("tiers", f"{result.tier}: {result.passed}/{result.total} passed, "
                              + ("within budget" if result.ok else "; ".join(result.violations) or "failed"),
                     ok=result.ok, by=by)
        return results

    @staticmethod
    def _code_changed(job: Job) -> bool:
        return any(p != ACTIVE_PATH for p in job.changed)  # state alone cannot change a tool's schema

    def _schemas(self, job: Job) -> tuple[dict[str, Any], dict[str, Any]]:
        """The runner's and tuner's tool schemas at the job's base and at its commit."""
        from ratchet.architect.toolschemas import tool_schemas_at

        return tool_schemas_at(self.workspace, job.base), tool_schemas_at(self.workspace, job.commit)

    def _bump(self, job: Job, schemas: tuple[dict[str, Any], dict[str, Any]] | None = None
              ) -> tuple[str, dict[str, Any] | None]:
        from ratchet.architect.toolschemas import schema_diff

        diff = None
        if self._code_changed(job):
            diff = schema_diff(*(schemas or self._schemas(job)))
        return bump_for(job.changed, bool(diff and diff["breaking"])), diff

    def _merge(self, job: Job) -> None:
        """Bring main's new commits into the branch, then tag it and fast-forward main to it, and carry the
        job's state changes into staging, as one recoverable step (:mod:`ratchet.core.lineage`)."""
        from ratchet.core.lineage import Lineage

        ws, wt = self.workspace, self._worktree(job)
        base_state = json.loads(ws.versions.git("show", f"{job.base}:{ACTIVE_PATH}"))
        job_state = json.loads((wt.path / ACTIVE_PATH).read_text())
        changes = state_changes(base_state, job_state)
        # the turn keeps tuner promotions out until the tag: main cannot move under the merge
        with Lineage(ws).turn(wait=self._check_deadline(job, "merging")) as turn:
            main = ws.versions.head()
            extra_results: list[TierResult] = []
            if main != job.base:
                self._bring_in_main(job, wt, main, changes)
                extra_results = self._run_tiers(job, wt, ["micro"])
                ensure_ok(extra_results)

            def begun(intent) -> None:  # the job's record names the merge before its commit point
                job.intent = intent.id
                job.note("merge", f"tagging {intent.version} and moving main to it")
                self.jobs.save(job)

            version = turn.make_merge_version(
                wt.head(), bump=job.bump or "minor", on_intent=begun,
                reason=job.plan.summary if job.plan else job.request.get("title", "agent job"),
                kind=AUTHOR_KIND, author=job.planner or "agent", staging_changes=changes,
                extra={"job": job.id, "source": job.source, "request": _short_request(job),
                       "actions": [a.kind for a in job.actions], "changed": job.changed,
                       "tiers": {r["tier"]: r["ok"] for r in job.tiers},
                       "breaking": bool(job.schema_diff and job.schema_diff["breaking"]),
                       **({"model": job.model} if job.model else {})})
        job.tiers = job.tiers + [r.to_dict() | {"after_merge": True} for r in extra_results]
        self._succeeded(job, version.name, version.commit)
        wt.remove()

    def _succeeded(self, job: Job, version: str, commit: str, note: str | None = None) -> None:
        ws = self.workspace
        job.version, job.commit = version, commit
        all_results = [_tier_result(r) for r in job.tiers]
        write_summary(ws, list({r.tier: r for r in all_results}.values()), commit=commit)
        job.state = "succeeded"
        job.note("tag", f"{version} at {commit[:12]}" + (f" ({note})" if note else ""))
        self.jobs.save(job)
        ws.emit("job.succeeded", {"job": job.id, "version": version, "bump": job.bump})
        self._reload_config()

    def _bring_in_main(self, job: Job, wt: JobWorktree, main: str, changes) -> None:
        """Merge main into the branch. The active state is recomputed as main's plus the job's changes,
        so tuner promotions made while the job ran are kept whether or not git saw a conflict."""
        from ratchet.core.documents import dumps

        conflicts = wt.merge(main, f"Merge main into architect job {job.id}")
        others = [p for p in conflicts if p != ACTIVE_PATH]
        if others:
            wt.abort_merge()
            raise ConflictError(f"main changed {', '.join(others)} while the job ran", field="merge",
                                fix="submit the request again: the new job starts from the new main")
        main_state = json.loads(self.workspace.versions.git("show", f"{main}:{ACTIVE_PATH}"))
        merged = apply_changes(main_state, changes)
        self.workspace.state.validate(merged, "state after merging main")
        (wt.path / ACTIVE_PATH).write_bytes(dumps(merged))
        wt.git("add", ACTIVE_PATH)
        if conflicts:
            wt.git("commit", "-q", "--no-verify", "--no-edit")
        else:
            wt.commit(f"Architect job {job.id}: re-apply its state change on main's state")
        job.note("merge", f"brought in main {main[:12]}" + (" (state conflict resolved)" if conflicts else ""))

    def _reload_config(self) -> None:
        """A merged job may have changed ratchet.toml, the workspace's plugins or the state schema: read
        them again (the plugins load on next use)."""
        from ratchet.core.workspace import CONFIG_NAME, load_config

        ws = self.workspace
        ws.config = load_config(ws.root / CONFIG_NAME)
        for cached in ("plugins", "state"):
            ws.__dict__.pop(cached, None)
        self.config = ws.config.architect

    # --- helpers ---

    def _fail(self, job: Job, exc: RatchetError, *, step: str | None, by: str = ARCHITECT) -> None:
        job.state = "failed"
        job.error = JobError(detail=exc.message, field=exc.field, fix=exc.fix, step=step)
        job.note("failed", exc.message.splitlines()[0], ok=False, by=by)
        self.jobs.save(job)
        self.workspace.emit("job.failed", {"job": job.id, "step": step, "detail": exc.message})
        # The branch is kept for inspection (`git log ratchet/job-<id>`); main and the tags are untouched.
        self._worktree(job).remove(keep_branch=True)

    def _check_deadline(self, job: Job, during: str) -> float:
        remaining = job.deadline - time.time()
        if remaining <= 0:
            raise self._time_limit(during)
        return remaining

    def _time_limit(self, during: str) -> TimeLimitError:
        return TimeLimitError(f"the job ran past its time limit of {self.config.job_timeout_seconds:g} s "
                              f"while {during}", field="architect.job_timeout_seconds",
                              fix="raise [architect] job_timeout_seconds, or make the change smaller")

    def _worktree(self, job: Job) -> JobWorktree:
        return JobWorktree(self.workspace, job.id)

    def _job_lock(self, job_id: str) -> threading.RLock:
        with self._locks_guard:
            return self._job_locks.setdefault(job_id, threading.RLock())

    @staticmethod
    def _commit_message(job: Job) -> str:
        title = job.plan.summary if job.plan else job.request.get("title", "agent job")
        return f"architect: {title}\n\nRatchet-Job: {job.id}\n"


def _short_request(job: Job) -> dict[str, Any]:
    if job.source == "wake":
        return {"breaches": [b.get("kpi") for b in job.request.get("report", {}).get("breaches", [])]}
    return {k: (v[:500] if isinstance(v, str) else v) for k, v in job.request.items()}


def _tier_result(data: dict[str, Any]) -> TierResult:
    return TierResult.model_validate({k: v for k, v in data.items() if k in TierResult.model_fields})


class JobSession:
    """One job's workbench: the steps the REST step endpoints, the LLM planner's tools and the
    playbook's actions all go through. Every applied action is recorded in the job.

    Steps run one at a time: a chat model sends several tool calls in one turn and the agent runs them
    on threads, while each step reads, changes and rewrites files of the worktree and the job's record."""

    def __init__(self, architect: Architect, job: Job, *, by: str = ARCHITECT):
        self.architect = architect
        self.job = job
        self.by = by
        self.worktree = architect._worktree(job)
        self._workspace: Workspace | None = None
        self._one_step = threading.Lock()

    @property
    def workspace(self) -> Workspace:
        if self._workspace is None:
            self._workspace = self.worktree.open()
        return self._workspace

    def templates(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in sorted(self.architect.library.values(), key=lambda t: t.name)]

    def template(self, name: str) -> dict[str, Any]:
        from ratchet.core import templates

        t = templates.get(self.architect.library, name)
        return {**t.to_dict(), "readme": t.readme}

    def brief(self, limit: int | None = None) -> str:
        """What a planner is told about the workspace before it plans (:mod:`ratchet.architect.brief`)."""
        from ratchet.architect.brief import BRIEF_CHARS, workspace_brief

        return workspace_brief(self.worktree.path, self.architect.workspace, self.job.base or "HEAD",
                               limit=limit or BRIEF_CHARS)

    def files(self) -> list[str]:
        with self._one_step:
            out = self.worktree.git("ls-files", "--cached", "--others", "--exclude-standard")
        return sorted(p for p in out.splitlines() if p)

    def read_file(self, path: str) -> str:
        file = inside_workspace(self.worktree.path, path, "path")
        with self._one_step:
            if not file.is_file():
                raise NotFoundError(f"{path} does not exist in the job's worktree", field="path",
                                    fix="list the files with GET /jobs/{id}/files")
            return file.read_text(encoding="utf-8", errors="replace")

    def apply(self, action: Action | dict[str, Any]) -> list[str]:
        if isinstance(action, dict):
            action = parse_action(action)
        with self._one_step:
            self.architect._check_deadline(self.job, "applying")
            # the limit is the Architect's: the worktree's ratchet.toml is the job's to change
            file_bytes = self.architect.workspace.config.limits.file_bytes
            with telemetry.span("ratchet.architect.apply", **{"ratchet.job": self.job.id,
                                                              "ratchet.action": action.kind}):
                files = apply_action(self.workspace, action, library=self.architect.library, file_bytes=file_bytes)
            if isinstance(action, EditConfig):
                self._workspace = None  # the next step reads the new ratchet.toml
            self.job.actions.append(action)
            self.job.note("apply", f"{describe(action)}: {', '.join(files)}", by=self.by)
            self.architect.jobs.save(self.job)
        return files

    def time_left(self, during: str = "planning") -> float:
        """Seconds left before the job's time limit; a :class:`TimeLimitError` once there are none."""
        return self.architect._check_deadline(self.job, during)

    def out_of_time(self, during: str) -> TimeLimitError:
        """The error that ends the job at its time limit, saying where it stopped (``during``)."""
        return self.architect._time_limit(during)

    def record(self, kind: str, **fields: Any) -> None:
        """Add an entry to the job's transcript: a planner's call to its model (``kind="model"``), a tool
        call the model made (``"tool"``) or one it sent malformed (``"invalid_call"``); see
        :class:`~ratchet.architect.transcript.TranscriptEntry` for the fields. Long texts are cut."""
        entry = TranscriptEntry(at=time.time(), kind=kind, **{k: clip(v) for k, v in fields.items()})
        with self._one_step:
            self.job.transcript.append(entry)
            self.job.updated = entry.at
            self.architect.jobs.save(self.job)
        log.log(logging.INFO if entry.ok else logging.WARNING, "job %s %s", self.job.id, entry.summary())

    def run_tiers(self, tiers: list[str]) -> list[dict[str, Any]]:
        """Run tiers on the worktree as it is now (uncommitted changes included)."""
        unknown = [t for t in tiers if t not in TIERS]
        if unknown or not tiers:
            raise UserError(f"unknown tier(s) {unknown}" if unknown else "no tiers given", field="tiers",
                            fix=f"choose from {', '.join(TIERS)}")
        with self._one_step:
            results = self.architect._run_tiers(self.job, self.worktree, tiers, by=self.by)
            self.job.tiers = [r.to_dict() for r in results]
            self.architect.jobs.save(self.job)
            return self.job.tiers
