"""The supervisor behind ``ratchet up``: every component as its own process, kept alive.

:class:`Supervisor` runs a list of :class:`Component` s (by default runner, tuner, architect, versions
and triggerer, each ``python -m ratchet serve NAME -w ROOT --host 127.0.0.1 --port P``):

* **Addresses first.** Ports come from ``ratchet.toml``; a port of 0 is replaced by a free port before
  anything starts, so every address is known up front (the triggerer is told the Architect's) and a
  restarted component comes back on the same address.
* **Ready** means the component printed its ready line (``ratchet runner listening on http://…``) and,
  for a component that listens, its port accepts a connection. A component that exits or is not ready
  within ``ready_timeout`` fails the start with an error naming it and quoting the tail of its log.
* **Logs.** Each child's stdout and stderr go, line by line, to ``.ratchet/logs/<name>.log`` (appended,
  one header line per start) and, prefixed with its name, to ``echo`` (stderr for ``ratchet up``).
* **Restarts.** A component that dies is started again after a backoff (0.5 s, 1 s, 2 s, … up to 10 s).
  More than ``max_restarts`` (5) restarts within ``window`` (60 s) is a crash loop: the supervisor stops
  everything and raises :class:`SupervisorError` with the component's last log lines.
* **New code.** The supervisor watches the repository's tags with watchdog (``refs/tags/`` and
  ``packed-refs`` in the git common dir). When a new version says ``kind: architect`` and bump minor or
  major, code changed, so it restarts the runner, the tuner and the Versions API (they hot-reload
  state, not code), one at a time: the next stops only once the last is ready again, so a host with
  two runners keeps serving. With a ``remote`` (``[workspace] remote``: a host that joined others), it
  fetches the remote every ``fetch_interval`` seconds and fast-forwards main to a new code version
  before restarting on it.
* **Stopping.** SIGINT (Ctrl-C) or SIGTERM, or :meth:`Supervisor.stop`: every child's process group gets
  SIGTERM, then SIGKILL after ``grace`` seconds (a second Ctrl-C kills at once). Children run in their
  own sessions, so the whole group (e.g. the tuner's worker process) goes, and on Linux they are also
  asked to die with the supervisor (``PR_SET_PDEATHSIG``), so even a killed supervisor leaves no orphans.

Everything that changes the set of processes happens on the thread that called :meth:`Supervisor.run`;
reader threads only copy output, and the tag watcher only raises a flag.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ratchet.core.errors import RatchetError, UserError

HOST = "127.0.0.1"
LISTENING = r"listening on (\S+)"
COMPONENT_NAMES = ("runner", "tuner", "architect", "versions", "triggerer")
# The Versions API reads the state through the configured strategies, so it must load new plugins too.
RELOAD_ON_CODE = ("runner", "tuner", "versions")
CODE_BUMPS = ("minor", "major")
TICK = 0.1


class SupervisorError(RatchetError):
    """A component would not start, or kept dying; the message quotes the tail of its log."""


# --- components ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a component's command line may depend on: every address, fixed before anything starts."""

    root: Path
    host: str
    ports: dict[str, int]

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"


@dataclass(frozen=True)
class Component:
    """One supervised process.

    ``argv(plan)`` builds its command line. ``listens``: it serves on ``plan.ports[name]`` (the supervisor
    picks the port and waits until it accepts connections). ``ready``: a regular expression matched
    against each output line until one matches; its first group, if any, is the address shown.
    """

    name: str
    argv: Callable[[Plan], list[str]]
    listens: bool = True
    ready: str = LISTENING


def serve_argv(name: str, *extra: str) -> Callable[[Plan], list[str]]:
    """``python -m ratchet serve NAME -w ROOT --host HOST --port PORT [EXTRA...]``."""

    def argv(plan: Plan) -> list[str]:
        return [sys.executable, "-m", "ratchet", "serve", name, "-w", str(plan.root), "--host", plan.host,
                "--port", str(plan.ports[name]), *extra]

    return argv


def _triggerer_argv(plan: Plan) -> list[str]:
    argv = [sys.executable, "-m", "ratchet", "serve", "triggerer", "-w", str(plan.root)]
    if "architect" in plan.ports:  # supervised here: tell it where, whatever ratchet.toml says
        argv += ["--architect-url", plan.url("architect")]
    return argv


