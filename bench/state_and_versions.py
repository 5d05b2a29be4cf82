"""Foundation benchmarks: state compare-and-swap, versions, listing 10,000 tags, `ratchet --help`.

    .venv/bin/python bench/state_and_versions.py [--seconds 3] [--tags 10000]

Prints a markdown table and writes bench/results/state_and_versions.json. Figures drift on a shared
machine; compare rows of one run rather than runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Process, Queue
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def bump(doc):
    n = doc["strategies"].get("counter", {"n": 0})["n"]
    return {**doc, "strategies": {**doc["strategies"], "counter": {"n": n + 1}}}


def cas_loop(root: str, seconds: float, out: Queue) -> None:
    from ratchet.core.workspace import Workspace

    ws = Workspace.open(root)
    waits, done, end = [], 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        ws.state.update("staging", bump, retries=100_000)
        waits.append(time.perf_counter() - t0)
        done += 1
    out.put({"updates": done, "max_ms": max(waits) * 1e3, "p50_ms": statistics.median(waits) * 1e3,
             "p99_ms": sorted(waits)[int(len(waits) * 0.99) - 1] * 1e3})


def bench_cas(root: Path, seconds: float, procs: int) -> dict:
    q: Queue = Queue()
    ps = [Process(target=cas_loop, args=(str(root), seconds, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    total = sum(r["updates"] for r in results)
    return {"processes": procs, "updates_per_s": total / seconds,
            "per_process": [round(r["updates"] / seconds, 1) for r in results],
            "p50_ms": round(max(r["p50_ms"] for r in results), 2),
            "p99_ms": round(max(r["p99_ms"] for r in results), 2),
            "max_wait_ms": round(max(r["max_ms"] for r in results), 1)}


def bench_versions(root: Path, n: int) -> dict:
    from ratchet.core.versions import VersionStore

    store = VersionStore(root)
    t0 = time.perf_counter()
    for i in range(n):
        (root / "bench.txt").write_text(str(i))
        store.make_version("patch", paths=["bench.txt"], reason="bench", kind="bench", author="bench")
    dt = time.perf_counter() - t0
    return {"versions": n, "versions_per_s": round(n / dt, 1), "ms_per_version": round(dt / n * 1e3, 1)}


def make_many_tags(root: Path, count: int) -> None:
    """Annotated tags with JSON messages, in bulk through git fast-import, then packed."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    lines = []
    for i in range(count):
        msg = json.dumps({"kind": "tuner", "bump": "patch", "reason": f"bulk {i}", "author": "bench"}).encode()
        lines.append(f"tag v1.{i // 1000}.{i % 1000}\nfrom {head}\ntagger B <b@x> 1700000000 +0000\n"
                     f"data {len(msg)}\n".encode() + msg + b"\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input=b"".join(lines), check=True)
    subprocess.run(["git", "pack-refs", "--all"], cwd=root, check=True)


def timeit(cmd: list[str], cwd: Path, runs: int) -> dict:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return {"median_ms": round(statistics.median(times) * 1e3, 1), "min_ms": round(min(times) * 1e3, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--versions", type=int, default=100)
    args = ap.parse_args()

    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins
    from ratchet.core.versions import VersionStore

    os.environ.setdefault("RATCHET_CACHE_DIR", tempfile.mkdtemp())
    tmp = Path(tempfile.mkdtemp(prefix="ratchet-bench-"))
    ws_root = tmp / "ws"
    create_workspace(ws_root, plugins=load_plugins(), author="bench")
    ratchet = str(Path(sys.executable).with_name("ratchet"))
    res: dict = {}
    res["cas_1_process"] = bench_cas(ws_root, args.seconds, 1)
    res["cas_2_processes"] = bench_cas(ws_root, args.seconds, 2)
    res["versions"] = bench_versions(ws_root, args.versions)
    res["help"] = timeit([ratchet, "--help"], tmp, 10)
    make_many_tags(ws_root, args.tags)
    store = VersionStore(ws_root)
    t0 = time.perf_counter()
    n = len(store.list())  # cold: parses every tag object once, then caches them by object id
    res["list_cold_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
    warm = []
    for _ in range(10):
        t0 = time.perf_counter()
        VersionStore(ws_root).list()  # a new process's view: the persisted cache, no object reads
        warm.append(time.perf_counter() - t0)
    res["list_warm_ms"] = round(statistics.median(warm) * 1e3, 1)
    res["tags"] = n
    t0 = time.perf_counter()
    for _ in range(50):
        store.read_file("v1.5.500", "state/active.state.json")
    res["read_file_at_tag_ms"] = round((time.perf_counter() - t0) / 50 * 1e3, 2)
    res["versions_json_cli"] = timeit([ratchet, "versions", "--json"], ws_root, 5)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "state_and_versions.json").write_text(json.dumps(res, indent=2) + "\n")
    c1, c2 = res["cas_1_process"], res["cas_2_processes"]
    print("| measure | figure |\n| --- | --- |")
    print(f"| CAS updates/s, 1 process | {c1['updates_per_s']:.0f} (p50 {c1['p50_ms']} ms, p99 {c1['p99_ms']} ms) |")
    print(f"| CAS updates/s, 2 contending processes | {c2['updates_per_s']:.0f} total, per process "
          f"{c2['per_process']} (p99 {c2['p99_ms']} ms, longest wait {c2['max_wait_ms']} ms) |")
    print(f"| versions made/s (commit + annotated tag) | {res['versions']['versions_per_s']} "
          f"({res['versions']['ms_per_version']} ms each) |")
    print(f"| `ratchet --help` | median {res['help']['median_ms']} ms |")
    print(f"| list + semver-sort {n} tags, in process: first (cold) / then (median) | "
          f"{res['list_cold_ms']} ms / {res['list_warm_ms']} ms |")
    print(f"| read a file at a tag among {n} | {res['read_file_at_tag_ms']} ms |")
    print(f"| `ratchet versions --json` with {n} tags | median {res['versions_json_cli']['median_ms']} ms |")


if __name__ == "__main__":
    main()
