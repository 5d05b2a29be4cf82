"""The demo's workspace and its servers.

:func:`prepare_workspace` renders the default scaffold with the bandit ``glr_thompson`` (drift is
expected: it detects a change and restarts) and sets it to demo timescales, committed so that the
Architect's worktrees see the same settings: every port 0 (the supervisor picks free ones on
127.0.0.1), a promotion every ``promote_every`` feedback events, and an SLO over a window of seconds.
The SLO watches the reward rate; its error and latency ceilings are loose, so that a busy 2-core
machine does not wake the Architect about latency instead.

:func:`start_servers` runs this module, ``python -m ratchet.demo.servers ROOT --status FILE ...``, in a
session of its own: a :class:`~ratchet.ops.supervisor.Supervisor` over the runner, tuner, architect and
versions servers and a triggerer that checks the SLO every second (the same processes ``ratchet up``
starts, with the triggerer's timescale shortened). It writes the supervisor's status, with every
address, to ``FILE``; SIGTERM (:meth:`Servers.stop`, or ``kill PID`` after ``--keep``) stops it all.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ratchet.core.errors import RatchetError, UserError

STATUS_FILE = ".ratchet/demo/servers.json"
LOG_FILE = ".ratchet/logs/demo-servers.log"
COMPONENTS = ("runner", "tuner", "architect", "versions", "triggerer")


@dataclass(frozen=True)
class Timescales:
    """What the demo changes in the workspace and passes to the triggerer."""

    strategy: str = "glr_thompson"  # the style bandit (the scaffold's tuner_policy)
    promote_every: int = 10  # feedback events per tuner promotion (a patch version): the bandit's batch
    slo_window: float = 12.0  # seconds of feedback the reward rate is measured over: longer than the bandit
    # takes to absorb the drift (a few seconds), so only what it cannot absorb breaches the SLO
    reward_rate_min: float = 0.5
    check_interval: float = 1.0  # seconds between the triggerer's checks
    min_samples: int = 60  # rewards in the window before the reward rate is judged
    breach_checks: int = 2


def prepare_workspace(root: Path, scales: Timescales) -> str:
    """Make the default workspace in ``root`` and commit the demo's timescales; returns its first version."""
    import tomlkit

    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins
    from ratchet.core.versions import VersionStore

    v0 = create_workspace(root, data=[f"tuner_policy={scales.strategy}"], plugins=load_plugins(), author="demo")
    toml_path = root / "ratchet.toml"
    config = tomlkit.parse(toml_path.read_text(encoding="utf-8"))
    for name in ("runner", "tuner", "architect", "versions"):
        config[name]["port"] = 0
    config["tuner"]["promotion"]["every_events"] = scales.promote_every
    toml_path.write_text(tomlkit.dumps(config), encoding="utf-8")

    budgets_path = root / "ci" / "budgets.json"
    budgets = json.loads(budgets_path.read_text(encoding="utf-8"))
    budgets["slo"].update(window_seconds=scales.slo_window, reward_rate_min=scales.reward_rate_min,
                          error_rate_max=0.5, latency_p95_ms=10_000)
    budgets_path.write_text(json.dumps(budgets, indent=2) + "\n", encoding="utf-8")

    VersionStore(root).git("-c", "user.name=ratchet demo", "-c", "user.email=demo@ratchet.invalid", "commit", "-q",
                           "-m", "demo: timescales of seconds (free ports, promotion every "
                           f"{scales.promote_every} events, a {scales.slo_window:g} s SLO window)",
                           "--", "ratchet.toml", "ci/budgets.json")
    return v0.name


# --- the servers, seen from the demo -----------------------------------------------------------------


