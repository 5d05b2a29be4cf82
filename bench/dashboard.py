"""The dashboard's overview on a big workspace: 10,000 versions and 1,000,000 logged calls.

    .venv/bin/python bench/dashboard.py [--tags 10000] [--calls 1000000] [--requests 20] [--store-url URL]

Makes a default workspace; adds ``--tags`` annotated tags in bulk (git fast-import; every 50th an
Architect minor, the rest tuner patches) spread over the last 24 hours; writes ``--calls`` runner calls
(turns) and as many ``reward`` feedback events, spread over the same 24 hours, straight into the store
(SQLite by default, or ``--store-url``); starts ``ratchet serve versions`` and times, over HTTP, the
overview's page (``GET /``) and its data (``GET /ui/data/overview``: both series aggregated in SQL, the
version markers, wake-ups and SLO): the first request, answered while the server's thread builds the
per-minute rollup (it says "building, N%" instead of waiting), how long the build takes, then p50/p95 of
``--requests`` once it is built, for a page's first load and for its polls (``?cursor=``: only the
versions and wake-ups since the previous answer). The machine's load average is recorded with each figure.
Goal: page + data <= 1 s. Prints a markdown table and writes bench/results/dashboard.json (SQLite) or
bench/results/dashboard_postgres.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from versions_api import start_server, timed, wait_ready  # noqa: E402

DAY = 86_400.0


def make_tags(root: Path, count: int, start: float) -> None:
    """Annotated tags with JSON messages, one every ``DAY / count`` seconds from ``start``."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    lines = []
    for i in range(count):
        architect = i % 50 == 49
        meta = {"kind": "architect" if architect else "tuner", "bump": "minor" if architect else "patch",
                "reason": f"bulk {i}", "author": "bench"}
        msg = json.dumps(meta).encode()
        when = int(start + i * DAY / count)
        lines.append(f"tag v1.{i // 1000}.{i % 1000}\nfrom {head}\ntagger B <b@x> {when} +0000\n"
                     f"data {len(msg)}\n".encode() + msg + b"\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input=b"".join(lines), check=True)
    subprocess.run(["git", "pack-refs", "--all"], cwd=root, check=True)


def fill_store(store, calls: int, start: float, batch: int = 50_000) -> None:
    """``calls`` turns and as many rewards, in batches through SQLAlchemy Core (one transaction each)."""
    from ratchet.core.stores.schema import feedback, turns

    rng = random.Random(0)
    step = DAY / calls
    for first in range(0, calls, batch):
        rows_t, rows_f = [], []
        for i in range(first, min(first + batch, calls)):
            ts = start + i * step
            cid = f"c{i}"
            rows_t.append({"conversation_id": cid, "ts": ts, "tool": "answer", "arguments": {"q": "x"},
                           "result": None, "error": "boom" if rng.random() < 0.02 else None, "version": None,
                           "latency_ms": rng.uniform(5, 50), "trace_id": None})
            rows_f.append({"event_id": f"e{i}", "ts": ts + 1, "tool": "reward", "conversation_id": cid,
                           "payload": {"args": {"conversation_id": cid, "value": float(rng.random() < 0.6)},
                                       "decisions": {}}, "trace_id": None})
        with store.engine.begin() as conn:
            conn.execute(turns.insert(), rows_t)
            conn.execute(feedback.insert(), rows_f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--store-url", default=None, help="e.g. postgresql+psycopg://postgres@127.0.0.1/DB (emptied "
                    "of Ratchet's tables first); default: the workspace's SQLite")
    args = ap.parse_args()

    import httpx

    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins
    from ratchet.core.workspace import Workspace

    os.environ.setdefault("RATCHET_CACHE_DIR", tempfile.mkdtemp())
    if args.store_url:
        import sqlalchemy as sa

        from ratchet.core.stores.schema import metadata

        engine = sa.create_engine(args.store_url)
        metadata.drop_all(engine)
        engine.dispose()
        os.environ["RATCHET_STORE_URL"] = args.store_url
    tmp = Path(tempfile.mkdtemp(prefix="ratchet-bench-"))
    ws_root = tmp / "ws"
    create_workspace(ws_root, plugins=load_plugins(), author="bench")
    start = time.time() - DAY
    t0 = time.perf_counter()
    make_tags(ws_root, args.tags, start)
    ws = Workspace.open(ws_root)
    fill_store(ws.store, args.calls, start)
    ws.state.read("active")  # seeded by the runner's first read in a workspace that served these calls
    ws.store.close()
    setup_s = round(time.perf_counter() - t0, 1)

    proc, url = start_server(ws_root)
    res: dict = {"versions": args.tags + 1, "calls": args.calls, "rewards": args.calls,
                 "store": "postgresql" if args.store_url else "sqlite", "setup_seconds": setup_s,
                 "cpus": os.cpu_count()}
    try:
        with httpx.Client(timeout=300) as client:
            wait_ready(client, url)
            started = time.perf_counter()
            res["first_request"] = first_request(client, url)
            res["build"] = wait_built(client, url, started)
            data = client.get(f"{url}/ui/data/overview")
            body = data.json()
            assert sum(b["calls"] for b in body["calls"]) == args.calls, "every call is in a bucket"
            assert sum(b["count"] for b in body["reward"]) == args.calls, "every reward is in a bucket"
            assert body["versions_total"] == args.tags + 1
            res["buckets"], res["bucket_seconds"] = len(body["reward"]), body["width"]
            res["markers_sent"], res["response_bytes"] = len(body["versions"]), len(data.content)
            poll = client.get(f"{url}/ui/data/overview", params={"cursor": body["cursor"]})
            res["poll_markers_sent"], res["poll_response_bytes"] = len(poll.json()["versions"]), len(poll.content)
            res["data"] = {**timed(client, f"{url}/ui/data/overview", args.requests), "loadavg": load()}
            res["poll"] = {**timed(client, f"{url}/ui/data/overview?cursor={body['cursor']}", args.requests),
                           "loadavg": load()}
            res["page"] = {**timed(client, f"{url}/", args.requests), "loadavg": load()}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)

    RESULTS.mkdir(exist_ok=True)
    name = "dashboard.json" if not args.store_url else "dashboard_postgres.json"
    (RESULTS / name).write_text(json.dumps(res, indent=2) + "\n")
    first, build = res["first_request"], res["build"]
    print(f"| overview over HTTP, {res['versions']} versions, {args.calls:,} calls + rewards ({res['store']}) "
          "| p50 | p95 | load average (1, 5, 15 min) |\n| --- | --- | --- | --- |")
    print(f"| first `/ui/data/overview`, while the rollup is built ({first['percent']}% done) | {first['ms']} ms | "
          f"| {fmt(first['loadavg'])} |")
    print(f"| the rollup built in the background | {build['seconds']} s | | {fmt(build['loadavg'])} |")
    print(f"| `/ui/data/overview`, a page's first load ({res['buckets']} buckets of {res['bucket_seconds']} s, "
          f"{res['markers_sent']} markers, {res['response_bytes'] // 1024} KiB) | {res['data']['p50_ms']} ms "
          f"| {res['data']['p95_ms']} ms | {fmt(res['data']['loadavg'])} |")
    print(f"| `/ui/data/overview?cursor=`, a poll ({res['poll_markers_sent']} markers, "
          f"{res['poll_response_bytes'] // 1024} KiB) | {res['poll']['p50_ms']} ms | {res['poll']['p95_ms']} ms "
          f"| {fmt(res['poll']['loadavg'])} |")
    page = res["page"]
    print(f"| `/` (the page) | {page['p50_ms']} ms | {page['p95_ms']} ms | {fmt(page['loadavg'])} |")
    total = res["data"]["p50_ms"] + res["page"]["p50_ms"]
    print(f"\nGoal page + data <= 1000 ms (p50): {total:.0f} ms, {'met' if total <= 1000 else 'MISSED'}.")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def fmt(loadavg: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in loadavg)


def first_request(client, url: str) -> dict:
    """The first data request: the server's Builder has just started, so it answers from what is ready."""
    t0 = time.perf_counter()
    r = client.get(f"{url}/ui/data/overview")
    ms = round((time.perf_counter() - t0) * 1e3, 1)
    r.raise_for_status()
    rollup = r.json()["rollup"]
    return {"ms": ms, "building": rollup["building"], "percent": rollup["percent"], "loadavg": load()}


def wait_built(client, url: str, started: float, timeout: float = 1800.0) -> dict:
    """Poll until the overview says the rollup is built; the seconds since the server answered first."""
    polls = []
    while time.perf_counter() - started < timeout:
        t0 = time.perf_counter()
        r = client.get(f"{url}/ui/data/overview")
        polls.append((time.perf_counter() - t0) * 1e3)
        if not r.json()["rollup"]["building"]:
            polls.sort()
            return {"seconds": round(time.perf_counter() - started, 1), "polls": len(polls),
                    "poll_max_ms": round(polls[-1], 1), "loadavg": load()}
        time.sleep(1.0)
    raise TimeoutError("the rollup was not built in time")


if __name__ == "__main__":
    main()
