"""The Versions API with 10,000 versions: latency of ``GET /versions`` over a real server.

    .venv/bin/python bench/versions_api.py [--tags 10000] [--requests 200]

Makes a default workspace, adds ``--tags`` annotated tags in bulk (git fast-import, as
``state_and_versions.py`` does), starts ``ratchet serve versions`` as a subprocess on 127.0.0.1 and
measures with one keep-alive httpx client: the cold first request (the server parses every tag once),
then, after a warm-up, p50/p95 of the first page, a filtered page, a deep page and one version's detail.
Goal: first page p50 <= 50 ms. Prints a markdown table and writes bench/results/versions_api.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from state_and_versions import make_many_tags  # noqa: E402


def start_server(ws_root: Path) -> tuple[subprocess.Popen, str]:
    ratchet = str(Path(sys.executable).with_name("ratchet"))
    proc = subprocess.Popen([ratchet, "serve", "versions", "--port", "0", "-w", str(ws_root)],
                            stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # "ratchet versions listening on http://HOST:PORT"
    match = re.search(r"(http://\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line}{proc.stderr.read()}")
    return proc, match.group(1)


def wait_ready(client, url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.get(f"{url}/openapi.json")  # not /versions: the first listing is measured as cold
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(url)


def timed(client, url: str, n: int) -> dict[str, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - t0) * 1e3)
        r.raise_for_status()
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
            "requests": n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tags", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()

    import httpx

    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins

    os.environ.setdefault("RATCHET_CACHE_DIR", tempfile.mkdtemp())
    tmp = Path(tempfile.mkdtemp(prefix="ratchet-bench-"))
    ws_root = tmp / "ws"
    create_workspace(ws_root, plugins=load_plugins(), author="bench")
    make_many_tags(ws_root, args.tags)

    proc, url = start_server(ws_root)
    res: dict = {"tags": args.tags + 1}
    try:
        with httpx.Client(timeout=120) as client:
            wait_ready(client, url)
            t0 = time.perf_counter()
            first = client.get(f"{url}/versions")
            res["cold_first_page_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
            body = first.json()
            assert body["total"] == args.tags + 1 and len(body["items"]) == 50, body["total"]
            for _ in range(args.warmup):
                client.get(f"{url}/versions")
            res["first_page"] = timed(client, f"{url}/versions", args.requests)
            res["kind_tuner_page"] = timed(client, f"{url}/versions?kind=tuner", args.requests)
            res["deep_page_asc"] = timed(client, f"{url}/versions?order=asc&offset={args.tags - 50}", args.requests)
            t0 = time.perf_counter()
            client.get(f"{url}/versions/v1.5.500").raise_for_status()  # extracts the commit, builds tool schemas
            res["detail_cold_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
            res["detail_warm"] = timed(client, f"{url}/versions/v1.5.500", max(20, args.requests // 10))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "versions_api.json").write_text(json.dumps(res, indent=2) + "\n")
    n = res["tags"]
    print(f"| `GET` over HTTP, {n} versions | p50 | p95 |\n| --- | --- | --- |")
    print(f"| `/versions` first request (cold: parses every tag) | {res['cold_first_page_ms']} ms | |")
    for key, label in (("first_page", "`/versions` (first page, 50)"), ("kind_tuner_page", "`/versions?kind=tuner`"),
                       ("deep_page_asc", "`/versions?order=asc&offset=N-50`"),
                       ("detail_warm", "`/versions/v1.5.500` (schemas cached)")):
        print(f"| {label} | {res[key]['p50_ms']} ms | {res[key]['p95_ms']} ms |")
    print(f"| `/versions/v1.5.500` first request (builds tool schemas) | {res['detail_cold_ms']} ms | |")
    goal = res["first_page"]["p50_ms"] <= 50
    print(f"\nGoal first page p50 <= 50 ms: {'met' if goal else 'MISSED'}.")


if __name__ == "__main__":
    main()