@dataclass
class Servers:
    """The supervisor process started by :func:`start_servers` and the addresses it reported."""

    proc: subprocess.Popen
    root: Path
    addresses: dict[str, str]
    pids: dict[str, int]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, name: str) -> str:
        return self.addresses[name]

    def refresh(self) -> None:
        """Re-read the supervisor's status: restarted components have new PIDs."""
        info = _read_status(self.root / STATUS_FILE)
        if info:
            comps = {c["name"]: c for c in info["components"]}
            self.addresses.update({n: c["address"] for n, c in comps.items() if c.get("address")})
            self.pids.update({n: c["pid"] for n, c in comps.items() if c.get("pid")})

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the supervisor (it stops its children), SIGKILL it if it does not finish in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # its children get SIGTERM from PR_SET_PDEATHSIG
                self.proc.wait(timeout=10)


def start_servers(root: Path, scales: Timescales, *, keep: bool = False, timeout: float = 90.0) -> Servers:
    """Start the supervisor (see the module docstring) and wait until every component is ready.

    Unless ``keep``, the supervisor dies with this process (Linux), so even a killed demo leaves nothing.
    """
    from ratchet.ops.supervisor import die_with_parent

    root = Path(root).resolve()
    status = root / STATUS_FILE
    log = root / LOG_FILE
    status.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    status.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "ratchet.demo.servers", str(root), "--status", str(status),
            "--interval", str(scales.check_interval), "--min-samples", str(scales.min_samples),
            "--breach-checks", str(scales.breach_checks)]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=root, env=server_env(os.environ), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=None if keep else die_with_parent())
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                tail = "\n".join(f"  | {line}" for line in log.read_text(errors="replace").splitlines()[-15:])
                raise UserError(f"the demo's servers did not start (exit code {proc.returncode}). "
                                f"Last lines of {log}:\n{tail}", field="servers",
                                fix="fix the error above; `ratchet up -w WORKSPACE` shows it too")
            info = _read_status(status)
            if info and info.get("up"):
                servers = Servers(proc, root, {}, {})
                servers.refresh()
                return servers
            if time.monotonic() > deadline:
                raise UserError(f"the demo's servers were not ready within {timeout:g} s", field="servers",
                                fix=f"see {log} and {root / '.ratchet' / 'logs'}")
            time.sleep(0.1)
    except BaseException:
        Servers(proc, root, {}, {}).stop()
        raise


def server_env(environ) -> dict[str, str]:
    """The servers' environment: they run in the workspace, so a relative PYTHONPATH (PYTHONPATH=src in a
    checkout) is made absolute, to name this checkout's code and not whichever ratchet is installed."""
    env = dict(environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    return env


def _read_status(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- the supervisor process --------------------------------------------------------------------------


def components(interval: float, min_samples: int, breach_checks: int):
    """``ratchet up``'s components, with a triggerer on the demo's timescale."""
    from ratchet.ops.supervisor import Component, Plan, default_components

    def triggerer(plan: Plan) -> list[str]:
        return [sys.executable, "-m", "ratchet", "serve", "triggerer", "-w", str(plan.root),
                "--architect-url", plan.url("architect"), "--interval", str(interval),
                "--min-samples", str(min_samples), "--breach-checks", str(breach_checks)]

    listed = default_components(["runner", "tuner", "architect", "versions"])
    return [*listed, Component("triggerer", triggerer, listens=False, ready=r"ratchet triggerer watching")]


def main(argv: list[str] | None = None) -> int:
    from ratchet.ops.supervisor import Supervisor

    parser = argparse.ArgumentParser(prog="python -m ratchet.demo.servers", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--min-samples", type=int, default=60)
    parser.add_argument("--breach-checks", type=int, default=2)
    args = parser.parse_args(argv)
    sup = Supervisor(args.root, components(args.interval, args.min_samples, args.breach_checks),
                     status_file=args.status, say=lambda msg: print(f"ratchet demo servers: {msg}", flush=True))
    print(f"ratchet demo servers: supervisor pid {os.getpid()} for {args.root}", flush=True)
    try:
        sup.run()
    except RatchetError as exc:
        print(f"ratchet demo servers: {exc}", flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
