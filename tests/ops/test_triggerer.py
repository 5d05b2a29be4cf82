"""The Triggerer: KPIs over a window, SLO breaches with hysteresis and a cooldown, and wake-ups.

The default workspace's SLO: window 300 s, reward_rate_min 0.5, error_rate_max 0.02, latency_p95_ms 250.
Time is a fake clock; rows are written straight into the store with explicit timestamps.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ratchet.core.stores.schema import turns
from ratchet.ops.triggerer import REARM_EVENT, WAKE_EVENT, Triggerer, kpis

T0 = 1_000_000.0
_ids = itertools.count()


def rewards(ws, now: float, values: list[float], tool: str = "reward") -> None:
    """Feedback rows spread over the 60 s before ``now``."""
    ws.store.append_feedback([
        {"event_id": f"e{next(_ids)}", "tool": tool, "conversation_id": "c", "ts": now - 60 + 60 * i / len(values),
         "payload": {"args": {"conversation_id": "c", "value": v}, "decisions": []}} for i, v in enumerate(values)])


def calls(ws, now: float, n: int, *, errors: int = 0, latency_ms: float = 10.0) -> None:
    """``n`` runner turns over the 60 s before ``now``; the first ``errors`` failed."""
    with ws.store.engine.begin() as conn:
        conn.execute(turns.insert(), [
            {"conversation_id": "c", "ts": now - 60 + 60 * i / n, "tool": "answer", "arguments": {},
             "error": "boom" if i < errors else None, "latency_ms": latency_ms} for i in range(n)])


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def woken():
    return []


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def trig(ws, woken, clock):
    return Triggerer(ws, wake=woken.append, clock=clock)


def degrade(ws, clock: Clock, seconds: float = 0) -> None:
    """Advance the clock and write a window of bad rewards (rate 0.2) ending now."""
    clock.t += seconds
    rewards(ws, clock.t, [1.0] * 6 + [0.0] * 24)


def recover(ws, clock: Clock, seconds: float) -> None:
    """Advance past the window (old rows drop out) and write good rewards (rate 0.9)."""
    clock.t += seconds
    rewards(ws, clock.t, [1.0] * 27 + [0.0] * 3)


def test_kpis_aggregate_the_window(ws):
    rewards(ws, T0, [1.0, 0.0, 1.0, 1.0])
    rewards(ws, T0, [0.0] * 5, tool="prefer")  # other tools are ignored
    rewards(ws, T0 - 1000, [0.0] * 5)  # outside the window
    calls(ws, T0, 20, errors=2, latency_ms=10.0)
    with ws.store.engine.begin() as conn:
        conn.execute(turns.insert(), [{"conversation_id": "c", "ts": T0 - 1, "tool": "answer", "arguments": {},
                                       "latency_ms": None}])
    r = kpis(ws.store, 300, T0)
    assert (r.reward_count, r.reward_rate) == (4, 0.75)
    assert (r.turn_count, r.error_count, r.latency_count) == (21, 2, 20)
    assert r.error_rate == pytest.approx(2 / 21)
    assert r.latency_p95_ms == 10.0
    empty = kpis(ws.store, 300, T0 + 10_000)
    assert (empty.reward_rate, empty.error_rate, empty.latency_p95_ms) == (None, None, None)


def test_latency_p95_interpolates_like_the_tiers(ws):
    from ratchet.tiers.harness import percentile

    values = [float(v) for v in range(1, 41)]
    with ws.store.engine.begin() as conn:
        conn.execute(turns.insert(), [{"conversation_id": "c", "ts": T0 - i, "tool": "t", "arguments": {},
                                       "latency_ms": v} for i, v in enumerate(values)])
    assert kpis(ws.store, 300, T0).latency_p95_ms == pytest.approx(percentile(values, 0.95))


def test_healthy_kpis_do_not_wake(ws, trig, clock, woken):
    rewards(ws, clock.t, [1.0] * 25 + [0.0] * 5)
    calls(ws, clock.t, 50, errors=0, latency_ms=20)
    assert [trig.check() for _ in range(5)] == [None] * 5
    assert woken == [] and ws.store.last_event(WAKE_EVENT) is None


def test_too_few_samples_do_not_wake(ws, trig, clock, woken):
    rewards(ws, clock.t, [0.0] * 19)  # min_samples is 20
    calls(ws, clock.t, 19, errors=19, latency_ms=10_000)
    for _ in range(5):
        clock.t += 1
        assert trig.check() is None
    assert woken == []


def test_one_bad_check_does_not_wake(ws, trig, clock, woken):
    degrade(ws, clock)
    assert trig.check() is None  # hysteresis: breach_checks = 2
    clock.t += 400  # the bad window has passed before the next check
    rewards(ws, clock.t, [1.0] * 30)
    assert trig.check() is None and trig.check() is None
    assert woken == []


def test_injected_degradation_wakes_the_architect_once_within_the_cooldown(ws, trig, clock, woken):
    recover(ws, clock, 0)
    assert trig.check() is None
    degrade(ws, clock, 400)  # rewards fall: 0.2 < 0.5
    assert trig.check() is None  # first bad check
    report = trig.check(clock.t + 5)
    assert report is not None and woken == [report]
    assert report["breaches"] == [{"kpi": "reward_rate", "value": pytest.approx(0.2), "slo": 0.5,
                                   "window_seconds": 300}]
    assert report["kpis"]["reward_count"] == 30 and report["at"] == clock.t + 5
    event = ws.store.last_event(WAKE_EVENT)
    assert event["payload"]["breaches"][0]["kpi"] == "reward_rate"

    for i in range(20):  # still degraded: many checks, no second wake
        clock.t += 5
        assert trig.check() is None
    clock.t += 1
    rewards(ws, clock.t, [1.0] * 300)  # recovered: (6 + 300) / 330 = 0.93 (re-armed) ...
    assert trig.check() is None and trig.armed
    assert ws.store.last_event(REARM_EVENT) is not None
    clock.t += 1
    rewards(ws, clock.t, [0.0] * 600)  # ... and degraded again (0.33), still inside the 600 s cooldown
    assert clock.t - report["at"] < 600
    assert trig.check() is None and trig.check() is None
    assert len(woken) == 1 and len(ws.store.events_since(0, WAKE_EVENT)) == 1

    clock.t = report["at"] + 600  # cooldown over, still armed and still degraded
    degrade(ws, clock)
    second = trig.check()
    assert second is not None and len(woken) == 2


def test_no_wake_after_cooldown_unless_rearmed(ws, trig, clock, woken):
    degrade(ws, clock)
    trig.check()
    assert trig.check() is not None
    for _ in range(10):  # degraded throughout, far past the cooldown: never re-armed
        degrade(ws, clock, 200)
        assert trig.check() is None
    rewards(ws, clock.t + 400, [1.0] * 10 + [0.0] * 10)  # 0.5: no breach, but not past the margin
    clock.t += 400
    assert trig.check() is None and not trig.armed
    recover(ws, clock, 301)
    trig.check()
    assert trig.armed
    degrade(ws, clock, 301)
    assert trig.check() is None and trig.check() is not None
    assert len(woken) == 2


def test_a_restarted_triggerer_does_not_wake_within_the_cooldown(ws, trig, clock, woken):
    degrade(ws, clock)
    trig.check()
    first = trig.check()
    assert first is not None

    again = Triggerer(ws, wake=woken.append, clock=clock)  # a restart: state comes from the events
    assert not again.armed and again.last_wake_at == first["at"]
    recover(ws, clock, 301)
    again.check()
    assert again.armed
    degrade(ws, clock, 100)
    assert again.check() is None and again.check() is None  # inside the cooldown
    third = Triggerer(ws, wake=woken.append, clock=clock)
    assert third.armed  # the re-arm survived a restart too
    clock.t = first["at"] + 601
    degrade(ws, clock)
    assert third.check() is None and third.check() is not None
    assert len(woken) == 2


def test_error_rate_breach(ws, trig, clock, woken):
    calls(ws, clock.t, 50, errors=5, latency_ms=10)  # 0.1 > 0.02
    trig.check()
    report = trig.check()
    assert [(b["kpi"], b["slo"]) for b in report["breaches"]] == [("error_rate", 0.02)]
    assert report["breaches"][0]["value"] == pytest.approx(0.1)


def test_latency_breach(ws, trig, clock, woken):
    calls(ws, clock.t, 50, latency_ms=400)  # p95 400 > 250
    trig.check()
    report = trig.check()
    assert [(b["kpi"], b["value"], b["slo"]) for b in report["breaches"]] == [("latency_p95_ms", 400, 250)]


def test_a_failing_wake_keeps_the_event(ws, clock):
    def boom(report):
        raise RuntimeError("architect down")

    trig = Triggerer(ws, wake=boom, clock=clock)
    degrade(ws, clock)
    trig.check()
    assert trig.check() is not None
    assert ws.store.last_event(WAKE_EVENT) is not None


def test_default_wake_without_an_architect_logs_and_keeps_the_event(ws, clock, caplog):
    trig = Triggerer(ws, clock=clock)  # architect.port is 0: nothing to POST to
    degrade(ws, clock)
    trig.check()
    with caplog.at_level("WARNING", logger="ratchet.triggers"):
        assert trig.check() is not None
    assert "kept as a trigger.wake event" in caplog.text


def test_serve_triggerer_wakes_and_stops_on_sigterm(ws):
    now = time.time()
    rewards(ws, now, [0.0] * 30)
    ratchet = str(Path(sys.executable).with_name("ratchet"))
    proc = subprocess.Popen([ratchet, "serve", "triggerer", "--interval", "0.05", "-w", str(ws.root)],
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 20
        for line in proc.stderr:
            lines.append(line)
            if "waking the architect" in line or time.monotonic() > deadline:
                break
        assert any("waking the architect: reward_rate=0" in line for line in lines), lines
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()
    assert proc.returncode == 0
    assert len(ws.store.events_since(0, WAKE_EVENT)) == 1
