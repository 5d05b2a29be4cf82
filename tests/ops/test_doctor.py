"""``ratchet doctor``: each check's ok and its failures, through the command line, against real servers
(uvicorn on 127.0.0.1) and the scripted OpenAI-compatible server for the model's endpoint."""

import contextlib
import json
import shutil
import socket
import threading

import pytest
import uvicorn
from click.testing import CliRunner

from helpers import git
from openai_script import MODEL, ScriptedOpenAI
from ratchet.cli import cli
from ratchet.core.auth import make_token, token_id
from ratchet.serving import free_port

TOKEN = make_token()


def doctor(ws_path, *args):
    """``ratchet doctor --json``: (exit code, {area/name: check})."""
    result = CliRunner().invoke(cli, ["doctor", "-w", str(ws_path), "--json", "--timeout", "5", *args],
                                catch_exceptions=False)
    report = json.loads(result.output)
    assert report["ok"] == (result.exit_code == 0)
    return result.exit_code, {f"{c['area']}/{c['name']}": c for c in report["checks"]}


def configure(ws_path, text: str) -> None:
    """Append ``text`` to ratchet.toml (a section it does not have yet) and commit it."""
    path = ws_path / "ratchet.toml"
    path.write_text(path.read_text() + "\n" + text)
    git(ws_path, "commit", "-qam", "configure")


def set_port(ws_path, section: str, port: int) -> None:
    import re

    path = ws_path / "ratchet.toml"
    text, n = re.subn(rf"(\[{section}\][^\[]*?port = )\d+", rf"\g<1>{port}", path.read_text())
    assert n == 1, f"no port in [{section}]"
    path.write_text(text)


@contextlib.contextmanager
def serving(app, port: int):
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.02)
            assert thread.is_alive(), "the server did not start"
        yield
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_fresh_workspace_passes(ws_path, monkeypatch):
    monkeypatch.delenv("RATCHET_API_TOKEN", raising=False)
    code, checks = doctor(ws_path)
    assert checks["token/token"]["status"] == "warn" and "open" in checks["token/token"]["detail"]
    assert code == 0
    for name in ("workspace/ratchet.toml", "workspace/plugins", "workspace/state", "workspace/budgets",
                 "workspace/git", "workspace/work tree", "model/planner"):
        assert checks[name]["status"] == "ok", checks[name]
    assert all(checks[f"servers/{n}"]["status"] == "ok" for n in ("runner", "tuner", "architect", "versions"))


