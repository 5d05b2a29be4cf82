"""Acme support desk: the default workspace's runner plugin.

It answers customer-support questions offline from a small knowledge base: a scikit-learn TF-IDF index
(word 1-2-grams plus char_wb 3-5-grams) finds the closest entry, and the reply is written in one of
several styles. The style is a parameter (``params["style"]``), so a tuner strategy such as a bandit can
choose between the styles per conversation. Every reply is deterministic text.

The runner exposes one tool, ``answer(question, conversation_id)``; it returns
``{"answer", "entry_id", "score", "style", "fallback"}`` and logs the features ``topic`` (null on a
fallback), ``score``, ``question_length`` (in words) and ``has_order_number`` for rule mining.

Parameters (read from the state's ``params``, with every strategy's decision applied):

* ``style``: ``concise`` | ``friendly`` | ``detailed`` | ``formal`` (default ``friendly``), or a style of
  ``data/styles/`` (below)
* ``top_k``: how many entries to retrieve; ``detailed`` picks its "Related:" entry among them (3)
* ``min_score``: below this best score the reply is a hand-off to a human agent (0.12)
* ``w_question`` / ``w_answer``: weights of the question+keywords and answer similarities (0.7 / 0.3)
* ``max_sentences``: cap on the sentences of the reply's content (the style's greeting and sign-off
  are kept); ``null`` for no cap
* ``tone``: ``null`` (each style's own register) or ``formal`` (every style in the formal register:
  no contractions, and the friendly style greets and signs off formally)

Three places to edit:

1. The knowledge base, ``data/kb.jsonl``: one JSON object a line with ``id`` (unique, kebab-case),
   ``topic``, ``question``, ``answer`` and ``keywords`` (other ways customers phrase it). Add entries or
   keywords when a question is answered wrongly; then add a case to ``tests/``.
2. The styles: ``STYLES`` and the ``_style_*`` methods of ``SupportDesk`` below (greetings, sign-offs,
   the "Related:" line, the formal register). Add a style by adding a method and its name to ``STYLES``,
   or without code as a file ``data/styles/<name>.yaml`` (the ``reply-style`` template writes one):
   ``layout`` (``bullets``: the answer's sentences as "- " lines; ``numbered``: as "1. " lines), an
   optional ``greeting`` line before them and ``closing`` line after them. The files are read when the
   runner starts (a new style is a new minor version, which restarts it).
3. The retrieval weights: ``DEFAULT_PARAMS`` (``w_question``, ``w_answer``, ``min_score``, ``top_k``;
   the state's ``params`` override them) and the index constants below them: ``WORD_WEIGHT`` /
   ``CHAR_WEIGHT`` (word vs character n-grams), ``PHRASE_MAX_WEIGHT`` (whole question+keywords
   document vs its best single phrase), ``STOP_WORDS``, ``PHRASES`` and ``SYNONYMS``. Run the
   workspace's tests after a change: ``tests/full`` holds a paraphrase per entry and an accuracy gate.
"""

import json
import re
import threading
from pathlib import Path
from typing import Annotated, Any, TypedDict

import numpy as np
from pydantic import Field

from ratchet import RunContext, hookimpl

CONVERSATION_ID = Annotated[str, Field(description="the conversation this turn belongs to: the same id for every turn, "
                                                 "and the id feedback refers to")]


class Answer(TypedDict):
    """What ``answer`` returns (its MCP output schema)."""

    answer: Annotated[str, Field(description="the reply text")]
    entry_id: Annotated[str | None, Field(description="the knowledge-base entry the reply is based on; null when "
                                          "the question is handed off to a human agent")]
    score: Annotated[float, Field(description="the retrieval score of that entry")]
    style: Annotated[str, Field(description="the reply style the tuner chose for this conversation")]
    fallback: Annotated[bool, Field(description="whether the reply hands the question off to a human agent")]


STYLES = ("concise", "friendly", "detailed", "formal")
STYLE_DIR = "data/styles"  # more styles, one YAML file each (see the module docstring)
LAYOUTS = ("bullets", "numbered")
_STYLE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,30}$")