def _versions_argv(plan: Plan) -> list[str]:
    argv = serve_argv("versions")(plan)
    if "architect" in plan.ports:  # the dashboard's approve and abandon go there
        argv += ["--architect-url", plan.url("architect")]
    return argv


def default_components(names: Iterable[str] | None = None) -> list[Component]:
    """Ratchet's own components, in start order; ``names`` selects some (unknown names are a UserError)."""
    known = {
        "runner": Component("runner", serve_argv("runner")),
        "tuner": Component("tuner", serve_argv("tuner")),
        "architect": Component("architect", serve_argv("architect")),
        "versions": Component("versions", _versions_argv),
        "triggerer": Component("triggerer", _triggerer_argv, listens=False, ready=r"ratchet triggerer watching"),
    }
    if names is None:
        return list(known.values())
    wanted = [n.strip() for n in names if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown or not wanted:
        raise UserError(f"unknown component(s) {unknown}" if unknown else "no component selected",
                        field="--only", fix=f"name some of {', '.join(known)}, separated by commas")
    return [c for name, c in known.items() if name in wanted]


# --- restart policy --------------------------------------------------------------------------------


class RestartPolicy:
    """Exponential backoff, and a crash-loop limit: at most ``max_restarts`` restarts within ``window``."""

    def __init__(self, *, max_restarts: int = 5, window: float = 60.0, base_delay: float = 0.5,
                 max_delay: float = 10.0):
        self.max_restarts = max_restarts
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.restarts: collections.deque[float] = collections.deque()

    def next_delay(self, now: float) -> float | None:
        """Record a death at ``now``: the seconds to wait before restarting, or None to give up."""
        while self.restarts and self.restarts[0] <= now - self.window:
            self.restarts.popleft()
        if len(self.restarts) >= self.max_restarts:
            return None
        self.restarts.append(now)
        return min(self.max_delay, self.base_delay * 2 ** (len(self.restarts) - 1))


def code_changed(versions: Iterable[Any]) -> list[Any]:
    """The versions among ``versions`` that changed code: kind ``architect`` with a minor or major bump."""
    return [v for v in versions if v.metadata.get("kind") == "architect" and v.metadata.get("bump") in CODE_BUMPS]


# --- processes -------------------------------------------------------------------------------------


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when the supervisor dies (None elsewhere).
    Everything is prepared here, so the forked child runs no import and takes no lock."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in process group ``pgid``."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Child:
    """A component's current process and what the supervisor knows about it."""

    component: Component
    log_path: Path
    policy: RestartPolicy
    proc: subprocess.Popen | None = None
    state: str = "new"  # starting, running, waiting (to restart), stopped, failed
    address: str | None = None
    started: float = 0.0
    restart_at: float = 0.0
    starts: int = 0
    restarts: int = 0  # after a death (not counting restarts for new code)
    seen_ready_line: bool = False
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=20))
    reader: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.component.name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, lines: int = 12) -> str:
        tail = list(self.tail)[-lines:]
        if not tail:
            return f"  ({self.log_path} has no output from it)"
        return "\n".join(f"  | {line}" for line in tail)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "address": self.address, "state": self.state,
                "starts": self.starts, "restarts": self.restarts, "log": str(self.log_path)}


# --- the supervisor --------------------------------------------------------------------------------


