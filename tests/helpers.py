"""Small helpers shared by the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (``.git`` included) with its bytes: to assert that nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def with_style(style: str):
    """A state change for StateManager.update: set params.style."""
    return lambda doc: {**doc, "params": {**doc["params"], "style": style}}


class ServerProcess:
    """``ratchet serve KIND`` as a real subprocess on a free 127.0.0.1 port; stops itself on exit."""

    def __init__(self, kind: str, workspace: Path, *extra: str, timeout: float = 30.0):
        import socket
        import sys

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        ratchet = str(Path(sys.executable).with_name("ratchet"))
        self.proc = subprocess.Popen([ratchet, "serve", kind, "--port", str(self.port), "-w", str(workspace), *extra],
                                     stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import socket
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server on port {self.port} did not start in {timeout} s")

    def kill(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def assert_valid_section(strategy, section) -> None:
    """A strategy section is valid against the strategy's own JSON Schema and is plain JSON."""
    import json

    import jsonschema

    schema = strategy.state_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(section)
    assert json.loads(json.dumps(section)) == section


async def call_tool(client, tool: str, args: dict | None = None):
    """``(is_error, text or structured result)`` of an MCP tool call."""
    r = await client.call_tool(tool, args or {})
    return r.is_error, (r.content[0].text if r.is_error else r.structured_content)


def commit_all(root: Path, message: str = "test setup") -> None:
    """Commit every change in the workspace (a tuner refuses to promote over uncommitted config)."""
    git(root, "add", "-A")
    if git(root, "status", "--porcelain").strip():
        git(root, "commit", "-qm", message)


def point_workspace_at(ws_path: Path, runner: ServerProcess, tuner: ServerProcess) -> None:
    """Write the servers' ports into ratchet.toml (as when the ports are fixed) and commit: the tuner
    promotes only over committed configuration."""
    import re

    toml = ws_path / "ratchet.toml"
    text = re.sub(r"\[runner\]\nport = \d+", f"[runner]\nport = {runner.port}", toml.read_text())
    toml.write_text(re.sub(r"\[tuner\]\nport = \d+", f"[tuner]\nport = {tuner.port}", text))
    commit_all(ws_path, "the servers' ports")


def set_strategy(ws_path: Path, block: str, plugins: list[str] | None = None) -> None:
    """Replace the workspace's [[tuner.strategies]] table (and optionally its plugin list), and commit
    the workspace (this and whatever the test wrote before)."""
    import json
    import re

    toml = ws_path / "ratchet.toml"
    text = re.sub(r"\[\[tuner\.strategies\]\].*?\n\n", block.strip() + "\n\n", toml.read_text(), flags=re.S)
    if plugins:
        text = text.replace('plugins = ["plugins/support_desk.py"]', f"plugins = {json.dumps(plugins)}")
    toml.write_text(text)
    commit_all(ws_path, "set the strategies")


def use_style_strategy(ws_path: Path, strategy: str):
    """Make ``strategy`` the style bandit of the default workspace (e.g. ``thompson``, a stationary one the
    playbook's drifting-preferences rule replaces), commit, and return the workspace reopened."""
    import re

    from ratchet.core.workspace import Workspace

    toml = ws_path / "ratchet.toml"
    toml.write_text(re.sub(r'(?m)^strategy = "[^"]+"', f'strategy = "{strategy}"', toml.read_text(), count=1))
    commit_all(ws_path, f"the style bandit is {strategy}")
    return Workspace.open(ws_path)


def code_version(ws, paths: list[str], reason: str = "new code", bump: str = "minor"):
    """Commit ``paths`` and make them an Architect version through the lineage, as a merged job is:
    tagged, main moved, and the store's active state labelled with it."""
    from ratchet.core.lineage import Lineage

    git(ws.root, "add", "--", *paths)
    git(ws.root, "commit", "-qm", reason)
    with Lineage(ws).turn() as turn:
        return turn.make_merge_version(ws.versions.head(), bump=bump, reason=reason, kind="architect",
                                       author="test")


def ratchet_imports(path: Path, *, type_checking: bool = True) -> list[tuple[str, list[str], int]]:
    """The imports of Ratchet's modules in a Python file, as ``(module, names, line)``; a plain
    ``import ratchet.x`` has no names. ``type_checking=False`` leaves out ``if TYPE_CHECKING:`` blocks
    (imports for annotations only, which run nothing)."""
    import ast

    found: list[tuple[str, list[str], int]] = []

    def visit(nodes: list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and not type_checking and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                    node.module == "ratchet" or node.module.startswith("ratchet.")):
                found.append((node.module, [a.name for a in node.names], node.lineno))
            elif isinstance(node, ast.Import):
                found.extend((a.name, [], node.lineno) for a in node.names
                             if a.name == "ratchet" or a.name.startswith("ratchet."))
            visit(list(ast.iter_child_nodes(node)))

    visit([ast.parse(path.read_text(encoding="utf-8"), str(path))])
    return found


def ssh_key(folder: Path, name: str) -> Path:
    """A new ed25519 key pair without a passphrase, made by ssh-keygen; returns the private key's path."""
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def allowed_signers(path: Path, *keys: Path) -> Path:
    """git's allowed signers file listing ``keys`` (their .pub halves)."""
    path.write_text("".join(f"{k.name}@ratchet.test {k.with_suffix('.pub').read_text().split()[0]} "
                            f"{k.with_suffix('.pub').read_text().split()[1]}\n" for k in keys))
    return path