DEFAULT_PARAMS: dict[str, Any] = {
    "style": "friendly",
    "top_k": 3,
    "min_score": 0.12,
    "w_question": 0.7,
    "w_answer": 0.3,
    "max_sentences": None,
    "tone": None,
}
TONES = (None, "formal")

# How much the word n-gram and the char n-gram similarities count inside each field's similarity.
WORD_WEIGHT = 0.6
CHAR_WEIGHT = 0.4
# The question side scores each entry by a blend of its whole question+keywords document and its best
# single phrase (the question or one keyword): a short phrase that matches well should count fully.
PHRASE_MAX_WEIGHT = 0.5

# Dropped before indexing: they carry no topic and make unrelated questions look alike.
STOP_WORDS = frozenset(
    """a an the and or but if so of to in on at by for from with about into as is are was were be been
    being am do does did doing have has had having i me my mine we us our you your yours it its this that
    these those there here what which who whom when where why how can could would should will shall may
    might must just please hi hello hey thanks thank any some get got want need like also still yet then
    than too very really s t m d ll re ve
    acme customer customers item items product products thing things something anything everything
    one way know tell let many much lot go going went come came say says said make made put use used try
    time now right back""".split()
)

# Customer phrasings mapped onto the knowledge base's vocabulary. Applied to questions and entries
# alike; the canonical words are *added* after the match, so the exact wording still counts.
# PHRASES are regular expressions over the lower-cased text; "(?: \w+){0,2}" lets an object sit
# inside a phrasal verb ("send the shoes back").
_NOT = r"(?:not|never|won't|wont|can't|cant|cannot|don't|dont|doesn't|doesnt)"
PHRASES: list[tuple[str, str]] = [
    (
        _NOT + r"(?: \w+){0,2} (?:be )?(?:returned|returnable|take(?: \w+){0,2} back|accept(?: \w+){0,2} returns?)",
        "non-returnable",
    ),
    (r"money back", "refund"),
    (r"(?:send|ship|bring|take|mail|post)(?: \w+){0,3} back", "return"),
    (r"log(?:ging)? ?in|sign-in|signing in", "sign in"),
    (r"get (?:here|to me)", "arrive"),
    (r"dropped off|left at", "delivered"),
    (r"two[- ]step", "two-factor"),
]
_PHRASE_RES = [(re.compile(r"\b" + pattern + r"\b"), canonical) for pattern, canonical in PHRASES]
SYNONYMS = {
    "parcel": "package", "box": "package", "shipment": "package",
    "colour": "color",
    "coupon": "discount code", "voucher": "discount code", "promo": "discount code",
    "login": "sign in", "signin": "sign in", "logging": "sign in",
    "2fa": "two-factor", "mfa": "two-factor", "otp": "two-factor",
    "yearly": "annual", "annually": "annual", "year": "annual",
    "membership": "subscription", "tier": "plan",
    "guarantee": "warranty", "guaranteed": "warranty",
    "repair": "fix", "repaired": "fix", "fixed": "fix",
    "broken": "damaged", "cracked": "damaged", "smashed": "damaged", "shattered": "damaged",
    "dented": "damaged", "pieces": "damaged",
    "inbox": "email", "e-mail": "email", "mail": "email",
    "tablet": "device", "computer": "device", "laptop": "device", "mobile": "device",
    "crashes": "crash", "crashed": "crash", "crashing": "crash", "freezing": "crash", "freezes": "crash",
    "frozen": "crash",
    "cost": "price", "costs": "price", "pricing": "price", "fee": "price", "fees": "price",
    "cheaper": "discount", "save": "discount", "saving": "discount",
    "advertisers": "third parties share", "marketers": "third parties share",
    "refunded": "refund", "reimbursed": "refund",
    "passcode": "password", "pw": "password",
    "money": "refund", "street": "address", "deliver": "ship", "signing": "sign",
    "tries": "attempts", "tried": "attempts",
}

ORDER_NUMBER_RE = re.compile(
    r"\bAC-?\d{6,}\b|#\s?\d{4,}\b|\border\s+(?:no\.?|number|#)?\s*:?\s*\d{4,}\b", re.IGNORECASE
)

_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")

