"""Two hosts, one store: a soak with tuner processes killed at random, then the counts that must hold.

Two workspace folders that share nothing but the store and a bare git remote (host A made by
``ratchet init``, the remote cloned from it, host B cloned from the remote) run as real processes:
``ratchet serve runner`` on B, ``ratchet serve tuner`` on A and on B. Four clients each answer
conversations on B's runner and send a ``reward`` for each to a tuner picked at random (resent under the
same ``event_id`` to the other tuner when one is down). A killer SIGKILLs a random tuner every few
seconds and restarts it a second later. A watcher reads B's ``version://current`` every 10 ms.

Reported: acknowledged events, events applied to the active state after a final promotion (equal, and
no event twice), whether the tags on the remote form one line (each descends from the one before),
promote() -> B serves it (from the store's record of each version's completion to the first read of
it on B; median and max), and for every kill that hit the tuner holding the versions lease, how long
until a version was made again.

    .venv/bin/python bench/two_hosts.py --store sqlite
    .venv/bin/python bench/two_hosts.py --store postgres      # a throwaway database on 127.0.0.1:5432
    .venv/bin/python bench/two_hosts.py --pairs 2000 --clients 4 --kill-every 4

Writes (merges into) ``bench/results/two_hosts.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "two_hosts.json"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_hosts(tmp: Path, every_events: int) -> tuple[Path, Path, Path]:
    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins

    a = tmp / "a"
    create_workspace(a, plugins=load_plugins(), author="bench")
    toml = a / "ratchet.toml"
    text = toml.read_text().replace("[workspace]\n", '[workspace]\nremote = "origin"\n', 1)
    text = text.replace("every_events = 50", f"every_events = {every_events}")
    toml.write_text(text)
    git(a, "commit", "-qam", "bench: two hosts")
    remote = tmp / "remote.git"
    git(tmp, "clone", "-q", "--bare", str(a), str(remote))
    git(a, "remote", "add", "origin", str(remote))
    git(a, "fetch", "-q", "origin")
    git(tmp, "clone", "-q", str(remote), str(tmp / "b"))
    return a, tmp / "b", remote


class Server:
    """``ratchet serve KIND`` on a fixed port; restartable."""

    def __init__(self, kind: str, workspace: Path, env: dict[str, str], log: Path):
        self.kind, self.workspace, self.env, self.log = kind, workspace, env, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        out = open(self.log, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "ratchet", "serve", self.kind, "-w", str(self.workspace),
                                      "--port", str(self.port)], stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited: see {self.log}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start: see {self.log}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its worker process
            self.proc.wait()

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


async def call(client, tool: str, args: dict) -> dict:
    result = await client.call_tool(tool, args)
    if result.is_error:
        raise RuntimeError(result.content[0].text if result.content else tool)
    return result.structured_content


async def client_loop(n: int, pairs: int, runner_url: str, tuners: list[Server], acked: set[str],
                      errors: list[str]) -> None:
    from mcp import Client

    rng = random.Random(n)
    async with Client(runner_url) as runner:
        for i in range(pairs):
            cid = f"c{n}-{i}"
            await call(runner, "answer", {"question": "where is my parcel?", "conversation_id": cid})
            args = {"conversation_id": cid, "value": rng.random() < 0.5, "event_id": cid}
            args["value"] = 1 if args["value"] else 0
            deadline = time.monotonic() + 60
            while True:
                up = [t for t in tuners if t.alive()] or tuners
                tuner = rng.choice(up)
                try:
                    async with Client(tuner.url) as c:
                        await call(c, "reward", args)
                    acked.add(cid)
                    break
                except Exception as exc:  # noqa: BLE001 -- a killed tuner: resend to the other
                    if time.monotonic() > deadline:
                        errors.append(f"{cid}: {exc!r}")
                        break
                    await asyncio.sleep(0.05)


async def watch(runner_url: str, seen: dict[str, float], stop: asyncio.Event) -> None:
    from mcp import Client

    while not stop.is_set():
        try:
            async with Client(runner_url) as runner:
                while not stop.is_set():
                    res = await runner.read_resource("version://current")
                    version = json.loads(res.contents[0].text)["version"]
                    seen.setdefault(version, time.time())
                    await asyncio.sleep(0.01)
        except Exception:  # noqa: BLE001 -- keep watching
            await asyncio.sleep(0.05)


async def killer(tuners: list[Server], every: float, store, stop: asyncio.Event, kills: list[dict]) -> None:
    rng = random.Random(7)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), rng.uniform(every * 0.5, every * 1.5))
            return
        except asyncio.TimeoutError:
            pass
        victim = rng.choice(tuners)
        held = holds_lease(victim, store)
        victim.kill()
        kills.append({"at": time.time(), "tuner": victim.workspace.name, "held_lease": held})
        await asyncio.sleep(1.0)
        await asyncio.to_thread(victim.start)


def holds_lease(server: Server, store) -> bool:
    """Whether a process of ``server`` (the MCP server or its worker, in one process group) holds the
    versions lease (holders are ``host:pid:random``)."""
    holder = store.coordination.lease_holder("versions")
    if not holder or server.proc is None:
        return False
    try:
        return os.getpgid(int(holder.split(":")[1])) == server.proc.pid
    except (ProcessLookupError, ValueError, IndexError):
        return False


async def soak(args, a: Path, b: Path, env: dict[str, str], logs: Path) -> dict:
    from ratchet.core.workspace import Workspace

    os.environ["RATCHET_STORE_URL"] = env["RATCHET_STORE_URL"]
    store = Workspace.open(a).store
    runner = Server("runner", b, env, logs / "runner-b.log")
    tuners = [Server("tuner", a, env, logs / "tuner-a.log"), Server("tuner", b, env, logs / "tuner-b.log")]
    for s in [runner, *tuners]:
        s.start()
    acked: set[str] = set()
    errors: list[str] = []
    seen: dict[str, float] = {}
    kills: list[dict] = []
    stop = asyncio.Event()
    started = time.time()
    try:
        watcher = asyncio.create_task(watch(runner.url, seen, stop))
        kill_task = asyncio.create_task(killer(tuners, args.kill_every, store, stop, kills))
        per = args.pairs // args.clients
        await asyncio.gather(*[client_loop(n, per, runner.url, tuners, acked, errors) for n in range(args.clients)])
        stop.set()
        await kill_task
        for t in tuners:
            if not t.alive():
                t.start()
        # every acknowledged event folded, then promoted (any tuner), and B serving it
        from mcp import Client

        last = None
        deadline = time.monotonic() + 120
        stop_watch = asyncio.Event()
        watcher2 = asyncio.create_task(watch(runner.url, seen, stop_watch))
        while time.monotonic() < deadline:
            async with Client(tuners[0].url) as c:
                status = await call(c, "status", {})
                if status["unapplied_events"] == 0 and status["pending_events"] == 0:
                    break
                if status["unapplied_events"] == 0:
                    await call(c, "promote", {})
            await asyncio.sleep(0.5)
        result_failover = await failover(args, runner.url, tuners, store, acked)
        active = Workspace.open(a).state.read("active")
        last = active.version
        while last not in seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop_watch.set()
        await watcher2
        await watcher
    finally:
        for s in [runner, *tuners]:
            s.stop()
    elapsed = time.time() - started
    return {"acked": acked, "errors": errors, "seen": seen, "kills": kills, "elapsed": elapsed, "store": store,
            "failover": result_failover}


async def promote_quietly(url: str) -> None:
    from mcp import Client

    try:
        async with Client(url) as c:
            await c.call_tool("promote", {})
    except Exception:  # noqa: BLE001 -- killed mid-call, as intended
        pass


async def failover(args, runner_url: str, tuners: list[Server], store, acked: set[str],
                   rounds: int = 3) -> list[float]:
    """Kill the tuner that holds the versions lease in the middle of a promotion; how long until the
    other tuner makes the next version."""
    from mcp import Client

    out = []
    for r in range(rounds):
        for t in tuners:
            if not t.alive():
                t.start()
        async with Client(runner_url) as runner:  # enough feedback that a promotion is due
            for i in range(5):
                cid = f"f{r}-{i}"
                await call(runner, "answer", {"question": "where is my parcel?", "conversation_id": cid})
                async with Client(tuners[i % 2].url) as c:
                    await call(c, "reward", {"conversation_id": cid, "value": 1, "event_id": cid})
                acked.add(cid)
        victim, other = tuners[r % 2], tuners[(r + 1) % 2]
        promoting = asyncio.create_task(promote_quietly(victim.url))  # it takes the lease...
        deadline = time.monotonic() + 30
        while not holds_lease(victim, store) and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        if not holds_lease(victim, store):
            promoting.cancel()
            continue  # it finished (or never started) between two looks
        victim.kill()  # ...and dies holding it
        victim.kill()
        killed = time.time()
        await asyncio.gather(promoting, return_exceptions=True)
        before = store.coordination.document("active").version
        while time.monotonic() < deadline + 30:
            async with Client(other.url) as c:
                outcome = await call(c, "promote", {})
            if outcome.get("promoted") or store.coordination.document("active").version != before:
                out.append(round(time.time() - killed, 2))
                break
            await asyncio.sleep(0.2)
    for t in tuners:
        if not t.alive():
            t.start()
    return out


def report(args, result: dict, a: Path, remote: Path) -> dict:
    import sqlalchemy as sa

    from ratchet.core.stores.schema import feedback, intents
    from ratchet.core.workspace import Workspace

    ws = Workspace.open(a)
    store = ws.store
    with store.engine.connect() as conn:
        logged = conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar_one()
        made = conn.execute(sa.select(intents.c.version, intents.c.state, intents.c.updated_at, intents.c.kind)
                            .order_by(intents.c.updated_at)).all()
    active = ws.state.read("active")
    section = active.document["strategies"]["style"]
    applied = sum(section["pulls"])
    tags = git(remote, "tag", "--sort=v:refname").split()
    linear = all(subprocess.run(["git", "merge-base", "--is-ancestor", x, y], cwd=remote).returncode == 0
                 for x, y in zip(tags, tags[1:]))
    done = [(v, at) for v, state, at, _kind in made if state == "done"]
    lags = [(result["seen"][v] - at) * 1000 for v, at in done if v in result["seen"]]
    takeovers = []
    for k in result["kills"]:
        if k["held_lease"]:
            after = [at for _v, at in done if at > k["at"]]
            takeovers.append(round(after[0] - k["at"], 2) if after else None)
    out = {
        "store": args.store, "pairs": args.pairs, "clients": args.clients, "kill_every_s": args.kill_every,
        "elapsed_s": round(result["elapsed"], 1), "acked": len(result["acked"]), "logged": logged,
        "applied_to_active": applied, "skipped": section.get("skipped", 0), "client_errors": len(result["errors"]),
        "kills": len(result["kills"]), "kills_of_the_lease_holder": len(takeovers),
        "versions": len(tags) - 1, "undone_intents": sum(1 for _v, s, _a, _k in made if s == "undone"),
        "linear_history": linear, "b_serves_ms_median": round(statistics.median(lags), 1) if lags else None,
        "b_serves_ms_max": round(max(lags), 1) if lags else None, "b_serves_n": len(lags),
        "lease_takeover_s": takeovers, "failover_next_version_s": result["failover"],
    }
    return out


def run(store_url: str, tmp: Path, *, pairs: int = 2000, clients: int = 4, kill_every: float = 4.0,
        every_events: int = 50, store: str = "") -> dict:
    """The soak on ``store_url`` in the folder ``tmp``; returns the report (tests/core/test_two_hosts.py
    runs it small)."""
    args = argparse.Namespace(store=store or store_url.split(":")[0], pairs=pairs, clients=clients,
                              kill_every=kill_every, every_events=every_events)
    env = {**os.environ, "RATCHET_STORE_URL": store_url}
    os.environ["RATCHET_STORE_URL"] = store_url
    a, b, remote = make_hosts(tmp, every_events)
    logs = tmp / "logs"
    logs.mkdir()
    result = asyncio.run(soak(args, a, b, env, logs))
    out = report(args, result, a, remote)
    result["store"].close()
    out["logs"] = str(logs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--kill-every", type=float, default=4.0, help="mean seconds between tuner kills")
    parser.add_argument("--every-events", type=int, default=50, help="the promotion policy")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ratchet-two-hosts-"))
    os.environ.setdefault("RATCHET_CACHE_DIR", str(tmp / "cache"))
    db = None
    if args.store == "sqlite":
        url = f"sqlite:///{tmp / 'shared.db'}"
    else:
        import sqlalchemy as sa

        db = f"ratchet_bench_{os.getpid()}"
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {db}")
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"
    try:
        out = run(url, tmp, pairs=args.pairs, clients=args.clients, kill_every=args.kill_every,
                  every_events=args.every_events, store=args.store)
    finally:
        if db is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    print(json.dumps(out, indent=2))
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged[args.store] = {k: v for k, v in out.items() if k != "logs"}
    RESULTS.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
