"""Text normalisation applied before tokenization: HTML, NFKC, lowercase, whitespace cleanup, stop-word removal.

The same `Normalizer` is applied to training text, prompts and evaluation text, so it is a small pure function of
its settings. Steps run in a fixed order: HTML (`<br />` → newline, other tags dropped, entities
decoded) → NFKC → lowercase → whitespace collapse → stop words (after which the spaces
a removed word leaves behind are tidied). Every step keeps newlines, and none of them merges text across a newline,
so a long document can be normalised piece by piece (cut at line boundaries) with the same result as in one go.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata
from pathlib import Path
from typing import Any

from llmctl.errors import ConfigError, DataError

# A conventional English stop-word list (articles, pronouns, auxiliaries, prepositions, conjunctions). Negations
# ("no", "not", "nor", "n't" forms) are deliberately kept: they flip the meaning classifiers have to learn.
ENGLISH_STOPWORDS: frozenset[str] = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but
by can could did do does doing down during each few for from further had has have having he he'd he'll he's her here
here's hers herself him himself his how how's i i'd i'll i'm i've if in into is it it's its itself let's me more most
my myself of off on once only or other ought our ours ourselves out over own same she she'd she'll she's should so
some such than that that's the their theirs them themselves then there there's these they they'd they'll they're
they've this those through to too under until up very was we we'd we'll we're we've were what what's when when's
where where's which while who who's whom why why's will with would you you'd you'll you're you've your yours yourself
yourselves
""".split())

BUILTIN_STOPWORDS = {"english": ENGLISH_STOPWORDS}

_BREAK = re.compile(r"<br[ \t]*/?[ \t]*>", re.IGNORECASE)                 # an HTML line break
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>\n]*)?/?>")     # any other tag, within one line
_SPACES = re.compile(r"[^\S\n]+")          # whitespace runs other than newlines
_LINE_EDGES = re.compile(r" *\n *")        # spaces around a newline
_WORD = re.compile(r"[\w']+")               # a word for stop-word matching (keeps contractions whole)
_GAPS = re.compile(r"[ \t]{2,}")            # double spaces a removed word leaves behind


def load_stopwords(spec: str | None) -> tuple[frozenset[str], dict[str, Any] | None]:
    """The stop-word set for `spec` (`english` or a one-word-per-line file) and a description for fingerprints.

    A relative path was made absolute against its config file by `llmctl.config` (else: the current directory).
    Blank lines and `#` comments are ignored;
    words are compared lowercased.
    """
    if spec is None:
        return frozenset(), None
    builtin = BUILTIN_STOPWORDS.get(spec.strip().lower())
    if builtin is not None:
        return builtin, {"list": spec.strip().lower()}
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"data.normalize.stopwords: `{spec}` is neither a built-in list nor an existing file",
                          hint=f"use one of {', '.join(sorted(BUILTIN_STOPWORDS))} or a path to a "
                               "one-word-per-line file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"stop-word file {path} is not UTF-8 (byte {exc.start})",
                        hint="save it as UTF-8 text, one word per line") from None
    words = frozenset(line.strip().lower() for line in text.splitlines()
                      if line.strip() and not line.lstrip().startswith("#"))
    if not words:
        raise DataError(f"stop-word file {path} holds no words", hint="write one word per line")
    return words, {"file": str(path.resolve()), "sha256": hashlib.sha256(raw).hexdigest(), "words": len(words)}


class Normalizer:
    """Callable `text -> text` for one `NormalizeConfig`; `settings()` describes it for manifests/fingerprints."""

    def __init__(self, cfg) -> None:
        self.html = bool(getattr(cfg, "html", False))
        self.nfkc = bool(cfg.nfkc)
        self.lowercase = bool(cfg.lowercase)
        self.collapse_whitespace = bool(cfg.collapse_whitespace)
        self.stopwords, self._stop_info = load_stopwords(cfg.stopwords)

    @property
    def identity(self) -> bool:
        """True when normalisation leaves every text unchanged (the default)."""
        return not (self.html or self.nfkc or self.lowercase or self.collapse_whitespace or self.stopwords)

    def settings(self) -> dict[str, Any]:
        """Plain-data description of what this normaliser does (stop-word files by content hash)."""
        out = {"nfkc": self.nfkc, "lowercase": self.lowercase, "collapse_whitespace": self.collapse_whitespace,
               "stopwords": self._stop_info}
        if self.html:  # only when on: datasets written before the option keep their fingerprints
            out["html"] = True
        return out

    def __call__(self, text: str) -> str:
        if self.html and ("<" in text or "&" in text):
            text = html.unescape(_TAG.sub("", _BREAK.sub("\n", text)))
        if self.nfkc and not text.isascii():  # ASCII is already NFKC: skip the call on the common fast path
            text = unicodedata.normalize("NFKC", text)
        if self.lowercase:
            text = text.lower()
        if self.collapse_whitespace:
            text = _LINE_EDGES.sub("\n", _SPACES.sub(" ", text))
            text = text.strip(" ")
        if self.stopwords:
            text = self._remove_stopwords(text)
        return text

    def _remove_stopwords(self, text: str) -> str:
        stop = self.stopwords
        text = _WORD.sub(lambda m: "" if m.group().lower() in stop else m.group(), text)
        return _LINE_EDGES.sub("\n", _GAPS.sub(" ", text)).strip(" ")
