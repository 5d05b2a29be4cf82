"""``ratchet demo``: the whole story on this machine, with real processes and simulated users.

1. **Set up**: a workspace from the default scaffold with the ``glr_thompson`` style bandit (in a
   temporary folder, or ``--out DIR``), set to demo timescales (:mod:`ratchet.demo.servers`), and its
   servers started as separate processes on 127.0.0.1 under a supervisor: runner, tuner, architect,
   versions and triggerer.
2. **Tune**: simulated users (:mod:`ratchet.demo.simulation`) with hidden preferences over the reply
   styles ask questions through the runner's MCP ``answer`` tool and send rewards to the tuner's MCP
   ``reward`` tool (:mod:`ratchet.demo.driver`). The bandit converges; every ``promote_every`` events the
   tuner promotes staging as a patch version.
3. **Drift, absorbed by the tuner**: at ``drift_at`` seconds the preferences change. The bandit's change
   detector sees the old favourite's rewards fall, restarts, and finds the new favourite: patch versions
   only, no one woken (the triggerer watches the SLO in ``ci/budgets.json`` all along, and would wake
   the Architect if the reward stayed low).
4. **A new style, by the Architect**: at ``ask_at`` seconds a user asks in free text for answers as
   bullet points, a style the runner cannot render: no state can fix that. The Architect's offline
   planner (the workspace's playbook, rule ``new-reply-style``) renders the ``reply-style`` template
   and adds the style as a new arm of the bandit, gated off-policy: an ``ope`` case in the full tier
   estimates, from the decision log, what the existing styles earn on the traffic the new arm leaves
   them, and refuses the change if that is worse than the active version's by more than 0.05 (the new
   arm, never served, is reported, not estimated). The micro, fast and full tiers pass and it tags a
   minor version; the supervisor restarts the runner and the tuner for the new code while the
   users' clients retry.
5. **Learn the new arm**: the bandit tries the new style, the users reward it, it wins.

The report (:mod:`ratchet.demo.report`) prints the versions made, the reward and regret before the
drift, from the drift to recovery, after it and with the new style, against an oracle that knows the
hidden preferences, and writes ``reward.png`` and ``summary.json`` into the output folder.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ratchet.core import auth
from ratchet.core.errors import UserError

WORKSPACE_NAME = "support-desk"
MIN_PROMOTIONS_AFTER = 3  # tuner promotions with the new style before the run may end


@dataclass(frozen=True)
class DemoOptions:
    out: Path | None = None
    keep: bool = False
    seed: int = 1
    rate: float = 15.0  # conversations a second
    drift_at: float = 20.0  # seconds after the users start
    ask_after: float = 10.0  # seconds after the drift when a user asks for the new style
    recover: float = 15.0  # seconds the run goes on (at least) once the runner serves the new style
    max_seconds: float = 150.0  # the users stop by then, whatever happened


def output_folder(out: Path | None) -> Path:
    if out is None:
        return Path(tempfile.mkdtemp(prefix="ratchet-demo-")).resolve()
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty", field="--out",
                        fix="choose a new folder (the demo writes the workspace, reward.png and summary.json there)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_demo(options: DemoOptions, console=None) -> dict[str, Any]:
    """Run the demo (see the module docstring); returns the summary also written to ``summary.json``."""
    from rich.console import Console

    from ratchet.demo.driver import Driver
    from ratchet.demo.report import (
        WINDOW,
        LiveReport,
        architect_job,
        new_style_at,
        plot,
        print_summary,
        summarize,
        write_summary,
    )
    from ratchet.demo.servers import Timescales, prepare_workspace, start_servers
    from ratchet.demo.simulation import Oracle, Preferences, Users

    console = console or Console()
    scales = Timescales()
    out = output_folder(options.out)
    root = out / WORKSPACE_NAME
    started = time.monotonic()
    console.print(f"[bold]ratchet demo[/]: the default workspace in {root}")
    with console.status("making the workspace, starting runner, tuner, architect, versions and triggerer ..."):
        prepare_workspace(root, scales)
        servers = start_servers(root, scales, keep=options.keep)
    try:
        prefs = Preferences(drift_at=options.drift_at, ask_at=options.drift_at + options.ask_after)
        users = Users.from_workspace(root, prefs, options.seed)
        with console.status("warming up: one conversation through the runner and the tuner ..."):
            _warm_up(servers.addresses, users)
        setup_seconds = time.monotonic() - started
        _print_servers(console, servers, setup_seconds)
        console.print(f"{options.rate:g} simulated users a second ask questions and reward the replies; their hidden "
                      f"preferences drift at {options.drift_at:g} s, and at {prefs.ask_at:g} s one asks for a "
                      "style that does not exist yet.")

        def done(driver: Driver, t: float) -> bool:
            first = new_style_at(driver)
            if first is not None:  # and the tuner has promoted what it learned of the new arm, however slow the machine
                learned = [v["seen_at"] for v in driver.seen.versions if v.get("kind") == "tuner" and v["seen_at"] > first]
                return (t >= first + options.recover and len(learned) >= MIN_PROMOTIONS_AFTER
                        and t >= learned[0] + WINDOW)
            job = architect_job(driver)
            return job is not None and job["state"] == "failed" and t >= driver.seen.job_states[-1][0] + 5

        live = LiveReport(console, prefs)
        driver = Driver(servers.addresses, users, Oracle(prefs), rate=options.rate, max_seconds=options.max_seconds,
                        done=done, on_turn=live.on_turn, on_note=live.on_note, on_tick=live.on_tick,
                        runner_pid=lambda: servers.refresh() or servers.pids.get("runner"))
        live.driver = driver
        with live:
            driver.run()
    finally:
        if not options.keep:
            with console.status("stopping the servers ..."):
                servers.stop()
    if options.keep:
        servers.refresh()
    summary = summarize(driver, prefs, scales, seed=options.seed, rate=options.rate, setup_seconds=setup_seconds,
                        workspace=root, out=out, servers=servers if options.keep else None, strategy=scales.strategy)
    plot(summary, driver.turns, out / "reward.png")
    summary["seconds"]["after_setup"] = round(time.monotonic() - started - setup_seconds, 2)
    write_summary(summary, driver.turns, out / "summary.json")
    print_summary(console, summary)
    console.print(f"\nplot: {out / 'reward.png'}\nsummary: {out / 'summary.json'}\nworkspace: {root} "
                  f"(try `ratchet versions -w {root}`)", highlight=False)
    if options.keep:
        console.print(f"\nThe servers keep running (supervisor pid {servers.pid}); stop them all with "
                      f"[bold]kill {servers.pid}[/]. Logs: {root / '.ratchet' / 'logs'}", highlight=False)
        _print_servers(console, servers, None)
    return summary


def _print_servers(console, servers, setup_seconds: float | None) -> None:
    from rich.table import Table

    title = "servers" + (f" (set up in {setup_seconds:.1f} s)" if setup_seconds is not None else "")
    table = Table("component", "pid", "address", title=title, title_justify="left")
    for name, pid in servers.pids.items():
        table.add_row(name, str(pid), servers.addresses.get(name, "-"))
    console.print(table)
    if servers.addresses.get("versions"):
        console.print(f"dashboard: {servers.addresses['versions'].rstrip('/')}/", highlight=False)


def _warm_up(urls: dict[str, str], users) -> None:
    """One conversation through the runner and the tuner, then wait until the tuner's worker has folded
    its reward: from here on the servers answer at their normal pace."""
    import anyio
    from mcp import Client

    from ratchet.demo.driver import call

    async def main() -> None:
        with anyio.fail_after(90):
            token = auth.load_token()
            async with Client(auth.mcp_target(urls["runner"], token)) as runner, \
                    Client(auth.mcp_target(urls["tuner"], token)) as tuner:
                cid = f"demo-{users.seed}-warm-up"
                answer = await call(runner, "answer", {"question": users.question(-1), "conversation_id": cid})
                await call(tuner, "reward", {"conversation_id": cid, "value": users.reward(-1, 0.0, answer["style"]),
                                             "event_id": cid})
                while (await call(tuner, "status", {}))["unapplied_events"] > 0:
                    await anyio.sleep(0.1)

    try:
        anyio.run(main)
    except TimeoutError:
        raise UserError("the runner and the tuner did not handle one conversation within 90 s", field="servers",
                        fix="see the logs in .ratchet/logs/ of the demo's workspace") from None
