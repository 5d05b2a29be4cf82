"""The demo's simulated users: hidden preferences over reply styles that drift at a known time, a
style they ask for in free text, and the oracle that knows it all.

Each conversation asks one question from the workspace's knowledge base; the user then rewards the
reply 1 or 0, a Bernoulli draw with the probability the population's hidden preferences give the
style the runner chose. At ``drift_at`` seconds the preferences change (users who liked short
answers now want detailed ones): the tuner's bandit must absorb that by itself. After the drift the
users would like a style that does not exist yet, ``bullets``, best of all, and at ``ask_at`` seconds
one of them says so in free text (:data:`REQUEST`): only the Architect can add a style.

The oracle knows the tables and the drift time and always serves the best style *the runner can
render*: the four built-in ones, and a new one from the first reply in that style. The regret of an
event is the oracle's expected reward minus the expected reward of the style actually served
(pseudo-regret: no luck of the draw in it).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

STYLES = ("concise", "friendly", "detailed", "formal")  # what the default workspace's runner renders
NEW_STYLE = "bullets"  # what the users ask for; the playbook rule new-reply-style adds it
REQUEST = ("Could you answer with bullet points? Your answers are right, but I have to read a whole paragraph "
           "to find the one step I need.")

# Before the drift short answers win and long ones are disliked; after it detailed answers win and the
# old favourite is merely mediocre. The exploration mean before the drift (0.6) stays above the demo's
# SLO (0.5), so learning alone does not wake the Architect. After the drift a stationary bandit stays
# on the old favourite (0.4, below the SLO) for a long time: it has hundreds of good rewards for it,
# and the arm that is now best looked hopeless before the drift; a bandit that detects the change
# restarts and finds detailed answers. Bullet points (not a style before the Architect adds it) beat
# every built-in style after the drift, by enough (0.98 vs 0.9) for the bandit to learn it in seconds.
BEFORE = {"concise": 0.9, "friendly": 0.75, "detailed": 0.05, "formal": 0.7, NEW_STYLE: 0.6}
AFTER = {"concise": 0.4, "friendly": 0.2, "detailed": 0.9, "formal": 0.15, NEW_STYLE: 0.98}

@dataclass(frozen=True)
class Preferences:
    """The population's hidden probability of rewarding each style, before and after the drift."""

    before: dict[str, float] = field(default_factory=lambda: dict(BEFORE))
    after: dict[str, float] = field(default_factory=lambda: dict(AFTER))
    drift_at: float = 30.0  # seconds after the users start
    ask_at: float | None = None  # when a user asks for NEW_STYLE in free text (None: nobody does)

    def at(self, t: float) -> dict[str, float]:
        return self.before if t < self.drift_at else self.after

    def best(self, t: float, styles=STYLES) -> str:
        table = self.at(t)
        return max(styles, key=lambda s: table.get(s, 0.0))

    def to_dict(self) -> dict:
        return {"before": self.before, "after": self.after, "drift_at_seconds": self.drift_at,
                "best_before": self.best(0.0), "best_after": self.best(self.drift_at),
                "new_style": NEW_STYLE, "ask_at_seconds": self.ask_at, "request": REQUEST,
                "best_with_new_style": self.best(self.drift_at, (*STYLES, NEW_STYLE))}


class Oracle:
    """Knows the hidden preferences and the drift time: the best style the runner can render and its
    expected reward. A style beyond the built-in ones counts from :meth:`available`'s ``since`` on."""

    def __init__(self, prefs: Preferences):
        self.prefs = prefs
        self.since: dict[str, float] = {s: float("-inf") for s in STYLES}

    def available(self, style: str, since: float) -> None:
        """``style`` can be rendered from ``since`` seconds on (the first reply in it proves it)."""
        self.since[style] = min(self.since.get(style, since), since)

    def styles(self, t: float) -> list[str]:
        return [s for s, since in self.since.items() if since <= t]

    def expected(self, t: float) -> float:
        table = self.prefs.at(t)
        return max(table.get(s, 0.0) for s in self.styles(t))

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
