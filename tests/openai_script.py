"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for driving the LLM planner through
the real provider package (langchain-openai, the openai client) over HTTP without touching the network.

Each ``POST /v1/chat/completions`` pops the next reply of the script and records the request body. A
reply is made with :func:`calls` (one or more tool calls in one response, as OpenAI's parallel tool
calls are sent) or :func:`answer` (plain text); :func:`call` takes the arguments as an object, or as a
raw string to send malformed JSON. :func:`slow` delays a reply (a model that does not answer in time);
:func:`failure` answers with an HTTP error status instead. A reply may also be a function of the request
body, called when the request arrives. When the script runs out the server answers 400, which the client
does not retry, so a test that under-scripts fails at once. ``GET /v1/models`` lists :data:`MODEL` (or
answers ``models_status``, e.g. 401 for a refused key) and uses no reply of the script.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "gpt-4o-mini-2024-07-18"  # what the server says it served (OpenAI answers with a dated name)
USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
_ids = itertools.count(1)


def call(name: str, args: dict[str, Any] | str, id: str | None = None) -> dict[str, Any]:
    """One tool call; ``args`` as a string is sent verbatim (e.g. truncated JSON)."""
    return {"id": id or f"call_{next(_ids)}", "type": "function",
            "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}


def calls(*tool_calls: dict[str, Any]) -> dict[str, Any]:
    """An assistant message making these tool calls, all in one response."""
    return {"role": "assistant", "content": None, "tool_calls": list(tool_calls)}


def answer(text: str) -> dict[str, Any]:
    """An assistant message with text and no tool call."""
    return {"role": "assistant", "content": text}


def slow(seconds: float, reply: Any) -> dict[str, Any]:
    """``reply``, sent after ``seconds`` (or as soon as the server stops, which ends the wait)."""
    return {"_delay": seconds, "_reply": reply}


def failure(status: int, message: str, type: str = "server_error") -> dict[str, Any]:
    """An HTTP error reply, with OpenAI's error body (401, say, or 500, which the client retries)."""
    return {"_status": status, "_error": {"message": message, "type": type}}


class ScriptedOpenAI:
    """``with ScriptedOpenAI(script) as server:`` serves ``server.base_url`` until the block ends;
    ``server.requests`` holds every request body, in order."""

    def __init__(self, script: Iterable[dict[str, Any]], *, models_status: int = 200):
        self.models_status = models_status
        self.script: Iterator[dict[str, Any]] = iter(script)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each request's HTTP headers (lower-case names), in order
        self._lock = threading.Lock()
        self._closing = threading.Event()  # ends the delays of slow replies
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-openai", daemon=True)

    def __enter__(self) -> ScriptedOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def next_reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(body)
            message = next(self.script, None)
        if callable(message):
            message = message(body)
        if message is None:
            return 400, {"error": {"message": "the test's script has no more replies", "type": "invalid_request_error"}}
        if "_delay" in message:
            self._closing.wait(message["_delay"])
            message = message["_reply"]
        if "_status" in message:
            return message["_status"], {"error": message["_error"]}
        finish = "tool_calls" if message.get("tool_calls") else "stop"
        return 200, {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": 0,
                     "model": MODEL, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                     "usage": USAGE}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 -- http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, reply = server.next_reply(body) if self.path == "/v1/chat/completions" else \
                    (404, {"error": {"message": f"no route {self.path}"}})
                self._send(status, reply)

            def do_GET(self) -> None:  # noqa: N802 -- the model listing: no tokens, no reply of the script
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path != "/v1/models":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                elif server.models_status != 200:
                    self._send(server.models_status, {"error": {"message": "Incorrect API key provided",
                                                                "type": "invalid_request_error"}})
                else:
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                                 "owned_by": "test"}]})

            def _send(self, status: int, reply: dict[str, Any]) -> None:
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

        return Handler
