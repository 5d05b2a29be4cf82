"""Runner tools: plain type-hinted functions that plugins register.

The runner builds each tool's JSON Schema from its type hints, leaving out a parameter annotated
``RunContext``: through it the tool reads the parameters it must use for this call (the active state's
``params`` with every strategy's decision applied) and logs features for rule mining.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ratchet.core.strategy import Decision


@dataclass
class RunContext:
    """What a runner tool knows about the call it serves."""

    conversation_id: str
    params: dict[str, Any]
    decisions: dict[str, Decision] = field(default_factory=dict)
    version: str | None = None
    features: dict[str, Any] = field(default_factory=dict)

    def log_features(self, **features: Any) -> None:
        """Record features of this call (joined later to labelled outcomes by rule-mining strategies)."""
        self.features.update(features)
