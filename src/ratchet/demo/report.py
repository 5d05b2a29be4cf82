"""What the demo shows: live progress (rich), the summary (a table and ``summary.json``) and the plot.

Rewards are reported over four windows: **before the drift** (the last ``WINDOW`` seconds before it,
when the tuner has converged), **from the drift to recovery** (the tuner alone: see :func:`recovery`),
**after recovery** (until the first reply in the style the Architect added) and **with the new style**
(the last ``WINDOW`` seconds of the run). Regret is pseudo-regret against the oracle: the oracle's
expected reward minus the expected reward of the style served, summed over conversations.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ratchet.demo.simulation import NEW_STYLE

if TYPE_CHECKING:
    from ratchet.demo.driver import Driver, Turn
    from ratchet.demo.servers import Servers, Timescales
    from ratchet.demo.simulation import Preferences

WINDOW = 8.0  # seconds of the "before the drift" and "with the new style" windows
RECENT = 4.0  # seconds of the reward shown while running
RECOVERY_SPAN = 2.0  # seconds ...
RECOVERY_SHARE = 0.9  # ... over which the styles served earn this share of the oracle's expected reward


def recovery(turns: list[Turn], since: float, *, span: float = RECOVERY_SPAN, share: float = RECOVERY_SHARE,
             min_turns: int = 10) -> float | None:
    """When the reward recovered after ``since`` (the drift): the *end* of the first ``span`` seconds
    after it in which the expected reward of the styles served reaches ``share`` of the oracle's, over at
    least ``min_turns`` conversations; None if it never does. The regret "from the drift to recovery"
    is summed up to this moment, so it includes the span that proved the recovery."""
    from bisect import bisect_left

    after = sorted((x for x in turns if x.t >= since), key=lambda x: x.t)
    times = [x.t for x in after]
    for i, first in enumerate(after):
        inside = after[i:bisect_left(times, first.t + span)]
        if len(inside) >= min_turns and inside[-1].t >= first.t + span * 0.75 \
                and sum(x.expected for x in inside) >= share * sum(x.oracle for x in inside):
            return inside[-1].t
    return None


def architect_version(driver: Driver) -> dict[str, Any] | None:
    """The first version the Architect made (a minor or major one), as the Versions API lists it."""
    return next((v for v in driver.seen.versions if v.get("kind") == "architect"), None)


def wake_job(driver: Driver) -> dict[str, Any] | None:
    """The job of a Triggerer's wake-up, if the SLO was breached (the tuner should have kept it)."""
    return next((j for j in driver.seen.jobs.values() if j.get("source") == "wake"), None)


def request_job(driver: Driver) -> dict[str, Any] | None:
    """The Architect's job for the users' free-text request (as the monitor last saw it)."""
    asked = driver.asked
    return driver.seen.jobs.get(asked["job"]) if asked else None


def architect_job(driver: Driver) -> dict[str, Any] | None:
    return request_job(driver) or wake_job(driver)


def new_style_at(driver: Driver) -> float | None:
    """When the runner first replied in a style beyond the built-in ones (the Architect's)."""
    from ratchet.demo.simulation import STYLES

    return min((since for style, since in driver.oracle.since.items() if style not in STYLES), default=None)


