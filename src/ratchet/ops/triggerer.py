"""The Triggerer: online KPIs over a window, compared with the SLO in ``ci/budgets.json``.

``kpis`` aggregates, in SQL, the feedback log (reward rate: the mean ``value`` of ``reward`` feedback) and
the runner's turns (error rate, latency p95) over ``[now - window, now]``. ``Triggerer.check`` compares
them with the SLO and, on a breach, wakes the Architect with a KPI report.

Semantics of one ``check``:

* A KPI is judged only when its window holds at least ``min_samples`` samples (rewards for the reward
  rate, turns for the error rate, turns with a latency for the p95).
* Hysteresis: a breach must last ``breach_checks`` consecutive checks before it wakes anyone. After a
  wake the trigger is disarmed; it re-arms only once every KPI of that wake has recovered past a margin
  (reward rate >= min + ``hysteresis``; error rate and p95 <= ceiling * (1 - ``relative_hysteresis``)),
  judged on enough samples, with no KPI breaching.
* Cooldown: never two wakes within ``cooldown_seconds``, even when re-armed.
* A wake emits a ``trigger.wake`` event (through ``Workspace.emit``, so observers see it) and then calls
  ``wake(report)``. A re-arm emits ``trigger.rearm``. The armed flag and the last wake time are derived
  from those two events, so a restarted Triggerer neither wakes again within the cooldown nor while
  disarmed. (The consecutive-breach count is not persisted: after a restart it starts again at 0.)

The SLO is re-read from ``ci/budgets.json`` on every check (a small file), so edits apply without a
restart; if the file becomes invalid, the last valid SLO is kept and a warning logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ratchet.core import auth
from ratchet.core.errors import RatchetError
from ratchet.core.stores.schema import feedback, turns

if TYPE_CHECKING:
    from ratchet.core.stores.sql import Store
    from ratchet.core.workspace import Workspace
    from ratchet.tiers.budgets import SloBudget

log = logging.getLogger("ratchet.triggers")

WAKE_EVENT = "trigger.wake"
REARM_EVENT = "trigger.rearm"
REWARD_TOOL = "reward"


@dataclass(frozen=True)
class KpiReport:
    window_seconds: float
    start: float
    end: float
    reward_count: int
    reward_rate: float | None  # mean reward value; None without rewards
    turn_count: int
    error_count: int
    error_rate: float | None  # None without turns
    latency_count: int
    latency_p95_ms: float | None  # None without latencies

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _p95(conn, where, count: int) -> float | None:
    """Linear interpolation between closest ranks (as ``tiers.percentile``), reading at most 2 rows."""
    if not count:
        return None
    rank = 0.95 * (count - 1)
    low = int(rank)
    q = sa.select(turns.c.latency_ms).where(where).order_by(turns.c.latency_ms).offset(low).limit(2)
    values = [r[0] for r in conn.execute(q)]
    high = values[1] if len(values) > 1 else values[0]
    return values[0] + (high - values[0]) * (rank - low)


def kpis(store: Store, window_seconds: float, now: float) -> KpiReport:
    """The KPIs over ``[now - window_seconds, now]`` in three aggregate queries and one 2-row read."""
    start = now - window_seconds
    f, t = feedback.c, turns.c
    value = f.payload[("args", "value")].as_float()
    reward_q = sa.select(sa.func.count(value), sa.func.avg(value)).where(
        f.tool == REWARD_TOOL, f.ts >= start, f.ts <= now)
    in_window = sa.and_(t.ts >= start, t.ts <= now)
    turn_q = sa.select(sa.func.count(), sa.func.count(t.error), sa.func.count(t.latency_ms)).where(in_window)
    with store.reader.connect() as conn:
        reward_count, reward_mean = conn.execute(reward_q).one()
        turn_count, error_count, latency_count = conn.execute(turn_q).one()
        p95 = _p95(conn, sa.and_(in_window, t.latency_ms.is_not(None)), latency_count)
    return KpiReport(
        window_seconds=window_seconds, start=start, end=now,
        reward_count=reward_count, reward_rate=float(reward_mean) if reward_count else None,
        turn_count=turn_count, error_count=error_count,
        error_rate=error_count / turn_count if turn_count else None,
        latency_count=latency_count, latency_p95_ms=p95)


def architect_wake(workspace: Workspace, *, url: str | None = None, timeout: float = 5.0) -> Callable[[dict], None]:
    """The default ``wake``: POST the report to ``{url}/wake``, where ``url`` defaults to
    where this workspace's running Architect recorded its address (``.ratchet/run/architect.json``), else
    ``http://{architect.host}:{architect.port}`` from ``ratchet.toml``. (``ratchet up`` passes the address
    it chose.)

    With no URL and no port configured (0), or no Architect listening, it logs a warning; the
    ``trigger.wake`` event is already in the store for the Architect to read when it starts.
    """

    def wake(report: dict) -> None:
        from ratchet.ops import addresses

        cfg = workspace.config.architect
        base = url or addresses.url(workspace.root, "architect") or (f"http://{cfg.host}:{cfg.port}" if cfg.port else None)
        if not base:
            log.warning("no architect running and no architect port in ratchet.toml; the wake-up is kept as a %s "
                        "event", WAKE_EVENT)
            return
        import httpx

        target = f"{base.rstrip('/')}/wake"
        try:
            from opentelemetry import propagate

            headers = auth.header(auth.load_token(workspace))
            propagate.inject(headers)  # the Architect's job continues this trace
            httpx.post(target, json=report, headers=headers, timeout=timeout).raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("could not wake the architect at %s (%s); the wake-up is kept as a %s event",
                        target, exc, WAKE_EVENT)

    return wake


class Triggerer:
    def __init__(self, workspace: Workspace, *, wake: Callable[[dict], None] | None = None,
                 clock: Callable[[], float] = time.time, min_samples: int = 20, breach_checks: int = 2,
                 cooldown_seconds: float = 600, hysteresis: float = 0.05, relative_hysteresis: float = 0.1):
        self.workspace = workspace
        self.wake = wake if wake is not None else architect_wake(workspace)
        self.clock = clock
        self.min_samples = min_samples
        self.breach_checks = max(1, breach_checks)
        self.cooldown_seconds = cooldown_seconds
        self.hysteresis = hysteresis
        self.relative_hysteresis = relative_hysteresis
        self.streak = 0
        self._slo: SloBudget | None = None
        last_wake = workspace.store.last_event(WAKE_EVENT)
        last_rearm = workspace.store.last_event(REARM_EVENT)
        self.last_wake_at: float | None = last_wake["payload"].get("at") if last_wake else None
        self.last_breached: list[str] = [b["kpi"] for b in last_wake["payload"].get("breaches", [])] if last_wake else []
        self.armed = last_wake is None or (last_rearm is not None and last_rearm["seq"] > last_wake["seq"])

    # --- the SLO ---

    def slo(self) -> SloBudget:
        from ratchet.tiers.budgets import load_budgets

        try:
            self._slo = load_budgets(self.workspace).slo
        except RatchetError as exc:
            if self._slo is None:
                raise
            log.warning("keeping the last valid SLO: %s", exc)
        return self._slo

    # --- judging ---

    def _judged(self, report: KpiReport, slo: SloBudget) -> list[tuple[str, float, float, float]]:
        """``(kpi, value, slo, recovered_bound)`` for each KPI with enough samples."""
        out = []
        if report.reward_count >= self.min_samples:
            out.append(("reward_rate", report.reward_rate, slo.reward_rate_min,
                        min(1.0, slo.reward_rate_min + self.hysteresis)))
        if report.turn_count >= self.min_samples:
            out.append(("error_rate", report.error_rate, slo.error_rate_max,
                        slo.error_rate_max * (1 - self.relative_hysteresis)))
        if report.latency_count >= self.min_samples:
            out.append(("latency_p95_ms", report.latency_p95_ms, slo.latency_p95_ms,
                        slo.latency_p95_ms * (1 - self.relative_hysteresis)))
        return out

    @staticmethod
    def _breached(kpi: str, value: float, limit: float) -> bool:
        return value < limit if kpi == "reward_rate" else value > limit

    @staticmethod
    def _recovered(kpi: str, value: float, bound: float) -> bool:
        return value >= bound if kpi == "reward_rate" else value <= bound

    def check(self, now: float | None = None) -> dict | None:
        """One evaluation; the KPI report if it woke the Architect, else None."""
        now = self.clock() if now is None else now
        slo = self.slo()
        report = kpis(self.workspace.store, slo.window_seconds, now)
        judged = self._judged(report, slo)
        breaches = [{"kpi": k, "value": v, "slo": s, "window_seconds": slo.window_seconds}
                    for k, v, s, _ in judged if self._breached(k, v, s)]
        self.streak = self.streak + 1 if breaches else 0

        if not self.armed and not breaches:
            values = {k: (v, bound) for k, v, _, bound in judged}
            if all(k in values and self._recovered(k, *values[k]) for k in self.last_breached):
                self.armed = True
                self.workspace.emit(REARM_EVENT, {"at": now, "kpis": report.to_dict()})

        cooling = self.last_wake_at is not None and now - self.last_wake_at < self.cooldown_seconds
        if not (breaches and self.armed and self.streak >= self.breach_checks and not cooling):
            return None
        wake = {"breaches": breaches, "kpis": report.to_dict(), "at": now}
        self.workspace.emit(WAKE_EVENT, wake)  # durable first: the Architect can read it later
        self.armed, self.streak = False, 0
        self.last_wake_at, self.last_breached = now, [b["kpi"] for b in breaches]
        from ratchet.core import telemetry

        with telemetry.span("ratchet.triggerer.wake", **{"ratchet.breaches": [b["kpi"] for b in breaches]}):
            try:
                self.wake(wake)  # inside the span: the Architect's job continues this trace
            except Exception as exc:  # noqa: BLE001 -- a failing receiver must not stop the triggerer
                log.warning("wake callback failed: %s", exc)
        return wake

    def run(self, interval: float, stop) -> None:
        """Check every ``interval`` seconds until ``stop`` (a ``threading.Event``) is set."""
        while not stop.is_set():
            try:
                self.check()
            except RatchetError:
                raise
            except Exception as exc:  # noqa: BLE001 -- e.g. the store briefly unavailable: try again
                log.warning("trigger check failed: %s", exc)
            stop.wait(interval)
