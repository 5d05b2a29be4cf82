"""The ``ratchet`` command.

Make a workspace, inspect and move its state, list its versions and plugins::

    ratchet init my-desk                      # render the default workspace, tag v0.1.0
    cd my-desk
    ratchet state show                        # the active state (--json for machines)
    ratchet state set staging new.json        # validated, then compare-and-swap
    ratchet state promote                     # staging -> active, commit, tag a patch version
    ratchet rollback v0.1.0                   # a new patch version whose state equals v0.1.0's
    ratchet versions --json
    ratchet evaluate --state staging          # off-policy: would staging beat what was logged?
    ratchet plugins
    ratchet up                                # every server as its own process; Ctrl-C stops them all

Every command takes ``--workspace/-w DIR``, before or after its name (default: the current folder or the
nearest parent with a ``ratchet.toml``). Listings print a table, or JSON with ``--json``. Errors go to stderr in red and say
what failed, which thing, and the fix; the exit codes are listed in ``ratchet.core.errors``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ratchet import __version__
from ratchet.core import auth


class _Group(click.Group):
    """Turns Ratchet errors into a red message and the documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from ratchet.core.errors import RatchetError

        try:
            return super().invoke(ctx)
        except RatchetError as exc:
            field = f"\n  Field: {exc.field}" if exc.field else ""
            fix = f"\n  Fix: {exc.fix}" if exc.fix else ""
            click.secho(f"ratchet: {exc.message}{field}{fix}", fg="red", err=True)
            ctx.exit(exc.exit_code)


