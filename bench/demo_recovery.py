"""Regret of the demo's drift→recovery over seeds: the real servers, the demo's simulated users.

Each seed runs the demo's first loop (``ratchet demo``'s workspace, servers and driver, see
:mod:`ratchet.demo`): users at ``--rate`` conversations a second, their preferences drifting at
``--drift-at`` seconds, the tuner's bandit (``glr_thompson``) absorbing the drift by itself. In the
default ``tuner`` mode nobody asks the Architect for the new style (it runs, idle, unless the triggerer
wakes it): the users stop ``--after`` seconds after the recovery (or ``--max-seconds``), which keeps a
run short. ``--mode whole`` runs the whole demo (:func:`ratchet.demo.run_demo`), Architect included.

Per seed it records the regret from the drift to recovery and the recovery time (both as the demo's
summary defines them, :func:`ratchet.demo.report.recovery`), the total regret of the run, the patch
versions made, the change detector's alarms (tuner mode) and the wall time (set-up included); then mean ±
standard error over the seeds. Results
are kept per configuration label (``--label``, default from the mode and the settings), merged into
``bench/results/demo_recovery.json`` so that runs with other tuner settings sit beside each other.

    python bench/demo_recovery.py --seeds 1 2 3 4 5 6
    python bench/demo_recovery.py --seeds 1 2 3 --promote-every 10 5   # two promotion cadences, interleaved
    python bench/demo_recovery.py --seeds 1 --mode whole
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from ratchet.demo import DemoOptions, run_demo
from ratchet.demo.report import recovery, summarize
from ratchet.demo.servers import Timescales, prepare_workspace, start_servers

OUT = Path(__file__).parent / "results" / "demo_recovery.json"


def run_tuner_only(seed: int, opts: DemoOptions, scales: Timescales, after: float) -> dict:
    """The demo's first loop only: workspace, servers, users without the request to the Architect."""
    from ratchet.demo import _warm_up
    from ratchet.demo.driver import Driver
    from ratchet.demo.simulation import Oracle, Preferences, Users

    out = Path(tempfile.mkdtemp(prefix=f"demo-recovery-{seed}-"))
    root = out / "support-desk"
    started = time.monotonic()
    prepare_workspace(root, scales)
    servers = start_servers(root, scales)
    try:
        prefs = Preferences(drift_at=opts.drift_at, ask_at=None)
        users = Users.from_workspace(root, prefs, seed)
        _warm_up(servers.addresses, users)
        setup = time.monotonic() - started
        state: dict = {"back": None, "checked": 0.0}

        def done(driver: Driver, t: float) -> bool:
            if state["back"] is None and t >= prefs.drift_at + 2 and t >= state["checked"] + 1:
                state["checked"] = t  # recovery() scans every turn: once a second is enough
                state["back"] = recovery(driver.turns, prefs.drift_at)
            return state["back"] is not None and t >= state["back"] + after

        driver = Driver(servers.addresses, users, Oracle(prefs), rate=opts.rate, max_seconds=opts.max_seconds,
                        done=done, runner_pid=lambda: servers.refresh() or servers.pids.get("runner"))
        driver.run()
    finally:
        servers.stop()
    summary = summarize(driver, prefs, scales, seed=seed, rate=opts.rate, setup_seconds=setup, workspace=root,
                        out=out, servers=None, strategy=scales.strategy)
    summary["detector"] = detector(root, driver.turns, prefs.drift_at)
    subprocess.run(["rm", "-rf", str(out)], check=False)
    return summary


def detector(root: Path, turns: list, drift_at: float) -> dict | None:
    """What the style bandit's change detector did, from the last active state: its alarms per arm and the
    latest one's place, counted in rewards after the drift (the bandit counts rewards: the conversations
    before the drift each gave one). None for a bandit without a detector."""
    section = json.loads((root / "state" / "active.state.json").read_text())["strategies"]["style"]
    if "alarms" not in section:
        return None
    before = sum(1 for x in turns if x.t < drift_at)
    last = section["last_alarm"]
    return {"alarms": dict(zip(section["arms"], section["alarms"])),
            "last_alarm_rewards_after_drift": last - before if last is not None else None}


def run_whole(seed: int, opts: DemoOptions) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"demo-recovery-{seed}-")) / "demo"
    summary = run_demo(dataclasses.replace(opts, out=out, seed=seed), console=Console(file=io.StringIO()))
    subprocess.run(["rm", "-rf", str(out.parent)], check=False)
    return summary