def ope_gate(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """The off-policy gate of an Architect job, from its tiers: ``{"metrics": {"ope.dr.style": ...}, "refused":
    the failed ope case's reason or None}``; None when the job ran no ope case."""
    metrics, refused = {}, None
    for tier in (job or {}).get("tiers") or []:
        metrics.update({k: v for k, v in (tier.get("metrics") or {}).items() if k.startswith("ope.")})
        refused = refused or next((f["reason"] for f in tier.get("failures") or []
                                   if str(f.get("reason", "")).startswith("ope")), None)
    return {"metrics": metrics, "refused": refused} if metrics or refused else None


def ope_text(gate: dict[str, Any] | None) -> str | None:
    """One line for the report: the candidate's estimate beside active's, and the new arm's share."""
    if gate is None:
        return None
    if gate["refused"]:
        return f"off-policy gate refused: {gate['refused']}"
    parts = []
    for name, value in gate["metrics"].items():
        if name.count(".") == 2:  # ope.<estimator>.<key>: the candidate's estimate
            active, new = gate["metrics"].get(f"{name}.active"), gate["metrics"].get(f"{name}.unobserved")
            est, key = name.split(".")[1:]
            parts.append(f"{key}: {est} estimate of the existing styles {value:.3f} vs active {active:.3f}"
                         + (f"; {new:.0%} of its calls would go to the new style, never served, so not estimated"
                            if new else ""))
    return "off-policy gate passed: " + "; ".join(parts)


def architect_moments(driver: Driver) -> tuple[str | None, float | None, float | None]:
    """The Architect's version, when it was tagged and when a restarted runner first served it (seconds
    since the users started; None for what has not happened)."""
    job = architect_job(driver)
    listed = architect_version(driver)
    name = job.get("version") if job and job.get("version") else (listed or {}).get("version")
    if name is None:
        return None, None, None
    tagged = [e["at"] - driver.t0_wall for e in (job or {}).get("log", []) if e.get("step") == "tag" and e.get("ok", True)]
    tagged_at = tagged[-1] if tagged else (_made_at(listed, driver.t0_wall) if listed else None)
    return name, tagged_at, driver.seen.served_at(name, tagged_at)


# --- while it runs ---------------------------------------------------------------------------------


class LiveReport:
    """A progress line (phase, elapsed time, conversations, recent reward, version served) with the
    moments that matter printed above it."""

    def __init__(self, console: Console, prefs: Preferences):
        self.console = console
        self.prefs = prefs
        self.driver: Driver | None = None
        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description:<22}"), TimeElapsedColumn(),
                                 TextColumn("{task.fields[info]}"), console=console, transient=True)
        self.task = self.progress.add_task("starting", total=None, info="")
        self.drift_told = self.served_told = self.recovered_told = False
        self.jobs_told: set = set()  # job ids, and (job id, "plan")
        self._recent: list[Turn] = []
        self._all: list[Turn] = []

    def __enter__(self) -> LiveReport:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def say(self, t: float, text: str, style: str = "") -> None:
        self.progress.console.print(f"[dim]{t:6.1f} s[/dim]  {text}", style=style, highlight=False)

    # callbacks of the driver

    def on_turn(self, turn: Turn) -> None:
        self._recent.append(turn)
        self._all.append(turn)

    def on_note(self, t: float, kind: str, data: dict[str, Any]) -> None:
        if kind == "version":
            if data.get("kind") == "architect":
                self.say(t, f"[bold magenta]{data['version']}[/]  architect, {data.get('bump')}: {data.get('reason')}")
            elif data.get("kind") == "tuner":
                events = (data.get("metadata") or {}).get("events_applied")
                self.say(t, f"[cyan]{data['version']}[/]  tuner, patch ({events} feedback events)", style="dim")
            elif data.get("kind") != "init":
                self.say(t, f"{data['version']}  {data.get('kind')}, {data.get('bump')}: {data.get('reason')}")
        elif kind == "job":
            state, job_id = data["state"], data["id"]
            if job_id not in self.jobs_told and data.get("source") == "wake":  # whatever state it is first seen in
                self.jobs_told.add(job_id)
                request = data.get("request") or {}
                breaches = ", ".join(f"{b['kpi']} {b['value']:.2f} < {b['slo']:g}"
                                     for b in (request.get("report") or request).get("breaches", []))
                woken = data["created"] - self.driver.t0_wall if self.driver else t
                self.say(woken, f"[bold yellow]the triggerer woke the architect[/] ({breaches}): job {job_id}")
            if job_id not in self.jobs_told and data.get("source") == "feedback":
                self.jobs_told.add(job_id)
            if data.get("plan") and (job_id, "plan") not in self.jobs_told:
                self.jobs_told.add((job_id, "plan"))
                self.say(t, f"job {job_id} plans with {data.get('planner')}: {data['plan']['summary']}")
            if state == "testing":
                self.say(t, f"job {job_id} runs the micro, fast and full tiers")
            elif state in ("succeeded", "failed") and (text := ope_text(ope_gate(data))):
                self.say(t, escape(text), style="dim")
            if state == "succeeded":
                self.say(t, f"[green]job {job_id} succeeded[/]: {data.get('version')} ({data.get('bump')})")
                self.say(t, "the supervisor restarts the servers for the new code; the users' clients retry meanwhile",
                         style="dim")
            elif state == "failed":
                self.say(t, f"[red]job {job_id} failed[/]: {(data.get('error') or {}).get('detail')}")
        elif kind == "served" and self.driver is not None and not self.served_told:
            name, _, served_at = architect_moments(self.driver)
            if served_at is not None:
                self.served_told = True
                self.say(t, f"[bold green]the restarted runner (pid {data.get('pid')}) serves {data['version']}[/], "
                            "with the architect's change")
        elif kind == "failure":
            self.say(t, f"[red]a conversation failed[/]: {data['error']}")
        elif kind == "asked":
            self.say(t, f"[bold yellow]a user asks the architect[/] (POST /feedback): \"{data['text']}\" "
                        f"-> job {data['job']}")
        elif kind == "new_style":
            self.say(data["at"], f"[bold green]the runner replies in the new style {data['style']}[/]: the tuner "
                                 "tries its new arm")

    def on_tick(self, t: float) -> None:
        if not self.drift_told and t >= self.prefs.drift_at:
            self.drift_told = True
            self.say(self.prefs.drift_at, f"[bold red]drift[/]: the users' hidden preferences change "
                                          f"(best style: {self.prefs.best(0)} -> {self.prefs.best(self.prefs.drift_at)})")
        if self.drift_told and not self.recovered_told and t >= self.prefs.drift_at + RECOVERY_SPAN:
            back = recovery(self._all, self.prefs.drift_at)
            if back is not None:
                self.recovered_told = True
                regret = sum(x.regret for x in self._all if self.prefs.drift_at <= x.t < back)
                self.say(back, f"[bold green]the tuner recovered by itself[/] (change detected, patch versions): "
                               f"regret {regret:.1f} since the drift")
        self._recent = [x for x in self._recent if x.t >= t - RECENT]
        reward = sum(x.reward for x in self._recent) / len(self._recent) if self._recent else None
        driver = self.driver
        served = driver.seen.served[-1][1] if driver and driver.seen.served else "?"
        info = (f"{len(driver.turns) if driver else 0:5d} conversations · reward "
                f"{'  - ' if reward is None else f'{reward:.2f}'} (last {RECENT:g} s) · runner serves {served}")
        self.progress.update(self.task, description=self.phase(t), info=info)

    def phase(self, t: float) -> str:
        driver = self.driver
        if driver is None or t < self.prefs.drift_at:
            return "tuning"
        if new_style_at(driver) is not None:
            return "learning the new style"
        name, _, served_at = architect_moments(driver)
        if served_at is not None:
            return "serving the new style"
        job = architect_job(driver)
        if name is not None:
            return "restarting servers"
        if job is not None:
            return f"architect: {job['state']}"
        return "recovered" if self.recovered_told else "drifted: tuner adapts"