WORKSPACE_HELP = "Workspace folder (default: the current folder or the nearest parent with a ratchet.toml)."
workspace_option = click.option(
    "--workspace", "-w", "workspace_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=WORKSPACE_HELP)


def remember_workspace(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    """``ratchet -w DIR COMMAND``: the workspace every command uses unless it is given its own ``-w``."""
    if value is not None:
        ctx.meta["ratchet.workspace"] = value


def given_workspace(path: Path | None) -> Path | None:
    """The command's own ``-w``, else the one given before the command, else None."""
    if path is not None:
        return path
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get("ratchet.workspace") if ctx is not None else None
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def open_workspace(path: Path | None):
    from ratchet.core.workspace import Workspace

    return Workspace.open(given_workspace(path) or Path.cwd())


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_table(columns: list[str], rows: list[list[Any]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, title=title, show_lines=False)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="ratchet")
@click.option("--workspace", "-w", type=click.Path(file_okay=False, path_type=Path), default=None,
              expose_value=False, callback=remember_workspace, help=WORKSPACE_HELP + " Also after the command.")
def cli() -> None:
    """Serve an agent service from a git workspace and improve it from feedback.

    Small changes come from the tuner (patch versions); planned changes from the architect
    (minor/major versions). Every change is tested and tagged.
    """


# --- init --------------------------------------------------------------------------------------------


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--template", "-t", default="workspace", show_default=True,
              help="Workspace scaffold to render (`ratchet templates list --json`: those with \"workspace\": true).")
@click.option("--name", default=None, help="The workspace's name (default: DIRECTORY's name, when it is a valid "
              "one: lowercase letters, digits and dashes).")
@click.option("--data", "-d", multiple=True, metavar="KEY=VALUE", help="Answer a template question.")
def init(directory: Path, template: str, name: str | None, data: tuple[str, ...]) -> None:
    """Make a workspace in DIRECTORY from a scaffold and tag it v0.1.0."""
    from ratchet.core.create import create_workspace
    from ratchet.core.plugins import load_plugins

    version = create_workspace(directory, template=template, data=list(data), plugins=load_plugins(), name=name,
                               name_from_folder=True)
    click.echo(f"Made workspace {directory} from template {template!r}: {version.name} ({version.commit[:10]}).")
    click.echo(f"Next: cd {directory} && ratchet state show")


# --- state -------------------------------------------------------------------------------------------


@cli.group()
def state() -> None:
    """Show, set, promote and pin the state documents."""


@state.command("show")
@click.argument("document", type=click.Choice(["active", "staging"]), default="active")
@workspace_option
@json_option
def state_show(document: str, workspace_dir: Path | None, as_json: bool) -> None:
    """Show the active (default) or staging state with its revision."""
    ws = open_workspace(workspace_dir)
    doc = ws.state.read(document)
    info = {**doc.to_dict(), "pinned": ws.state.pinned()}
    if as_json:
        echo_json(info)
        return
    # The header goes to stderr, so `ratchet state show staging > s.json` writes just the document.
    click.echo(f"{document} state, revision {doc.revision}" + (f"; version {doc.version}" if doc.version else "")
               + (f"; pinned to {info['pinned']}" if info["pinned"] else ""), err=True)
    click.echo(json.dumps(doc.document, indent=2, sort_keys=True))


def unwrap_shown_state(data: Any, document: str) -> tuple[Any, int | None]:
    """The state document in ``data``, and the revision it was read at: ``data`` is either a document or
    the envelope `ratchet state show --json` prints (``{"name", "revision", "document", ...}``), whose
    revision counts only when it is the same document's."""
    if isinstance(data, dict) and "schema_version" not in data and isinstance(data.get("document"), dict):
        return data["document"], data.get("revision") if data.get("name") == document else None
    return data, None


@state.command("set")
@click.argument("document", type=click.Choice(["staging"]))
@click.argument("file", type=click.File("r"))
@click.option("--revision", type=int, default=None,
              help="Expected current revision (compare-and-swap); default: the revision read just before.")
@workspace_option
def state_set(document: str, file, revision: int | None, workspace_dir: Path | None) -> None:
    """Replace the staging state with FILE (validated against state/schema.json). Use - for stdin.

    FILE is a state document, or what `ratchet state show staging --json` printed (the document is taken
    from it, and its revision is the one expected unless --revision says otherwise)."""
    from ratchet.core.errors import StateValidationError

    ws = open_workspace(workspace_dir)
    try:
        new = json.load(file)
    except json.JSONDecodeError as exc:
        raise StateValidationError(f"{file.name} is not valid JSON: {exc}", field=file.name,
                                   fix="fix the JSON syntax at the line given") from None
    new, shown_revision = unwrap_shown_state(new, document)
    ws.state.validate(new, file.name)  # before anything is read or written
    revision = shown_revision if revision is None else revision
    expected = revision if revision is not None else ws.state.read(document).revision
    written = ws.state.write(document, new, expected)
    click.echo(f"{document} state is now revision {written.revision}.")


@state.command("promote")
@click.option("--reason", default="promoted from the command line", show_default=True)
@workspace_option
def state_promote(reason: str, workspace_dir: Path | None) -> None:
    """Make staging active: commit state/active.state.json and tag a patch version."""
    ws = open_workspace(workspace_dir)
    version = ws.state.promote(reason=reason, author="cli", kind="manual")
    click.echo(f"Promoted staging to active: {version.name} ({version.commit[:10]}).")


@state.command("pin")
@click.argument("version")
@workspace_option
def state_pin(version: str, workspace_dir: Path | None) -> None:
    """Serve VERSION's state until `ratchet state unpin`, whatever active becomes."""
    ws = open_workspace(workspace_dir)
    click.echo(f"Pinned to {ws.state.pin(version)}.")


@state.command("unpin")
@workspace_option
def state_unpin(workspace_dir: Path | None) -> None:
    """Serve the active state again."""
    open_workspace(workspace_dir).state.unpin()
    click.echo("Unpinned: the active state is served.")


# --- rollback and versions ---------------------------------------------------------------------------


@cli.command()
@click.argument("version")
@click.option("--reason", default=None, help="Why (stored in the new version's metadata).")
@workspace_option
def rollback(version: str, reason: str | None, workspace_dir: Path | None) -> None:
    """Make a new patch version whose active state equals VERSION's (history is kept)."""
    ws = open_workspace(workspace_dir)
    made = ws.state.rollback(version, reason=reason, author="cli")
    click.echo(f"Rolled back to {made.metadata['rolled_back_to']}: new version {made.name} ({made.commit[:10]}).")


@cli.group(invoke_without_command=True)
@workspace_option
@json_option
@click.pass_context
def versions(ctx: click.Context, workspace_dir: Path | None, as_json: bool) -> None:
    """List every version (semver order) with its metadata and whether its tag's signature verifies
    (verified, unverified or unsigned); `versions show V` for one."""
    if ctx.invoked_subcommand:
        return
    ws = open_workspace(workspace_dir)
    listed = [{**v.to_dict(), "signature": ws.versions.signature(v)} for v in ws.versions.list()]
    if as_json:
        echo_json(listed)
        return
    print_table(["version", "kind", "bump", "author", "created", "signature", "reason"],
                [[v["version"], v["metadata"].get("kind"), v["metadata"].get("bump"), v["metadata"].get("author"),
                  v["created"], v["signature"], v["metadata"].get("reason")] for v in listed],
                title=f"versions of {ws.name}")


@versions.command("show")
@click.argument("version")
@workspace_option
def versions_show(version: str, workspace_dir: Path | None) -> None:
    """Show one version's metadata, its signature status and its active state (read through that
    version's own ratchet.toml)."""
    ws = open_workspace(workspace_dir)
    v = ws.versions.get(version)
    echo_json({**v.to_dict(), "signature": ws.versions.signature(v), "state": ws.as_tagged(v.name).active_state()})


@versions.command("diff")
@click.argument("a")
@click.argument("b")
@workspace_option
@json_option
def versions_diff(a: str, b: str, workspace_dir: Path | None, as_json: bool) -> None:
    """What changed from version A to B: state changes (JSON-pointer paths) and runner/tuner tool-schema
    changes, as the Versions API's /versions/A/diff/B says."""
    from ratchet.ops.story import summarize
    from ratchet.versions.catalog import Catalog

    diff = Catalog(open_workspace(workspace_dir)).diff(a, b)
    if as_json:
        echo_json(diff)
        return
    print_table(["path", "op", "old", "new"],
                [[c["path"], c["op"], summarize(c.get("old")), summarize(c.get("new"))] for c in diff["state"]],
                title=f"state: {diff['from']} -> {diff['to']} ({len(diff['state'])} changes)")
    if diff["tools"] is None:
        click.echo(f"tool schemas: not compared ({diff['tools_error']})")
        return
    rows = [[server, ", ".join(s["added"]), ", ".join(s["removed"]), ", ".join(s["changed"]),
             "yes" if s["breaking"] else "no"] for server, s in diff["tools"]["servers"].items()]
    print_table(["server", "tools added", "tools removed", "tools changed", "breaking"], rows,
                title=f"tool schemas: {diff['from']} -> {diff['to']}")


# --- plugins and templates ---------------------------------------------------------------------------


@cli.command()
@click.option("--hook", default=None, help="Only plugins that implement this hook.")
@click.option("--hooks", "list_hooks", is_flag=True, help="List the hook names instead.")
@workspace_option
@json_option
def plugins(hook: str | None, list_hooks: bool, workspace_dir: Path | None, as_json: bool) -> None:
    """List installed plugins (and the workspace's own modules, inside a workspace)."""
    from ratchet.core.errors import NotFoundError
    from ratchet.core.plugins import load_plugins

    try:
        ws = open_workspace(workspace_dir)
        pm = ws.plugins
    except NotFoundError:
        if given_workspace(workspace_dir) is not None:
            raise
        pm = load_plugins()
    if list_hooks:
        echo_json(pm.hook_names()) if as_json else click.echo("\n".join(pm.hook_names()))
        return
    infos = [i for i in pm.infos() if hook is None or hook in i.hooks]
    if as_json:
        echo_json([i.__dict__ for i in infos])
        return
    print_table(["plugin", "distribution", "source", "hooks"],
                [[i.name, i.dist or "", i.source, ", ".join(i.hooks)] for i in infos])


@cli.group()
def templates() -> None:
    """The copier template library: list, show and render templates."""


def _library():
    from ratchet.core import templates as tl
    from ratchet.core.plugins import load_plugins

    return tl, tl.discover(load_plugins())


@templates.command("list")
@json_option
def templates_list(as_json: bool) -> None:
    """Every template with its family and summary."""
    _, library = _library()
    if as_json:
        echo_json([t.to_dict() for t in library.values()])
        return
    print_table(["name", "family", "summary"], [[t.name, t.family, t.summary] for t in library.values()])


@templates.command("show")
@click.argument("name")
def templates_show(name: str) -> None:
    """A template's README and questions."""
    tl, library = _library()
    t = tl.get(library, name)
    click.echo(t.readme)
    print_table(["question", "type", "default", "help"],
                [[q.name, q.type, q.default, q.help] for q in t.questions], title="questions")


@templates.command("render")
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--data", "-d", multiple=True, metavar="KEY=VALUE", help="Answer a template question.")
@click.option("--wire/--no-wire", default=True, show_default=True,
              help="Into a workspace: add the rendered plugins/*.py modules to [workspace] plugins.")
def templates_render(name: str, dest: Path, data: tuple[str, ...], wire: bool) -> None:
    """Render template NAME into DEST: a new folder, or an existing one (e.g. a workspace), which
    gains the files; an existing file is never overwritten. Into a workspace, the rendered plugin
    modules are added to ratchet.toml's [workspace] plugins (unless --no-wire)."""
    tl, library = _library()
    t = tl.get(library, name)
    files = tl.render(t, dest, tl.parse_data(t, list(data)))
    click.echo(f"Rendered {name} into {dest}: {', '.join(files)}")
    wired = tl.wire_plugins(dest, files) if wire else []
    if wired:
        click.echo(f"Added {', '.join(wired)} to [workspace] plugins in ratchet.toml.")


# --- tests -----------------------------------------------------------------------------------------


@cli.command("test")
@click.option("--tier", "tiers", multiple=True, type=click.Choice(["micro", "fast", "full"]), default=["micro"],
              show_default=True, help="Tier to run (repeat for several, run in order).")
@click.option("--shards", type=int, default=4, show_default=True, help="Cases run concurrently.")
@click.option("--url", default=None, help="Test a running runner (started with --allow-test-overrides) instead "
              "of an in-process one, e.g. http://127.0.0.1:8701/mcp.")
@click.option("--state", "document", type=click.Choice(["active", "staging"]), default="active", show_default=True,
              help="State the in-process runner serves.")
@click.option("--summary/--no-summary", default=True, show_default=True,
              help="Write evals/{commit}/summary.json (only when testing active).")
@click.option("--fail-fast", is_flag=True, help="Stop after the first tier that fails or misses its budget.")
@workspace_option
@json_option
def test_tiers(tiers: tuple[str, ...], shards: int, url: str | None, document: str, summary: bool, fail_fast: bool,
               workspace_dir: Path | None, as_json: bool) -> None:
    """Run test tiers against the runner and check ci/budgets.json; write evals/{commit}/summary.json."""
    from ratchet.tiers.harness import ensure_ok, run_tiers, write_summary

    ws = open_workspace(workspace_dir)
    if url:
        target = url
    else:
        from ratchet.runner.server import build_server
        from ratchet.runner.service import Runner

        target = build_server(Runner(ws, source=document, explore=False, record=False, allow_overrides=True))
    results = run_tiers(ws, list(tiers), target, shards=shards, fail_fast=fail_fast)
    written = write_summary(ws, results) if summary and document == "active" else None
    if as_json:
        echo_json({"tiers": [r.to_dict() for r in results], "summary": written})
    else:
        print_table(["tier", "passed", "failed", "pass rate", "p50 ms", "p95 ms", "seconds", "budget"],
                    [[r.tier, r.passed, r.failed, r.pass_rate, r.latency_ms["p50"], r.latency_ms["p95"], r.seconds,
                      "ok" if r.budget_ok else "; ".join(r.violations)] for r in results])
    ensure_ok(results)


# --- off-policy evaluation -------------------------------------------------------------------------


def _parse_params(params: tuple[str, ...]) -> dict[str, Any]:
    from ratchet.core.errors import UserError

    out: dict[str, Any] = {}
    for item in params:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--param: {item!r} is not KEY=VALUE", field="param", fix="write e.g. --param gamma=0.99")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw  # plain text
    return out


@cli.command()
@click.option("--state", "state_name", default=None, metavar="active|staging|FILE",
              help="Candidate: a state served by the configured strategies (default: staging).")
@click.option("--strategy", default=None, help="Candidate: this strategy for --key, from what active learned.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Candidate option (a JSON value or text); without --strategy, the configured strategy's.")
@click.option("--key", default=None, help="Strategy key (state section) to evaluate (default: every bandit key).")
@click.option("--last", type=int, default=None, help="Use the last N logged calls with a reward.")
@click.option("--since", default=None, metavar="VERSION", help="Use calls served by VERSION or a later version.")
@click.option("--min-samples", type=int, default=2, show_default=True, help="Refuse with fewer logged calls.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the Monte Carlo probabilities.")
@workspace_option
@json_option
def evaluate(state_name: str | None, strategy: str | None, params: tuple[str, ...], key: str | None,
             last: int | None, since: str | None, min_samples: int, seed: int, workspace_dir: Path | None,
             as_json: bool) -> None:
    """Estimate off-policy how a candidate would do on the logged calls: IPS, self-normalised IPS and
    doubly robust estimates of its mean reward with 95% intervals, beside what was observed."""
    from ratchet.core import evaluation as ev
    from ratchet.core.errors import UserError

    if state_name and (strategy or params):
        raise UserError("--state cannot be combined with --strategy/--param", field="state",
                        fix="evaluate a state, or a strategy with parameters, not both")
    ws = open_workspace(workspace_dir)
    if strategy or params:
        if strategy is None:
            entries = {e.key: e.strategy for e in ws.config.tuner.strategies}
            strategy = entries.get(key) if key else (next(iter(entries.values())) if len(entries) == 1 else None)
            if strategy is None:
                raise UserError("--param: which strategy's parameters?", field="key", fix="pass --key or --strategy")
        candidate = ev.strategy_candidate(ws, strategy, _parse_params(params), key)
    else:
        candidate = ev.state_candidate(ws, state_name or "staging")
    keys = [key] if key else ev.evaluable_keys(ws)
    results = {}
    for k in keys:
        calls = ev.logged_calls(ws, k, last=last, since=since)
        results[k] = ev.evaluate_candidate(ws, candidate, k, calls, seed=seed, min_samples=min_samples)
    if as_json:
        echo_json({"candidate": candidate.label, "window": {"last": last, "since": since},
                   "strategies": {k: r.to_dict() for k, r in results.items()}})
        return
    for k, r in results.items():
        rows = [[e.estimator, f"{e.value:.4f}", f"[{e.low:.4f}, {e.high:.4f}]", f"{e.ess:.0f}", e.n]
                for e in r.estimates.values()]
        o = r.observed
        rows.append(["observed (logged policy)", f"{o.value:.4f}", f"[{o.low:.4f}, {o.high:.4f}]", "", o.n])
        print_table(["estimator", "mean reward", "95% CI (normal)", "ESS", "calls"], rows,
                    title=f"{candidate.label} on {k}: {r.n} logged calls"
                          + (f", {r.skipped} without a propensity" if r.skipped else ""))
        for w in r.warnings:
            click.secho(f"warning: {w}", fg="yellow", err=True)


# --- serving ---------------------------------------------------------------------------------------


@cli.group()
def serve() -> None:
    """Serve a workspace: the runner and tuner over MCP, the read-only versions registry over REST, and
    the triggerer that watches the online SLOs."""


transport_option = click.option("--transport", type=click.Choice(["http", "stdio"]), default="http",
                                show_default=True, help="Streamable HTTP at /mcp, or stdio.")
host_option = click.option("--host", default=None, help="Address to bind (default from ratchet.toml: 127.0.0.1).")
port_option = click.option("--port", type=int, default=None, help="Port (default from ratchet.toml; 0 picks one).")


@serve.command("runner")
@transport_option
@host_option
@port_option
@click.option("--pin", default=None, help="Serve this version's state instead of active.")
@click.option("--allow-test-overrides", is_flag=True, help="Honour test cases' state overrides (for `ratchet test --url`).")
@click.option("--require-signed", is_flag=True, help="Serve only versions whose tag verifies against [versions] "
              "allowed_signers: refuse to start otherwise, and keep the served version when a reload brings "
              "one that does not.")
@workspace_option
def serve_runner(transport: str, host: str | None, port: int | None, pin: str | None,
                 allow_test_overrides: bool, require_signed: bool, workspace_dir: Path | None) -> None:
    """Serve the runner tools with the active state (hot-reloaded on promotion or rollback)."""
    from ratchet.core import telemetry
    from ratchet.runner.server import build_server
    from ratchet.runner.service import Runner
    from ratchet.serving import serve_mcp

    ws = open_workspace(workspace_dir)
    cfg = ws.config.runner
    token = auth.load_token(ws)
    if transport != "stdio":
        auth.check_bind(host or cfg.host, token, component="runner")
    source = ws.versions.get(pin).name if pin else "active"
    runner = Runner(ws, source=source, allow_overrides=allow_test_overrides, require_signed=require_signed)
    with telemetry.serving("runner", ws):
        serve_mcp(build_server(runner, token=token), transport=transport, host=host or cfg.host,
                  port=cfg.port if port is None else port, label="runner", root=ws.root)


@serve.command("tuner")
@transport_option
@host_option
@port_option
@click.option("--worker", type=click.Choice(["process", "thread", "none"]), default="process", show_default=True,
              help="Where feedback is folded into staging and promotions run: a worker process beside the "
              "server, a thread in it, or nowhere (another tuner does it).")
@workspace_option
def serve_tuner(transport: str, host: str | None, port: int | None, worker: str, workspace_dir: Path | None) -> None:
    """Serve the feedback tools, promote() and status()."""
    from ratchet.core import telemetry
    from ratchet.serving import serve_mcp
    from ratchet.tuner.server import build_server
    from ratchet.tuner.service import Tuner

    ws = open_workspace(workspace_dir)
    cfg = ws.config.tuner
    token = auth.load_token(ws)
    if transport != "stdio":
        auth.check_bind(host or cfg.host, token, component="tuner")
    with telemetry.serving("tuner", ws):
        serve_mcp(build_server(Tuner(ws), worker=worker, token=token), transport=transport,
                  host=host or cfg.host, port=cfg.port if port is None else port, label="tuner", root=ws.root)


def log_to_console(logger: str) -> None:
    """Print ``logger``'s records from INFO up on stderr, one line each (a server's console)."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log = logging.getLogger(logger)
    log.setLevel(logging.INFO)
    log.addHandler(handler)


@serve.command("architect")
@host_option
@port_option
@click.option("--planner", default=None, help="Planner to use (default: [architect] planner, else llm if a "
              "model is configured, else playbook).")
@workspace_option
def serve_architect(host: str | None, port: int | None, planner: str | None, workspace_dir: Path | None) -> None:
    """Serve the Architect API (REST; OpenAPI at /docs): feedback and wake-ups become tested, tagged versions."""
    from ratchet.architect.app import create_app
    from ratchet.architect.service import Architect
    from ratchet.core import telemetry
    from ratchet.rest import serve_app

    ws = open_workspace(workspace_dir)
    cfg = ws.config.architect
    token = auth.load_token(ws)
    auth.check_bind(host or cfg.host, token, component="architect")  # before anything starts
    arch = Architect(ws, planner=planner)
    arch.check()  # a model that cannot be made, or has no key, fails now rather than in every job
    log_to_console("ratchet.architect")  # each job's steps and its planner's calls, as they happen
    with telemetry.serving("architect", ws):
        serve_app(create_app(ws, architect=arch, token=token), host=host or cfg.host,
                  port=cfg.port if port is None else port, label="architect", root=ws.root)


@serve.command("versions")
@host_option
@port_option
@click.option("--architect-url", default=None, metavar="URL",
              help="Where the dashboard sends approve and abandon, e.g. http://127.0.0.1:8703 (default from "
              "ratchet.toml's [architect]; `ratchet up` passes the address it chose).")
@workspace_option
def serve_versions(host: str | None, port: int | None, architect_url: str | None, workspace_dir: Path | None) -> None:
    """Serve the read-only Versions API (REST; OpenAPI at /docs) and the dashboard at /."""
    from ratchet.versions.app import serve as serve_app

    ws = open_workspace(workspace_dir)
    cfg = ws.config.versions
    serve_app(ws, host=host or cfg.host, port=cfg.port if port is None else port, architect_url=architect_url)


@serve.command("triggerer")
@click.option("--interval", type=click.FloatRange(min=0.01), default=5.0, show_default=True,
              help="Seconds between KPI checks.")
@click.option("--architect-url", default=None, metavar="URL",
              help="Where the Architect listens, e.g. http://127.0.0.1:8703 (default from ratchet.toml's "
              "[architect]; `ratchet up` passes the address it chose).")
@click.option("--min-samples", type=click.IntRange(min=1), default=20, show_default=True,
              help="Samples a KPI's window needs before it is judged.")
@click.option("--breach-checks", type=click.IntRange(min=1), default=2, show_default=True,
              help="Consecutive breaching checks before a wake-up.")
@click.option("--cooldown", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds after a wake-up during which no other is sent.")
@workspace_option
def serve_triggerer(interval: float, architect_url: str | None, min_samples: int, breach_checks: int,
                    cooldown: float, workspace_dir: Path | None) -> None:
    """Compare online KPIs with the SLO in ci/budgets.json; on a breach wake the Architect."""
    import signal
    import threading

    from ratchet.ops.triggerer import Triggerer, architect_wake

    ws = open_workspace(workspace_dir)
    post = architect_wake(ws, url=architect_url)

    def wake(report: dict) -> None:
        names = ", ".join(f"{b['kpi']}={b['value']:.4g} (slo {b['slo']:g})" for b in report["breaches"])
        print(f"ratchet triggerer: waking the architect: {names}", file=sys.stderr, flush=True)
        post(report)

    triggerer = Triggerer(ws, wake=wake, min_samples=min_samples, breach_checks=breach_checks,
                          cooldown_seconds=cooldown)
    triggerer.slo()  # a missing or invalid ci/budgets.json fails now, with its fix
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"ratchet triggerer watching {ws.root} every {interval:g} s", file=sys.stderr, flush=True)
    from ratchet.core import telemetry

    try:
        with telemetry.serving("triggerer", ws):
            signal.signal(signal.SIGTERM, lambda *_: stop.set())  # stop between checks, then flush
            triggerer.run(interval, stop)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


@cli.group("up", invoke_without_command=True)
@click.option("--only", default=None, metavar="NAMES",
              help="Comma-separated components to run (default: runner,tuner,architect,versions,triggerer).")
@click.option("--json-status", "status_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keep this file up to date with every component's PID, address, state and restarts (JSON).")
@workspace_option
@click.pass_context
def up(ctx: click.Context, only: str | None, status_file: Path | None, workspace_dir: Path | None) -> None:
    """Run every component as its own process on 127.0.0.1, print their addresses, restart one that dies
    (and the runner, tuner and versions when an architect version changes code), stop them all on Ctrl-C.

    Each component's output goes to .ratchet/logs/NAME.log (and here, prefixed with its name). From
    another terminal: `ratchet up status`, `ratchet up logs [NAME]`, `ratchet up down`.
    """
    from ratchet.ops import upctl
    from ratchet.ops.supervisor import Supervisor, default_components

    if ctx.invoked_subcommand is not None:
        if workspace_dir is not None:
            ctx.meta["ratchet.workspace"] = workspace_dir  # `ratchet up -w DIR status`
        return
    ws = open_workspace(workspace_dir)
    components = default_components(only.split(",") if only is not None else None)
    upctl.refuse_second(ws.root)
    cfg = ws.config
    ports = {"runner": cfg.runner.port, "tuner": cfg.tuner.port, "architect": cfg.architect.port,
             "versions": cfg.versions.port}

    def on_up(status: dict) -> None:
        print_table(["component", "pid", "address", "log"],
                    [[c["name"], c["pid"], c["address"] or "-", Path(c["log"]).relative_to(status["root"])]
                     for c in status["components"]], title=f"ratchet up: {ws.name}")
        click.echo("Ctrl-C stops them all (or `ratchet up down` from another terminal).")

    Supervisor(ws.root, components, ports=ports, echo=sys.stderr, on_up=on_up, status_file=status_file,
               remote=ws.config.workspace.remote, record=upctl.record_path(ws.root),
               say=lambda msg: click.secho(f"ratchet up: {msg}", fg="yellow", err=True)).run()


@up.command("status")
@workspace_option
@json_option
def up_status(workspace_dir: Path | None, as_json: bool) -> None:
    """The running `ratchet up`: every component's PID, address, state and restarts (exit 6 when none runs)."""
    from ratchet.ops import upctl

    ws = open_workspace(workspace_dir)
    status = upctl.status(ws.root)
    if as_json:
        echo_json(status)
        return
    print_table(["component", "pid", "address", "state", "restarts", "log"],
                [[c["name"], c["pid"], c["address"] or "-", c["state"], c["restarts"],
                  Path(c["log"]).relative_to(status["root"])] for c in status["components"]],
                title=f"ratchet up (pid {status['pid']}): {ws.name}" + ("" if status["up"] else ", starting"))


@up.command("logs")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--lines", "-n", type=click.IntRange(min=0), default=50, show_default=True,
              help="Lines to print from the end of each log.")
