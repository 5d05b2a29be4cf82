"""The runner and tuner as servers: overhead, durable feedback, promotion latency, regret through MCP.

Five parts, each measured against its bare counterpart in the same run (the machine is shared and
noisy, so compare ratios, not absolute figures across runs):

* ``runner``: ``answer`` over streamable HTTP from one ``mcp.Client(url)`` per server (one connection,
  sequential calls, a new conversation id per call) against a ``ratchet serve runner`` subprocess on the
  default workspace, vs a bare ``MCPServer`` echo tool served the same way (uvicorn on
  ``streamable_http_app()``, a subprocess) and vs the workspace's own answer function served bare (no
  runner). Blocks of calls rotate between the servers. The same in process (``Client(server_object)``),
  plus the core without MCP. Server CPU per call is read from /proc.
* ``concurrent``: ``--clients`` (32) connections per server, each making sequential ``answer`` calls
  with a new conversation per call, against ``ratchet serve runner`` and against the workspace's answer
  function in a bare ``MCPServer``; phases of ``--calls`` calls alternate between the two for
  ``--rounds`` rounds. Afterwards every acknowledged runner call is looked up in the store (its turn
  and its decisions): durable before the reply. The store is ``RATCHET_STORE_URL`` when set.
* ``feedback``: ``reward`` (one event a call) and ``reward_batch`` (``--batch-events`` a call) over
  HTTP against a ``ratchet serve tuner`` subprocess, vs the echo tool with the same arguments. The
  conversations are served first, in bulk, by ``Runner.call`` in process. Measured with the default
  promotion policy (a background promotion every 50 events), with it off, and (diagnosis only, not a
  product configuration) with the tuner's background worker never woken.
* ``promotion``: runner and tuner subprocesses; send one ``reward``, call ``promote()``, poll the
  runner's ``version://current`` every 10 ms until it reports the new version (a ``listen``
  subscription on a second connection records when the change event arrives too).
* ``regret``: a bench workspace whose runner tool ``pull`` returns the arm the ``arm`` strategy
  decided; users simulated through in-process MCP servers (``Client(build_server(Runner(ws)))`` and
  ``Client(build_server(Tuner(ws)))``): a new conversation per step, Bernoulli rewards, the tuner
  promoting every 50 events by its own background policy and the client waiting until the runner's
  ``version://current`` shows each promotion before the next decision. Compared with ``simulate()``
  offline at batch 50 and batch 1. By default the runner's generator and the rewards use simulate()'s
  streams for the same seed, so a faithful pipeline makes exactly the offline batch-50 choices
  (``--rng independent`` for a statistical comparison instead).

    .venv/bin/python bench/servers.py                       # every part, default scale (~6-8 min)
    .venv/bin/python bench/servers.py --part runner feedback
    .venv/bin/python bench/servers.py --part concurrent --out bench/results/servers_concurrent_sqlite.json
    .venv/bin/python bench/servers.py --part regret --seeds 50 --horizon 10000 --policies thompson
    .venv/bin/python bench/servers.py --quick               # smoke run: small counts (~1 min)

Default regret scale: horizon 2000, 5 seeds, thompson / kl_ucb / ucb1 / exp3 on bern9, bern2 and
bern9_reversed (means reversed at horizon/2), 2 processes. Prints markdown tables and writes (merges
into) ``bench/results/servers.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PARTS = ("runner", "concurrent", "feedback", "promotion", "regret")
CALL_TIMEOUT = 120.0  # seconds: no single MCP call may hang the benchmark

QUESTIONS = [
    "How long do I have to return an item?",
    "where is my parcel?",
    "What payment methods do you accept?",
    "How do I cancel my subscription?",
    "Is there a free trial?",
    "Do you ship internationally?",
    "Where can I find my invoice?",
    "my package arrived damaged, what now?",
]

# --- the bare counterpart --------------------------------------------------------------------------

# One source for the echo server, in process (exec) and as a subprocess (python -c). Its tools take the
# same arguments as the runner's ``answer`` and the tuner's ``reward``/``reward_batch`` and do nothing.
# Sync tools, like the runner's: MCPServer runs them in a worker thread (the tuner's run in one too).
ECHO_SRC = r'''
from typing import Any
from mcp.server.mcpserver import MCPServer

FILLER = ("Hi there, thanks for reaching out! You can track every order under Account > Orders, where each "
          "order shows its live status and the carrier's tracking link. We email the tracking number as soon "
          "as the parcel leaves our warehouse. Is there anything else I can help you with?")


def build_echo(ws_root: str | None = None) -> MCPServer:
    server = MCPServer("bench-echo", log_level="WARNING")
    if ws_root:  # the workspace's own answer function, served bare: no runner, no decisions, no log
        from pathlib import Path
        from ratchet.core.plugins import import_path
        from ratchet.runner.context import RunContext

        desk_mod = import_path(Path(ws_root) / "plugins" / "support_desk.py")
        desk = desk_mod.SupportDesk(Path(ws_root) / "data" / "kb.jsonl").build()
        params = dict(desk_mod.DEFAULT_PARAMS)

        @server.tool()
        def answer(question: str, conversation_id: str) -> dict[str, Any]:
            """The support desk's answer with the default params."""
            return desk.answer(question, conversation_id, RunContext(conversation_id, dict(params)))

    @server.tool()
    def echo(question: str, conversation_id: str) -> dict[str, Any]:
        """Return a reply shaped like the runner's answer."""
        return {"answer": FILLER, "entry_id": None, "score": 0.0, "style": "friendly", "fallback": False}

    @server.tool()
    def echo_reward(conversation_id: str, value: float, event_id: str | None = None) -> dict[str, Any]:
        """Acknowledge like the tuner's reward."""
        return {"accepted": 1, "duplicates": 0, "last_seq": 0, "event_id": event_id or conversation_id}

    @server.tool()
    def echo_batch(events: list[dict[str, Any]]) -> dict[str, Any]:
        """Acknowledge like the tuner's reward_batch."""
        return {"accepted": len(events), "duplicates": 0, "last_seq": 0}

    return server


def serve_echo(ws_root: str | None = None) -> None:
    import socket, sys, uvicorn
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_echo(ws_root).streamable_http_app(host="127.0.0.1")   # exactly what ratchet.serving does
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    print(f"bench echo listening on http://127.0.0.1:{port}/mcp", file=sys.stderr, flush=True)
    uvicorn.Server(config).run()
