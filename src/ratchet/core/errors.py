"""One error tree. Every message says what failed, which thing, and how to fix it.

Servers translate these errors and never reword them: the CLI prints them in red on stderr and exits
with ``exit_code``; the REST APIs put ``detail``/``field``/``fix`` in the body; MCP tools return them as
tool errors.

Exit codes of the ``ratchet`` command:

====  ==========================================================
0     success
1     unexpected internal error (a bug: please report it)
2     usage error (bad command line; click's own code)
3     user error: bad input, configuration or arguments
4     plugin error: a plugin failed to load or raised in a hook
5     conflict: a concurrent writer changed what you based your change on
6     not found: an unknown version, template, state document or job
7     git error: the workspace repository refused an operation
8     tests failed or missed their budget
====  ==========================================================
"""

from __future__ import annotations

import difflib
import typing
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pydantic is imported by callers; importing it here would slow `ratchet --help`
    from pydantic import BaseModel, ValidationError


class RatchetError(Exception):
    """Base of every error Ratchet raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None, fix: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.fix = fix

    def __str__(self) -> str:
        text = self.message
        if self.fix:
            text += f"\n  Fix: {self.fix}"
        return text

    def to_dict(self) -> dict[str, str | None]:
        """The wire shape used by the REST APIs and MCP tool errors."""
        return {"error": type(self).__name__, "detail": self.message, "field": self.field, "fix": self.fix}


class UserError(RatchetError):
    """Bad input the user can fix: a field, a file, an argument."""

    exit_code = 3


class ConfigError(UserError):
    """``ratchet.toml``, ``ci/budgets.json`` or a plugin config is invalid; ``field`` names the key."""


class AuthError(UserError):
    """A request without the workspace's bearer token, or with a wrong one (HTTP 401)."""


class TooLargeError(UserError):
    """A request body or a file over its ``[limits]`` size (HTTP 413)."""


class TooManyError(UserError):
    """Over a ``[limits]`` count, e.g. open jobs (HTTP 429). ``retry_after``: seconds worth waiting."""

    def __init__(self, message: str, *, retry_after: int, field: str | None = None, fix: str | None = None):
        super().__init__(message, field=field, fix=fix)
        self.retry_after = retry_after


class TimeLimitError(RatchetError):
    """A job ran past ``[architect] job_timeout_seconds``. A planner lets it through: it ends the job,
    it is not an error the model can correct."""


class StateValidationError(UserError):
    """A state document violates ``state/schema.json``; ``field`` is the JSON path."""


class PluginError(RatchetError):
    """A plugin failed to load or raised inside a hook. Names the plugin, its distribution and the hook."""

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        plugin: str,
        dist: str | None = None,
        hook: str | None = None,
        fix: str | None = None,
    ):
        where = f"plugin {plugin!r}"
        if dist:
            where += f" ({dist})"
        where += f" failed in hook {hook}" if hook else " failed to load"
        super().__init__(f"{where}:\n  {message}", fix=fix)
        self.plugin = plugin
        self.dist = dist
        self.hook = hook


class ConflictError(RatchetError):
    """Compare-and-swap lost: the document changed since it was read. Re-read and retry."""

    exit_code = 5


class NotFoundError(UserError):
    """An unknown version, template, document, job or conversation."""

    exit_code = 6


class GitError(RatchetError):
    """The workspace repository refused an operation (not a repo, dirty tree, failed commit)."""

    exit_code = 7


class UncommittedError(GitError):
    """Files that decide how the service behaves differ from what git holds, so a version tagged now
    could not be reproduced from its tag. ``paths`` names them."""

    def __init__(self, paths: list[str], *, action: str = "promote"):
        super().__init__(f"uncommitted changes to {', '.join(paths)}: they decide how the service behaves, so a "
                         "version tagged now could not be reproduced", field=paths[0],
                         fix=f"commit or revert them, then {action}")
        self.paths = paths


class SignatureError(GitError):
    """A version's tag does not verify against the allowed signers (or is unsigned), and the reader
    requires signed versions (``ratchet serve runner --require-signed``)."""


class TestsFailedError(RatchetError):
    """A test tier failed or missed its budget."""

    __test__ = False  # not a pytest test class
    exit_code = 8


class UnavailableError(RatchetError):
    """The store or the disk failed (locked, unreachable, full): nothing was stored; the caller may retry."""


_DRIVERS = ("sqlite3", "sqlalchemy", "psycopg")


def unavailable(exc: BaseException) -> UnavailableError | None:
    """``exc`` as an :class:`UnavailableError` when it is the store's or the disk's failure rather than
    the caller's or a bug: a database driver's operational error, or a full disk. None otherwise."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UnavailableError("the disk is full; nothing was stored", field=None,
                                fix="free disk space on the server, then retry")
    kinds = {c.__name__ for c in type(exc).__mro__}
    if type(exc).__module__.split(".")[0] in _DRIVERS and kinds & {"OperationalError", "InterfaceError"}:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return UnavailableError(f"the store is unavailable ({reason}); nothing was stored", field=None,
                                fix="retry; if it persists, check the database the workspace's [store] url names")
    return None


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The keys allowed at ``loc`` (for did-you-mean suggestions)."""
    from pydantic import BaseModel

    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        if typing.get_origin(ann) in (list, dict):  # a list (or dict) of models: the item's keys
            ann = typing.get_args(ann)[-1]
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return [f.alias or name for name, f in model.model_fields.items()]


def config_error(exc: ValidationError, source: str, model: type[BaseModel], *,
                 error: type[UserError] = ConfigError, known: list[str] | None = None,
                 assign: str = " = ") -> UserError:
    """Turn a pydantic error into one that names the key and says how to fix it.

    ``known`` overrides the allowed keys offered for an unknown one; ``assign`` is how the file format
    writes a key (TOML ``key = ...``, YAML ``key: ...``).
    """
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        known = known if known is not None else _known_keys(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"remove it; allowed keys here: {', '.join(known)}"
        return error(f"{source}: unknown key {key!r}", field=key, fix=fix)
    if err["type"] == "missing":
        return error(f"{source}: required key {key!r} is missing", field=key, fix=f"add {key}{assign}...")
    return error(f"{source}: {key}: {err['msg']}", field=key, fix=f"correct the value of {key}")
