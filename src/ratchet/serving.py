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


class RatchetMCPServer(MCPServer):
    """MCPServer whose argument errors read like every other Ratchet error (``field: problem`` and a
    ``Fix:``), instead of pydantic's text with its errors.pydantic.dev link."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
        from pydantic import ValidationError

        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            tool = self._tool_manager.get_tool(name)
            described = argument_error(cause, tool.parameters if tool else {})
            raise ToolError(f"Error executing tool {name}: {described}") from cause


def argument_error(exc: Any, schema: dict[str, Any]):
    """A pydantic error about a tool's arguments as a :class:`UserError` naming the argument and the fix;
    ``schema`` is the tool's input schema (for the names and types it takes)."""
    import difflib

    from ratchet.core.errors import UserError

    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(arguments)"
    properties = schema.get("properties", {})
    prop = properties.get(str(err["loc"][0]) if err["loc"] else "", {})
    wanted = prop.get("type") or "a value"
    about = f" ({prop['description']})" if prop.get("description") else ""
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(err["loc"][-1]), list(properties), n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"remove it; the tool takes: {', '.join(properties)}"
        return UserError(f"{key}: unknown argument", field=key, fix=fix)
    if err["type"] == "missing":
        return UserError(f"{key}: required", field=key, fix=f"pass {key}{about}")
    if err.get("input", "") is None:
        return UserError(f"{key}: must not be null", field=key,
                         fix=f"pass {key} as {wanted}{about}" + ("" if key in schema.get("required", [])
                                                                else ", or leave it out"))
    return UserError(f"{key}: {err['msg'][0].lower()}{err['msg'][1:]}", field=key,
                     fix=f"pass {key} as {wanted}{about}")
