"""The demo's simulated users: hidden preferences over reply styles that drift at a known time, and
the oracle that knows them.

Each conversation asks one question from the workspace's knowledge base; the user then rewards the
reply 1 or 0, a Bernoulli draw with the probability the population's hidden preferences give the
style the runner chose. At ``drift_at`` seconds the preferences change (users who liked short
answers now want detailed ones). The oracle knows both tables and the drift time and would always
serve the best style: the regret of an event is the oracle's expected reward minus the expected
reward of the style actually served (pseudo-regret: no luck of the draw in it).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

STYLES = ("concise", "friendly", "detailed", "formal")

# Before the drift short answers win and long ones are disliked; after it detailed answers win and the
# old favourite is merely mediocre. The exploration mean before the drift (0.6) stays above the demo's
# SLO (0.5), so learning alone does not wake the Architect. After the drift a stationary bandit stays
# on the old favourite (0.4, below the SLO) for a long time: it has hundreds of good rewards for it,
# and the arm that is now best looked hopeless before the drift.
BEFORE = {"concise": 0.9, "friendly": 0.75, "detailed": 0.05, "formal": 0.7}
AFTER = {"concise": 0.4, "friendly": 0.2, "detailed": 0.9, "formal": 0.15}

@dataclass(frozen=True)
class Preferences:
    """The population's hidden probability of rewarding each style, before and after the drift."""

    before: dict[str, float] = field(default_factory=lambda: dict(BEFORE))
    after: dict[str, float] = field(default_factory=lambda: dict(AFTER))
    drift_at: float = 30.0  # seconds after the users start

    def at(self, t: float) -> dict[str, float]:
        return self.before if t < self.drift_at else self.after

    def best(self, t: float) -> str:
        table = self.at(t)
        return max(table, key=table.__getitem__)

    def to_dict(self) -> dict:
        return {"before": self.before, "after": self.after, "drift_at_seconds": self.drift_at,
                "best_before": self.best(0.0), "best_after": self.best(self.drift_at)}


class Oracle:
    """Knows the hidden preferences and the drift time: the best style and its expected reward."""

    def __init__(self, prefs: Preferences):
        self.prefs = prefs

    def expected(self, t: float) -> float:
        return max(self.prefs.at(t).values())

    def regret(self, t: float, style: str) -> float:
        return self.expected(t) - self.prefs.at(t).get(style, 0.0)


@dataclass
class Users:
    """Draws questions and rewards, reproducibly from ``seed`` (each conversation has its own stream)."""

    prefs: Preferences
    questions: list[str]
    seed: int = 0

    @classmethod
    def from_workspace(cls, root: Path, prefs: Preferences, seed: int) -> Users:
        """Questions are the knowledge base's (``data/kb.jsonl``): its questions and their keywords."""
        questions = []
        for line in (Path(root) / "data" / "kb.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                questions.append(entry["question"])
                questions.extend(f"{k}?" for k in entry.get("keywords", [])[:2])
        return cls(prefs, questions, seed)

    def _rng(self, n: int, what: str) -> random.Random:
        return random.Random(f"{self.seed}:{n}:{what}")  # str seeds hash the same in every process

    def question(self, n: int) -> str:
        return self._rng(n, "question").choice(self.questions)

    def reward(self, n: int, t: float, style: str) -> float:
        """Conversation ``n``'s reward at time ``t`` for a reply in ``style``: 1.0 or 0.0."""
        return 1.0 if self._rng(n, "reward").random() < self.prefs.at(t).get(style, 0.0) else 0.0