# Contractions expanded by the formal style ("'s" is left alone: it is usually a possessive).
_CONTRACTIONS = {"can't": "cannot", "won't": "will not", "shan't": "shall not", "let's": "let us",
                 "it's": "it is", "that's": "that is", "there's": "there is", "what's": "what is"}
_CONTRACTION_RE = re.compile(r"\b(\w+)['\u2019](t|re|ll|ve|m|d|s)\b", re.IGNORECASE)
_SUFFIXES = {"re": "are", "ll": "will", "ve": "have", "m": "am", "d": "would"}


def _expand_contraction(match: re.Match) -> str:
    word = match.group(0).replace("\u2019", "'")
    stem, suffix = match.group(1), match.group(2).lower()
    if word.lower() in _CONTRACTIONS:
        expanded = _CONTRACTIONS[word.lower()]
    elif suffix == "t" and stem.lower().endswith("n"):
        expanded = f"{stem[:-1]} not"
    elif suffix in _SUFFIXES:
        expanded = f"{stem} {_SUFFIXES[suffix]}"
    else:
        return match.group(0)
    return expanded[0].upper() + expanded[1:] if word[0].isupper() else expanded


def formalize(text: str) -> str:
    """Expand contractions ("couldn't" -> "could not", "We'll" -> "We will")."""
    return _CONTRACTION_RE.sub(_expand_contraction, text)


FALLBACK_TEXT = (
    "I'm sorry, I couldn't find a confident answer to that, so I can hand you over to a human agent "
    "from our support team. Reply \"agent\" and we'll connect you, or write to support@acme.example "
    "and we'll answer within 24 hours."
)

_REQUIRED_FIELDS = ("id", "topic", "question", "answer", "keywords")
_ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences at ``.``, ``!`` or ``?`` followed by whitespace and a capital or digit."""
    return [s for s in _SENTENCE_END_RE.split(text.strip()) if s]


def _stem(word: str) -> str:
    """A deliberately tiny stemmer: plural endings only (char n-grams cover the rest)."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def normalize(text: str) -> str:
    """Lower-case, expand synonyms, drop stop words and plural endings (for the index and queries)."""
    text = text.lower().replace("\u2019", "'")
    for pattern, canonical in _PHRASE_RES:
        text = pattern.sub(lambda m, c=canonical: f"{m.group(0)} {c}", text)
    words: list[str] = []
    for token in _TOKEN_RE.findall(text):
        token = token.replace("'", "")
        for word in [token, *SYNONYMS.get(token, "").split()]:
            if word not in STOP_WORDS:
                words.append(_stem(word))
    return " ".join(words)


def load_kb(path: Path) -> list[dict[str, Any]]:
    """Read and validate a knowledge base (JSON lines); errors name the file and line."""
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON ({exc.msg})") from exc
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: each line must be a JSON object")
            missing = [f for f in _REQUIRED_FIELDS if f not in entry]
            if missing:
                raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
            for f in ("id", "topic", "question", "answer"):
                if not isinstance(entry[f], str) or not entry[f].strip():
                    raise ValueError(f"{where}: {f!r} must be a non-empty string")
            if not isinstance(entry["keywords"], list) or not all(isinstance(k, str) for k in entry["keywords"]):
                raise ValueError(f"{where}: 'keywords' must be a list of strings")
            if not _ID_RE.match(entry["id"]):
                raise ValueError(f"{where}: id {entry['id']!r} is not kebab-case")
            if entry["id"] in seen:
                raise ValueError(f"{where}: duplicate id {entry['id']!r}")
            seen.add(entry["id"])
            entries.append(entry)
    if not entries:
        raise ValueError(f"{path}: the knowledge base is empty")
    return entries


