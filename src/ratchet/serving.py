"""Running an MCP server over streamable HTTP or stdio (shared by ``ratchet serve runner|tuner``)."""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path
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


def bind(host: str, port: int, label: str) -> socket.socket:
    """A listening socket on ``host:port`` (0 picks a free port), or a clear error naming the port."""
    from ratchet.core.errors import UserError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"{label}: port {port} on {host} is already in use", field=f"{label}.port",
                            fix=f"stop what listens on {port} (`ratchet up status` lists this workspace's servers), "
                            f"or pass --port 0 (or set [{label}] port = 0 in ratchet.toml) to pick a free "
                            "port") from None
        raise UserError(f"{label}: cannot listen on {host}:{port}: {exc.strerror or exc}", field=f"{label}.host",
                        fix="bind an address of this machine, e.g. 127.0.0.1") from None
    sock.setblocking(False)
    return sock


def serve_asgi(app: Any, *, host: str, port: int, label: str, path: str = "", root: Path | None = None,
               **config: Any) -> None:
    """Serve ``app`` with uvicorn until interrupted. The port is bound first; only then is the ready line
    (``ratchet LABEL listening on http://HOST:PORT{path}``, which ``ratchet up`` waits for) printed and,
    with a workspace ``root``, the address recorded in ``.ratchet/run/`` for other commands."""
    import uvicorn

    from ratchet.ops import addresses

    sock = bind(host, port, label)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}{path}"
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=bound, log_level="warning", **config))
    with addresses.recorded(root, label, url):
        print(f"ratchet {label} listening on {url}", file=sys.stderr, flush=True)
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()


def serve_mcp(server: MCPServer, *, transport: str, host: str, port: int, label: str,
              root: Path | None = None) -> None:
    """Serve until interrupted. Over HTTP the endpoint is ``http://HOST:PORT/mcp``; port 0 picks one."""
    if transport == "stdio":
        server.run("stdio")  # stdout belongs to the protocol: nothing else may print there
        return
    serve_asgi(server.streamable_http_app(host=host), host=host, port=port, label=label, path="/mcp", root=root,
               lifespan="on")
