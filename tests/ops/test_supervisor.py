"""The supervisor behind ``ratchet up``, with tiny fake children (a Python script per component).

The supervisor runs in a thread here (no signal handlers there; :meth:`Supervisor.stop` stops it). The
real servers under ``ratchet up`` are tested in tests/cli/test_up.py (slow).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers import with_style
from ratchet.core.errors import UserError
from ratchet.ops.supervisor import (
    Component,
    Plan,
    RestartPolicy,
    Supervisor,
    SupervisorError,
    code_changed,
    default_components,
)

FAKE = r'''
import os, socket, subprocess, sys, time, signal
port, mode, counter = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(counter, "a") as f:
    f.write("x")
starts = len(open(counter).read())
if mode == "die":
    print("fatal: bad config", flush=True)
    sys.exit(2)
if mode == "silent":
    time.sleep(60)
if port:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    print(f"fake listening on http://127.0.0.1:{port}", flush=True)
else:
    print("fake watching", flush=True)
if mode == "crash-after-first" and starts > 1:
    print(f"boom: crash number {starts - 1}", flush=True)
    sys.exit(3)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode == "grandchild":
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(f"grandchild {g.pid}", flush=True)
time.sleep(60)
'''


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc").is_dir():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_child.py"
    script.write_text(FAKE)

    def component(name: str, mode: str = "ok", listens: bool = True) -> Component:
        counter = tmp_path / f"{name}.starts"
        return Component(name, lambda plan: [sys.executable, str(script), str(plan.ports.get(name, 0)), mode,
                                             str(counter)],
                         listens=listens, ready=r"fake listening on (\S+)" if listens else r"fake watching")

    return component


class Running:
    """A supervisor run in a thread; ``.error`` is what ``run`` raised."""

    def __init__(self, sup: Supervisor):
        self.sup = sup
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.sup.run()
        except BaseException as exc:  # noqa: BLE001 -- handed to the test
            self.error = exc

    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self.sup.children}

    def state(self, name: str) -> str:
        return next(c.state for c in self.sup.children if c.name == name)


@contextlib.contextmanager
def supervising(sup: Supervisor, *, wait_up: bool = True):
    run = Running(sup)
    run.thread.start()
    try:
        if wait_up:
            wait_for(lambda: sup.up or run.error, what="every component ready")
            assert run.error is None, run.error
        yield run
    finally:
        sup.stop()
        run.thread.join(timeout=60)
        assert not run.thread.is_alive()


def make(root: Path, components, **kw) -> Supervisor:
    said: list[str] = []
    kw = {"watch_tags": False, "base_delay": 0.05, "grace": 5.0, "ready_timeout": 20.0, "say": said.append, **kw}
    sup = Supervisor(root, components, **kw)
    sup.said = said
    return sup


def new_code(ws, note: str) -> None:
    """An architect minor version that changes the workspace's plugin (the tag is what supervisors see)."""
    plugin = ws.root / "plugins" / "support_desk.py"
    plugin.write_text(plugin.read_text() + f"\n# {note}\n")
    ws.versions.make_version("minor", paths=["plugins/support_desk.py"], reason="new code", kind="architect",
                             author="test")


# --- restart policy and decisions -------------------------------------------------------------------


def test_restart_policy_backs_off_then_gives_up():
    policy = RestartPolicy(max_restarts=5, window=60, base_delay=0.5, max_delay=4)
    assert [policy.next_delay(t) for t in (0, 1, 2, 3, 4)] == [0.5, 1, 2, 4, 4]
    assert policy.next_delay(5) is None  # a sixth death within 60 s


def test_restart_policy_forgets_deaths_outside_the_window():
    policy = RestartPolicy(max_restarts=2, window=10, base_delay=1)
    assert policy.next_delay(0) == 1 and policy.next_delay(5) == 2
    assert policy.next_delay(9) is None
    assert policy.next_delay(14) == 2  # the death at 0 no longer counts (nor the refused one); the one at 5 does
    assert policy.next_delay(30) == 1  # a quiet window: back to the first delay


def test_code_changed_means_an_architect_minor_or_major_version():
    def v(kind, bump):
        return SimpleNamespace(name=f"{kind}-{bump}", metadata={"kind": kind, "bump": bump})

    versions = [v("architect", "minor"), v("architect", "major"), v("architect", "patch"), v("tuner", "patch"),
                v("manual", "minor"), v("init", "initial")]
    assert [x.name for x in code_changed(versions)] == ["architect-minor", "architect-major"]


