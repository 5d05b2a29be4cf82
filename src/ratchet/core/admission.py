"""What a value must be to get in: checks the runner and the tuner run on every call before anything
is stored, whatever a plugin's schema says.

JSON Schema cannot refuse NaN or Infinity (``minimum``/``maximum`` comparisons with NaN are false, so
NaN passes them), and a schema does not know how long a string the store can hold. These checks do:
numbers must be finite, ids must be non-empty strings that fit the store's id columns, without NUL
(PostgreSQL cannot store it).
"""

from __future__ import annotations

import math
from typing import Any

from ratchet.core.errors import UserError

MAX_ID_LENGTH = 200  # the store's id columns (conversation_id, event_id) are String(200)
NOTHING_STORED = "nothing was stored"


def check_finite(value: Any, where: str) -> None:
    """Refuse NaN and ±Infinity anywhere in ``value`` (nested lists and objects included)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UserError(f"{where}: {value} is not a finite number; {NOTHING_STORED}", field=where,
                            fix="send a finite JSON number (NaN and Infinity are not JSON)")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_finite(item, f"{where}[{i}]")


def check_id(value: Any, where: str) -> None:
    """Refuse an id the store cannot hold or that names nothing: not a string, empty, too long, or NUL."""
    problem = None
    if not isinstance(value, str):
        problem = f"must be a string, not {type(value).__name__}"
    elif not value.strip():
        problem = "is empty"
    elif len(value) > MAX_ID_LENGTH:
        problem = f"is {len(value)} characters long; at most {MAX_ID_LENGTH} fit"
    elif "\x00" in value:
        problem = "contains a NUL character"
    if problem:
        raise UserError(f"{where}: {problem}; {NOTHING_STORED}", field=where,
                        fix=f"send a non-empty id of at most {MAX_ID_LENGTH} characters, without NUL")