@click.option("--follow", "-f", is_flag=True, help="Then print new lines as they come, until Ctrl-C.")
@workspace_option
def up_logs(names: tuple[str, ...], lines: int, follow: bool, workspace_dir: Path | None) -> None:
    """The components' logs (.ratchet/logs/NAME.log; all of them without NAME), each line prefixed with its
    component; they stay readable after `ratchet up` stops."""
    from ratchet.ops import upctl

    ws = open_workspace(workspace_dir)
    try:
        upctl.show_logs(ws.root, names, lines=lines, follow=follow, out=sys.stdout)
    except KeyboardInterrupt:
        pass


@up.command("down")
@click.option("--timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for every component to stop.")
@workspace_option
def up_down(timeout: float, workspace_dir: Path | None) -> None:
    """Stop the running `ratchet up` and every component it runs (as Ctrl-C does)."""
    from ratchet.ops import upctl

    ws = open_workspace(workspace_dir)
    stopped = upctl.down(ws.root, timeout=timeout)
    if stopped is None:
        click.echo(f"ratchet up is not running for {ws.root}: nothing to stop.")
        return
    click.echo(f"Stopped ratchet up (pid {stopped['pid']}) and its "
               f"{', '.join(c['name'] for c in stopped['components'])}.")


# --- token -------------------------------------------------------------------------------------------