def load_styles(folder: Path) -> dict[str, dict[str, Any]]:
    """The styles of ``folder/*.yaml`` by name (none if the folder does not exist); errors name the file."""
    import yaml

    styles: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("*.yaml")) if Path(folder).is_dir() else ():
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: invalid YAML ({exc})") from exc
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: a style is a mapping with name, layout, greeting and closing")
        unknown = sorted(set(spec) - {"name", "layout", "greeting", "closing", "description"})
        if unknown:
            raise ValueError(f"{path}: unknown key {unknown[0]!r}; a style has name, layout, greeting, closing")
        name = spec.get("name")
        if not isinstance(name, str) or not _STYLE_NAME_RE.match(name) or name != path.stem:
            raise ValueError(f"{path}: name must be the file's name ({path.stem!r}) in lowercase letters, digits, _")
        if name in STYLES:
            raise ValueError(f"{path}: {name!r} is a built-in style; give the new style another name")
        if spec.get("layout") not in LAYOUTS:
            raise ValueError(f"{path}: layout must be one of {', '.join(LAYOUTS)}, got {spec.get('layout')!r}")
        for key in ("greeting", "closing"):
            if not isinstance(spec.get(key, ""), str):
                raise ValueError(f"{path}: {key} must be a string")
        styles[name] = {"layout": spec["layout"], "greeting": spec.get("greeting", "").strip(),
                        "closing": spec.get("closing", "").strip()}
    return styles


