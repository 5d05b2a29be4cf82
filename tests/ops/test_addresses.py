"""``.ratchet/run/``: where servers record their addresses, and who reads them."""

from __future__ import annotations

import http.server
import io
import json
import threading

from ratchet.ops import addresses, upctl


def test_a_record_lasts_for_its_block_and_a_dead_processes_record_is_ignored(tmp_path):
    with addresses.recorded(tmp_path, "architect", "http://127.0.0.1:5555"):
        assert addresses.url(tmp_path, "architect") == "http://127.0.0.1:5555"
    assert addresses.read(tmp_path, "architect", live_only=False) is None
    addresses.path(tmp_path, "runner").write_text(json.dumps({"url": "http://x", "pid": 2 ** 22 + 7}))
    assert addresses.url(tmp_path, "runner") is None  # stale: its process is gone


def test_the_triggerer_wakes_the_architect_where_it_recorded_its_address(ws):
    from ratchet.ops.triggerer import architect_wake

    posted = []

    class Wake(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            posted.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Wake)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        toml = ws.root / "ratchet.toml"
        text = toml.read_text()
        at = text.index("[architect]")
        toml.write_text(text[:at] + text[at:].replace(f"port = {ws.config.architect.port}", "port = 0", 1))
        from ratchet.core.workspace import Workspace

        ws = Workspace.open(ws.root)
        assert ws.config.architect.port == 0
        with addresses.recorded(ws.root, "architect", f"http://127.0.0.1:{server.server_address[1]}"):
            architect_wake(ws)({"breaches": []})
    finally:
        server.shutdown()
        server.server_close()
    assert posted == [("/wake", {"breaches": []})]


def test_up_logs_follow_prints_new_lines_as_they_come(tmp_path):
    logs = tmp_path / ".ratchet" / "logs"
    logs.mkdir(parents=True)
    (logs / "runner.log").write_text("one\ntwo\n")
    (logs / "tuner.log").write_text("first\n")
    out, polls = io.StringIO(), []

    def stop() -> bool:
        polls.append(1)
        if len(polls) == 1:
            with (logs / "runner.log").open("a") as f:
                f.write("three\nhalf")  # a line still being written waits for its end
        elif len(polls) == 3:
            with (logs / "runner.log").open("a") as f:
                f.write(" done\n")
        return len(polls) > 4

    upctl.show_logs(tmp_path, ["runner", "tuner"], lines=1, follow=True, out=out, stop=stop, interval=0)
    assert out.getvalue().splitlines() == ["runner | two", "tuner  | first", "runner | three",
                                           "runner | half done"]


def test_the_client_prefers_the_recorded_address_and_reaches_a_wildcard_bind_on_loopback(ws):
    from ratchet.client import server_url

    assert server_url(ws, "runner") == f"http://127.0.0.1:{ws.config.runner.port}/mcp"  # nothing recorded
    with addresses.recorded(ws.root, "runner", "http://0.0.0.0:5555/mcp"), \
            addresses.recorded(ws.root, "tuner", "http://[::]:5556/mcp"):
        assert server_url(ws, "runner") == "http://127.0.0.1:5555/mcp"
        assert server_url(ws, "tuner") == "http://127.0.0.1:5556/mcp"
