"""How long an Architect job takes, step by step, for the default playbook's three kinds of change.

    .venv/bin/python bench/architect.py [--repeat N]

Each run makes a fresh default workspace and runs, in process (no HTTP), a length complaint (a patch),
an "add a test" request (a minor: new test case) and drifting preferences (a minor: a rendered
strategy plugin and a config change). The step times come from the job's own log: plan (worktree and
planner), apply (actions), commit, tiers (micro, fast and full in one `ratchet test` process), bump
(the tool-schema diff, when code changed) and merge+tag.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

REQUESTS = {
    "length (patch)": "The answers are far too long",
    "add a test (minor)": 'add a test: "Can I pay with PayPal?" should mention "PayPal"',
    "drift (minor)": "Our users' preferences have drifted",
}


def phases(job) -> dict[str, float]:
    """Seconds between the log entries that start each step."""
    marks = {}
    for entry in job.log:
        marks.setdefault(entry.step, entry.at)
    order = [s for s in ("queued", "plan", "apply", "commit", "tiers", "bump", "tag") if s in marks]
    out = {f"{a}->{b}": marks[b] - marks[a] for a, b in zip(order, order[1:])}
    out["total"] = job.log[-1].at - job.log[0].at
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import os

    os.environ.setdefault("RATCHET_CACHE_DIR", tempfile.mkdtemp(prefix="ratchet-bench-cache-"))
    from ratchet.architect.service import Architect
    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins
    from ratchet.core.workspace import Workspace

    results: dict[str, list[dict[str, float]]] = {k: [] for k in REQUESTS}
    for _ in range(args.repeat):
        for label, text in REQUESTS.items():
            root = Path(tempfile.mkdtemp(prefix="ratchet-bench-")) / "ws"
            create_workspace(root, plugins=load_plugins(), author="bench")
            arch = Architect(Workspace.open(root))
            start = time.perf_counter()
            job = arch.process(arch.jobs.get(arch.submit_feedback(text).id))
            wall = time.perf_counter() - start
            assert job.state == "succeeded", job.error
            results[label].append({**phases(job), "wall": wall})

    print(f"{'request':<22} {'median s':>9}   steps (median s)")
    summary = {}
    for label, runs in results.items():
        keys = [k for k in runs[0] if k not in ("total", "wall")]
        med = {k: round(statistics.median(r[k] for r in runs), 2) for k in [*keys, "wall"]}
        summary[label] = med
        steps = ", ".join(f"{k} {v:.2f}" for k, v in med.items() if k != "wall")
        print(f"{label:<22} {med['wall']:>9.2f}   {steps}")
    out = Path(__file__).parent / "results" / "architect.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"repeat": args.repeat, "median_seconds": summary}, indent=2))


if __name__ == "__main__":
    main()