class SupportDesk:
    """Retrieval over the knowledge base plus styled, deterministic replies.

    The index is built on first use (or by ``build()``), once, under a lock; afterwards it is read-only,
    so one instance can serve concurrent calls.
    """

    def __init__(self, kb_path: Path | str, defaults: dict[str, Any] | None = None,
                 styles: dict[str, dict[str, Any]] | None = None):
        self.kb_path = Path(kb_path)
        if not self.kb_path.is_file():
            raise FileNotFoundError(f"knowledge base not found: {self.kb_path}")
        self.styles = dict(styles or {})  # from data/styles/ (load_styles)
        self.defaults = {**DEFAULT_PARAMS, **(defaults or {})}
        self._lock = threading.Lock()
        self._index: dict[str, Any] | None = None

    # ------------------------------------------------------------------ index

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self._ensure_index()["entries"]

    def build(self) -> "SupportDesk":
        """Load the knowledge base and build the index now (otherwise done on the first search)."""
        self._ensure_index()
        return self

    def _ensure_index(self) -> dict[str, Any]:
        index = self._index
        if index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._build_index()
                index = self._index
        return index

    def _build_index(self) -> dict[str, Any]:
        # scikit-learn is imported here so that loading the plugin stays cheap.
        from sklearn.feature_extraction.text import TfidfVectorizer

        entries = load_kb(self.kb_path)
        q_docs = [normalize(e["question"] + " " + " ".join(e["keywords"]) + " " + e["topic"]) for e in entries]
        a_docs = [normalize(e["answer"]) for e in entries]
        word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"\S+")
        char = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
        corpus = q_docs + a_docs
        word.fit(corpus)
        char.fit(corpus)
        phrases, owners = [], []
        for i, e in enumerate(entries):
            for phrase in [e["question"], *e["keywords"]]:
                text = normalize(phrase)
                if text:
                    phrases.append(text)
                    owners.append(i)
        return {
            "entries": entries,
            "word": word,
            "char": char,
            "questions": (word.transform(q_docs), char.transform(q_docs)),
            "answers": (word.transform(a_docs), char.transform(a_docs)),
            "phrases": (word.transform(phrases), char.transform(phrases)),
            "phrase_owner": np.asarray(owners),
        }

    def _similarities(self, question: str, w_question: float, w_answer: float):
        index = self._ensure_index()
        text = normalize(question)
        qw, qc = index["word"].transform([text]), index["char"].transform([text])

        def field_sim(mats):
            # TfidfVectorizer rows are L2-normalised, so dot products are cosine similarities.
            sim_w = (mats[0] @ qw.T).toarray().ravel()
            sim_c = (mats[1] @ qc.T).toarray().ravel()
            return WORD_WEIGHT * sim_w + CHAR_WEIGHT * sim_c

        best_phrase = np.zeros(len(index["entries"]))
        np.maximum.at(best_phrase, index["phrase_owner"], field_sim(index["phrases"]))
        question_sim = (1 - PHRASE_MAX_WEIGHT) * field_sim(index["questions"]) + PHRASE_MAX_WEIGHT * best_phrase
        answer_sim = field_sim(index["answers"])
        return (w_question * question_sim + w_answer * answer_sim) / (w_question + w_answer)

    def search(
        self,
        question: str,
        top_k: int = 3,
        w_question: float | None = None,
        w_answer: float | None = None,
    ) -> list[dict[str, Any]]:
        """The ``top_k`` best entries for ``question``, best first, each a copy with its ``score`` (0-1).

        Ties are broken by knowledge-base order, so results are deterministic.
        """
        wq = self.defaults["w_question"] if w_question is None else w_question
        wa = self.defaults["w_answer"] if w_answer is None else w_answer
        _check_weights(wq, wa)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        scores = self._similarities(question, float(wq), float(wa))
        entries = self._ensure_index()["entries"]
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{**entries[i], "score": float(scores[i])} for i in order]

    # ------------------------------------------------------------------ the tool

    def answer(self, question: Annotated[str, Field(description="the customer's question, as they wrote it")],
               conversation_id: CONVERSATION_ID, run: RunContext) -> Answer:
        """Answer a customer-support question about Acme orders, shipping, returns, billing, accounts,
        subscriptions, privacy, warranty or technical problems from the knowledge base.

        Returns the reply text (``answer``), the knowledge-base entry it is based on (``entry_id``,
        null when the question is handed off to a human agent), the retrieval ``score``, the reply
        ``style`` and whether it is a ``fallback`` hand-off.
        """
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string (the customer's question as text)")
        if not isinstance(conversation_id, str) or not conversation_id.strip():
            raise ValueError("conversation_id must be a non-empty string")
        params = self._params(run.params if run is not None else {})

        hits = self.search(question, params["top_k"], params["w_question"], params["w_answer"])
        best = hits[0]
        score = round(best["score"], 4)
        fallback = best["score"] < params["min_score"]
        if fallback:
            text = self._render(params["style"], None, [], params["max_sentences"], params["tone"])
        else:
            text = self._render(params["style"], best, hits[1:], params["max_sentences"], params["tone"])

        if run is not None:
            run.log_features(
                topic=None if fallback else best["topic"],
                score=score,
                question_length=len(question.split()),
                has_order_number=bool(ORDER_NUMBER_RE.search(question)),
            )
        return {
            "answer": text,
            "entry_id": None if fallback else best["id"],
            "score": score,
            "style": params["style"],
            "fallback": fallback,
        }

    def _params(self, overrides: dict[str, Any] | None) -> dict[str, Any]:
        params = dict(self.defaults)
        for key in DEFAULT_PARAMS:
            if overrides and key in overrides:
                params[key] = overrides[key]
        style = params["style"]
        if style not in STYLES and style not in self.styles:
            raise ValueError(f"unknown style {style!r}; valid styles are: {', '.join([*STYLES, *self.styles])}")
        top_k = params["top_k"]
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        max_sentences = params["max_sentences"]
        if max_sentences is not None and (
            not isinstance(max_sentences, int) or isinstance(max_sentences, bool) or max_sentences < 1
        ):
            raise ValueError(f"max_sentences must be a positive integer or null, got {max_sentences!r}")
        min_score = params["min_score"]
        if not isinstance(min_score, (int, float)) or isinstance(min_score, bool):
            raise ValueError(f"min_score must be a number, got {min_score!r}")
        _check_weights(params["w_question"], params["w_answer"])
        if params["tone"] not in TONES:
            raise ValueError(f"tone must be null or 'formal', got {params['tone']!r}")
        return params

    # ------------------------------------------------------------------ styles

    def _render(
        self,
        style: str,
        entry: dict[str, Any] | None,
        others: list[dict[str, Any]],
        max_sentences: int | None,
        tone: str | None = None,
    ) -> str:
        body = FALLBACK_TEXT if entry is None else entry["answer"]
        if tone == "formal" and style == "friendly":
            return self._friendly_formal(body, entry, max_sentences)
        if style in self.styles:
            text = self._layout(self.styles[style], body, max_sentences)
        else:
            text = getattr(self, f"_style_{style}")(body, entry, others, max_sentences)
        return formalize(text) if tone == "formal" else text

    @staticmethod
    def _cap(text: str, max_sentences: int | None) -> str:
        sentences = split_sentences(text)
        if max_sentences is not None:
            sentences = sentences[:max_sentences]
        return " ".join(sentences)

    def _style_concise(self, body, entry, others, max_sentences):
        """One sentence: the core fact."""
        return split_sentences(body)[0]

    def _style_friendly(self, body, entry, others, max_sentences):
        """A warm greeting, the answer, and an offer of further help."""
        closing = (
            "Is there anything else I can help you with? I'm happy to help!"
            if entry is not None
            else "Thanks for your patience!"
        )
        return f"Hi there, thanks for reaching out! {self._cap(body, max_sentences)} {closing}"

    def _friendly_formal(self, body, entry, max_sentences):
        """The friendly style in the formal register: a courteous greeting and sign-off, no contractions."""
        closing = (
            "Please let us know if there is anything else we can help you with."
            if entry is not None
            else "Thank you for your patience."
        )
        return f"Hello, and thank you for contacting us. {formalize(self._cap(body, max_sentences))} {closing}"

    def _style_detailed(self, body, entry, others, max_sentences):
        """The full answer plus a "Related:" line from a neighbouring entry."""
        if entry is None:
            topics = sorted({e["topic"] for e in self.entries})
            extra = f"Topics I can help with: {', '.join(topics)}."
        else:
            related = self._related(entry, others)
            extra = ""
            if related is not None:
                extra = f"Related: {related['question']} {split_sentences(related['answer'])[0]}"
        text = f"{body} {extra}".strip()
        return self._cap(text, max_sentences)

    def _style_formal(self, body, entry, others, max_sentences):
        """A formal register: salutation, no contractions, formal sign-off."""
        expanded = formalize(self._cap(body, max_sentences))
        return (
            f"Dear customer, thank you for your enquiry. {expanded} Should you require any further "
            "assistance, please do not hesitate to contact us. Kind regards, Acme Customer Support."
        )

    def _layout(self, spec: dict[str, Any], body: str, max_sentences: int | None) -> str:
        """A style of ``data/styles/``: its greeting, the answer's sentences as a list, its closing."""
        sentences = split_sentences(self._cap(body, max_sentences))
        marks = ["-"] * len(sentences) if spec["layout"] == "bullets" else [f"{i}." for i in range(1, len(sentences) + 1)]
        lines = [f"{mark} {s}" for mark, s in zip(marks, sentences)]
        return "\n".join(x for x in (spec["greeting"], *lines, spec["closing"]) if x)

    def _related(self, entry: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any] | None:
        """A related entry: the best other hit of the same topic, else the next entry of that topic in
        the knowledge base, else the best other hit."""
        same = [h for h in others if h["topic"] == entry["topic"] and h["score"] > 0]
        if same:
            return same[0]
        entries = self.entries
        topic_mates = [e for e in entries if e["topic"] == entry["topic"] and e["id"] != entry["id"]]
        if topic_mates:
            pos = next(i for i, e in enumerate(entries) if e["id"] == entry["id"])
            after = [e for e in topic_mates if entries.index(e) > pos]
            return (after or topic_mates)[0]
        positive = [h for h in others if h["score"] > 0]
        return positive[0] if positive else None


def _check_weights(w_question: Any, w_answer: Any) -> None:
    for name, w in (("w_question", w_question), ("w_answer", w_answer)):
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
            raise ValueError(f"{name} must be a non-negative number, got {w!r}")
    if w_question + w_answer <= 0:
        raise ValueError("w_question + w_answer must be positive")


@hookimpl
def ratchet_extract_features(tool, arguments):
    """Features known before the answer is computed: what strategies (e.g. rules) can condition on."""
    if tool != "answer":
        return None
    question = str(arguments.get("question") or "")
    return {"question_length": len(question.split()),
            "has_order_number": bool(ORDER_NUMBER_RE.search(question))}


@hookimpl
def ratchet_register_runner_tools(register, workspace):
    desk = SupportDesk(workspace.root / "data" / "kb.jsonl", styles=load_styles(workspace.root / STYLE_DIR))
    desk._ensure_index()  # build it while the server starts, not during the first user's call
    register(desk.answer)