def row(summary: dict, wall: float) -> dict:
    drift, made = summary["drift"], summary["versions_made"]
    back = drift["recovered_at_seconds"]
    return {
        "seed": summary["seed"],
        "recovered": summary["recovered"],
        "regret_drift_to_recovery": drift["regret_to_recovery"],
        "recovery_seconds": round(back - drift["at_seconds"], 2) if back is not None else None,
        "regret_total": summary["regret"]["cumulative"],
        "regret_before_drift": summary["regret"]["before_drift"],
        "run_seconds": summary["seconds"]["run"],
        "conversations": summary["conversations"],
        "failed_conversations": summary["failed_conversations"],
        "tuner_patches": made["tuner_patches"],
        "patches_to_recovery": len(drift["patch_versions_to_recovery"]),
        # the promotion cadence: promote_every / rate if the tuner keeps up, longer if not (the versions'
        # times have a resolution of a second, so the mean over the run)
        "promotion_interval_mean_seconds": round(summary["seconds"]["run"] / max(1, made["tuner_patches"]), 2),
        "woke_the_architect": drift["woke_the_architect"],
        "detector": summary.get("detector"),  # tuner mode only
        "wall_seconds": round(wall, 1),
    }


def mean_se(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    n = len(values)
    if not n:
        return {"mean": None, "se": None, "n": 0}
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
    return {"mean": round(mean, 3), "se": round(se, 3) if se is not None else None, "n": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--mode", choices=["tuner", "whole"], default="tuner")
    parser.add_argument("--rate", type=float, default=DemoOptions.rate)
    parser.add_argument("--drift-at", type=float, default=DemoOptions.drift_at)
    parser.add_argument("--after", type=float, default=3.0, help="seconds the users go on after recovery (tuner mode)")
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--promote-every", type=int, nargs="+", default=[Timescales.promote_every],
                        help="feedback events per tuner promotion (tuner mode; the demo's is "
                             f"{Timescales.promote_every}); several values run in turn for each seed, so that "
                             "they share the machine's load")
    parser.add_argument("--label", default=None, help="with one --promote-every value: the results' name")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--extend", action="store_true", help="add these seeds' runs to those --out already has "
                        "under the same label (a seed run again replaces its old run)")
    args = parser.parse_args()
    if args.mode == "whole" and args.promote_every != [Timescales.promote_every]:
        parser.error("--promote-every: the whole demo runs with its own timescales; use --mode tuner")
    if args.label and len(args.promote_every) > 1:
        parser.error("--label names one configuration: give one --promote-every value")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers (finally) on kill
    opts = DemoOptions(rate=args.rate, drift_at=args.drift_at, max_seconds=args.max_seconds)
    configs = {(args.label or (f"tuner:promote_every={n}" if args.mode == "tuner" else "whole")):
               dataclasses.replace(Timescales(), promote_every=n) for n in args.promote_every}

    rows: dict[str, list[dict]] = {label: [] for label in configs}
    for seed in args.seeds:
        for label, scales in configs.items():
            started = time.monotonic()
            summary = (run_tuner_only(seed, opts, scales, args.after) if args.mode == "tuner"
                       else run_whole(seed, opts))
            rows[label].append(row(summary, time.monotonic() - started))
            r = rows[label][-1]
            print(f"{label} seed {seed}: regret drift→recovery {r['regret_drift_to_recovery']}, recovery "
                  f"{r['recovery_seconds']} s, total {r['regret_total']}, promotions every "
                  f"{r['promotion_interval_mean_seconds']} s, detector {r['detector']}, wall {r['wall_seconds']} s",
                  flush=True)

    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    for label, scales in configs.items():
        runs = rows[label]
        if args.extend and label in data.get("configs", {}):
            redone = {r["seed"] for r in runs}
            runs = [r for r in data["configs"][label]["runs"] if r["seed"] not in redone] + runs
        data.setdefault("configs", {})[label] = result = {
            "mode": args.mode, "strategy": scales.strategy, "rate_per_second": args.rate,
            "drift_at_seconds": args.drift_at, "promote_every_events": scales.promote_every,
            "after_recovery_seconds": args.after if args.mode == "tuner" else None,
            "interleaved_with": [other for other in configs if other != label],
            "seeds": [r["seed"] for r in runs], "runs": runs,
            "summary": {k: mean_se([r[k] for r in runs]) for k in
                        ("regret_drift_to_recovery", "recovery_seconds", "regret_total", "wall_seconds")},
            "recovered": sum(bool(r["recovered"]) for r in runs),
            "goal": {"regret_drift_to_recovery_max": 30},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
            "made_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        print(f"\n{label}: {len(runs)} seeds, recovered {result['recovered']}")
        for k, v in result["summary"].items():
            print(f"  {k}: {v['mean']} ± {v['se']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
