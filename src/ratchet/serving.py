"""Running an MCP server over streamable HTTP or stdio (shared by ``ratchet serve runner|tuner``)."""

from __future__ import annotations

import socket
import sys

from mcp.server.mcpserver import MCPServer


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def serve_mcp(server: MCPServer, *, transport: str, host: str, port: int, label: str) -> None:
    """Serve until interrupted. Over HTTP the endpoint is ``http://HOST:PORT/mcp``; port 0 picks one."""
    if transport == "stdio":
        server.run("stdio")  # stdout belongs to the protocol: nothing else may print there
        return
    import uvicorn

    port = port or free_port(host)
    app = server.streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    # One line on stderr that tools (and `ratchet up`) can wait for.
    print(f"ratchet {label} listening on http://{host}:{port}/mcp", file=sys.stderr, flush=True)
    uvicorn.Server(config).run()
