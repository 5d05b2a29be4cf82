"""What each dashboard page shows, as plain data: the routes render it, the tests read it.

Everything here reads: the catalog (versions, diffs, evals), the store (series, jobs, conversations) and
``ci/budgets.json``. The actions live in :mod:`ratchet.versions.dashboard.routes`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ratchet.core.errors import NotFoundError, RatchetError, UserError
from ratchet.core.versions import precedence
from ratchet.versions.dashboard import rollup, series

if TYPE_CHECKING:
    from ratchet.core.versions import Version
    from ratchet.versions.catalog import Catalog

BUCKETS = 120  # points per chart: enough to see a trend, few enough to send every poll
MARKERS = 2000  # version markers sent at most (the newest in range); the answer says how many there were


def epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Markers:
    """Every version as ``(t, name, kind, bump, key)`` (``key``: its semver precedence), oldest first,
    parsed once per change of the tags."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._for: list[Version] | None = None
        self._markers: list[tuple[float, str, str | None, str | None, tuple]] = []

    def all(self) -> list[tuple[float, str, str | None, str | None, tuple]]:
        listed = self.catalog.versions()
        if listed is not self._for:
            marks = [(epoch(v.created), v.name, v.kind, v.metadata.get("bump"), v.key) for v in listed]
            self._markers, self._for = sorted((m for m in marks if m[0] is not None), key=lambda m: m[0]), listed
        return self._markers


def slo(workspace) -> dict[str, Any] | None:
    from ratchet.tiers.budgets import load_budgets

    try:
        return load_budgets(workspace).slo.model_dump()
    except RatchetError:
        return None


def parse_cursor(cursor: str | None) -> tuple[tuple | None, int]:
    """``(precedence of the newest version sent, seq of the last wake-up sent)`` from a cursor of
    :func:`overview`, ``VERSION|SEQ`` (None: from the start)."""
    if not cursor:
        return None, 0
    name, sep, seq = cursor.rpartition("|")
    key = precedence(name) if name else None
    if not sep or (name and key is None) or not seq.isdigit():
        raise UserError(f"cursor: {cursor!r} is not a cursor of /ui/data/overview", field="cursor",
                        fix="pass the `cursor` of the previous answer, or none for everything")
    return key, int(seq)


def overview(workspace, catalog: Catalog, markers: Markers, *, window: float | None = None,
             now: float | None = None, buckets: int = BUCKETS, cursor: str | None = None) -> dict[str, Any]:
    """The overview's data: what is served, the reward and call series per bucket, the versions and the
    wake-ups on the same time axis, the SLO to draw as lines, and how far the rollup is built.

    With ``cursor`` (the ``cursor`` of a previous answer) ``versions`` and ``wakeups`` hold only what came
    since: a page that polls keeps what it has, and only drops what leaves the range on the left. New
    versions are those after the newest one sent in semver order (versions are made in that order, so
    a host's clock does not matter); new wake-ups are those logged after the last one sent."""
    store = workspace.store
    now = time.time() if now is None else now
    marks = markers.all()
    after, wake_seq = parse_cursor(cursor)
    first = series.first_activity(store)
    if window is None:
        starts = [t for t in (first, marks[0][0] if marks else None) if t is not None]
        start = min(starts) if starts else now - 3600
    else:
        start = now - window
    width = series.bucket_width(max(now - start, 1.0), buckets)
    start = start // width * width
    built = rollup.status(store, now, first)
    # while the rollup is built, the logs are read for the last minutes only: what is ready, at once
    logs_from = now - rollup.BEHIND if built["building"] else None
    in_range = [m for m in marks if start <= m[0] <= now]
    shown = [m for m in in_range[-MARKERS:] if after is None or m[4] > after]
    newest = max(shown, key=lambda m: m[4])[1] if shown else cursor.rpartition("|")[0] if cursor else ""
    wakes = series.wakeups(store, start, now, after_seq=wake_seq)
    last_seq = wakes[-1]["seq"] if wakes else wake_seq
    return {
        "now": now, "start": start, "width": width,
        "active": catalog.active(),
        "reward": series.reward_series(store, start, now, width, rolled=built["rolled_until"], logs_from=logs_from),
        "calls": series.call_series(store, start, now, width, rolled=built["rolled_until"], logs_from=logs_from),
        "versions": [{"t": t, "version": name, "kind": kind, "bump": bump} for t, name, kind, bump, _ in shown],
        "versions_in_range": len(in_range),
        "versions_total": len(marks),
        "wakeups": wakes,
        "slo": slo(workspace),
        "rollup": {"building": built["building"], "percent": built["percent"], "rolled_until": built["rolled_until"],
                   "logs_from": logs_from},
        "cursor": f"{newest}|{last_seq}",
    }


