"""The story of a conversation (``ratchet trace CONVERSATION_ID``): calls, decisions, feedback, spans,
and the version each feedback event fed into.

A feedback event (log row ``seq``) is in a version once staging had applied it and staging was
promoted: the first version (semver order) whose tag metadata has ``applied_seq >= seq``. Tuner
promotions record ``applied_seq``; until one does, the event is ``pending``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ratchet.core.errors import NotFoundError

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

PENDING = "pending"


def conversation_story(workspace: Workspace, conversation_id: str, *, spans: bool = True) -> dict[str, Any]:
    """Everything the workspace knows about one conversation, oldest first. Raises NotFoundError."""
    store = workspace.store
    session = store.session(conversation_id)
    decisions = store.decisions_for(conversation_id)
    feedback = store.feedback_for(conversation_id)
    if session is None and not decisions and not feedback:
        raise NotFoundError(f"no conversation {conversation_id!r} in workspace {workspace.name!r}",
                            field="CONVERSATION_ID",
                            fix="pass a conversation_id that a runner of this workspace served (the one given to "
                            "the runner tool), or choose the right workspace with -w DIR")
    promoted = [(v.name, int(v.metadata["applied_seq"])) for v in workspace.versions.list()
                if isinstance(v.metadata.get("applied_seq"), (int, float))]
    calls = [{"seq": t["seq"], "ts": t["ts"], "tool": t["tool"], "arguments": t["arguments"],
              "version": t["version"], "latency_ms": t["latency_ms"], "error": t["error"],
              "trace_id": t["trace_id"]} for t in (session or {}).get("turns", [])]
    out_decisions = [{"seq": d["seq"], "ts": d["ts"], "strategy": d["strategy"], "choice": d["choice"],
                      "propensity": d["propensity"], "sticky": d["sticky"], "version": d["version"],
                      "trace_id": d["trace_id"]} for d in decisions]
    out_feedback = []
    for f in feedback:
        into = next((name for name, seq in promoted if seq >= f["seq"]), PENDING)
        args = (f["payload"] or {}).get("args", {})
        out_feedback.append({"seq": f["seq"], "ts": f["ts"], "tool": f["tool"], "event_id": f["event_id"],
                             "payload": args, "trace_id": f["trace_id"], "version": into})
    trace_ids = {x["trace_id"] for x in calls + out_decisions + out_feedback if x["trace_id"]}
    return {"conversation_id": conversation_id, "workspace": workspace.name, "calls": calls,
            "decisions": out_decisions, "feedback": out_feedback,
            "spans": find_spans(workspace, conversation_id, trace_ids) if spans else []}


def find_spans(workspace: Workspace, conversation_id: str, trace_ids: set[str]) -> list[dict[str, Any]]:
    """Spans in the object store's ``telemetry/<component>/*/spans.jsonl`` of this conversation or its traces."""
    from ratchet.core.telemetry import CONVERSATION_ID

    objects = workspace.objects
    needles = [conversation_id, *trace_ids]
    found = []
    for key in objects.list("telemetry"):
        if not key.endswith("/spans.jsonl"):
            continue
        component = key.split("/")[1]  # telemetry/<component>/<process>/spans.jsonl
        for line in (objects.get_bytes(key) or b"").decode("utf-8", "replace").splitlines():
            if not any(n in line for n in needles):  # cheap filter before parsing
                continue
            try:
                s = json.loads(line)
            except ValueError:
                continue
            tid = str(s.get("context", {}).get("trace_id", "")).removeprefix("0x")
            attrs = s.get("attributes") or {}
            if tid not in trace_ids and attrs.get(CONVERSATION_ID) != conversation_id:
                continue
            found.append({"component": component, "name": s.get("name"), "kind": s.get("kind"),
                          "trace_id": tid, "span_id": str(s.get("context", {}).get("span_id", "")).removeprefix("0x"),
                          "start": s.get("start_time"), "duration_ms": _duration_ms(s),
                          "status": (s.get("status") or {}).get("status_code"), "attributes": attrs})
    return sorted(found, key=lambda s: s["start"] or "")


def _duration_ms(span: dict[str, Any]) -> float | None:
    from datetime import datetime

    try:
        start, end = (datetime.fromisoformat(span[k].replace("Z", "+00:00")) for k in ("start_time", "end_time"))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return round((end - start).total_seconds() * 1e3, 3)


def summarize(value: Any, width: int = 60, drop: tuple[str, ...] = ("conversation_id", "event_id")) -> str:
    """A one-line JSON summary of arguments or a payload, without the ids shown elsewhere."""
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in drop}
    text = json.dumps(value, sort_keys=True, default=str, separators=(", ", ": "))
    return text if len(text) <= width else text[:width - 1] + "…"


def when(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"