'''


def build_echo(ws_root: Path | None = None):
    ns: dict[str, Any] = {}
    exec(ECHO_SRC, ns)  # noqa: S102 -- our own constant source
    return ns["build_echo"](str(ws_root) if ws_root else None)


# --- processes -------------------------------------------------------------------------------------


def ratchet_argv(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("ratchet")
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "ratchet.cli", *args]


class ServerProcess:
    """A server subprocess that prints ``... listening on URL`` to stderr; stopped by ``stop()``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]):
        self.name, self.argv, self.env = name, argv, env
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.lines: list[str] = []
        self._found = threading.Event()

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:  # keep draining so the pipe never fills
            self.lines.append(line.rstrip())
            m = re.search(r"listening on (http://\S+)", line)
            if m and self.url is None:
                self.url = m.group(1)
                self._found.set()
        self._found.set()

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=self.env)
        threading.Thread(target=self._drain, daemon=True).start()
        self._found.wait(timeout)
        if self.url is None:
            raise RuntimeError(f"{self.name} did not start: " + " | ".join(self.lines[-10:]))
        host, port = self.url.split("//")[1].split("/")[0].split(":")
        deadline = time.monotonic() + timeout
        while True:  # the line is printed just before uvicorn binds
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} is not accepting connections: " + " | ".join(self.lines[-10:]))
                time.sleep(0.02)

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

    def rss_mb(self) -> float | None:
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            return round(kb / 1024, 1)
        except (OSError, StopIteration, AttributeError):
            return None


@contextlib.contextmanager
def servers(*specs: tuple[str, list[str]], env: dict[str, str]):
    """Start the servers (in order), yield them, and stop every one of them whatever happens."""
    started: list[ServerProcess] = []
    try:
        for name, argv in specs:
            proc = ServerProcess(name, argv, env)
            started.append(proc)
            proc.start()
        yield started
    except BaseException:
        for proc in started:  # what the servers said, to explain the failure
            print(f"--- {proc.name} stderr (last lines) ---\n" + "\n".join(proc.lines[-30:]), file=sys.stderr)
        raise
    finally:
        for proc in reversed(started):
            proc.stop()


def echo_argv(ws_root: Path | None = None) -> list[str]:
    """The bare server as a subprocess; with ``ws_root`` it also serves that workspace's answer function."""
    return [sys.executable, "-c", ECHO_SRC + f"\nserve_echo({str(ws_root) if ws_root else None!r})\n"]


# A counterfactual tuner for diagnosis only (not a product configuration): the background worker is never
# woken, so feedback is logged but not applied while the load runs.
NOPOKE_TUNER_SRC = """
import sys
import ratchet.tuner.server as ts
from ratchet.tuner.service import Tuner
from ratchet.core.workspace import Workspace
from ratchet.serving import serve_mcp
ts._Worker.poke = lambda self: None
serve_mcp(ts.build_server(Tuner(Workspace.open(sys.argv[1]))), transport="http", host="127.0.0.1", port=0,
          label="tuner (worker never woken)")
"""


# --- workspaces ------------------------------------------------------------------------------------


STORE_SYNC = "normal"  # --sync: the workspaces' [store] sync


def store_label(env: dict[str, str]) -> str:
    if env.get("RATCHET_STORE_URL", "").startswith("postgres"):
        return "postgresql"
    return "sqlite" if STORE_SYNC == "normal" else f"sqlite, sync = {STORE_SYNC}"


def make_default_workspace(root: Path) -> Path:
    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins

    create_workspace(root, plugins=load_plugins(), author="bench")
    if STORE_SYNC != "normal":
        toml = root / "ratchet.toml"
        toml.write_text(toml.read_text().replace("[store]\n", f'[store]\nsync = "{STORE_SYNC}"\n', 1))
        subprocess.run(["git", "commit", "-qam", f"bench: sync = {STORE_SYNC}"], cwd=root, check=True)
    return root


def set_every_events(root: Path, n: int) -> None:
    toml = root / "ratchet.toml"
    text, count = re.subn(r"every_events\s*=\s*\d+", f"every_events = {n}", toml.read_text())
    assert count == 1, "ratchet.toml has no every_events line"
    toml.write_text(text)


PULL_PLUGIN = '''"""Bench runner plugin: ``pull`` returns the arm the ``arm`` strategy decided (and the served version)."""

from ratchet import hookimpl
from ratchet.runner.context import RunContext


def pull(conversation_id: str, run: RunContext) -> dict:
    """Return the decided arm of this conversation."""
    return {"arm": run.decisions["arm"].choice, "version": run.version}


@hookimpl
def ratchet_register_runner_tools(register, workspace):
    register(pull)
'''

PULL_MICRO = '''# Bench micro tier: pull serves an arm.
- id: pull-serves-an-arm
  tool: pull
  args: {conversation_id: "micro-1"}
  expect:
    path: arm
    regex: '^a[0-9]+$'