# --- versions -----------------------------------------------------------------------------------------------


def parent_of(catalog: Catalog, name: str) -> str | None:
    """The version before ``name`` in semver order (what it was made from, for the tuner's patches)."""
    listed = catalog.versions()
    names = [v.name for v in listed]
    found = catalog.workspace.versions.get(name).name
    i = names.index(found)
    return names[i - 1] if i > 0 else None


def version_page(catalog: Catalog, name: str) -> dict[str, Any]:
    """A version: its metadata, who made it and why, the eval summary per tier against its budgets, and
    the state diff from its parent. The tool-schema diff comes later (:func:`tools_diff`): reading a
    version's tool schemas the first time runs its code in a fresh process, seconds the page need not wait."""
    detail = catalog.detail(name, tools=False)
    try:
        evals = catalog.evals(detail["version"])
    except NotFoundError:
        evals = None
    parent = parent_of(catalog, detail["version"])
    state_diff = catalog.state_diff(parent, detail["version"]) if parent else None
    return {"version": detail, "evals": evals, "tiers": eval_rows(evals, tier_budgets(catalog.workspace)),
            "parent": parent, "state_diff": state_diff}


def tools_diff(catalog: Catalog, name: str) -> dict[str, Any]:
    """The tool-schema diff of ``name`` from its parent (the Versions API's diff): ``{parent, tools,
    tools_error}``; ``tools`` is None for the first version."""
    parent = parent_of(catalog, name)
    if parent is None:
        return {"parent": None, "tools": None, "tools_error": None}
    diff = catalog.diff(parent, name)
    return {"parent": parent, "tools": diff["tools"], "tools_error": diff["tools_error"]}


def eval_rows(evals: dict[str, Any] | None, budgets: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per tier of an eval summary, beside the tier's budget (from the workspace's current
    ``ci/budgets.json``): pass rate, latency, time, and what missed the budget."""
    rows = []
    for tier, result in ((evals or {}).get("tiers") or {}).items():
        result = result if isinstance(result, dict) else {}
        rows.append({"tier": tier, "ok": result.get("ok"), "passed": result.get("passed"),
                     "total": result.get("total"), "pass_rate": result.get("pass_rate"),
                     "latency_ms": result.get("latency_ms") or {}, "seconds": result.get("seconds"),
                     "violations": result.get("violations") or [], "failures": result.get("failures") or [],
                     "budget": (budgets or {}).get(tier)})
    return rows


def tier_budgets(workspace) -> dict[str, Any] | None:
    from ratchet.tiers.budgets import load_budgets

    try:
        return load_budgets(workspace).tiers.model_dump()
    except RatchetError:
        return None


# --- jobs -----------------------------------------------------------------------------------------------------

def job_actions(job) -> list[str]:
    """What a person may do to ``job`` now: approve or abandon one that waits; abandon an open agent job."""
    if job.state == "needs_approval":
        return ["approve", "abandon"]
    if job.state == "applying" and job.source == "agent":
        return ["abandon"]
    return []


def jobs_list(workspace, state: str | None = None) -> list:
    from ratchet.architect.jobs import JobStore

    return sorted(JobStore(workspace.store).list(state), key=lambda j: j.created, reverse=True)


def job_page(workspace, job_id: str) -> dict[str, Any]:
    from ratchet.architect.jobs import JobStore

    job = JobStore(workspace.store).get(job_id)
    return {"job": job, "actions": job_actions(job), "diff": job_diff(workspace, job)}


def job_diff(workspace, job) -> str | None:
    """The job's change as a unified diff (its base to its commit), while git still has both."""
    if not (job.base and job.commit):
        return None
    try:
        return workspace.versions.git("diff", "--stat", "--patch", job.base, job.commit).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 -- a pruned branch: the page shows the changed paths instead
        return None


# --- conversations --------------------------------------------------------------------------------------------


