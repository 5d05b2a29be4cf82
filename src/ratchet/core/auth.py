"""One bearer token for every server of a workspace, and for every client in the project.

The token comes from ``RATCHET_API_TOKEN`` or from the file ``[auth] token_file`` in ``ratchet.toml``
names (``ratchet token --file PATH`` makes one). When there is one, every server requires
``Authorization: Bearer <token>`` on every request: the MCP servers through the SDK's own auth
(a :class:`TokenVerifier`), the REST apps through a FastAPI dependency. Clients in the project (the
CLI, the Triggerer, the demo, the tiers against a URL) send it. Without a token the servers are open,
which is for local development only: binding anything but a loopback address without one is refused
at start (:func:`check_bind`).

Tokens are compared in constant time. :func:`token_id` (a hash prefix) is how a token is named where
it must be named, e.g. the MCP SDK's client id, never by the token itself.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from ratchet.core.errors import ConfigError

if TYPE_CHECKING:
    from ratchet.core.workspace import Workspace

TOKEN_ENV = "RATCHET_API_TOKEN"
SCHEME = "Bearer"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
MIN_LENGTH = 16  # a shorter token is guessable; `ratchet token` makes 43 characters


def make_token() -> str:
    """A new random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_id(token: str) -> str:
    """How a token is named where it must be: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def load_token(workspace: Workspace | None = None) -> str | None:
    """The workspace's token: ``RATCHET_API_TOKEN``, else ``[auth] token_file``, else None (open)."""
    token = os.environ.get(TOKEN_ENV)
    where = TOKEN_ENV
    if not token and workspace is not None and workspace.config.auth.token_file:
        path = Path(workspace.config.auth.token_file).expanduser()
        path = path if path.is_absolute() else workspace.root / path
        where = "auth.token_file"
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"auth.token_file: cannot read {path}: {exc.strerror}", field=where,
                              fix="make one with `ratchet token --file PATH`, or fix the path") from exc
    if not token:
        return None
    token = token.strip()
    if len(token) < MIN_LENGTH or any(c.isspace() for c in token):
        raise ConfigError(f"{where}: the token must be at least {MIN_LENGTH} characters without spaces",
                          field=where, fix="make one with `ratchet token`")
    return token


def matches(given: str | None, token: str) -> bool:
    """Whether ``given`` (an Authorization header's value, or a bare token) carries ``token``."""
    if not given:
        return False
    scheme, _, value = given.partition(" ")
    value = value.strip() if scheme.lower() == SCHEME.lower() else given
    return hmac.compare_digest(value.encode(), token.encode())


def header(token: str | None) -> dict[str, str]:
    """The request header that carries ``token`` (none without one)."""
    return {"Authorization": f"{SCHEME} {token}"} if token else {}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES or host == "localhost.localdomain":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, *, component: str) -> None:
    """Refuse to serve beyond this machine without a token (a ConfigError: exit code 3)."""
    if token is None and not is_loopback(host):
        raise ConfigError(f"{component}: refusing to bind {host} without a token: anyone who can reach it could "
                          "use it", field="host",
                          fix=f"set {TOKEN_ENV} (make one with `ratchet token`) or [auth] token_file in "
                          "ratchet.toml, or bind 127.0.0.1")


class StaticTokenVerifier:
    """The MCP SDK's ``TokenVerifier`` for one shared token."""

    def __init__(self, token: str):
        self._token = token

    async def verify_token(self, token: str):
        from mcp.server.auth.provider import AccessToken

        if not matches(token, self._token):
            return None
        return AccessToken(token=token, client_id=token_id(token), scopes=[])


def mcp_target(url: str, token: str | None):
    """What to give ``mcp.Client`` for the server at ``url``: the URL itself, or with a token a
    streamable-HTTP transport whose requests carry it."""
    if token is None:
        return url
    import contextlib

    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    @contextlib.asynccontextmanager
    async def transport():
        async with create_mcp_http_client(headers=header(token)) as http:
            async with streamable_http_client(url, http_client=http) as streams:
                yield streams

    return transport()