def test_the_lines_say_ok_warn_or_fail_with_the_fix(ws_path):
    (ws_path / "ci" / "budgets.json").write_text("{")
    result = CliRunner().invoke(cli, ["doctor", "-w", str(ws_path)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.startswith("ok   workspace/ratchet.toml") for line in lines)
    bad = next(line for line in lines if line.startswith("fail workspace/budgets"))
    assert "not valid JSON" in bad and "Fix: fix the JSON syntax" in bad
    assert any(line.startswith("warn workspace/work tree") and "ci/budgets.json" in line for line in lines)


def test_an_invalid_ratchet_toml_fails_naming_the_key(ws_path):
    configure(ws_path, "[architect.extra]\nx = 1\n")
    code, checks = doctor(ws_path)
    assert code == 1 and list(checks) == ["workspace/ratchet.toml"]
    assert "architect.extra" in checks["workspace/ratchet.toml"]["detail"]


def test_a_plugin_that_does_not_load_fails(ws_path):
    path = ws_path / "ratchet.toml"
    path.write_text(path.read_text().replace('plugins = ["plugins/support_desk.py"', 'plugins = ["broken.py"', 1))
    (ws_path / "broken.py").write_text("import no_such_module_here\n")
    code, checks = doctor(ws_path)
    assert code == 1 and checks["workspace/plugins"]["status"] == "fail"
    assert checks["workspace/plugins"]["fix"]


def test_a_state_that_breaks_its_schema_fails(ws_path):
    path = ws_path / "state" / "active.state.json"
    state = json.loads(path.read_text())
    state["params"]["style"] = 42
    path.write_text(json.dumps(state))
    code, checks = doctor(ws_path)
    assert code == 1 and checks["workspace/state"]["status"] == "fail"
    assert "$.params.style" in checks["workspace/state"]["detail"]


def test_invalid_budgets_fail(ws_path):
    (ws_path / "ci" / "budgets.json").write_text(json.dumps({"tiers": {}}))
    code, checks = doctor(ws_path)
    assert code == 1 and checks["workspace/budgets"]["status"] == "fail"


def test_no_git_repository_fails(ws_path):
    shutil.rmtree(ws_path / ".git")
    code, checks = doctor(ws_path)
    assert code == 1 and checks["workspace/git"]["status"] == "fail"


def test_an_untagged_head_and_a_dirty_tree_warn(ws_path):
    (ws_path / "notes.txt").write_text("x")
    git(ws_path, "add", "notes.txt")
    git(ws_path, "commit", "-qm", "untagged")
    (ws_path / "README.md").write_text("changed")
    code, checks = doctor(ws_path)
    assert code == 0
    assert checks["workspace/git"]["status"] == "warn" and "not a tagged version" in checks["workspace/git"]["detail"]
    assert checks["workspace/work tree"]["status"] == "warn" and "README.md" in checks["workspace/work tree"]["detail"]


def test_a_store_not_made_yet_warns(ws_path, tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.setenv("RATCHET_STORE_URL", f"sqlite:///{tmp_path}/new.db")
    code, checks = doctor(ws_path)
    assert code == 0 and checks["store/connect"]["status"] == "warn" and "does not exist yet" in \
        checks["store/connect"]["detail"]
    sqlite3.connect(tmp_path / "new.db").execute("CREATE TABLE unrelated (x)").connection.close()
    code, checks = doctor(ws_path)
    assert code == 0 and checks["store/connect"]["status"] == "ok"
    assert checks["store/schema"]["status"] == "warn" and "jobs" in checks["store/schema"]["detail"]


def test_the_store_schema_is_checked(ws):
    ws.state.read("active")  # makes the store
    code, checks = doctor(ws.root)
    assert checks["store/connect"]["status"] == "ok" and checks["store/schema"]["status"] == "ok"


def test_an_unreachable_store_fails(ws_path, monkeypatch):
    monkeypatch.setenv("RATCHET_STORE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{free_port('127.0.0.1')}/x")
    code, checks = doctor(ws_path)
    assert code == 1 and checks["store/connect"]["status"] == "fail"
    assert "RATCHET_STORE_URL" in checks["store/connect"]["fix"]


# --- token and servers -------------------------------------------------------------------------------


def test_an_unreadable_token_file_fails(ws_path, monkeypatch):
    monkeypatch.delenv("RATCHET_API_TOKEN", raising=False)
    configure(ws_path, "[auth]\ntoken_file = \"missing-token\"\n")
    code, checks = doctor(ws_path)
    assert code == 1 and checks["token/token"]["status"] == "fail"
    assert "auth.token_file" in checks["token/token"]["detail"]


def test_a_token_in_the_environment_is_ok(ws_path, monkeypatch):
    monkeypatch.setenv("RATCHET_API_TOKEN", TOKEN)
    code, checks = doctor(ws_path)
    assert checks["token/token"]["status"] == "ok" and "RATCHET_API_TOKEN" in checks["token/token"]["detail"]
    assert token_id(TOKEN) in checks["token/token"]["detail"]


def test_a_port_held_by_something_else_fails(ws_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        set_port(ws_path, "versions", other.getsockname()[1])
        code, checks = doctor(ws_path, "--timeout", "0.5")  # it never answers
    assert code == 1 and checks["servers/versions"]["status"] == "fail"
    assert "something else" in checks["servers/versions"]["detail"]


def rest_app(ws, name: str):
    from ratchet.architect.app import create_app as architect_app
    from ratchet.versions.app import create_app as versions_app

    if name == "architect":
        return architect_app(ws, run_jobs=False, token=TOKEN)
    return versions_app(ws, token=TOKEN)


def mcp_app(ws, name: str):
    from ratchet.runner.server import build_server as runner_server
    from ratchet.runner.service import Runner
    from ratchet.tuner.server import build_server as tuner_server
    from ratchet.tuner.service import Tuner

    server = runner_server(Runner(ws), token=TOKEN) if name == "runner" else \
        tuner_server(Tuner(ws), worker="none", token=TOKEN)
    return server.streamable_http_app(host="127.0.0.1")


@pytest.mark.parametrize("name", ["versions", "architect"])
def test_a_running_rest_server_answers_with_the_token(ws, monkeypatch, name):
    monkeypatch.setenv("RATCHET_API_TOKEN", TOKEN)
    port = free_port("127.0.0.1")
    set_port(ws.root, name, port)
    with serving(rest_app(ws, name), port):
        code, checks = doctor(ws.root)
        assert checks[f"servers/{name}"]["status"] == "ok", checks[f"servers/{name}"]
        assert "accepts the token" in checks[f"servers/{name}"]["detail"]
        monkeypatch.setenv("RATCHET_API_TOKEN", make_token())  # another token: refused
        code, checks = doctor(ws.root)
    assert code == 1 and checks[f"servers/{name}"]["status"] == "fail"
    assert "refuses this token (401)" in checks[f"servers/{name}"]["detail"]


@pytest.mark.parametrize("name", ["runner", "tuner"])
def test_a_running_mcp_server_answers_with_the_token(ws, monkeypatch, name):
    monkeypatch.setenv("RATCHET_API_TOKEN", TOKEN)
    port = free_port("127.0.0.1")
    set_port(ws.root, name, port)
    with serving(mcp_app(ws, name), port):
        code, checks = doctor(ws.root)
        assert checks[f"servers/{name}"]["status"] == "ok", checks[f"servers/{name}"]
        assert checks[f"servers/{name}"]["detail"].endswith("/mcp: the Ratchet " + name + " of this workspace "
                                                            "answers and accepts the token")
        monkeypatch.delenv("RATCHET_API_TOKEN")
        code, checks = doctor(ws.root)
    assert code == 1 and checks[f"servers/{name}"]["status"] == "fail"
    assert "requires a token and none is set (401)" in checks[f"servers/{name}"]["detail"]


def test_another_workspace_s_server_is_something_else(ws, tmp_path, monkeypatch):
    from ratchet.core.workspace import Workspace

    other = tmp_path / "other"
    shutil.copytree(ws.root, other)
    path = other / "ratchet.toml"
    path.write_text(path.read_text().replace('name = "support-desk"', 'name = "other-desk"'))
    monkeypatch.setenv("RATCHET_API_TOKEN", TOKEN)
    port = free_port("127.0.0.1")
    set_port(ws.root, "versions", port)
    with serving(rest_app(Workspace.open(other), "versions"), port):
        code, checks = doctor(ws.root)
    assert code == 1 and "'Ratchet versions: other-desk'" in checks["servers/versions"]["detail"]


def test_port_zero_is_chosen_at_start(ws_path):
    set_port(ws_path, "tuner", 0)
    code, checks = doctor(ws_path)
    assert checks["servers/tuner"] == {"area": "servers", "name": "tuner", "status": "ok",
                                       "detail": "port 0: chosen when it starts", "fix": None}


# --- the model -------------------------------------------------------------------------------------


def model_config(ws_path, base_url: str, model: str = f"openai:{MODEL}") -> None:
    path = ws_path / "ratchet.toml"
    path.write_text(path.read_text().replace(
        "[architect]", f"[architect]\nmodel = \"{model}\"\nbase_url = \"{base_url}\"\napi_key_env = \"DOCTOR_KEY\"", 1))
    git(ws_path, "commit", "-qam", "model")


def test_the_model_endpoint_is_listed_without_spending_tokens(ws_path, monkeypatch):
    monkeypatch.setenv("DOCTOR_KEY", "sk-test")
    with ScriptedOpenAI([]) as server:
        model_config(ws_path, server.base_url)
        code, checks = doctor(ws_path)
    assert code == 0, checks
    assert checks["model/package"]["status"] == "ok" and checks["model/key"]["status"] == "ok"
    endpoint = checks["model/endpoint"]
    assert endpoint["status"] == "ok" and f"GET {server.base_url}/models" in endpoint["detail"]
    assert "spends no tokens" in endpoint["detail"]
    assert server.requests == []  # no chat completion
    assert server.headers[-1]["authorization"] == "Bearer sk-test"


def test_a_model_the_endpoint_does_not_serve_warns(ws_path, monkeypatch):
    monkeypatch.setenv("DOCTOR_KEY", "sk-test")
    with ScriptedOpenAI([]) as server:
        model_config(ws_path, server.base_url, model="openai:no-such-model")
        code, checks = doctor(ws_path)
    assert code == 0 and checks["model/endpoint"]["status"] == "warn"
    assert "'no-such-model' is not among" in checks["model/endpoint"]["detail"]


def test_a_missing_key_fails(ws_path, monkeypatch):
    monkeypatch.delenv("DOCTOR_KEY", raising=False)
    with ScriptedOpenAI([]) as server:
        model_config(ws_path, server.base_url)
        code, checks = doctor(ws_path)
    assert code == 1 and checks["model/key"]["status"] == "fail"
    assert "DOCTOR_KEY is not set" in checks["model/key"]["detail"] and "api_key_env" in checks["model/key"]["fix"]


def test_a_refused_key_fails(ws_path, monkeypatch):
    monkeypatch.setenv("DOCTOR_KEY", "sk-wrong")
    with ScriptedOpenAI([], models_status=401) as server:
        model_config(ws_path, server.base_url)
        code, checks = doctor(ws_path)
    assert code == 1 and checks["model/endpoint"]["status"] == "fail"
    assert "refused the key (401)" in checks["model/endpoint"]["detail"]
    assert "check the key in DOCTOR_KEY" in checks["model/endpoint"]["fix"]


def test_an_unreachable_base_url_fails(ws_path, monkeypatch):
    monkeypatch.setenv("DOCTOR_KEY", "sk-test")
    model_config(ws_path, f"http://127.0.0.1:{free_port('127.0.0.1')}/v1")
    code, checks = doctor(ws_path)
    assert code == 1 and checks["model/endpoint"]["status"] == "fail"
    assert "cannot reach it" in checks["model/endpoint"]["detail"] and "base_url" in checks["model/endpoint"]["fix"]


def test_a_provider_package_that_is_not_installed_fails(ws_path, monkeypatch):
    import importlib.util

    monkeypatch.setenv("DOCTOR_KEY", "sk-test")
    if importlib.util.find_spec("langchain_mistralai") is not None:
        pytest.skip("langchain-mistralai is installed here")
    model_config(ws_path, "http://127.0.0.1:9/v1", model="mistralai:mistral-small")
    code, checks = doctor(ws_path)
    assert code == 1 and checks["model/package"]["status"] == "fail"
    assert "pip install langchain-mistralai" in checks["model/package"]["fix"]
