"""The workspace brief: what a planner is told about the workspace before it plans.

A model that sees only the feedback text guesses file names, state keys and tool arguments. The brief
gives it, in one bounded message: the rules of versioning, the files, ``ratchet.toml``, the active
state and its schema, the runner's and tuner's tools with their argument schemas, the tiers with a
sample of their cases and their budgets, the KPIs against the SLO, and a sample of recent feedback with
the calls it was about. Every section is cut to its share of ``limit`` characters (and says so), so a
large workspace cannot crowd out the request.

Nothing of the job's code runs here: tool schemas come from :mod:`ratchet.architect.toolschemas`
(a separate process, cached per commit); everything else is read as text or from the store.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ratchet.architect.plans import TIERS
from ratchet.core.documents import ACTIVE_PATH
from ratchet.core.errors import RatchetError

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

BRIEF_CHARS = 24_000  # about 6k tokens: room for the request, the tools and many turns in any context window
FEEDBACK_SAMPLE = 12  # recent feedback events shown, each with the call it was about
CASES_PER_TIER = 3

VERSIONING = """\
Versions: every change you make is tested (micro, fast, full tiers against ci/budgets.json) and tagged.
- A change to state/active.state.json alone is a PATCH (e.g. a parameter such as answer length, tone or
  a threshold): prefer it whenever a parameter can address the feedback.
- Anything else (code, config, tests) is a MINOR; a runner or tuner tool that loses an argument or
  narrows its type breaks clients and is a MAJOR. Add a test case only when behaviour changes in a way
  a case can pin down: a test case is a file change and makes the version a minor."""


def workspace_brief(job_root: Path, main: Workspace, base: str, *, limit: int = BRIEF_CHARS) -> str:
    """The brief for a job whose worktree is at ``job_root``, branched from ``base`` of ``main``."""
    share = limit // 8
    sections: list[tuple[str, Callable[[], str]]] = [
        ("Files", lambda: "\n".join(_files(main, base))),
        ("ratchet.toml", lambda: _read(job_root / "ratchet.toml")),
        (f"Active state ({ACTIVE_PATH}) and its schema (state/schema.json)",
         lambda: _compact(job_root / ACTIVE_PATH) + "\n\nschema:\n" + _compact(job_root / "state" / "schema.json")),
        ("Tools (the runner's serve users; the tuner's take feedback)", lambda: _tools(main, base)),
        ("Test tiers (tests/<tier>/*.yaml) and budgets (ci/budgets.json)", lambda: _tiers(job_root)),
        ("KPIs now against the SLO", lambda: _kpis(main, job_root)),
        ("Recent feedback and the calls it was about", lambda: _feedback(main)),
    ]
    parts = [VERSIONING]
    for title, make in sections:
        try:
            body = make()
        except (RatchetError, OSError, ValueError) as exc:  # a brief with a gap beats no job at all
            body = f"(unavailable: {exc})"
        parts.append(f"## {title}\n{_cut(body, share)}")
    return _cut("\n\n".join(parts), limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... ({len(text) - limit} more characters; read_file shows the rest)"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        return "(missing)"


def _compact(path: Path) -> str:
    """A JSON file on one line: a state's arm lists pretty-printed take a line a number."""
    text = _read(path)
    try:
        return json.dumps(json.loads(text), separators=(",", ":"))
    except ValueError:
        return text


def _files(main: Workspace, base: str) -> list[str]:
    return [p for p in main.versions.git("ls-tree", "-r", "--name-only", base).decode().splitlines() if p]


def _tools(main: Workspace, base: str) -> str:
    from ratchet.architect.toolschemas import tool_schemas_at

    lines = []
    for server, tools in tool_schemas_at(main, base).items():
        for name, tool in tools.items():
            schema = tool["input_schema"]
            args = {k: {f: v for f, v in p.items() if f in ("type", "description", "enum", "minimum", "maximum")}
                    for k, p in (schema.get("properties") or {}).items()}
            summary = (tool["description"] or "").strip().splitlines()
            lines.append(f"- {server}.{name}({json.dumps(args)}) required={schema.get('required', [])}"
                         + (f": {summary[0]}" if summary else ""))
    return "\n".join(lines)


def _tiers(job_root: Path) -> str:
    out = []
    for tier in TIERS:
        folder = job_root / "tests" / tier
        files = sorted(p for p in folder.glob("*.y*ml")) if folder.is_dir() else []
        out.append(f"### {tier}: {', '.join(p.name for p in files) or '(no files)'}")
        sample: list[str] = []
        for path in files:
            blocks = path.read_text(encoding="utf-8", errors="replace").split("\n- ")
            sample += [("- " + b if i else b).strip() for i, b in enumerate(blocks) if b.strip()][:CASES_PER_TIER]
            if len(sample) >= CASES_PER_TIER:
                break
        out.append("\n".join(sample[:CASES_PER_TIER + 1]))
    out.append("### budgets\n" + _read(job_root / "ci" / "budgets.json"))
    return "\n".join(out)


def _kpis(main: Workspace, job_root: Path) -> str:
    from ratchet.ops.triggerer import kpis

    slo = json.loads(_read(job_root / "ci" / "budgets.json")).get("slo", {})
    window = float(slo.get("window_seconds", 3600))
    report = kpis(main.store, window, time.time()).to_dict()
    shown = {k: report[k] for k in ("reward_count", "reward_rate", "turn_count", "error_rate", "latency_p95_ms")}
    return f"last {window:g} s: {json.dumps(shown)}\nSLO: {json.dumps(slo)}"


def _feedback(main: Workspace) -> str:
    store = main.store
    last = store.last_feedback_seq()
    events = store.feedback_since(max(0, last - FEEDBACK_SAMPLE))
    if not events:
        return "(none yet)"
    lines = []
    for event in events[-FEEDBACK_SAMPLE:]:
        args: dict[str, Any] = (event.get("payload") or {}).get("args", {})
        cid = args.get("conversation_id") or event.get("conversation_id")
        shown = {k: v for k, v in args.items() if k not in ("conversation_id", "event_id")}
        lines.append(f"- {event.get('tool')} {json.dumps(shown, default=str)[:300]} on {cid}")
        if cid:
            turn = _last_turn(main, cid)
            if turn:
                lines.append(f"  call: {turn}")
    return "\n".join(lines)


def _last_turn(main: Workspace, conversation_id: str) -> str | None:
    session = main.store.session(conversation_id)
    if not session or not session["turns"]:
        return None
    turn = session["turns"][-1]
    chosen = {d["strategy"]: d["choice"] for d in main.store.decisions_for(conversation_id)}
    return (f"{turn['tool']}({json.dumps(turn['arguments'], default=str)[:200]}) -> "
            f"{json.dumps(turn['result'], default=str)[:300]} [version {turn['version']}, "
            f"decisions {json.dumps(chosen, default=str)[:200]}]")