def sign_versions(ws_path: Path, key: Path | None, signers: Path | None) -> None:
    """Set [versions] signing_key and allowed_signers in ratchet.toml (None removes one) and commit."""
    import tomlkit

    toml = ws_path / "ratchet.toml"
    doc = tomlkit.parse(toml.read_text())
    for name, value in (("signing_key", key), ("allowed_signers", signers)):
        if value is None:
            doc["versions"].pop(name, None)
        else:
            doc["versions"][name] = str(value)
    toml.write_text(tomlkit.dumps(doc))
    commit_all(ws_path, "sign versions")


def schemathesis_run(app, *, token: str | None = None, exclude_path: str | None = None, max_examples: int = 25,
                     pin: dict[str, dict[str, str]] | None = None,
                     statuses: dict[str, set[int]] | None = None) -> list[str]:
    """Run schemathesis on a FastAPI ``app`` in process, as ``schemathesis run`` would (examples, coverage
    and fuzzing phases, every check: no 5xx, status codes, headers and bodies as documented, schema-valid
    requests accepted, schema-invalid ones rejected, 405s with ``Allow``, auth enforced). With ``token``
    requests carry it (and the auth check also sends them without it, and with a wrong one). Returns
    the failures, each with its curl line; fills ``statuses`` (operation -> statuses seen) if given.
    ``pin`` fixes parameters of the operations whose path matches a regex (to reach past the 404s).
    The seed is fixed, so a run is the same on every machine."""
    import schemathesis
    from schemathesis.engine import events, from_schema

    generation = {"max-examples": max_examples, "database": "none"}
    config = {"seed": 12, "request-timeout": 120, "generation": generation,
              "phases": {"stateful": {"enabled": False}, "fuzzing": {"generation": generation}}}
    if pin:
        config["operations"] = [{"include-path-regex": regex, "parameters": params} for regex, params in pin.items()]
    if token is not None:
        config["auth"] = {"openapi": {"HTTPBearer": {"bearer": token}}}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=schemathesis.Config.from_dict(config))
    if exclude_path:
        schema = schema.exclude(path_regex=exclude_path)
    failures: dict[tuple, str] = {}
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.setdefault((event.label, check.name, failure.title),
                                            f"{event.label}: {check.name}: {failure.title}\n{failure.message}\n"
                                            f"{check.failure_info.code_sample}")
            if statuses is not None:
                for interaction in event.recorder.interactions.values():
                    if interaction.response is not None:
                        statuses.setdefault(event.label, set()).add(interaction.response.status_code)
        elif isinstance(event, events.NonFatalError):
            failures.setdefault(("error", event.label, str(event.value)), f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    return list(failures.values())


def errors_at_once(fn, calls: list[tuple]) -> list[BaseException]:
    """Run ``fn(*args)`` for each ``args`` in ``calls``, each on a thread of its own, released together;
    the exceptions they raised (a race test asserts there are none)."""
    import threading

    start, errors = threading.Barrier(len(calls)), []

    def run(*args):
        start.wait()
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 -- collected for the caller's assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=args) for args in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def serve_and_reward(ws, n: int, rates: dict[str, float], start: int = 0) -> list[float]:
    """n conversations served by the workspace's active state through the Runner, each rewarded through
    the Tuner with probability ``rates[style]`` (seeded); staging learns, active stays. Returns the rewards."""
    import random

    from ratchet.runner.service import Runner
    from ratchet.tuner.service import Tuner

    runner, tuner, rng = Runner(ws, seed=1), Tuner(ws), random.Random(start)
    rewards = []
    for i in range(start, start + n):
        runner.call("answer", {"question": "where is my parcel?", "conversation_id": f"c{i}"})
        style = ws.store.decisions_for(f"c{i}")[-1]["choice"]
        value = float(rng.random() < rates[style])
        tuner.feedback("reward", {"conversation_id": f"c{i}", "value": value})
        rewards.append(value)
    tuner.apply_pending()
    return rewards


def ratchet_distribution() -> str:
    """The name of the installed distribution that holds the ``ratchet`` package (``ratchet-agents``; an
    older editable install may still say ``ratchet``)."""
    from importlib import metadata

    return metadata.packages_distributions()["ratchet"][0]


def agrees_with_decide(st, section, context, n=3000, tol=0.03, seed=0):
    """``st.choice_probabilities`` is what ``decide`` does: every decision's logged propensity is the probability
    given for its choice, and the choices' frequencies over ``n`` decisions match within ``tol``. Returns them."""
    import numpy as np
    import pytest

    from ratchet.core.strategy import choice_key

    probs = st.choice_probabilities(section, context, np.random.default_rng(seed + 1))
    assert sum(probs.values()) == pytest.approx(1.0)
    rng = np.random.default_rng(seed)
    decisions = [st.decide(section, context, rng) for _ in range(n)]
    freq: dict = {}
    for d in decisions:
        assert d.propensity == pytest.approx(probs[choice_key(d.choice)]), d
        freq[choice_key(d.choice)] = freq.get(choice_key(d.choice), 0) + 1 / n
    for k in set(probs) | set(freq):
        assert abs(freq.get(k, 0.0) - probs.get(k, 0.0)) < tol, (k, freq.get(k), probs.get(k))
    return probs