class Supervisor:
    """Start, watch, restart and stop a set of components; see the module docstring.

    ``ports``: configured ports by component name (missing or 0: a free port is picked). ``echo``: where
    children's output lines go, prefixed with their name (None: only to the log files). ``on_up`` is
    called once with :meth:`status` when every component is ready; ``say`` reports restarts and reloads.
    ``status_file``: a JSON copy of :meth:`status`, rewritten on every change. ``record``: the same, kept
    only while :meth:`run` runs (``ratchet up status|logs|down`` read ``.ratchet/run/up.json``).
    """

    def __init__(self, root: Path, components: Sequence[Component], *, host: str = HOST,
                 ports: dict[str, int] | None = None, log_dir: Path | None = None, ready_timeout: float = 60.0,
                 grace: float = 10.0, max_restarts: int = 5, window: float = 60.0, base_delay: float = 0.5,
                 max_delay: float = 10.0, watch_tags: bool = True, reload_on_code: Sequence[str] = RELOAD_ON_CODE,
                 echo: IO[str] | None = None, on_up: Callable[[dict], None] | None = None,
                 say: Callable[[str], None] | None = None, status_file: Path | None = None,
                 remote: str | None = None, fetch_interval: float = 2.0, record: Path | None = None):
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique: {names}")
        self.root = Path(root).resolve()
        self.host = host
        self.configured_ports = dict(ports or {})
        self.log_dir = Path(log_dir) if log_dir else self.root / ".ratchet" / "logs"
        self.ready_timeout = ready_timeout
        self.grace = grace
        self.watch_tags = watch_tags
        self.reload_on_code = tuple(reload_on_code)
        self.echo = echo
        self.on_up = on_up
        self.say = say or (lambda msg: print(f"ratchet up: {msg}", file=sys.stderr, flush=True))
        self.status_file = Path(status_file) if status_file else None
        self.record = Path(record) if record else None
        self.remote, self.fetch_interval = remote, fetch_interval
        self._rolling: list[Child] = []  # components to restart on new code, one at a time
        policy = dict(max_restarts=max_restarts, window=window, base_delay=base_delay, max_delay=max_delay)
        self.children = [Child(c, self.log_dir / f"{c.name}.log", RestartPolicy(**policy)) for c in components]
        self.plan: Plan | None = None
        self.up = False
        self.latest_version: str | None = None
        self._stopping = False
        self._hurry = False
        self._tags_changed = threading.Event()
        self._echo_lock = threading.Lock()
        self._known_tags: set[str] = set()
        self._observer = None
        self._versions = None

    # --- public ---

    def run(self) -> None:
        """Start everything and supervise until :meth:`stop`, SIGINT or SIGTERM; always stops every child
        before returning. Raises :class:`SupervisorError` if a component will not start or keeps dying."""
        restore = self._install_signal_handlers()
        try:
            self.plan = self._make_plan()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            if self.watch_tags:
                self._start_tag_watch()
            for child in self.children:
                self._spawn(child)
            self._write_status()
            while not self._stopping:
                self._tick(time.monotonic())
                time.sleep(TICK)
        finally:
            try:
                self._stop_all()
            finally:
                self._stop_tag_watch()
                restore()
                self._forget_record()

    def stop(self, *, hurry: bool = False) -> None:
        """Ask :meth:`run` to stop every child and return (safe from any thread or a signal handler)."""
        self._hurry = self._hurry or hurry or self._stopping
        self._stopping = True

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "root": str(self.root), "up": self.up, "stopping": self._stopping,
                "latest_version": self.latest_version, "components": [c.to_dict() for c in self.children]}

    # --- planning ---

    def _make_plan(self) -> Plan:
        ports: dict[str, int] = {}
        taken: set[int] = set()
        for child in self.children:
            if not child.component.listens:
                continue
            port = self.configured_ports.get(child.name) or 0
            if port:
                if port in taken:
                    raise UserError(f"{child.name} and another component are both configured for port {port}",
                                    field=f"{child.name}.port", fix="give each component its own port in ratchet.toml, "
                                    "or 0 to pick a free one")
                if not _port_free(self.host, port):
                    raise UserError(f"port {port} of {child.name} ({self.host}) is already in use",
                                    field=f"{child.name}.port",
                                    fix=f"stop what listens there, or set [{child.name}] port = 0 in ratchet.toml "
                                    "to pick a free port")
            else:
                port = _free_port(self.host, taken)
            taken.add(port)
            ports[child.name] = port
        return Plan(self.root, self.host, ports)

    # --- one supervision step ---

    def _tick(self, now: float) -> None:
        for child in self.children:
            if child.state in ("starting", "running") and child.proc.poll() is not None:
                self._on_death(child, now, _exit_text(child.proc.returncode))
            elif child.state == "starting":
                if self._is_ready(child):
                    child.state = "running"
                    if self.up:
                        self.say(f"{child.name} is back (pid {child.pid})")
                    self._write_status()
                elif now - child.started > self.ready_timeout:
                    what = "printed no ready line" if not child.seen_ready_line else "accepted no connection"
                    self._kill(child)
                    self._on_death(child, now, f"{what} within {self.ready_timeout:g} s")
            elif child.state == "waiting" and now >= child.restart_at:
                self._spawn(child)
                self._write_status()
        if not self.up and all(c.state == "running" for c in self.children):
            self.up = True
            if self.on_up:
                self.on_up(self.status())
            self._write_status()  # after on_up: whoever sees "up" in the file sees the printed addresses too
        if self.up and self._tags_changed.is_set():
            self._tags_changed.clear()
            self._check_tags()
        if self._rolling and not any(c.state == "starting" for c in self.children):
            child = self._rolling.pop(0)  # the one before is ready: restart the next
            self._terminate([child])
            if not self._stopping:
                self._spawn(child)

    def _is_ready(self, child: Child) -> bool:
        if not child.seen_ready_line:
            return False
        if not child.component.listens:
            return True
        try:
            with socket.create_connection((self.host, self.plan.ports[child.name]), timeout=0.2):
                return True
        except OSError:
            return False

    def _on_death(self, child: Child, now: float, why: str) -> None:
        _signal_group(child.pid, signal.SIGKILL)  # whatever it left behind in its group
        if not self.up:
            child.state = "failed"
            self._write_status()
            raise SupervisorError(
                f"{child.name} did not start: it {why}. Last lines of {child.log_path}:\n{child.log_tail()}",
                field=child.name, fix=f"run `ratchet serve {child.name} -w {self.root}` alone to see the error")
        delay = child.policy.next_delay(now)
        if delay is None:
            child.state = "failed"
            self._write_status()
            p = child.policy
            raise SupervisorError(
                f"{child.name} {why} and had already been restarted {p.max_restarts} times within {p.window:g} s; "
                f"giving up and stopping everything. Last lines of {child.log_path}:\n{child.log_tail()}",
                field=child.name, fix=f"run `ratchet serve {child.name} -w {self.root}` alone to see the error, "
                "fix it, then `ratchet up` again")
        child.state, child.restart_at = "waiting", now + delay
        child.restarts += 1
        self.say(f"{child.name} (pid {child.pid}) {why}; restarting in {delay:g} s")
        self._write_status()

    # --- starting and stopping processes ---

    def _spawn(self, child: Child) -> None:
        argv = child.component.argv(self.plan)
        with child.log_path.open("a") as log:
            log.write(f"--- ratchet up: starting {child.name} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}: "
                      f"{' '.join(argv)}\n")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        child.proc = subprocess.Popen(argv, cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=die_with_parent())
        child.seen_ready_line, child.address = False, None  # after the swap: the old reader no longer counts
        child.state, child.started = "starting", time.monotonic()
        child.starts += 1
        child.reader = threading.Thread(target=self._read, args=(child, child.proc), daemon=True,
                                        name=f"ratchet-up-{child.name}")
        child.reader.start()

    def _read(self, child: Child, proc: subprocess.Popen) -> None:
        """Copy one process's output to its log (and ``echo``), watching for its ready line."""
        ready = re.compile(child.component.ready)
        width = max(len(c.name) for c in self.children)
        with child.log_path.open("a", encoding="utf-8") as log:
            for raw in proc.stdout:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                log.write(line + "\n")
                log.flush()
                child.tail.append(line)
                if self.echo is not None:
                    with self._echo_lock:
                        self.echo.write(f"{child.name:<{width}} | {line}\n")
                        self.echo.flush()
                if proc is child.proc and not child.seen_ready_line:
                    m = ready.search(line)
                    if m:
                        child.address = m.group(1) if m.groups() else None
                        child.seen_ready_line = True
        proc.stdout.close()

    def _kill(self, child: Child) -> None:
        _signal_group(child.pid, signal.SIGKILL)
        child.proc.wait()

    def _terminate(self, children: list[Child]) -> None:
        """SIGTERM each child's process group; SIGKILL what is left after ``grace`` (or at a second Ctrl-C)."""
        live = [c for c in children if c.proc is not None]
        for child in live:
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        while live and time.monotonic() < deadline and not self._hurry:
            live = [c for c in live if c.proc.poll() is None or group_alive(c.pid)]
            if live:
                time.sleep(0.05)
        for child in live:
            _signal_group(child.pid, signal.SIGKILL)
        for child in children:
            if child.proc is not None:
                child.proc.wait()
                if child.reader is not None:
                    child.reader.join(timeout=5)

    def _stop_all(self) -> None:
        self._stopping = True
        running = [c for c in self.children if c.proc is not None and c.state != "stopped"]
        self._terminate(running)
        for child in self.children:
            if child.state != "failed":
                child.state = "stopped"
        self._write_status()

    # --- new code: tags ---

    def _start_tag_watch(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        from ratchet.core.versions import VersionStore

        versions = self._versions = VersionStore(self.root)
        common = (self.root / versions.git("rev-parse", "--git-common-dir").decode().strip()).resolve()
        tags = common / "refs" / "tags"
        tags.mkdir(parents=True, exist_ok=True)
        listed = versions.list()
        self._known_tags = {v.name for v in listed}
        self.latest_version = listed[-1].name if listed else None
        flag = self._tags_changed

        class OnTags(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                paths = [str(getattr(event, "src_path", "")), str(getattr(event, "dest_path", "") or "")]
                if any(p.startswith(str(tags)) or Path(p).name == "packed-refs" for p in paths if p):
                    flag.set()

        observer = Observer()
        observer.schedule(OnTags(), str(tags), recursive=True)
        observer.schedule(OnTags(), str(common), recursive=False)  # packed-refs is replaced by a rename
        observer.daemon = True
        observer.start()
        self._observer = observer
        if self.remote is not None:
            threading.Thread(target=self._fetch_loop, daemon=True, name="ratchet-up-fetch").start()

    def _fetch_loop(self) -> None:
        """Fetch the remote's main and tags now and then; new tags wake the tag watcher."""
        while not self._stopping:
            try:
                self._versions.fetch(self.remote)
            except RatchetError as exc:  # unreachable for now: say so, try again later
                self.say(f"fetching {self.remote} failed: {exc.message.splitlines()[0]}")
            for _ in range(max(1, int(self.fetch_interval / TICK))):
                if self._stopping:
                    return
                time.sleep(TICK)

    def _stop_tag_watch(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _check_tags(self) -> None:
        """Restart the components in ``reload_on_code`` when a new version changed code."""
        listed = self._versions.list()
        new = [v for v in listed if v.name not in self._known_tags]
        self._known_tags |= {v.name for v in new}
        if listed:
            self.latest_version = listed[-1].name
        changed = code_changed(new)
        targets = [c for c in self.children if c.name in self.reload_on_code and c.state != "failed"]
        if changed and targets:
            names = ", ".join(v.name for v in changed)
            if self.remote is not None and not self._catch_up(changed[-1]):
                return
            self.say(f"{names} changed code: restarting {', '.join(c.name for c in targets)}, one at a time")
            self._rolling += [c for c in targets if c not in self._rolling]
        self._write_status()

    def _catch_up(self, version) -> bool:
        """Fast-forward main to a code version another host made (under the repository's lock, so no
        local version maker moves main meanwhile). False if main cannot get there."""
        versions = self._versions
        try:
            with versions.lock():
                head = versions.head()
                if head != version.commit and not versions.is_ancestor(version.commit, head):
                    versions.fast_forward(version.commit)
        except RatchetError as exc:
            self.say(f"{version.name} is new code, but main cannot move to it: {exc.message.splitlines()[0]}")
            return False
        return True

    # --- status and signals ---

    def _forget_record(self) -> None:
        """Remove ``record`` if it is this supervisor's (not another's that started meanwhile)."""
        try:
            if self.record is not None and json.loads(self.record.read_text()).get("pid") == os.getpid():
                self.record.unlink()
        except (OSError, ValueError):
            pass

    def _write_status(self) -> None:
        for target in (self.status_file, self.record):
            if target is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(json.dumps(self.status(), indent=2))
            os.replace(tmp, target)

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, lambda *_: self.stop())

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _free_port(host: str, taken: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port