@cli.command("token")
@click.option("--file", "path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the token to this file (readable by you only) instead of printing it.")
def token_command(path: Path | None) -> None:
    """Make a bearer token for the workspace's servers and clients.

    Give it to every process through RATCHET_API_TOKEN, or write it to a file and name the file in
    ratchet.toml ([auth] token_file). With a token every server requires it; without one they are open
    and may bind only a loopback address.
    """
    token = auth.make_token()
    if path is None:
        click.echo(token)
        click.echo(f"Use it: export {auth.TOKEN_ENV}=<the token above>, or `ratchet token --file PATH` and "
                   "[auth] token_file = \"PATH\" in ratchet.toml.", err=True)
        return
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)  # also when the file was there before
    click.echo(f"wrote a token to {path} (id {auth.token_id(token)}); add to ratchet.toml:\n"
               f"[auth]\ntoken_file = \"{path}\"")


# --- doctor ------------------------------------------------------------------------------------------


@cli.command("doctor")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds each network check (a server, the model's endpoint) may take.")
@workspace_option
@json_option
def doctor(timeout: float, workspace_dir: Path | None, as_json: bool) -> None:
    """Check the workspace, the store, the token, the servers' ports and the model's configuration,
    changing nothing and spending no model tokens. One line per check: ok, warn or fail with the fix.

    Exits 0 when no check failed, 1 otherwise.
    """
    from ratchet.doctor import diagnose

    checks = diagnose(workspace_dir, timeout=timeout)
    if as_json:
        echo_json({"ok": not any(c.status == "fail" for c in checks), "checks": [c.to_dict() for c in checks]})
    else:
        colours = {"ok": "green", "warn": "yellow", "fail": "red"}
        for c in checks:
            fix = f"  Fix: {c.fix}" if c.fix and c.status != "ok" else ""
            click.echo(click.style(f"{c.status:<4}", fg=colours[c.status]) + f" {c.area}/{c.name}: {c.detail}{fix}")
    if any(c.status == "fail" for c in checks):
        sys.exit(1)


# --- feedback ----------------------------------------------------------------------------------------


def architect_client(url: str | None, workspace_dir: Path | None):
    """A client of the Architect at ``url``, or where this workspace's running Architect recorded its
    address (``.ratchet/run/architect.json``), or at the port ``ratchet.toml`` gives it."""
    from ratchet.architect.client import ArchitectClient
    from ratchet.core.errors import ConfigError, RatchetError
    from ratchet.ops import addresses

    try:  # the workspace names the Architect's address and the token
        ws = open_workspace(workspace_dir)
    except RatchetError:
        if url is None:
            raise
        ws = None  # --url from outside a workspace: the token comes from RATCHET_API_TOKEN
    if url is None:
        cfg = ws.config.architect
        url = addresses.url(ws.root, "architect") or (f"http://{cfg.host}:{cfg.port}" if cfg.port else None)
        if url is None:
            raise ConfigError("no architect is running for this workspace, and ratchet.toml has no architect port",
                              field="architect.port", fix="start it (`ratchet up` or `ratchet serve architect`), "
                              "or pass --url http://127.0.0.1:PORT")
    return ArchitectClient(url, token=auth.load_token(ws))


architect_url_option = click.option("--url", default=None,
                                    help="The Architect's address (default: from [architect] in ratchet.toml).")


@cli.command("feedback")
@click.argument("text")
@architect_url_option
@click.option("--version", "about_version", default=None, help="The version the feedback is about.")
@click.option("--conversation", "conversation_id", default=None, help="The conversation it is about.")
@click.option("--no-follow", is_flag=True, help="Print the job id and return instead of following the job.")
@click.option("--timeout", type=float, default=900, show_default=True, help="Seconds to follow the job.")
@workspace_option
@json_option
def feedback(text: str, url: str | None, about_version: str | None, conversation_id: str | None, no_follow: bool,
             timeout: float, workspace_dir: Path | None, as_json: bool) -> None:
    """Send free-text feedback to the Architect and follow its job to the version it makes (or why not).

    Exits 0 when the job made a version, 8 when its tests failed, 3 for any other failure.
    """
    client = architect_client(url, workspace_dir)
    job = client.post_feedback(text, version=about_version, conversation_id=conversation_id)
    if no_follow:
        echo_json(job) if as_json else click.echo(job["id"])
        return
    if not as_json:
        click.echo(f"job {job['id']} {job['state']}")
    job = client.follow(job["id"], timeout=timeout,
                        on_step=None if as_json else lambda e: click.echo(f"  {e['step']:<9} {e['message']}"))
    if as_json:
        echo_json(job)
    client.raise_for_outcome(job)
    if not as_json:
        click.secho(f"{job['version']} ({job['bump']}): {job['plan']['summary'] if job.get('plan') else ''}",
                    fg="green")


@cli.group("jobs", invoke_without_command=True)
@click.option("--state", default=None, help="Only jobs in this state (queued, ..., needs_approval, failed).")
@architect_url_option
@workspace_option
@json_option
@click.pass_context
def jobs(ctx: click.Context, state: str | None, url: str | None, workspace_dir: Path | None, as_json: bool) -> None:
    """The Architect's jobs, newest first; `ratchet jobs show|approve|abandon ID`. Read from the
    workspace's store (no running Architect needed), or from the Architect at --url."""
    from ratchet.architect.jobs_view import list_jobs

    if ctx.invoked_subcommand is not None:
        return
    page = (architect_client(url, workspace_dir).jobs(state=state) if url
            else list_jobs(open_workspace(workspace_dir), state=state))
    if as_json:
        echo_json(page)
        return
    print_table(["job", "state", "source", "about", "version", "plan or error"],
                [[j["id"], j["state"], j["source"], j["about"], j["version"],
                  (j["error"] or {}).get("detail", "").splitlines()[0] if j["error"] else j["summary"]]
                 for j in page["items"]],
                title=f"jobs ({page['total']})")


@jobs.command("show")
@click.argument("job_id")
@click.option("--transcript", is_flag=True, help="Print the planner's model and tool calls as a table instead.")
@architect_url_option
@workspace_option
def jobs_show(job_id: str, transcript: bool, url: str | None, workspace_dir: Path | None) -> None:
    """One job as JSON (times in ISO-8601, UTC): plan, step log, tier results, bump, version or error,
    and the transcript of an LLM planner's model and tool calls. Read from the store, or from --url."""
    from ratchet.architect.jobs_view import get_job, with_iso_times
    from ratchet.ops.story import summarize, when

    job = architect_client(url, workspace_dir).job(job_id) if url else get_job(open_workspace(workspace_dir), job_id)
    if not transcript:
        echo_json(with_iso_times(job))
        return
    print_table(["time", "call", "name", "ok", "tokens", "arguments", "result or reply"],
                [[when(e["at"]), e["kind"], e["name"], "yes" if e["ok"] else "no",
                  (e["tokens"] or {}).get("total"), summarize(e["args"]) if e["args"] is not None else
                  ", ".join(e["calls"]), summarize(e["text"])] for e in job["transcript"]],
                title=f"transcript of job {job_id} ({job['model'] or job['planner'] or 'no model'})")


def _job_action(what: str, summary: str) -> None:
    @jobs.command(what, help=summary)
    @click.argument("job_id")
    @architect_url_option
    @workspace_option
    def command(job_id: str, url: str | None, workspace_dir: Path | None) -> None:
        job = architect_client(url, workspace_dir).action(job_id, what)
        click.echo(f"job {job['id']} {job['state']}")


_job_action("approve", "Approve a job waiting in needs_approval; it then merges and tags.")
_job_action("abandon", "Abandon an open agent job or one waiting for approval: nothing is merged.")


# --- trace -------------------------------------------------------------------------------------------


def _tool_command(component: str, tool: str, pairs: tuple[str, ...], url: str | None, workspace_dir: Path | None,
                  as_json: bool) -> None:
    from ratchet.client import call_once

    result = call_once(component, tool, pairs, url=url, workspace=workspace_dir)
    if as_json:
        echo_json(result)
        return
    for key, value in result.items():
        click.echo(f"{key}: {value if isinstance(value, str) else json.dumps(value, default=str)}")


@cli.command("call")
@click.argument("tool")
@click.argument("arguments", nargs=-1, metavar="KEY=VALUE...")
@click.option("--url", default=None, help="The runner's MCP endpoint (default: from [runner] in ratchet.toml).")
@workspace_option
@json_option
def call_command(tool: str, arguments: tuple[str, ...], url: str | None, workspace_dir: Path | None,
                 as_json: bool) -> None:
    """Call runner tool TOOL, e.g. `ratchet call answer question="Where is my order?" conversation_id=c1`.
    A value that parses as JSON is sent as that JSON, anything else as a string."""
    _tool_command("runner", tool, arguments, url, workspace_dir, as_json)


@cli.command("send")
@click.argument("tool")
@click.argument("arguments", nargs=-1, metavar="KEY=VALUE...")
@click.option("--url", default=None, help="The tuner's MCP endpoint (default: from [tuner] in ratchet.toml).")
@workspace_option
@json_option
def send_command(tool: str, arguments: tuple[str, ...], url: str | None, workspace_dir: Path | None,
                 as_json: bool) -> None:
    """Send feedback through tuner tool TOOL, e.g. `ratchet send reward conversation_id=c1 value=1`
    (also the tuner's own tools: `ratchet send status`, `ratchet send promote`)."""
    _tool_command("tuner", tool, arguments, url, workspace_dir, as_json)


@cli.command("trace")
@click.argument("conversation_id")
@workspace_option
@json_option
def trace_conversation(conversation_id: str, workspace_dir: Path | None, as_json: bool) -> None:
    """The story of a conversation: its calls, decisions, feedback, the version the feedback fed into
    (or "pending"), and its spans from the object store's telemetry."""
    from ratchet.ops.story import conversation_story, summarize, when

    ws = open_workspace(workspace_dir)
    story = conversation_story(ws, conversation_id)
    if as_json:
        echo_json(story)
        return
    cid = conversation_id
    print_table(["time", "tool", "arguments", "version", "latency ms", "trace_id"],
                [[when(c["ts"]), c["tool"] + (" (error)" if c["error"] else ""), summarize(c["arguments"]),
                  c["version"], None if c["latency_ms"] is None else f"{c['latency_ms']:.2f}", c["trace_id"]]
                 for c in story["calls"]], title=f"calls of {cid}")
    print_table(["time", "strategy", "choice", "propensity", "version"],
                [[when(d["ts"]), d["strategy"], summarize(d["choice"]),
                  None if d["propensity"] is None else f"{d['propensity']:.4g}", d["version"]]
                 for d in story["decisions"]], title=f"decisions of {cid}")
    print_table(["time", "tool", "payload", "event id", "in version"],
                [[when(f["ts"]), f["tool"], summarize(f["payload"]), f["event_id"], f["version"]]
                 for f in story["feedback"]], title=f"feedback on {cid}")
    if story["spans"]:
        print_table(["start", "component", "span", "duration ms", "trace_id"],
                    [[s["start"], s["component"], s["name"], s["duration_ms"], s["trace_id"]] for s in story["spans"]],
                    title=f"spans of {cid}")


# --- demo --------------------------------------------------------------------------------------------


@cli.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="New or empty folder for the workspace, reward.png and summary.json (default: a temporary one).")
@click.option("--keep", is_flag=True, help="Leave the servers running afterwards (it says how to stop them).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the simulated users.")
@click.option("--rate", type=click.FloatRange(min=1, max=100), default=15.0, show_default=True,
              help="Conversations a second.")
