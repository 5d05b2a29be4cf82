"""Running an MCP server over streamable HTTP or stdio (shared by ``ratchet serve runner|tuner``)."""

from __future__ import annotations

import socket
import sys
from typing import Any

from mcp.server.mcpserver import MCPServer


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def mcp_auth(token: str | None) -> dict[str, Any]:
    """``MCPServer`` options that make its HTTP transport require ``token`` as a bearer token, through
    the SDK's own auth (a ``TokenVerifier``); none without a token. The SDK wants an issuer URL and a
    resource server URL (stated as None: no OAuth metadata is served); the token is not issued by an
    OAuth server, so the issuer is a placeholder the SDK never advertises without the other."""
    if token is None:
        return {}
    from mcp.server.auth.settings import AuthSettings

    from ratchet.core.auth import StaticTokenVerifier

    return {"token_verifier": StaticTokenVerifier(token),
            "auth": AuthSettings(issuer_url="http://127.0.0.1", resource_server_url=None)}


def refuse_unknown_arguments(server: MCPServer, name: str) -> None:
    """Make tool ``name`` refuse arguments it does not take, by name (the SDK's argument model drops them
    silently by default), and say so in its input schema."""
    tool = server._tool_manager.get_tool(name)
    tool.fn_metadata.arg_model.model_config["extra"] = "forbid"
    tool.fn_metadata.arg_model.model_rebuild(force=True)
    tool.parameters = {**tool.parameters, "additionalProperties": False}


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