def conversation(workspace, conversation_id: str) -> dict[str, Any]:
    """The story ``ratchet trace`` tells, plus one timeline of its calls, decisions and feedback."""
    from ratchet.ops.story import conversation_story, summarize

    story = conversation_story(workspace, conversation_id)
    timeline = ([{"ts": c["ts"], "what": "call", "name": c["tool"], "detail": summarize(c["arguments"], 120),
                  "version": c["version"], "error": c["error"]} for c in story["calls"]]
                + [{"ts": d["ts"], "what": "decision", "name": d["strategy"], "detail": summarize(d["choice"], 120),
                    "version": d["version"], "error": None} for d in story["decisions"]]
                + [{"ts": f["ts"], "what": "feedback", "name": f["tool"], "detail": summarize(f["payload"], 120),
                    "version": f["version"], "error": None} for f in story["feedback"]])
    order = {"call": 0, "decision": 1, "feedback": 2}
    return {**story, "timeline": sorted(timeline, key=lambda e: (e["ts"], order[e["what"]]))}


def when(ts: float | None) -> str:
    from ratchet.ops.story import when as story_when

    return story_when(ts)


# --- strategies -------------------------------------------------------------------------------------------------


def strategies(workspace) -> list[dict[str, Any]]:
    """What each configured strategy believes in the active state: its family, what it serves now, its
    drawings (``Strategy.belief``, by kind), and its own KPI summary (``Strategy.kpis``), split into
    scalars and per-item tables (e.g. a bandit's arms)."""
    from ratchet.core.strategy import build_strategies

    active = workspace.state.read("active")
    sections = (active.document.get("strategies") or {})
    out = []
    for key, strategy in build_strategies(workspace, workspace.plugins).items():
        section = sections.get(key) or strategy.initial_state()
        kpis = strategy.kpis(section) or {}
        tables = {k: v for k, v in kpis.items()
                  if isinstance(v, dict) and v and all(isinstance(row, dict) for row in v.values())}
        out.append({"key": key, "strategy": strategy.name, "family": strategy.family,
                    "served": strategy.served(section), "version": active.version,
                    **beliefs(strategy, section), "evaluable": evaluable(strategy, section),
                    "scalars": {k: v for k, v in kpis.items() if k not in tables},
                    "tables": {name: {"columns": sorted({c for row in rows.values() for c in row}), "rows": rows}
                               for name, rows in tables.items()}})
    return out


def beliefs(strategy, section: dict[str, Any]) -> dict[str, Any]:
    """``{"beliefs": [{kind, title, ..., "svg"}], "belief_error"}`` from ``Strategy.belief``: a
    strategy that does not describe its belief has none (its KPI tables remain); one whose description
    fails or is malformed shows why, beside the tables."""
    from pydantic import TypeAdapter, ValidationError

    from ratchet.core.belief import Belief
    from ratchet.versions.dashboard.drawings import draw

    try:
        found = strategy.belief(section)
        if found is None:
            return {"beliefs": [], "belief_error": None}
        described = TypeAdapter(list[Belief]).validate_python(
            [b.model_dump() if hasattr(b, "model_dump") else b for b in found])
    except ValidationError as exc:
        return {"beliefs": [], "belief_error": f"{strategy.name}.belief() returned an invalid description: "
                                               f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"}
    except Exception as exc:  # noqa: BLE001 -- a plugin's bug must not take the page down
        return {"beliefs": [], "belief_error": f"{strategy.name}.belief() failed: {type(exc).__name__}: {exc}"}
    return {"beliefs": [{**b.model_dump(), "svg": draw(b)} for b in described], "belief_error": None}


def evaluable(strategy, section: dict[str, Any]) -> bool:
    """Whether off-policy estimates can be made for it (it gives its choice probabilities)."""
    from ratchet.core.evaluation import gives_probabilities

    try:
        return gives_probabilities(strategy, section)
    except Exception:  # noqa: BLE001 -- judged again, with its error, when the estimates are asked for
        return False


def strategy_kpis(workspace, *, window: float | None = None, now: float | None = None,
                  buckets: int = BUCKETS) -> dict[str, Any]:
    """The Strategies page's charts: each configured strategy's reward per named choice per bucket, and
    the runner's latency p95 per bucket with the SLO's ceiling (:mod:`ratchet.versions.dashboard.kpis`)."""
    from ratchet.versions.dashboard import kpis

    store = workspace.store
    now = time.time() if now is None else now
    if window is None:
        first = series.first_activity(store)
        start = first if first is not None else now - 3600
    else:
        start = now - window
    width = series.bucket_width(max(now - start, 1.0), buckets)
    start = start // width * width
    keys = [e.key for e in workspace.config.tuner.strategies]
    return {"now": now, "start": start, "width": width, "slo": slo(workspace),
            "latency": kpis.latency_p95(store, start, now, width),
            "strategies": {k: kpis.reward_by_choice(store, k, start, now, width) for k in keys}}