'''


def make_bandit_workspace(root: Path) -> Path:
    """The default scaffold with its runner plugin and micro tier replaced by ``pull`` (strategy set later)."""
    make_default_workspace(root)
    (root / "plugins" / "bandit_pull.py").write_text(PULL_PLUGIN)
    for p in (root / "tests" / "micro").glob("*.yaml"):
        p.unlink()
    (root / "tests" / "micro" / "pull.yaml").write_text(PULL_MICRO)
    return root


def configure_bandit(root: Path, policy: str, arms: list[str], every_events: int = 50) -> None:
    toml = root / "ratchet.toml"
    text = toml.read_text()
    text = text.replace('plugins = ["plugins/support_desk.py"]', 'plugins = ["plugins/bandit_pull.py"]')
    strategy = (f'[[tuner.strategies]]\nkey = "arm"\nstrategy = "{policy}"\n'
                f'arms = [{", ".join(json.dumps(a) for a in arms)}]\n\n')
    text, count = re.subn(r"\[\[tuner\.strategies\]\].*?(?=\[tuner\.promotion\])", strategy, text, flags=re.S)
    assert count == 1, "could not rewrite [[tuner.strategies]]"
    toml.write_text(text)
    set_every_events(root, every_events)


# --- measuring -------------------------------------------------------------------------------------


def lat_stats(latencies: list[float], busy: float | None = None) -> dict[str, Any]:
    a = np.asarray(latencies, float) * 1e3
    if not len(a):
        return {"n": 0}
    busy = busy if busy is not None else float(a.sum() / 1e3)
    return {"n": int(len(a)), "calls_per_s": round(len(a) / busy, 1), "mean_ms": round(float(a.mean()), 3),
            "p50_ms": round(float(np.percentile(a, 50)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "max_ms": round(float(a.max()), 3)}


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def interleaved(targets: dict[str, Callable[[int], Awaitable[Any]]], *, calls: int, warmup: int,
                      block: int, max_seconds: float, pids: dict[str, int] | None = None) -> dict[str, Any]:
    """Warm each target up, then alternate blocks of ``block`` sequential calls between the targets
    (the order flips every round) until each made ``calls`` calls or ``max_seconds`` passed.
    Call ``i`` of a target gets the index ``i`` (warm-up calls get negative ones)."""
    for name, fn in targets.items():
        for i in range(warmup):
            await fn(-1 - i)
    lat: dict[str, list[float]] = {n: [] for n in targets}
    busy = dict.fromkeys(targets, 0.0)
    client_cpu = dict.fromkeys(targets, 0.0)
    server_cpu = dict.fromkeys(targets, 0.0)
    pids = pids or {}
    order = list(targets)
    start, done, rounds = time.perf_counter(), 0, 0
    while done < calls and time.perf_counter() - start < max_seconds:
        n = min(block, calls - done)
        for name in order:
            fn, out = targets[name], lat[name]
            pid = pids.get(name)
            s0 = proc_cpu(pid) if pid else 0.0
            c0 = time.process_time()
            b0 = time.perf_counter()
            for i in range(done, done + n):
                t0 = time.perf_counter()
                await fn(i)
                out.append(time.perf_counter() - t0)
            busy[name] += time.perf_counter() - b0
            client_cpu[name] += time.process_time() - c0
            if pid:
                server_cpu[name] += proc_cpu(pid) - s0
        done += n
        rounds += 1
        order.reverse()
    res = {name: lat_stats(lat[name], busy[name]) for name in targets}
    for name in targets:
        if lat[name]:
            res[name]["client_cpu_ms_per_call"] = round(client_cpu[name] / len(lat[name]) * 1e3, 3)
            if name in pids:
                res[name]["server_cpu_ms_per_call"] = round(server_cpu[name] / len(lat[name]) * 1e3, 3)
    res["truncated"] = done < calls
    return res


def ok(result, what: str):
    if result.is_error:
        raise RuntimeError(f"{what} failed: {result.content[0].text if result.content else result}")
    return result.structured_content


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else round(a / b, 3)


def table(headers: list[str], rows: list[list[Any]]) -> None:
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for r in rows:
        print("| " + " | ".join("" if v is None else str(v) for v in r) + " |")
    print()


def verdict(value: float | None, goal: float, higher_is_better: bool) -> str:
    if value is None:
        return "n/a"
    return "meets" if (value >= goal if higher_is_better else value <= goal) else "misses"


# --- part 1: runner overhead -----------------------------------------------------------------------


async def part_runner(args, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    from mcp import Client

    from ratchet.core.workspace import Workspace
    from ratchet.runner.context import RunContext
    from ratchet.runner.server import build_server
    from ratchet.runner.service import Runner

    root = make_default_workspace(tmp / "ws-runner")
    out: dict[str, Any] = {"calls": args.calls, "warmup": args.warmup, "block": args.block}

    def q(i: int) -> str:
        return QUESTIONS[i % len(QUESTIONS)]

    async def measure(targets: dict[str, Any], prefix: str, pids: dict[str, int] | None = None) -> dict[str, Any]:
        """``targets``: name -> (MCP target, tool). All are called with the same arguments."""
        async with contextlib.AsyncExitStack() as stack:
            fns = {}
            for name, (target, tool) in targets.items():
                client = await stack.enter_async_context(Client(target, read_timeout_seconds=CALL_TIMEOUT))

                async def call(i: int, client=client, tool=tool):
                    ok(await client.call_tool(tool, {"question": q(i), "conversation_id": f"{prefix}-{i}"}), tool)

                fns[name] = call
            return await interleaved(fns, calls=args.calls, warmup=args.warmup, block=args.block,
                                     max_seconds=args.max_seconds, pids=pids)

    # HTTP: `ratchet serve runner` vs the echo script and the bare answer function, all subprocesses
    with servers(("runner", ratchet_argv("serve", "runner", "--port", "0", "-w", str(root))),
                 ("echo", echo_argv()), ("bare answer", echo_argv(root)), env=env) as (runner_p, echo_p, bare_p):
        procs = {"runner": runner_p, "echo": echo_p, "bare answer": bare_p}
        out["http"] = await measure({"runner": (runner_p.url, "answer"), "echo": (echo_p.url, "echo"),
                                     "bare answer": (bare_p.url, "answer")}, "http",
                                    pids={k: p.proc.pid for k, p in procs.items()})
        out["http"]["rss_mb"] = {k: p.rss_mb() for k, p in procs.items()}

    # In process: the same server objects without HTTP
    ws = Workspace.open(root)
    out["in_process"] = await measure({"runner": (build_server(Runner(ws)), "answer"), "echo": (build_echo(), "echo"),
                                       "bare answer": (build_echo(root), "answer")}, "inproc")

    # The core without MCP: Runner.call (decide + tool + store) vs the tool function alone
    runner = Runner(ws)
    spec = runner.tools["answer"]
    snap = runner.snapshot
    params = dict(snap.params)

    def core_call(i: int):
        runner.call("answer", {"question": q(i), "conversation_id": f"core-{i}"})

    def tool_only(i: int):
        spec.fn(question=q(i), conversation_id=f"tool-{i}", run=RunContext(f"tool-{i}", params))

    def no_record(i: int, r=Runner(ws, record=False)):
        r.call("answer", {"question": q(i), "conversation_id": f"norec-{i}"})

    def wrap(fn):
        async def call(i):
            fn(i)
        return call

    out["core"] = await interleaved({"Runner.call": wrap(core_call),
                                     "Runner.call record=False": wrap(no_record),
                                     "tool fn only": wrap(tool_only)},
                                    calls=args.calls, warmup=args.warmup, block=args.block,
                                    max_seconds=args.max_seconds)
    for mode in ("http", "in_process"):
        m = out[mode]
        for base, suffix in (("echo", ""), ("bare answer", "_vs_bare_answer")):
            m["p50_ratio" + suffix] = ratio(m["runner"]["p50_ms"], m[base]["p50_ms"])
            m["p99_ratio" + suffix] = ratio(m["runner"]["p99_ms"], m[base]["p99_ms"])
            m["rate_ratio" + suffix] = ratio(m["runner"]["calls_per_s"], m[base]["calls_per_s"])
            m["p50_extra_ms" + suffix] = round(m["runner"]["p50_ms"] - m[base]["p50_ms"], 3)
    out["goal"] = {"http_p50_ratio_max": 1.3, "verdict": verdict(out["http"]["p50_ratio"], 1.3, False)}
    return out


def print_runner(r: dict[str, Any]) -> None:
    print(f"\n### Runner overhead: `answer` vs a bare echo tool and vs the bare answer function "
          f"({r['http']['runner']['n']} sequential calls each, after {r['warmup']} warm-up, blocks of {r['block']} "
          f"rotating between servers; one connection per server)\n")
    rows = []
    for mode, label in (("http", "HTTP subprocess"), ("in_process", "in process")):
        m = r[mode]
        for name in ("runner", "echo", "bare answer"):
            s = m[name]
            rows.append([label, name, s["calls_per_s"], s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"],
                         s.get("server_cpu_ms_per_call", ""), s.get("client_cpu_ms_per_call", "")])
        rows.append([label, "**runner / echo**", m["rate_ratio"], f"**{m['p50_ratio']}**", "", m["p99_ratio"], "", "", ""])
        rows.append([label, "runner / bare answer", m["rate_ratio_vs_bare_answer"], m["p50_ratio_vs_bare_answer"], "",
                     m["p99_ratio_vs_bare_answer"], "", "", ""])
    table(["transport", "server", "calls/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "server CPU ms/call",
           "client CPU ms/call"], rows)
    c = r["core"]
    table(["core, no MCP (in process)", "calls/s", "p50 ms", "p99 ms"],
          [[k, c[k]["calls_per_s"], c[k]["p50_ms"], c[k]["p99_ms"]] for k in c if k != "truncated"])
    h = r["http"]
    print(f"Goal: HTTP p50 runner / echo <= 1.3: {h['p50_ratio']} ({r['goal']['verdict']}); the runner's p50 is "
          f"{h['p50_extra_ms']} ms above the echo's and {h['p50_extra_ms_vs_bare_answer']} ms above the bare answer "
          f"function's (runner / bare answer = {h['p50_ratio_vs_bare_answer']}).\n")


# --- part 1b: the runner under concurrent clients --------------------------------------------------


async def part_concurrent(args, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """``--clients`` connections per server, each making sequential ``answer`` calls (a new conversation
    per call), against ``ratchet serve runner`` and against the workspace's answer function served bare.
    Phases of ``--calls`` calls alternate between the two servers (the order flips every round); a
    phase's rate is its calls over its wall time. At the end every acknowledged runner call must be in
    the store with its decisions: durable before its reply."""
    import anyio
    from mcp import Client

    from ratchet.core.workspace import Workspace

    root = make_default_workspace(tmp / "ws-concurrent")
    clients = args.clients
    out: dict[str, Any] = {"clients": clients, "calls_per_phase": args.calls, "rounds": args.rounds,
                           "store": store_label(env)}
    acked: list[str] = []

    async def phase(conns: list, tool: str, prefix: str, n: int) -> tuple[list[float], float]:
        latencies: list[float] = []
        counter = iter(range(n))

        async def worker(client):
            for i in counter:  # shared: the clients take calls until the phase's n are made
                cid = f"{prefix}-{i}"
                t0 = time.perf_counter()
                ok(await client.call_tool(tool, {"question": QUESTIONS[i % len(QUESTIONS)], "conversation_id": cid}),
                   tool)
                latencies.append(time.perf_counter() - t0)
                if prefix.startswith("runner"):
                    acked.append(cid)

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for c in conns:
                tg.start_soon(worker, c)
        return latencies, time.perf_counter() - t0

    with servers(("runner", ratchet_argv("serve", "runner", "--port", "0", "-w", str(root))),
                 ("bare answer", echo_argv(root)), env=env) as (runner_p, bare_p):
        urls = {"runner": runner_p.url, "bare answer": bare_p.url}
        pids = {"runner": runner_p.proc.pid, "bare answer": bare_p.proc.pid}
        lat: dict[str, list[float]] = {k: [] for k in urls}
        wall = dict.fromkeys(urls, 0.0)
        cpu = dict.fromkeys(urls, 0.0)
        async with contextlib.AsyncExitStack() as stack:
            conns = {k: [await stack.enter_async_context(Client(u, read_timeout_seconds=CALL_TIMEOUT))
                         for _ in range(clients)] for k, u in urls.items()}
            for name in urls:  # warm-up: every connection once, then a short phase
                await phase(conns[name], "answer", f"{name}-warm", max(clients, args.warmup))
            order = list(urls)
            started = time.perf_counter()
            for r in range(args.rounds):
                if time.perf_counter() - started > args.max_seconds:
                    out["truncated"] = True
                    break
                for name in order:
                    c0 = proc_cpu(pids[name])
                    got, seconds = await phase(conns[name], "answer", f"{name}-{r}", args.calls)
                    lat[name] += got
                    wall[name] += seconds
                    cpu[name] += proc_cpu(pids[name]) - c0
                order.reverse()
        for name in urls:
            out[name] = lat_stats(lat[name], wall[name])
            out[name]["server_cpu_ms_per_call"] = round(cpu[name] / max(1, len(lat[name])) * 1e3, 3)
        out["runner"]["rss_mb"] = runner_p.rss_mb()
    out["rate_ratio"] = ratio(out["runner"]["calls_per_s"], out["bare answer"]["calls_per_s"])
    out["p99_ratio"] = ratio(out["runner"]["p99_ms"], out["bare answer"]["p99_ms"])
    ws = Workspace.open(root)  # the store the runner wrote: RATCHET_STORE_URL or the workspace's own
    logged = ws.store.latest_decisions(acked)
    turns = sum(1 for cid in acked if ws.store.session(cid))
    out["durable"] = {"acked": len(acked), "with_turn": turns, "with_decisions": len(logged)}
    ws.store.close()
    out["goal"] = {"rate_ratio_min": 0.8, "p99_ratio_max": 1.5,
                   "verdict": "meets" if (verdict(out["rate_ratio"], 0.8, True) == "meets"
                                          and verdict(out["p99_ratio"], 1.5, False) == "meets"
                                          and len(acked) == turns == len(logged)) else "misses"}
    return out


def print_concurrent(r: dict[str, Any]) -> None:
    print(f"\n### The runner under {r['clients']} concurrent clients ({r['store']} store; phases of "
          f"{r['calls_per_phase']} calls alternating between servers, {r['rounds']} rounds)\n")
    rows = [[name, r[name]["n"], r[name]["calls_per_s"], r[name]["p50_ms"], r[name]["p90_ms"], r[name]["p99_ms"],
             r[name]["max_ms"], r[name]["server_cpu_ms_per_call"]] for name in ("runner", "bare answer")]
    rows.append(["**runner / bare**", "", f"**{r['rate_ratio']}**", "", "", f"**{r['p99_ratio']}**", "", ""])
    table(["server", "calls", "calls/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "server CPU ms/call"], rows)
    d = r["durable"]
    print(f"Durable: {d['acked']} acknowledged runner calls, {d['with_turn']} with their turn in the store, "
          f"{d['with_decisions']} with their decisions. Goal: rate >= 0.8x and p99 <= 1.5x the bare function's, "
          f"every decision durable: {r['goal']['verdict']}.\n")


# --- part 2: durable feedback ----------------------------------------------------------------------


def precreate(root: Path, prefix: str, n: int, max_seconds: float = 300.0) -> dict[str, Any]:
    """Serve ``n`` conversations in process (Runner.call), so the tuner can join feedback to them."""
    from ratchet.core.workspace import Workspace
    from ratchet.runner.service import Runner

    runner = Runner(Workspace.open(root), seed=0)
    t0 = time.perf_counter()
    for i in range(n):
        if time.perf_counter() - t0 > max_seconds:
            raise RuntimeError(f"serving {n} conversations took over {max_seconds} s (made {i})")
        runner.call("answer", {"question": QUESTIONS[i % len(QUESTIONS)], "conversation_id": f"{prefix}{i}"})
    dt = time.perf_counter() - t0
    return {"conversations": n, "seconds": round(dt, 2), "per_s": round(n / dt, 1)}


async def wait_applied(client, timeout: float, proc: ServerProcess | None = None) -> dict[str, Any]:
    """Poll the tuner's status until every logged event is folded into staging (bounded). A failing
    status call is counted and retried; the server's stderr tail is kept to explain it."""
    t0 = time.perf_counter()
    errors: list[str] = []
    st: dict[str, Any] | None = None
    while time.perf_counter() - t0 < timeout:
        r = await client.call_tool("status", {})
        if r.is_error:
            errors.append(r.content[0].text if r.content else str(r))
        else:
            st = r.structured_content
            if st["unapplied_events"] == 0:
                break
        await asyncio.sleep(0.05)
    out = {"seconds": round(time.perf_counter() - t0, 2), "unapplied_left": st and st["unapplied_events"],
           "pending_events": st and st["pending_events"], "last_error": st and st["last_error"],
           "status_errors": len(errors)}
    if errors:
        out["status_error_texts"] = errors[:3]
        out["server_stderr_tail"] = proc.lines[-60:] if proc else None
        print(f"WARNING: the tuner's status tool failed {len(errors)} time(s): {errors[0]}", file=sys.stderr)
        if proc:
            print("\n".join(proc.lines[-60:]), file=sys.stderr)
    return out


async def feedback_phase(args, root: Path, env: dict[str, str], ids: dict[str, list[str]],
                         label: str, tuner_argv: list[str] | None = None, drain: bool = True) -> dict[str, Any]:
    from mcp import Client

    from ratchet.core.workspace import Workspace

    before = len(Workspace.open(root).versions.list())
    res: dict[str, Any] = {}
    tuner_argv = tuner_argv or ratchet_argv("serve", "tuner", "--port", "0", "-w", str(root))
    with servers(("tuner", tuner_argv), ("echo", echo_argv()), env=env) as (tuner_p, echo_p):
        pids = {"reward": tuner_p.proc.pid, "echo": echo_p.proc.pid,
                "reward_batch": tuner_p.proc.pid, "echo_batch": echo_p.proc.pid}
        async with Client(tuner_p.url, read_timeout_seconds=CALL_TIMEOUT) as tc, \
                Client(echo_p.url, read_timeout_seconds=CALL_TIMEOUT) as ec:
            single = ids["single"]
            warm = args.warmup

            def cid(i: int) -> str:  # warm-up calls get negative indices
                return single[i + warm]

            async def reward(i: int):
                ack = ok(await tc.call_tool("reward", {"conversation_id": cid(i), "value": float(i % 2)}), "reward")
                assert ack["accepted"] == 1, ack

            async def echo(i: int):
                ok(await ec.call_tool("echo_reward", {"conversation_id": cid(i), "value": float(i % 2)}), "echo")

            t0 = time.perf_counter()
            res["reward"] = await interleaved({"reward": reward, "echo": echo}, calls=args.calls,
                                              warmup=warm, block=args.block, max_seconds=args.max_seconds, pids=pids)
            res["reward"]["wall_s"] = round(time.perf_counter() - t0, 2)
            res["reward"]["rate_ratio"] = ratio(res["reward"]["reward"]["calls_per_s"],
                                                res["reward"]["echo"]["calls_per_s"])
            res["reward"]["p50_ratio"] = ratio(res["reward"]["reward"]["p50_ms"], res["reward"]["echo"]["p50_ms"])
            res["reward"]["drain"] = await wait_applied(tc, args.max_seconds, tuner_p) if drain else None

            events = [{"conversation_id": c, "value": float(i % 2)} for i, c in enumerate(ids["batch"])]
            n_ev = len(events)

            async def batch(i: int):
                ack = ok(await tc.call_tool("reward_batch", {"events": events}), "reward_batch")
                assert ack["accepted"] == n_ev and ack["duplicates"] == 0, ack

            async def echo_batch(i: int):
                ack = ok(await ec.call_tool("echo_batch", {"events": events}), "echo_batch")
                assert ack["accepted"] == n_ev

            t0 = time.perf_counter()
            b = await interleaved({"reward_batch": batch, "echo_batch": echo_batch}, calls=args.batch_calls,
                                  warmup=1, block=1, max_seconds=args.max_seconds, pids=pids)
            b["wall_s"] = round(time.perf_counter() - t0, 2)
            b["events_per_call"] = n_ev
            for k in ("reward_batch", "echo_batch"):
                b[k]["events_per_s"] = round(b[k]["calls_per_s"] * n_ev, 1)
            b["rate_ratio"] = ratio(b["reward_batch"]["calls_per_s"], b["echo_batch"]["calls_per_s"])
            b["drain"] = await wait_applied(tc, args.max_seconds, tuner_p) if drain else None
            res["batch"] = b
        res["tuner_rss_mb"] = tuner_p.rss_mb()
    res["promotions_during_phase"] = len(Workspace.open(root).versions.list()) - before
    res["label"] = label
    return res


def core_feedback(root: Path, ids: list[str], calls: int) -> dict[str, Any]:
    """The tuner's core without MCP or background work: validate, join, append (timed step by step)."""
    from ratchet.core.workspace import Workspace
    from ratchet.tuner.service import Tuner

    ws = Workspace.open(root)
    tuner = Tuner(ws)
    events = [{"conversation_id": c, "value": float(i % 2)} for i, c in enumerate(ids)]
    arguments = {"events": events}
    parts: dict[str, list[float]] = {"validate": [], "join (latest_decisions)": [], "append_feedback": [],
                                     "Tuner.feedback total": []}
    for _ in range(calls):
        t0 = time.perf_counter()
        tuner.validate("reward_batch", arguments)
        t1 = time.perf_counter()
        joined = ws.store.latest_decisions(e["conversation_id"] for e in events)
        t2 = time.perf_counter()
        rows = [{"event_id": None, "tool": "reward", "conversation_id": e["conversation_id"],
                 "payload": {"args": e, "decisions": {"style": dict(joined[e["conversation_id"]]["style"])}},
                 "trace_id": None} for e in events]
        t3 = time.perf_counter()
        ws.store.append_feedback(rows)
        t4 = time.perf_counter()
        tuner.feedback("reward_batch", arguments)
        t5 = time.perf_counter()
        parts["validate"].append(t1 - t0)
        parts["join (latest_decisions)"].append(t2 - t1)
        parts["append_feedback"].append(t4 - t3)
        parts["Tuner.feedback total"].append(t5 - t4)
    out = {k: round(statistics.median(v) * 1e3, 1) for k, v in parts.items()}
    out["events"] = len(events)
    out["events_per_s_core"] = round(len(events) / statistics.median(parts["Tuner.feedback total"]), 1)
    # one event a call, in process
    single = []
    for c in ids[:200]:
        t0 = time.perf_counter()
        tuner.feedback("reward", {"conversation_id": c, "value": 1.0})
        single.append(time.perf_counter() - t0)
    out["single_reward_core_p50_ms"] = round(statistics.median(single) * 1e3, 3)
    return out


async def part_feedback(args, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    root = make_default_workspace(tmp / "ws-feedback")
    n_single = args.calls + args.warmup
    out: dict[str, Any] = {"calls": args.calls, "warmup": args.warmup, "batch_events": args.batch_events,
                           "batch_calls": args.batch_calls, "store": store_label(env)}
    out["precreate"] = precreate(root, "c", 3 * n_single + args.batch_events, args.max_seconds)
    all_ids = [f"c{i}" for i in range(3 * n_single + args.batch_events)]
    singles = [all_ids[k * n_single:(k + 1) * n_single] for k in range(3)]
    # The batch calls reuse one set of conversations (each call's events get new event ids, so every
    # event is accepted, none is a duplicate); the join cost is the same as for new conversations.
    batch_ids = all_ids[3 * n_single:]
    # A: the default workspace (a background promotion every 50 events); B: the promotion policy off;
    # C (diagnosis only): B with the tuner's background worker never woken, so nothing is applied meanwhile.
    out["default_policy"] = await feedback_phase(args, root, env, {"single": singles[0], "batch": batch_ids},
                                                 "every_events = 50 (default)")
    set_every_events(root, 10**9)
    out["policy_off"] = await feedback_phase(args, root, env, {"single": singles[1], "batch": batch_ids},
                                             "every_events = 1e9 (off)")
    out["worker_idle"] = await feedback_phase(args, root, env, {"single": singles[2], "batch": batch_ids},
                                              "off + worker never woken (diagnosis)",
                                              [sys.executable, "-c", NOPOKE_TUNER_SRC, str(root)], drain=False)
    # in a fresh process: the bench process' large heap (runner, client) would slow it down (GC)
    with mp.get_context("spawn").Pool(1) as pool:
        out["core"] = pool.apply(core_feedback, (root, batch_ids, 3))
    a = out["default_policy"]
    out["goal"] = {
        "reward_rate_ratio_min": 0.8, "reward_verdict": verdict(a["reward"]["rate_ratio"], 0.8, True),
        "batch_events_per_s_min": 20000,
        "batch_verdict": verdict(a["batch"]["reward_batch"]["events_per_s"], 20000, True),
    }
    return out


def print_feedback(r: dict[str, Any]) -> None:
    print(f"\n### Durable feedback over HTTP, {r.get('store', 'sqlite')} store ({r['calls']} sequential `reward` calls after {r['warmup']} warm-up; "
          f"`reward_batch` of {r['batch_events']} events x {r['batch_calls']} calls after 1 warm-up)\n")
    rows = []
    for key in ("default_policy", "policy_off", "worker_idle"):
        p = r[key]
        s, e = p["reward"]["reward"], p["reward"]["echo"]
        rows.append([p["label"], "reward", s["calls_per_s"], s["p50_ms"], s["p99_ms"], e["calls_per_s"],
                     e["p50_ms"], f"**{p['reward']['rate_ratio']}**", s.get("server_cpu_ms_per_call"),
                     e.get("server_cpu_ms_per_call"), p["promotions_during_phase"]])
        b, eb = p["batch"]["reward_batch"], p["batch"]["echo_batch"]
        rows.append([p["label"], f"reward_batch ({p['batch']['events_per_call']} ev)",
                     f"**{b['events_per_s']:.0f} ev/s**", b["p50_ms"], b["max_ms"], f"{eb['events_per_s']:.0f} ev/s",
                     eb["p50_ms"], p["batch"]["rate_ratio"], b.get("server_cpu_ms_per_call"),
                     eb.get("server_cpu_ms_per_call"), ""])
    table(["tuner config", "tool", "tuner rate", "p50 ms", "p99 (batch: max) ms", "echo rate", "echo p50 ms",
           "tuner / echo rate", "tuner CPU ms/call", "echo CPU ms/call", "promotions during phase"], rows)
    c = r["core"]
    table(["core step (median of 3, no MCP)", "ms per call of " + str(c["events"]) + " events"],
          [[k, c[k]] for k in ("validate", "join (latest_decisions)", "append_feedback", "Tuner.feedback total")]
          + [["=> core events/s", c["events_per_s_core"]], ["single reward, core p50 ms", c["single_reward_core_p50_ms"]]])
    g = r["goal"]
    a = r["default_policy"]
    print(f"Goals (default workspace): reward rate / echo rate >= 0.8: {a['reward']['rate_ratio']} ({g['reward_verdict']}); "
          f"reward_batch >= 20,000 events/s: {a['batch']['reward_batch']['events_per_s']:.0f} ({g['batch_verdict']}).")
    for key in ("default_policy", "policy_off"):
        p = r[key]
        print(f"  {p['label']}: backlog applied {p['reward']['drain']['seconds']} s after the reward loop, "
              f"{p['batch']['drain']['seconds']} s after the batch loop (unapplied left: "
              f"{p['batch']['drain']['unapplied_left']}, last_error: {p['batch']['drain']['last_error']}, failed status "
              f"calls: {p['reward']['drain']['status_errors'] + p['batch']['drain']['status_errors']})")
    print(f"  conversations served in process first: {r['precreate']['conversations']} in "
          f"{r['precreate']['seconds']} s ({r['precreate']['per_s']}/s)\n")


# --- part 3: promotion latency ---------------------------------------------------------------------


async def part_promotion(args, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    from mcp import Client

    root = make_default_workspace(tmp / "ws-promotion")
    repeats = args.promotions + 1  # the first one is cold (the tuner builds its test runner) and reported apart
    precreate(root, "p", repeats)
    rows: list[dict[str, Any]] = []
    jitter = random.Random(0)
    with servers(("runner", ratchet_argv("serve", "runner", "--port", "0", "-w", str(root))),
                 ("tuner", ratchet_argv("serve", "tuner", "--port", "0", "-w", str(root))), env=env) as (rp, tp):
        async with Client(rp.url, read_timeout_seconds=CALL_TIMEOUT) as rc, Client(rp.url) as lc, \
                Client(tp.url, read_timeout_seconds=CALL_TIMEOUT) as tc:
            async def current() -> str:
                return json.loads((await rc.read_resource("version://current")).contents[0].text)["version"]

            events: list[float] = []
            stop_listen = asyncio.Event()

            async def listen():
                async with lc.listen(resource_subscriptions=["version://current"]) as sub:
                    ready.set()
                    async for _ev in sub:
                        events.append(time.perf_counter())
                        if stop_listen.is_set():
                            return

            ready = asyncio.Event()
            listener = asyncio.create_task(listen())
            try:
                await asyncio.wait_for(ready.wait(), 10)
                await asyncio.sleep(0.2)
                for i in range(repeats):
                    before = await current()
                    t_ev = time.perf_counter()
                    ok(await tc.call_tool("reward", {"conversation_id": f"p{i}", "value": 1.0}), "reward")
                    t0 = time.perf_counter()
                    outcome = ok(await tc.call_tool("promote", {"reason": "bench"}), "promote")
                    t1 = time.perf_counter()
                    row: dict[str, Any] = {"promoted": outcome["promoted"], "version": outcome.get("version"),
                                           "reward_ms": round((t0 - t_ev) * 1e3, 1),
                                           "promote_ms": round((t1 - t0) * 1e3, 1),
                                           "micro_s": (outcome.get("micro") or {}).get("seconds")}
                    if not outcome["promoted"]:
                        row["reason"] = outcome.get("reason")
                        rows.append(row)
                        continue
                    seen = before
                    while seen != outcome["version"] and time.perf_counter() - t1 < 10:
                        await asyncio.sleep(0.01)
                        seen = await current()
                    t2 = time.perf_counter()
                    row["visible_ms"] = round((t2 - t0) * 1e3, 1) if seen == outcome["version"] else None
                    row["visible_from_event_ms"] = round((t2 - t_ev) * 1e3, 1)
                    row["after_promote_ms"] = round((t2 - t1) * 1e3, 1)
                    # let the change event arrive, and start the next round at a random phase of the runner's
                    # 100 ms reload tick (a fixed pause would phase-lock the rounds to it)
                    await asyncio.sleep(jitter.uniform(0.15, 0.35))
                    ev = [t for t in events if t >= t0]
                    row["listen_event_ms"] = round((ev[0] - t0) * 1e3, 1) if ev else None
                    rows.append(row)
            finally:
                stop_listen.set()
                listener.cancel()
                with contextlib.suppress(BaseException):
                    await listener
    warm = [r for r in rows[1:] if r.get("visible_ms") is not None]

    def summary(key: str) -> dict[str, Any]:
        v = [r[key] for r in warm if r.get(key) is not None]
        return {"median": round(statistics.median(v), 1), "max": max(v), "min": min(v)} if v else {}

    out = {"repeats": args.promotions, "cold": rows[0], "rows": rows[1:],
           "failed": sum(not r["promoted"] for r in rows),
           "visible_ms": summary("visible_ms"), "promote_ms": summary("promote_ms"),
           "after_promote_ms": summary("after_promote_ms"), "listen_event_ms": summary("listen_event_ms"),
           "visible_from_event_ms": summary("visible_from_event_ms")}
    med = out["visible_ms"].get("median")
    out["goal"] = {"visible_median_ms_max": 1000, "verdict": verdict(med, 1000, False)}
    return out


def print_promotion(r: dict[str, Any]) -> None:
    print(f"\n### Promotion latency ({r['repeats']} promotions after a cold one; one reward, then promote(), "
          f"then poll the runner's version://current every 10 ms)\n")
    rows = [[k, r[k].get("median"), r[k].get("min"), r[k].get("max")]
            for k in ("promote_ms", "after_promote_ms", "visible_ms", "visible_from_event_ms", "listen_event_ms")]
    table(["ms", "median", "min", "max"], rows)
    c = r["cold"]
    print(f"Cold first promotion: promote() {c['promote_ms']} ms, visible after {c.get('visible_ms')} ms "
          f"(micro tier {c.get('micro_s')} s). Failed promotions: {r['failed']}.")
    print(f"Goal: median promote()-start -> runner serves it <= 1000 ms: {r['visible_ms'].get('median')} ms "
          f"({r['goal']['verdict']}), max {r['visible_ms'].get('max')} ms.\n")


# --- part 4: regret through the servers ------------------------------------------------------------


def _bandit_regret_module():
    sys.path.insert(0, str(HERE))
    import bandit_regret  # noqa: E402 -- the offline benchmark's problems and bound

    return bandit_regret


def problem_means(problem: str, horizon: int) -> np.ndarray:
    """mu[t, k]: the arm means at each step, as bench/bandit_regret.py and simulate() build them."""
    means = _bandit_regret_module().PROBLEMS[problem]
    mu = np.tile(np.asarray(means, float), (horizon, 1))
    if problem == "bern9_reversed":
        mu[horizon // 2:] = means[::-1]
    return mu


def offline(policy: str, problem: str, horizon: int, seed: int, batch: int):
    from ratchet.plugins.tuner_strategies.bandits import simulate

    br = _bandit_regret_module()
    means = br.PROBLEMS[problem]
    change = {"change_at": horizon // 2, "new_means": means[::-1]} if problem == "bern9_reversed" else {}
    return simulate(br.make(policy, len(means)), means, horizon, seed, batch=batch, full=True, **change)


async def _through_servers(root: Path, mu: np.ndarray, seed: int, every: int, max_seconds: float,
                           rng: str = "shared") -> dict[str, Any]:
    from mcp import Client

    from ratchet.core.workspace import Workspace
    from ratchet.runner.server import build_server as runner_server
    from ratchet.runner.service import Runner
    from ratchet.tuner.server import build_server as tuner_server
    from ratchet.tuner.service import Tuner

    horizon, k = mu.shape
    # The same streams as simulate(): child 0 drives the policy (the runner's generator), child 1 the rewards.
    # With rng="independent" the runner gets a stream of its own (a statistical, not a step-by-step, comparison).
    policy_seq, env_seq = np.random.SeedSequence(seed).spawn(2)
    if rng == "independent":
        policy_seq = np.random.SeedSequence([seed, 7919])
    draws = (np.random.default_rng(env_seq).random(mu.shape) < mu).astype(float)
    ws = Workspace.open(root)
    runner = Runner(ws, seed=policy_seq)
    arms = runner.strategies["arm"].arms
    index = {a: i for i, a in enumerate(arms)}
    choices = np.full(horizon, -1, dtype=np.int64)
    stale = waits_timed_out = 0
    waits: list[float] = []
    t_pull = t_reward = 0.0
    start = time.perf_counter()
    async with Client(runner_server(runner), read_timeout_seconds=CALL_TIMEOUT) as rc, \
            Client(tuner_server(Tuner(ws)), read_timeout_seconds=CALL_TIMEOUT) as tc:
        async def current() -> str:
            return json.loads((await rc.read_resource("version://current")).contents[0].text)["version"]

        served = await current()
        for t in range(horizon):
            if time.perf_counter() - start > max_seconds:
                break
            cid = f"s{seed}-{t}"
            a = time.perf_counter()
            got = ok(await rc.call_tool("pull", {"conversation_id": cid}), "pull")
            b = time.perf_counter()
            stale += got["version"] != served
            i = choices[t] = index[got["arm"]]
            ok(await tc.call_tool("reward", {"conversation_id": cid, "value": float(draws[t, i])}), "reward")
            t_pull += b - a
            t_reward += time.perf_counter() - b
            if (t + 1) % every == 0 and t + 1 < horizon:
                # The tuner promotes in the background once 50 events are staged; the runner picks the new
                # version up on its next reload tick. Wait until the runner serves it.
                w0 = time.perf_counter()
                now = served
                while now == served and time.perf_counter() - w0 < 30:
                    await asyncio.sleep(0.005)
                    now = await current()
                waits.append(time.perf_counter() - w0)
                waits_timed_out += now == served
                served = now
    steps = int((choices >= 0).sum())
    versions = ws.versions.list()
    applied = [v.metadata.get("events_applied") for v in versions if v.kind == "tuner"]
    return {"choices": choices[:steps], "steps": steps, "seconds": time.perf_counter() - start,
            "stale_decisions": int(stale), "wait_timeouts": int(waits_timed_out),
            "promotions": len(applied), "promotions_not_50": sum(a != every for a in applied),
            "wait_ms_median": round(statistics.median(waits) * 1e3, 1) if waits else None,
            "ms_per_step_pull": round(t_pull / max(steps, 1) * 1e3, 3),
            "ms_per_step_reward": round(t_reward / max(steps, 1) * 1e3, 3)}


def regret_task(task: tuple) -> dict[str, Any]:
    policy, problem, seed, horizon, pristine, tmp, max_seconds, rng = task
    mu = problem_means(problem, horizon)
    arms = [f"a{i}" for i in range(mu.shape[1])]
    root = Path(tmp) / f"ws-{policy}-{problem}-{seed}"
    shutil.copytree(pristine, root, symlinks=True)
    configure_bandit(root, policy, arms, every_events=50)
    try:
        res = asyncio.run(_through_servers(root, mu, seed, 50, max_seconds, rng))
    except Exception as exc:  # noqa: BLE001 -- one failing run is reported, the others still count
        import traceback

        return {"policy": policy, "problem": problem, "seed": seed, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:]}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    steps = res.pop("choices")
    n = len(steps)
    # exactly as simulate() sums it (cumsum), so identical choices give identical figures
    server_regret = float(np.cumsum(mu.max(axis=1)[:n] - mu[np.arange(n), steps])[-1]) if n else 0.0
    off50 = offline(policy, problem, horizon, seed, 50)
    off1 = offline(policy, problem, horizon, seed, 1)
    return {"policy": policy, "problem": problem, "seed": seed, "servers": server_regret,
            "offline_b50": float(off50.regret[n - 1]) if n else None, "offline_b1": float(off1.regret[n - 1]) if n else None,
            "identical_to_b50": bool(n == horizon and np.array_equal(steps, off50.choices)),
            "first_divergence": None if np.array_equal(steps, off50.choices[:n]) else
            int(np.flatnonzero(steps != off50.choices[:n])[0]), **res}


def part_regret(args, tmp: Path) -> dict[str, Any]:
    br = _bandit_regret_module()
    pristine = make_bandit_workspace(tmp / "bandit-pristine")
    tasks = [(p, prob, s, args.horizon, str(pristine), str(tmp), args.max_seconds, args.rng)
             for p in args.policies for prob in args.problems for s in range(args.seeds)]
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(max(1, min(args.procs, len(tasks)))) as pool:
        runs = pool.map(regret_task, tasks, chunksize=1)
    wall = time.perf_counter() - t0
    failed = [r for r in runs if "error" in r]
    for r in failed:
        print(f"WARNING: regret run {r['policy']}/{r['problem']}/seed {r['seed']} failed: {r['error']}\n"
              f"{r['traceback']}", file=sys.stderr)
    runs = [r for r in runs if "error" not in r]
    rows = []
    tq = br.t_quantile(args.seeds)
    for p in args.policies:
        for prob in args.problems:
            rs = [r for r in runs if r["policy"] == p and r["problem"] == prob]
            if not rs:
                continue

            def mean_ci(key):
                a = np.asarray([r[key] for r in rs], float)
                ci = tq * a.std(ddof=1) / math.sqrt(len(a)) if len(a) > 1 else float("nan")
                return float(a.mean()), float(ci)

            srv, srv_ci = mean_ci("servers")
            b50, b50_ci = mean_ci("offline_b50")
            b1, b1_ci = mean_ci("offline_b1")
            rows.append({"policy": p, "problem": prob, "servers": srv, "servers_ci95": srv_ci, "offline_b50": b50,
                         "offline_b50_ci95": b50_ci, "offline_b1": b1, "offline_b1_ci95": b1_ci,
                         "ratio_servers_b50": ratio(srv, b50), "ratio_servers_b1": ratio(srv, b1),
                         "identical_runs": sum(r["identical_to_b50"] for r in rs), "runs": len(rs),
                         "stale_decisions": sum(r["stale_decisions"] for r in rs),
                         "promotions_not_50": sum(r["promotions_not_50"] for r in rs),
                         "wait_timeouts": sum(r["wait_timeouts"] for r in rs),
                         "seconds_per_run": round(float(np.mean([r["seconds"] for r in rs])), 1),
                         "ms_per_step": round(float(np.mean([r["ms_per_step_pull"] + r["ms_per_step_reward"]
                                                             for r in rs])), 2),
                         "promotion_wait_ms_median": round(statistics.median(
                             [r["wait_ms_median"] for r in rs if r["wait_ms_median"] is not None] or [0]), 1)})
    bounds = {prob: br.lai_robbins(br.PROBLEMS[prob], args.horizon) for prob in args.problems
              if prob != "bern9_reversed"}
    worst = max((r["ratio_servers_b50"] or 0) for r in rows) if rows else None
    return {"horizon": args.horizon, "seeds": args.seeds, "policies": args.policies, "problems": args.problems,
            "promotion_every": 50, "procs": args.procs, "rng": args.rng, "wall_seconds": round(wall, 1), "lai_robbins": bounds,
            "rows": rows, "runs": runs, "failed_runs": failed,
            "goal": {"ratio_servers_b50_max": 1.2, "worst_ratio": worst, "verdict": verdict(worst, 1.2, False)}}


def print_regret(r: dict[str, Any]) -> None:
    print(f"\n### Bandit regret through in-process MCP servers vs offline simulate() "
          f"(horizon {r['horizon']}, {r['seeds']} seeds, promotion every 50 events; mean ± 95% CI; "
          f"{r['wall_seconds']} s on {r['procs']} processes)\n")
    rows = []
    for x in r["rows"]:
        lr = r["lai_robbins"].get(x["problem"])
        rows.append([x["policy"], x["problem"], f"{x['servers']:.1f} ± {x['servers_ci95']:.1f}",
                     f"{x['offline_b50']:.1f} ± {x['offline_b50_ci95']:.1f}",
                     f"{x['offline_b1']:.1f} ± {x['offline_b1_ci95']:.1f}",
                     f"**{x['ratio_servers_b50']}**", x["ratio_servers_b1"],
                     f"{lr:.1f}" if lr is not None else "n/a (change)",
                     f"{x['identical_runs']}/{x['runs']}", x["stale_decisions"], x["ms_per_step"],
                     x["promotion_wait_ms_median"]])
    table(["policy", "problem", "servers", "offline b=50", "offline b=1", "servers / b=50", "servers / b=1",
           "Lai-Robbins", "same choices as b=50", "stale decisions", "ms/step", "promotion wait ms (median)"], rows)
    print(f"Goal: regret through servers / offline batch 50 <= 1.2: worst {r['goal']['worst_ratio']} "
          f"({r['goal']['verdict']}). Failed runs: {len(r['failed_runs'])}.")
    if r["rng"] == "shared":
        print("The runner's generator and the rewards use simulate()'s streams for the same seed, so a faithful "
              "pipeline reproduces offline batch 50 choice for choice (see 'same choices').\n")
    else:
        print("The runner's generator is independent of simulate()'s policy stream (rewards are shared): the "
              "ratio is a statistical comparison.\n")


# --- main ------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", nargs="+", choices=[*PARTS, "all"], default=["all"])
    ap.add_argument("--calls", type=int, default=1000, help="measured sequential calls per server (runner, feedback)")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--block", type=int, default=100, help="calls per block; blocks alternate between servers")
    ap.add_argument("--clients", type=int, default=32, help="concurrent: connections per server")
    ap.add_argument("--rounds", type=int, default=4, help="concurrent: phases per server")
    ap.add_argument("--batch-events", type=int, default=5000)
    ap.add_argument("--batch-calls", type=int, default=5)
    ap.add_argument("--promotions", type=int, default=10)
    ap.add_argument("--horizon", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--policies", nargs="+", default=["thompson", "kl_ucb", "ucb1", "exp3"])
    ap.add_argument("--rng", choices=["shared", "independent"], default="shared",
                    help="regret: the runner's generator is simulate()'s policy stream (shared: same choices "
                    "expected) or a stream of its own (independent: a statistical comparison)")
    ap.add_argument("--problems", nargs="+", default=["bern9", "bern2", "bern9_reversed"],
                    choices=["bern9", "bern2", "bern9_reversed"])
    ap.add_argument("--procs", type=int, default=2, help="processes for the regret runs (at most 2 cores here)")
    ap.add_argument("--max-seconds", type=float, default=300, help="time cap of every load loop")
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 calls, 2 batches, 3 promotions, "
                    "horizon 500, 2 seeds, thompson")
    ap.add_argument("--sync", choices=["normal", "full"], default="normal",
                    help="the workspaces' [store] sync (SQLite: full fsyncs every commit, as PostgreSQL does)")
    ap.add_argument("--out", type=Path, default=RESULTS / "servers.json")
    if "--quick" in sys.argv[1:]:  # smaller defaults; flags given explicitly still win
        ap.set_defaults(calls=200, warmup=20, batch_calls=2, promotions=3, horizon=500, seeds=2, policies=["thompson"])
    args = ap.parse_args()
    global STORE_SYNC
    STORE_SYNC = args.sync
    parts = list(PARTS) if "all" in args.part else [p for p in PARTS if p in args.part]
    from ratchet.plugins.tuner_strategies.bandits import BANDITS

    unknown = set(args.policies) - {c.name for c in BANDITS}
    if unknown:
        ap.error(f"unknown policies: {sorted(unknown)}")

    tmp = Path(tempfile.mkdtemp(prefix="ratchet-bench-servers-"))
    os.environ.setdefault("RATCHET_CACHE_DIR", str(tmp / "cache"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: dict[str, Any] = {}
    if args.out.exists():
        with contextlib.suppress(ValueError, OSError):
            results = json.loads(args.out.read_text())
    results.setdefault("parts", {})
    import importlib.metadata as md

    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "mcp": md.version("mcp"),
                          "uvicorn": md.version("uvicorn"), "loadavg_at_start": os.getloadavg()}
    walls: dict[str, float] = {}
    t_all = time.perf_counter()
    try:
        for part in parts:
            t0 = time.perf_counter()
            print(f"\n## part {part} ...", flush=True)
            if part == "runner":
                res = asyncio.run(part_runner(args, tmp, env))
                print_runner(res)
            elif part == "concurrent":
                res = asyncio.run(part_concurrent(args, tmp, env))
                print_concurrent(res)
            elif part == "feedback":
                res = asyncio.run(part_feedback(args, tmp, env))
                print_feedback(res)
            elif part == "promotion":
                res = asyncio.run(part_promotion(args, tmp, env))
                print_promotion(res)
            else:
                res = part_regret(args, tmp)
                print_regret(res)
            walls[part] = round(time.perf_counter() - t0, 1)
            res["wall_seconds_part"] = walls[part]
            res["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            res["quick"] = args.quick
            results["parts"][part] = res
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")  # after every part
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = round(time.perf_counter() - t_all, 1)
    print("wall seconds: " + ", ".join(f"{k} {v}" for k, v in walls.items()) + f"; total {total}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