def test_default_components_are_every_server_and_only_selects():
    assert [c.name for c in default_components()] == ["runner", "tuner", "architect", "versions", "triggerer"]
    assert [c.name for c in default_components(["versions", "runner"])] == ["runner", "versions"]
    with pytest.raises(UserError, match="unknown component") as err:
        default_components(["runner", "bogus"])
    assert err.value.field == "--only"


def test_triggerer_is_told_the_architect_address_chosen_for_it(tmp_path):
    trig = next(c for c in default_components() if c.name == "triggerer")
    argv = trig.argv(Plan(tmp_path, "127.0.0.1", {"runner": 5001, "architect": 5003}))
    assert argv[argv.index("--architect-url") + 1] == "http://127.0.0.1:5003"
    assert "--architect-url" not in trig.argv(Plan(tmp_path, "127.0.0.1", {"runner": 5001}))
    runner = next(c for c in default_components() if c.name == "runner")
    argv = runner.argv(Plan(tmp_path, "127.0.0.1", {"runner": 5001}))
    assert argv[1:] == ["-m", "ratchet", "serve", "runner", "-w", str(tmp_path), "--host", "127.0.0.1",
                        "--port", "5001"]


def test_versions_dashboard_is_told_the_architect_address_chosen_for_it(tmp_path):
    versions = next(c for c in default_components() if c.name == "versions")
    argv = versions.argv(Plan(tmp_path, "127.0.0.1", {"versions": 5004, "architect": 5003}))
    assert argv[argv.index("--port") + 1] == "5004"
    assert argv[argv.index("--architect-url") + 1] == "http://127.0.0.1:5003"
    assert "--architect-url" not in versions.argv(Plan(tmp_path, "127.0.0.1", {"versions": 5004}))


def test_a_configured_port_in_use_fails_before_anything_starts(tmp_path, fake):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sup = make(tmp_path, [fake("runner")], ports={"runner": port})
        with pytest.raises(UserError, match=f"port {port} of runner"):
            sup.run()
    assert sup.children[0].proc is None


# --- processes ---------------------------------------------------------------------------------------


def test_supervisor_starts_components_logs_them_and_stops_them_all(tmp_path, fake):
    ups = []
    status_file = tmp_path / "status.json"
    sup = make(tmp_path, [fake("web"), fake("watcher", listens=False)], on_up=ups.append, status_file=status_file)
    with supervising(sup) as run:
        pids = run.pids()
        port = sup.plan.ports["web"]
        assert "watcher" not in sup.plan.ports
        status = ups[0]
        assert [(c["name"], c["state"], c["address"]) for c in status["components"]] == [
            ("web", "running", f"http://127.0.0.1:{port}"), ("watcher", "running", None)]
        assert '"state": "running"' in status_file.read_text()
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    assert not any(alive(pid) for pid in pids.values())
    log = (tmp_path / ".ratchet" / "logs" / "web.log").read_text()
    assert "--- ratchet up: starting web" in log and f"fake listening on http://127.0.0.1:{port}" in log
    assert '"state": "stopped"' in status_file.read_text()


def test_supervisor_restarts_a_killed_component_on_the_same_port(tmp_path, fake):
    sup = make(tmp_path, [fake("web"), fake("other")])
    with supervising(sup) as run:
        before = run.pids()
        port = sup.plan.ports["web"]
        os.kill(before["web"], signal.SIGKILL)
        wait_for(lambda: run.pids()["web"] != before["web"] and run.state("web") == "running", what="a restart")
        assert run.pids()["other"] == before["other"]
        assert sup.children[0].restarts == 1 and sup.plan.ports["web"] == port
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        assert any("web (pid" in m and "SIGKILL" in m for m in sup.said), sup.said
        after = run.pids()
    assert not any(alive(pid) for pid in [*before.values(), *after.values()])


def test_supervisor_gives_up_on_a_crash_loop_and_stops_everything(tmp_path, fake):
    sup = make(tmp_path, [fake("web", "crash-after-first"), fake("other")], max_restarts=2, window=60)
    with supervising(sup) as run:
        pids = run.pids()
        os.kill(pids["web"], signal.SIGKILL)  # from now on every start crashes
        run.thread.join(timeout=30)
    assert isinstance(run.error, SupervisorError)
    message = str(run.error)
    assert "web exited with code 3" in message and "restarted 2 times within 60 s" in message
    assert "boom: crash number" in message and "web.log" in message
    assert run.state("web") == "failed" and run.state("other") == "stopped"
    assert not alive(pids["other"])


def test_a_component_that_dies_at_start_fails_the_start_with_its_log_tail(tmp_path, fake):
    sup = make(tmp_path, [fake("other"), fake("web", "die")])
    with pytest.raises(SupervisorError) as err:
        sup.run()
    assert "web did not start: it exited with code 2" in str(err.value)
    assert "fatal: bad config" in str(err.value) and "ratchet serve web" in err.value.fix
    assert all(not alive(c.pid) for c in sup.children)