@click.option("--drift-at", type=click.FloatRange(min=5), default=20.0, show_default=True,
              help="Seconds after the users start when their preferences drift.")
@click.option("--ask-after", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Seconds after the drift when a user asks the architect for a new reply style.")
@click.option("--recover", type=click.FloatRange(min=5), default=15.0, show_default=True,
              help="Seconds the users go on (at least) once the runner replies in the new style.")
@click.option("--max-seconds", type=click.FloatRange(min=10), default=150.0, show_default=True,
              help="The users stop by then, whatever happened.")
def demo(out: Path | None, keep: bool, seed: int, rate: float, drift_at: float, ask_after: float, recover: float,
         max_seconds: float) -> None:
    """Serve the default workspace with real processes and simulated users: the tuner converges, absorbs a drift
    of the users' preferences by itself (patch versions), and the architect adds the reply style users ask
    for (a minor version), which the tuner then learns."""
    from ratchet.demo import DemoOptions, run_demo

    try:
        run_demo(DemoOptions(out=out, keep=keep, seed=seed, rate=rate, drift_at=drift_at, ask_after=ask_after,
                             recover=recover, max_seconds=max_seconds))
    except KeyboardInterrupt:
        click.secho("ratchet demo: interrupted" + ("" if keep else "; the servers were stopped"), fg="red", err=True)
        sys.exit(130)


def main_register_plugin_commands() -> None:
    """Let plugins add commands (``ratchet_register_commands``). Only done when the command line names a
    command ratchet does not have, so ``ratchet --help`` and the built-in commands stay fast."""
    from ratchet.core.plugins import load_plugins

    args, rest = [], iter(sys.argv[1:])
    for arg in rest:
        if arg in ("-w", "--workspace"):
            next(rest, None)  # the option's value is no command
        elif not arg.startswith("-"):
            args.append(arg)
    if not args or args[0] in cli.commands:
        return
    try:
        load_plugins().call("ratchet_register_commands", cli=cli)
    except Exception as exc:  # noqa: BLE001 -- a broken plugin must not break ratchet's own commands
        click.secho(f"ratchet: {exc}", fg="red", err=True)


def main() -> None:
    main_register_plugin_commands()
    cli(prog_name="ratchet")


if __name__ == "__main__":
    main()