# --- the summary -----------------------------------------------------------------------------------


def _window(turns: list[Turn], start: float, end: float) -> dict[str, Any]:
    inside = [x for x in turns if start <= x.t < end]
    n = len(inside)
    return {"from_seconds": round(start, 2), "to_seconds": round(end, 2), "conversations": n,
            "mean_reward": round(sum(x.reward for x in inside) / n, 4) if n else None,
            "expected_reward": round(sum(x.expected for x in inside) / n, 4) if n else None,
            "oracle_reward": round(sum(x.oracle for x in inside) / n, 4) if n else None,
            "regret": round(sum(x.regret for x in inside), 3)}


def _made_at(version: dict[str, Any], t0_wall: float) -> float:
    """When a version was tagged, in seconds since the users started: its tag's date (to the second), or
    when the monitor first saw it (the Versions API restarts with new code too, so it can be late)."""
    from datetime import datetime

    try:
        return min(version["seen_at"], datetime.fromisoformat(version["created"]).timestamp() - t0_wall)
    except (KeyError, TypeError, ValueError):
        return version["seen_at"]


def summarize(driver: Driver, prefs: Preferences, scales: Timescales, *, seed: int, rate: float,
              setup_seconds: float, workspace: Path, out: Path, servers: Servers | None,
              strategy: str | None = None) -> dict[str, Any]:
    turns = driver.turns
    end = driver.elapsed
    _, tagged_at, served_at = architect_moments(driver)
    job = architect_job(driver)
    woke = wake_job(driver)
    drift = prefs.drift_at
    recovered_at = recovery(turns, drift)
    first_new = new_style_at(driver)
    versions = [{"version": v["version"], "kind": v.get("kind"), "bump": v.get("bump"), "reason": v.get("reason"),
                 "at_seconds": round(_made_at(v, driver.t0_wall), 2), "seen_at_seconds": round(v["seen_at"], 2)}
                for v in driver.seen.versions]
    tuner_versions = [v["version"] for v in versions if v["kind"] == "tuner"]
    by_architect = [v for v in versions if v["kind"] == "architect"]
    total_regret = sum(x.regret for x in turns)
    to_recovery = _window(turns, drift, recovered_at if recovered_at is not None else end + 1)
    after_recovery = _window(turns, recovered_at, first_new if first_new is not None else end + 1) \
        if recovered_at is not None else None
    with_new = _window(turns, max(first_new, end - WINDOW), end + 1) if first_new is not None else None
    last = [x for x in turns if x.t >= end - WINDOW]
    patches_to_recovery = [v["version"] for v in versions if v["kind"] == "tuner"
                           and recovered_at is not None and drift <= v["at_seconds"] <= recovered_at]
    return {
        "seed": seed,
        "settings": {"rate_per_second": rate, "drift_at_seconds": drift, "ask_at_seconds": prefs.ask_at,
                     "promote_every_events": scales.promote_every, "strategy": strategy,
                     "slo": {"window_seconds": scales.slo_window, "reward_rate_min": scales.reward_rate_min},
                     "triggerer": {"interval_seconds": scales.check_interval, "min_samples": scales.min_samples,
                                   "breach_checks": scales.breach_checks},
                     "recovery": {"span_seconds": RECOVERY_SPAN, "share_of_oracle": RECOVERY_SHARE}},
        "preferences": prefs.to_dict(),
        "seconds": {"setup": round(setup_seconds, 2), "run": round(end, 2)},
        "conversations": len(turns),
        "failed_conversations": len(driver.failures),
        "failures": driver.failures[:20],
        "reconnects": driver.retries,
        "versions_made": {
            "tuner_patches": len(tuner_versions),
            "tuner": tuner_versions,
            "architect": by_architect,
        },
        "versions": versions,
        "drift": {
            "at_seconds": drift,
            "recovered_at_seconds": round(recovered_at, 2) if recovered_at is not None else None,
            "regret_to_recovery": to_recovery["regret"],
            "patch_versions_to_recovery": patches_to_recovery,
            "woke_the_architect": woke is not None,
        },
        "new_style": {
            "style": NEW_STYLE,
            "asked_at_seconds": round(driver.asked["at"], 2) if driver.asked else None,
            "first_reply_at_seconds": round(first_new, 2) if first_new is not None else None,
            "share_last_window": round(sum(x.style == NEW_STYLE for x in last) / len(last), 3) if last else None,
        },
        "architect": None if job is None else {
            "job_id": job["id"], "source": job.get("source"), "state": job["state"], "planner": job.get("planner"),
            "plan": job.get("plan"), "request": job.get("request"), "bump": job.get("bump"),
            "version": job.get("version"),
            "tiers": [{k: t.get(k) for k in ("tier", "passed", "failed", "ok", "seconds")} for t in job.get("tiers", [])],
            "error": job.get("error"),
            "created_at_seconds": round(job["created"] - driver.t0_wall, 2) if job.get("created") else None,
            "tagged_at_seconds": round(tagged_at, 2) if tagged_at is not None else None,
            "served_at_seconds": round(served_at, 2) if served_at is not None else None,
            # the off-policy gate (issue 15): the full tier's estimate of the existing styles' reward under the
            # change, beside active's, and the new style's share of the draws (never served, so not estimated)
            "ope": ope_gate(job),
        },
        "reward": {
            "before_drift": _window(turns, max(0.0, drift - WINDOW), drift),
            "drift_to_recovery": to_recovery,
            "after_recovery": after_recovery,
            "with_new_style": with_new,
        },
        "recovered": recovered_at is not None,
        "regret": {
            "cumulative": round(total_regret, 3),
            "per_conversation": round(total_regret / len(turns), 4) if turns else None,
            "before_drift": _window(turns, 0.0, drift)["regret"],
            "drift_to_recovery": to_recovery["regret"],
            "recovery_to_new_style": after_recovery["regret"] if after_recovery else None,
            "after_new_style": _window(turns, first_new, end + 1)["regret"] if first_new is not None else None,
            "oracle_reward_total": round(sum(x.oracle for x in turns), 3),
            "reward_total": sum(x.reward for x in turns),
        },
        "workspace": str(workspace),
        "files": {"plot": str(out / "reward.png"), "summary": str(out / "summary.json")},
        "servers": None if servers is None else {"supervisor_pid": servers.pid, "addresses": servers.addresses},
        "made_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_summary(summary: dict[str, Any], turns: list[Turn], path: Path) -> None:
    data = {**summary, "timeline": [[round(x.t, 3), x.style, x.reward, round(x.regret, 4)] for x in turns],
            "timeline_columns": ["seconds", "style", "reward", "regret"]}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def print_summary(console: Console, s: dict[str, Any]) -> None:
    made = s["versions_made"]
    arch = s["architect"]
    console.print()
    table = Table(title="reward", title_justify="left")
    for col in ("window", "seconds", "conversations", "mean reward", "oracle", "regret"):
        table.add_column(col, justify="left" if col == "window" else "right")
    names = {"before_drift": "before the drift (converged)", "drift_to_recovery": "from the drift to recovery (tuner)",
             "after_recovery": "after recovery, built-in styles", "with_new_style": f"with {s['new_style']['style']} "
             "(architect's new arm)"}
    for key, label in names.items():
        w = s["reward"][key]
        if w is None:
            table.add_row(label, "-", "0", "-", "-", "-")
            continue
        table.add_row(label, f"{w['from_seconds']:.0f}–{w['to_seconds']:.0f}", str(w["conversations"]),
                      "-" if w["mean_reward"] is None else f"{w['mean_reward']:.2f}",
                      "-" if w["oracle_reward"] is None else f"{w['oracle_reward']:.2f}", f"{w['regret']:.1f}")
    console.print(table)

    r, drift, new = s["regret"], s["drift"], s["new_style"]
    tuner = made["tuner"]
    span = f" ({tuner[0]} … {tuner[-1]})" if tuner else ""
    lines = [
        f"[bold]versions[/]: {made['tuner_patches']} patch versions by the tuner{span}; by the architect: "
        + (", ".join(f"{v['version']} ({v['bump']})" for v in made["architect"]) or "none"),
        f"[bold]drift[/] at {drift['at_seconds']:g} s: "
        + (f"the tuner ({s['settings']['strategy']}) recovered by itself at {drift['recovered_at_seconds']:.1f} s "
           f"({len(drift['patch_versions_to_recovery'])} patch versions), regret from the drift to recovery "
           f"[bold]{drift['regret_to_recovery']:.1f}[/]" if drift["recovered_at_seconds"] is not None
           else f"not recovered (regret {drift['regret_to_recovery']:.1f} since)")
        + ("; [red]the SLO was breached and the triggerer woke the architect[/]" if drift["woke_the_architect"] else ""),
        f"[bold]regret[/] against the oracle: {r['cumulative']:.1f} over {s['conversations']} conversations "
        f"({r['per_conversation']:.3f} each): {r['before_drift']:.1f} while learning, "
        f"{r['drift_to_recovery']:.1f} from the drift to recovery, "
        + ("-" if r["recovery_to_new_style"] is None else f"{r['recovery_to_new_style']:.1f}") + " until the new style, "
        + ("-" if r["after_new_style"] is None else f"{r['after_new_style']:.1f}") + " after it",
    ]
    if arch:
        lines.append(f"[bold]architect[/]: job {arch['job_id']} ({arch['source']}, {arch['state']}, planner "
                     f"{arch['planner']}): " + (arch["plan"]["summary"] if arch.get("plan") else "no plan"))
        for action in (arch.get("plan") or {}).get("actions", []):
            lines.append(f"    {escape(_action_text(action))}")
        if text := ope_text(arch.get("ope")):
            lines.append(f"    {escape(text)}")
        timing = [f"asked at {new['asked_at_seconds']:.1f} s" if new["asked_at_seconds"] is not None else None,
                  f"tagged at {arch['tagged_at_seconds']:.1f} s" if arch["tagged_at_seconds"] is not None else None,
                  f"served at {arch['served_at_seconds']:.1f} s" if arch["served_at_seconds"] is not None else None,
                  f"first {new['style']} reply at {new['first_reply_at_seconds']:.1f} s"
                  if new["first_reply_at_seconds"] is not None else None]
        lines.append("    " + ", ".join(x for x in timing if x)
                     + (f"; {new['style']} served {new['share_last_window']:.0%} of the last {WINDOW:g} s"
                        if new["share_last_window"] is not None and new["first_reply_at_seconds"] is not None else ""))
    else:
        lines.append("[bold]architect[/]: no job")
    if s["failed_conversations"]:
        lines.append(f"[red]{s['failed_conversations']} conversations failed[/], e.g. {s['failures'][0]}")
    lines.append(f"[dim]{s['conversations']} conversations in {s['seconds']['run']:.0f} s after a "
                 f"{s['seconds']['setup']:.0f} s set-up; {s['reconnects']} reconnects across restarts[/]")
    for line in lines:
        console.print(line, highlight=False)


def _action_text(action: dict[str, Any]) -> str:
    rest = {k: v for k, v in action.items() if k != "kind"}
    text = json.dumps(rest, sort_keys=True)
    return f"{action.get('kind', '?')}: {text if len(text) <= 100 else text[:99] + '…'}"


# --- the plot --------------------------------------------------------------------------------------


def plot(summary: dict[str, Any], turns: list[Turn], path: Path) -> None:
    """Reward over time (rolling mean, the expected reward of the styles served and the oracle's), each
    version marked, and the cumulative regret below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t = np.array([x.t for x in turns])
    reward = np.array([x.reward for x in turns])
    expected = np.array([x.expected for x in turns])
    oracle = np.array([x.oracle for x in turns])
    regret = np.cumsum([x.regret for x in turns])
    seconds = 3.0

    def rolling(values: np.ndarray) -> np.ndarray:
        """Mean over the last ``seconds``; NaN (a gap in the line) with fewer than 10 conversations there."""
        if len(values) == 0:
            return values
        csum = np.concatenate([[0.0], np.cumsum(values)])
        idx = np.arange(len(values))
        start = np.searchsorted(t, t - seconds, side="left")
        count = idx + 1 - start
        return np.where(count >= 10, (csum[idx + 1] - csum[start]) / count, np.nan)

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 6.8), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    ax.plot(t, rolling(reward), color="#1f77b4", lw=1.6, label=f"reward from the users ({seconds:g} s rolling mean)")
    ax.plot(t, rolling(expected), color="#1f77b4", lw=1, alpha=0.45, label="expected reward of the styles served")
    ax.step(t, oracle, where="post", color="black", lw=1, ls="--", label="oracle (knows the hidden preferences)")
    slo = summary["settings"]["slo"]["reward_rate_min"]
    ax.axhline(slo, color="#d62728", lw=0.8, ls=":", label=f"SLO: reward rate ≥ {slo:g}")

    drift = summary["settings"]["drift_at_seconds"]
    arch = summary["architect"] or {}
    back = summary["drift"]["recovered_at_seconds"]
    marks = [(drift, "drift", "#d62728", "--")]
    if back is not None:
        marks.append((back, f"recovered by the tuner (regret {summary['drift']['regret_to_recovery']:.0f})",
                      "#17becf", "--"))
        for a in (ax, ax2):
            a.axvspan(drift, back, color="#d62728", alpha=0.08, lw=0)
    asked = summary["new_style"]["asked_at_seconds"]
    if asked is not None:
        marks.append((asked, f"users ask for {summary['new_style']['style']}", "#ff7f0e", ":"))
    if summary["new_style"]["first_reply_at_seconds"] is not None:
        marks.append((summary["new_style"]["first_reply_at_seconds"], f"first {summary['new_style']['style']} reply",
                      "#2ca02c", ":"))
    if arch.get("served_at_seconds") is not None:
        if arch.get("tagged_at_seconds") is not None:
            for a in (ax, ax2):
                a.axvspan(arch["tagged_at_seconds"], arch["served_at_seconds"], color="grey", alpha=0.12, lw=0)
            ax.text((arch["tagged_at_seconds"] + arch["served_at_seconds"]) / 2, 0.5, "servers restart\n(new code)",
                    fontsize=8, color="dimgrey", ha="center", va="center", transform=ax.get_xaxis_transform())
    recovering = set(summary["drift"]["patch_versions_to_recovery"])
    for v in summary["versions"]:
        if v["kind"] == "tuner":
            mine = v["version"] in recovering  # the patch versions that absorbed the drift
            for a in (ax, ax2):
                a.axvline(v["at_seconds"], color="#17becf" if mine else "grey", lw=1.0 if mine else 0.5,
                          alpha=0.8 if mine else 0.5)
        elif v["kind"] == "architect":
            at = arch.get("tagged_at_seconds") if arch.get("version") == v["version"] else None
            at = v["at_seconds"] if at is None else at
            for a in (ax, ax2):
                a.axvline(at, color="#9467bd", lw=2.2)
            ax.text(at, 0.98, f" {v['version']} (architect, {v['bump']})", color="#9467bd",
                    fontsize=9, va="top", ha="left", transform=ax.get_xaxis_transform())
    for x, label, color, ls in marks:
        for a in (ax, ax2):
            a.axvline(x, color=color, lw=1.2, ls=ls)
        after = label.startswith("recovered")  # its left is the shaded drift: write it on the right
        ax.text(x, 0.02, f" {label}", color=color, fontsize=8, rotation=90, va="bottom",
                ha="left" if after else "right", transform=ax.get_xaxis_transform())
    ax.plot([], [], color="grey", lw=0.5, label="patch version (tuner)")
    ax.plot([], [], color="#17becf", lw=1.0, label="patch versions from the drift to recovery")
    ax.plot([], [], color="#9467bd", lw=2.2, label="minor version (architect: the new style)")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("reward")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"ratchet demo: reward over time (seed {summary['seed']}, {summary['conversations']} conversations)",
                 x=0.01, ha="left", fontsize=11)
    ax2.plot(t, regret, color="#8c564b", lw=1.4)
    ax2.set_ylabel("cumulative regret\nvs the oracle")
    ax2.set_xlabel("seconds since the users started")
    for a in (ax, ax2):
        a.grid(alpha=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