def test_a_component_that_never_says_it_listens_times_out(tmp_path, fake):
    sup = make(tmp_path, [fake("web", "silent")], ready_timeout=1.0)
    with pytest.raises(SupervisorError, match="web did not start: it printed no ready line within 1 s"):
        sup.run()
    assert not alive(sup.children[0].pid)


def test_stop_kills_a_child_that_ignores_sigterm_and_its_grandchildren(tmp_path, fake):
    sup = make(tmp_path, [fake("stubborn", "stubborn"), fake("parent", "grandchild")], grace=0.5)
    with supervising(sup) as run:
        pids = run.pids()
        parent = next(c for c in sup.children if c.name == "parent")
        line = wait_for(lambda: next((x for x in parent.tail if x.startswith("grandchild ")), None),
                        what="the grandchild's pid")
        grandchild = int(line.split()[1])
        assert alive(grandchild)
    assert not any(alive(pid) for pid in [*pids.values(), grandchild])


def test_an_architect_version_with_new_code_restarts_runner_and_tuner(ws, fake):
    sup = make(ws.root, [fake("runner"), fake("tuner"), fake("versions")], watch_tags=True)
    with supervising(sup) as run:
        before = run.pids()
        assert sup.latest_version == "v0.1.0"
        ws.state.update("staging", with_style("formal"))
        ws.state.promote(reason="a tuner patch", author="test", kind="tuner")
        wait_for(lambda: sup.latest_version == "v0.1.1", what="the patch version to be seen")
        assert run.pids() == before  # state only: the runner hot-reloads it by itself

        new_code(ws, "new code from the architect")
        reloaded = ("runner", "tuner", "versions")
        wait_for(lambda: all(run.pids()[n] != before[n] and run.state(n) == "running" for n in reloaded),
                 what="runner, tuner and versions restarted")
        assert sup.latest_version == "v0.2.0"
        assert any("v0.2.0 changed code: restarting runner, tuner, versions, one at a time" in m for m in sup.said), sup.said
        assert all(c.restarts == 0 for c in sup.children)  # planned restarts are not deaths
    assert not any(alive(pid) for pid in before.values())


def test_new_code_restarts_components_one_at_a_time(ws, fake):
    """Two runners on one host: while one restarts on new code, the other serves."""
    sup = make(ws.root, [fake("runner"), fake("runner-2")], watch_tags=True,
               reload_on_code=("runner", "runner-2"))
    with supervising(sup) as run:
        before = run.pids()
        new_code(ws, "new code")
        down_together = 0
        deadline = time.monotonic() + 30
        while not all(run.pids()[n] != before[n] and run.state(n) == "running" for n in before):
            assert time.monotonic() < deadline, "both runners restarted"
            down_together += all(run.state(n) != "running" for n in before)
            time.sleep(0.005)
        assert down_together == 0


def test_a_joined_host_fetches_new_code_from_the_remote_and_restarts_on_it(ws, fake, tmp_path):
    """Host B runs its components under ``ratchet up`` with a remote; host A's Architect makes a minor
    version and pushes it: B fetches it, moves main to it and restarts on the new code."""
    from helpers import git
    from ratchet.core.workspace import Workspace

    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(ws.root), str(remote))
    git(ws.root, "remote", "add", "origin", str(remote))
    host_b = tmp_path / "b"
    git(tmp_path, "clone", "-q", str(remote), str(host_b))
    sup = make(host_b, [fake("runner"), fake("tuner")], watch_tags=True, remote="origin", fetch_interval=0.2)
    with supervising(sup) as run:
        before = run.pids()
        new_code(ws, "new code from host A")
        git(ws.root, "push", "-q", "origin", "main", "--tags")
        wait_for(lambda: all(run.pids()[n] != before[n] and run.state(n) == "running" for n in before),
                 what="B's runner and tuner restarted on the new code")
        assert (host_b / "plugins" / "support_desk.py").read_text().endswith("# new code from host A\n")
        assert Workspace.open(host_b).versions.head() == ws.versions.get("v0.2.0").commit
        assert sup.latest_version == "v0.2.0"


# --- the triggerer's architect URL -------------------------------------------------------------------


def test_architect_wake_posts_to_the_url_it_is_given(ws):
    import json
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from ratchet.ops.triggerer import architect_wake

    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        architect_wake(ws, url=f"http://127.0.0.1:{server.server_port}/")({"breaches": []})
        thread.join(timeout=10)
    finally:
        server.server_close()
    assert got == [("/wake", {"breaches": []})]
