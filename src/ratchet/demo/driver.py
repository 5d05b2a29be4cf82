"""The demo's driver: simulated users and a monitor, talking to the servers over their real interfaces.

Users call the runner's ``answer`` tool and the tuner's ``reward`` tool over MCP (streamable HTTP), at
a steady ``rate`` of conversations a second. The monitor polls the Versions API (``GET /versions``),
the Architect's jobs (``GET /jobs``, then the record of each job whose state changed) and the runner's
``version://current`` resource, and reports what it sees through ``on_note``. At the preferences'
``ask_at`` one user writes free-text feedback to the Architect (``POST /feedback``), asking for a style
that does not exist yet. When the Architect tags a minor version the supervisor restarts the runner
and the tuner (new code), so every call retries, bounded, across that gap: a reward is resent with the
same ``event_id``, which the tuner treats as a repeat.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from mcp import Client

from ratchet.core import auth
from ratchet.demo.simulation import REQUEST, Oracle, Users

RETRY_SECONDS = 60.0  # the longest a conversation keeps retrying (runner and tuner restart in seconds)
CALL_TIMEOUT = 20.0
POLL_SECONDS = 0.5


class CallFailed(Exception):
    """A tool call that returned an error."""


async def call(client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        raise CallFailed(f"{tool}: {result.content[0].text if result.content else 'error'}")
    return result.structured_content


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


@dataclass
class Turn:
    """One simulated conversation: when it was answered, the style served, the user's reward and the
    regret of that style against the oracle."""

    n: int
    t: float  # seconds since the users started, when the answer came back
    style: str
    reward: float
    expected: float  # the hidden probability of a reward for this style at t
    oracle: float  # the oracle's expected reward at t
    regret: float
    latency_ms: float


@dataclass
class _Pending:
    """A conversation in progress: kept across a reconnection, so that it resumes where it stopped."""

    n: int
    cid: str
    question: str
    deadline: float
    answer: dict[str, Any] | None = None
    t: float = 0.0
    reward: float = 0.0
    latency_ms: float = 0.0


@dataclass
class Seen:
    """What the monitor saw, with the times (seconds since the users started) it first saw it."""

    versions: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    job_states: list[tuple[float, str, str]] = field(default_factory=list)  # (t, job id, state)
    served: list[tuple[float, str, int | None]] = field(default_factory=list)  # (t, version served, runner pid)

    def served_at(self, version: str, tagged_at: float | None = None) -> float | None:
        """When a runner process started after ``tagged_at`` first served ``version`` (or a newer one): the
        running runner hot-reloads the new state at once, but only a restarted one has the new code."""
        from ratchet.core.versions import precedence

        target = precedence(version)
        before = [pid for t, _, pid in self.served if tagged_at is not None and t <= tagged_at and pid is not None]
        old_pid = before[-1] if before else None
        return next((t for t, v, pid in self.served
                     if (tagged_at is None or t >= tagged_at) and precedence(v) >= target
                     and (old_pid is None or pid != old_pid)), None)


class Driver:
    """Runs the users and the monitor until ``done()`` says so or ``max_seconds`` pass.

    ``on_turn(turn)``, ``on_note(t, kind, data)`` and ``on_tick(t)`` (about twice a second) let the
    report show progress; they run on the event loop and must not block.
    """

    def __init__(self, urls: dict[str, str], users: Users, oracle: Oracle, *, rate: float, concurrency: int = 4,
                 max_seconds: float, done: Callable[[Driver, float], bool] | None = None,
                 on_turn: Callable[[Turn], None] | None = None,
                 on_note: Callable[[float, str, dict[str, Any]], None] | None = None,
                 on_tick: Callable[[float], None] | None = None, runner_pid: Callable[[], int | None] | None = None):
        self.urls = urls
        self.token = auth.load_token()  # the demo's workspace has no token file: RATCHET_API_TOKEN or none
        self.runner_pid = runner_pid or (lambda: None)
        self.users = users
        self.oracle = oracle
        self.rate = rate
        self.concurrency = concurrency
        self.max_seconds = max_seconds
        self.done = done or (lambda _driver, _t: False)
        self.on_turn = on_turn or (lambda _turn: None)
        self.on_note = on_note or (lambda _t, _kind, _data: None)
        self.on_tick = on_tick or (lambda _t: None)
        self.turns: list[Turn] = []
        self.failures: list[str] = []
        self.seen = Seen()
        self.retries = 0
        self.asked: dict[str, Any] | None = None  # {"at": seconds, "job": the Architect's job id, "text"}
        self.t0 = self.t0_wall = 0.0
        self.elapsed = 0.0
        self._next_n = 0
        self._next_slot = 0.0
        self._stop: anyio.Event | None = None
        self._latest: str | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def run(self) -> None:
        anyio.run(self._main)

    async def _main(self) -> None:
        self.t0, self.t0_wall = time.monotonic(), time.time()
        self._next_slot = 0.0
        self._stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for _ in range(self.concurrency):
                tg.start_soon(self._user)
            tg.start_soon(self._monitor)
            tg.start_soon(self._watch_served)
            if self.users.prefs.ask_at is not None:
                tg.start_soon(self._ask)
            while not self._stop.is_set():
                t = self.now()
                if t >= self.max_seconds or self.done(self, t):
                    self._stop.set()
                    break
                self.on_tick(t)
                await anyio.sleep(POLL_SECONDS)
        self.elapsed = self.now()
        with anyio.move_on_after(10):
            async with httpx.AsyncClient(timeout=5, headers=auth.header(self.token)) as http:
                await self._poll(http)  # the last word on versions and jobs

    # --- users ---

    async def _next(self) -> _Pending | None:
        """The next conversation, at its slot: slots are evenly spaced and never bunch up after a stall."""
        n = self._next_n
        self._next_n += 1
        slot = max(self._next_slot, self.now())
        self._next_slot = slot + 1.0 / self.rate
        with anyio.move_on_after(max(0.0, slot - self.now())):
            await self._stop.wait()
        if self._stop.is_set():
            return None
        return _Pending(n, f"demo-{self.users.seed}-{n}", self.users.question(n), deadline=self.now() + RETRY_SECONDS)

    async def _user(self) -> None:
        """One simulated client with a connection to the runner and one to the tuner. After a failure it
        reconnects and carries on with the conversation it was in (for at most ``RETRY_SECONDS``)."""
        pending: _Pending | None = None
        while not self._stop.is_set():
            try:
                async with Client(auth.mcp_target(self.urls["runner"], self.token)) as runner, \
                        Client(auth.mcp_target(self.urls["tuner"], self.token)) as tuner:
                    while True:
                        if pending is None:
                            pending = await self._next()
                            if pending is None:
                                return
                        try:
                            await self._converse(pending, runner, tuner)
                        except CallFailed as exc:  # the server answered with an error: not worth repeating
                            self.failures.append(f"{pending.cid}: {exc}")
                            self.on_note(self.now(), "failure", {"error": str(exc)})
                        pending = None
            except Exception as exc:  # noqa: BLE001 -- a connection failure (e.g. a server restarting)
                self.retries += 1
                if pending is not None and self.now() > pending.deadline:
                    self.failures.append(f"{pending.cid}: gave up after {RETRY_SECONDS:g} s: {_leaf(exc)!r}")
                    self.on_note(self.now(), "failure", {"error": self.failures[-1]})
                    pending = None
                with anyio.move_on_after(0.25):
                    await self._stop.wait()

    async def _converse(self, p: _Pending, runner, tuner) -> None:
        if p.answer is None:
            started = time.monotonic()
            with anyio.fail_after(CALL_TIMEOUT):
                p.answer = await call(runner, "answer", {"question": p.question, "conversation_id": p.cid})
            p.latency_ms = (time.monotonic() - started) * 1000
            p.t = self.now()
            p.reward = self.users.reward(p.n, p.t, p.answer["style"])
        with anyio.fail_after(CALL_TIMEOUT):  # resent after a failure: the event id makes it a repeat
            await call(tuner, "reward", {"conversation_id": p.cid, "value": p.reward, "event_id": p.cid})
        style = p.answer["style"]
        if style not in self.oracle.since:  # the runner renders a style it could not before
            self.oracle.available(style, p.t)
            self.on_note(self.now(), "new_style", {"style": style, "at": p.t})
        turn = Turn(p.n, p.t, style, p.reward, self.users.prefs.at(p.t).get(style, 0.0), self.oracle.expected(p.t),
                    self.oracle.regret(p.t, style), p.latency_ms)
        self.turns.append(turn)
        self.on_turn(turn)

    async def _ask(self) -> None:
        """One user asks the Architect in free text for the style they miss (retried while it restarts)."""
        await self._wait(max(0.0, self.users.prefs.ask_at - self.now()))
        async with httpx.AsyncClient(timeout=10, headers=auth.header(self.token)) as http:
            while not self._stop.is_set():
                at = self.now()
                try:
                    job = (await http.post(f"{self.urls['architect']}/feedback", json={"text": REQUEST}))
                    job = job.raise_for_status().json()
                except (httpx.HTTPError, ValueError) as exc:
                    self.on_note(at, "failure", {"error": f"feedback to the architect: {exc!r}"})
                    await self._wait(1.0)
                    continue
                self.asked = {"at": at, "job": job["id"], "text": REQUEST}
                self.on_note(at, "asked", self.asked)
                return

    # --- monitor ---

    async def _wait(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            await self._stop.wait()

    async def _monitor(self) -> None:
        async with httpx.AsyncClient(timeout=5, headers=auth.header(self.token)) as http:
            while not self._stop.is_set():
                await self._poll(http)
                await self._wait(POLL_SECONDS)

    async def _poll(self, http: httpx.AsyncClient) -> None:
        t = self.now()
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            params = {"order": "asc", "limit": 1000, **({"since": self._latest} if self._latest else {})}
            page = (await http.get(f"{self.urls['versions']}/versions", params=params)).raise_for_status().json()
            for item in page["items"]:
                self.seen.versions.append({**item, "seen_at": t})
                self._latest = item["version"]
                self.on_note(t, "version", item)
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            listed = (await http.get(f"{self.urls['architect']}/jobs")).raise_for_status().json()["items"]
            for summary in reversed(listed):
                old = self.seen.jobs.get(summary["id"])
                if old is not None and old["state"] == summary["state"]:
                    continue
                # the list has summaries; the report needs the record (plan, request, tiers)
                job = (await http.get(f"{self.urls['architect']}/jobs/{summary['id']}")).raise_for_status().json()
                self.seen.jobs[job["id"]] = job
                if old is None or old["state"] != job["state"]:
                    self.seen.job_states.append((t, job["id"], job["state"]))
                    self.on_note(t, "job", job)

    async def _watch_served(self) -> None:
        """Which version the runner serves (its ``version://current`` resource) and which process serves it
        (its PID from the supervisor), across restarts."""
        while not self._stop.is_set():
            try:
                async with Client(auth.mcp_target(self.urls["runner"], self.token)) as runner:
                    while not self._stop.is_set():
                        with anyio.fail_after(CALL_TIMEOUT):
                            result = await runner.read_resource("version://current")
                        current, pid = json.loads(result.contents[0].text)["version"], self.runner_pid()
                        if not self.seen.served or self.seen.served[-1][1:] != (current, pid):
                            self.seen.served.append((self.now(), current, pid))
                            self.on_note(self.now(), "served", {"version": current, "pid": pid})
                        await self._wait(POLL_SECONDS)
            except Exception:  # noqa: BLE001 -- restarting: look again shortly
                await self._wait(POLL_SECONDS)
