"""Tokenizers for llmctl: ``char``, ``word`` and byte-level ``bpe``.

All three kinds share one interface (:class:`Tokenizer`) and the same five
special tokens at fixed ids (``<pad>``=0, ``<unk>``=1, ``<bos>``=2,
``<eos>``=3, ``<sep>``=4), so ids never shift between kinds or vocab sizes.

* ``char`` -- one token per Unicode code point (combining marks and emoji
  modifiers are tokens of their own); lossless for in-vocabulary text.
* ``word`` -- Unicode-aware words and punctuation, see :func:`split_words`;
  each CJK character is its own token; decoding re-inserts spaces
  heuristically and is not lossless.
* ``bpe`` -- byte-level BPE trained with the Hugging Face ``tokenizers``
  library; lossless for any text.

Training streams its input (:func:`train_tokenizer`); :meth:`Tokenizer.save`
writes a ``tokenizer.json`` that ``tokenizers.Tokenizer.from_file`` can load
for every kind, plus ``llmctl_tokenizer.json`` metadata that
:func:`load_tokenizer` reads back.

This module must stay importable without TensorFlow: it uses only the
standard library (``re`` rather than the third-party ``regex``) and the HF
``tokenizers`` package.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
import re
import sys
import unicodedata
from abc import ABC, abstractmethod
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache
from itertools import repeat
from pathlib import Path
from typing import Any, Final

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from llmctl import atomic

__all__ = [
    "BOS_ID",
    "DEFAULT_BPE_VOCAB_SIZE",
    "EOS_ID",
    "FORMAT_VERSION",
    "HF_TOKENIZER_FILE",
    "METADATA_FILE",
    "PAD_ID",
    "SEP_ID",
    "SPECIAL_TOKENS",
    "TOKENIZER_KINDS",
    "UNK_ID",
    "BpeTokenizer",
    "CharTokenizer",
    "Tokenizer",
    "WordTokenizer",
    "load_tokenizer",
    "split_words",
    "tokenizer_from_counts",
    "train_tokenizer",
]

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

PAD_ID: Final = 0
UNK_ID: Final = 1
BOS_ID: Final = 2
EOS_ID: Final = 3
SEP_ID: Final = 4
#: Special tokens; a token's index in this list is its id in every tokenizer.
SPECIAL_TOKENS: Final[list[str]] = ["<pad>", "<unk>", "<bos>", "<eos>", "<sep>"]
_NUM_SPECIAL: Final = len(SPECIAL_TOKENS)

TOKENIZER_KINDS: Final = ("char", "word", "bpe")
#: Hugging Face ``tokenizers`` file written by :meth:`Tokenizer.save`.
HF_TOKENIZER_FILE: Final = "tokenizer.json"
#: llmctl metadata file written by :meth:`Tokenizer.save`.
METADATA_FILE: Final = "llmctl_tokenizer.json"
#: Version of the ``llmctl_tokenizer.json`` layout.
FORMAT_VERSION: Final = 1
_METADATA_FORMAT: Final = "llmctl-tokenizer"
#: BPE target size used when ``vocab_size`` is not given (the config default).
DEFAULT_BPE_VOCAB_SIZE: Final = 8000
_BYTE_ALPHABET_SIZE: Final = 256
#: Bumped whenever a kind's text -> token rules change, so that fingerprints
#: (used as cache keys) change with them.
_SCHEME_VERSION: Final = {"char": 1, "word": 1, "bpe": 1}

# --------------------------------------------------------------------------
# Word splitting
# --------------------------------------------------------------------------
# A word-level token is one of
#   * a CJK character (ranges below), plus any combining marks after it;
#   * a run of word characters (``\w`` minus CJK) and combining marks that
#     starts with a word character ("naïve" and "e\u0301" stay whole);
#   * a symbol -- anything neither ``\w`` nor whitespace, or a pair of
#     regional indicators (a flag) -- plus combining marks / skin-tone
#     modifiers after it, chained with ZERO WIDTH JOINER into one emoji
#     sequence.
# Python's ``re`` has no ``\p{..}`` classes, so the combining-mark class is
# derived from ``unicodedata`` on first use; the same rules are written in
# Oniguruma syntax for the ``tokenizer.json`` pre-tokenizer.

#: Han ideographs (incl. extensions and compatibility blocks), 々〆〇, kana and
#: bopomofo: scripts written without spaces, so each character is one token.
_CJK_RANGES: Final = (
    (0x3005, 0x3007),
    (0x3040, 0x30FF),
    (0x3100, 0x312F),
    (0x31A0, 0x31BF),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0xFF66, 0xFF9F),
    (0x20000, 0x2FA1F),
    (0x30000, 0x323AF),
)
_SKIN_TONE_RANGE: Final = (0x1F3FB, 0x1F3FF)
_REGIONAL_INDICATOR_RANGE: Final = (0x1F1E6, 0x1F1FF)
_ZWJ: Final = 0x200D
#: Planes that contain combining marks (BMP, SMP and the variation-selector
#: supplement in plane 14); scanning only these keeps the one-off cost ~15 ms.
_MARK_SCAN_SPANS: Final = ((0, 0x20000), (0xE0000, 0xE1000))
_MARK_CATEGORIES: Final = frozenset({"Mn", "Mc", "Me"})

#: ASCII-only text has no CJK, marks or emoji, so the rules above reduce to
#: this much cheaper pattern (~2x faster); ``\s`` here is Unicode ``\s``,
#: which also covers the ASCII separators U+001C..U+001F like ``str.split``.
_ASCII_WORD_RE: Final = re.compile(r"[A-Za-z0-9_]+|[^A-Za-z0-9_\s]")


def _code_point_ranges(predicate: Callable[[str], bool], start: int, stop: int) -> list[tuple[int, int]]:
    """Return maximal inclusive ranges of code points in [start, stop) satisfying ``predicate``."""
    ranges: list[tuple[int, int]] = []
    run_start: int | None = None
    for cp in range(start, stop):
        if predicate(chr(cp)):
            if run_start is None:
                run_start = cp
        elif run_start is not None:
            ranges.append((run_start, cp - 1))
            run_start = None
    if run_start is not None:
        ranges.append((run_start, stop - 1))
    return ranges


def _class_body(ranges: Iterable[tuple[int, int]], escape: Callable[[int], str]) -> str:
    """Render inclusive code point ranges as the inside of a ``[...]`` class."""
    return "".join(escape(lo) if lo == hi else f"{escape(lo)}-{escape(hi)}" for lo, hi in ranges)


def _py_escape(cp: int) -> str:
    return f"\\U{cp:08X}"


def _onig_escape(cp: int) -> str:
    return f"\\x{{{cp:X}}}"


#: Bump when the derivation of a cached table changes (see :func:`_cached_table`).
_TABLES_VERSION: Final = 1


def _cached_table(name: str, compute: Callable[[], bytes]) -> bytes:
    """A derived Unicode table, computed once per machine and Unicode version (``llmctl.machine_cache``): deriving
    them scans every code point (~0.25 s, paid by every preprocess run otherwise)."""
    from llmctl.machine_cache import cached_bytes

    key = "|".join(map(str, (name, _TABLES_VERSION, sys.version, unicodedata.unidata_version, _CJK_RANGES,
                              _SKIN_TONE_RANGE, _REGIONAL_INDICATOR_RANGE, _ZWJ, _MARK_SCAN_SPANS,
                              sorted(_MARK_CATEGORIES))))
    return cached_bytes(name, key, compute)


def _ranges_to_bytes(ranges: Iterable[tuple[int, int]]) -> bytes:
    return array("I", [v for pair in ranges for v in pair]).tobytes()


def _ranges_from_bytes(data: bytes) -> tuple[tuple[int, int], ...]:
    values = array("I")
    values.frombytes(data)
    return tuple(zip(values[0::2], values[1::2], strict=True))


@cache
def _mark_ranges() -> tuple[tuple[int, int], ...]:
    """Combining marks (Mn, Mc, Me) per this Python's ``unicodedata``."""
    def compute() -> bytes:
        ranges: list[tuple[int, int]] = []
        for start, stop in _MARK_SCAN_SPANS:
            ranges += _code_point_ranges(lambda c: unicodedata.category(c) in _MARK_CATEGORIES, start, stop)
        return _ranges_to_bytes(ranges)

    return _ranges_from_bytes(_cached_table("mark-ranges", compute))


@cache
def _whitespace_ranges() -> tuple[tuple[int, int], ...]:
    """``str.isspace`` code points (all in the BMP)."""
    return _ranges_from_bytes(_cached_table("space-ranges",
                                            lambda: _ranges_to_bytes(_code_point_ranges(str.isspace, 0, 0x10000))))


@cache
def _word_re() -> re.Pattern[str]:
    """Compile the general (non-ASCII) word-splitting pattern."""
    extenders = (*_mark_ranges(), _SKIN_TONE_RANGE)
    # Every extender is >= U+0300, so the lookahead lets the (slow, range
    # scanning) extender class be skipped after ASCII/Latin-1 characters.
    assert min(lo for lo, _ in extenders) >= 0x300
    ext = f"(?=[^\\x00-\\u02FF])[{_class_body(extenders, _py_escape)}]"
    cjk = f"[{_class_body(_CJK_RANGES, _py_escape)}]"
    word = f"[^\\W{_class_body(_CJK_RANGES, _py_escape)}]"
    ri = f"[{_class_body([_REGIONAL_INDICATOR_RANGE], _py_escape)}]"
    unit = f"(?:{ri}{ri}|[^\\w\\s])"
    zwj = _py_escape(_ZWJ)
    return re.compile(f"{word}+(?:{ext}+{word}*)*|{cjk}(?:{ext})*|{unit}(?:{ext})*(?:{zwj}{unit}(?:{ext})*)*")


#: Classes of :func:`_word_classes`: whitespace; a word character (``\\w``
#: outside the CJK ranges); a character that is a token on its own when no
#: complex character is near (symbols, CJK); a complex character (combining
#: mark, skin tone, regional indicator, ZERO WIDTH JOINER) whose token depends
#: on its neighbours.
WORD_SPACE: Final = 0
WORD_CHAR: Final = 1
WORD_SINGLE: Final = 2
WORD_COMPLEX: Final = 3


@cache
def _word_classes() -> bytes:
    """The class of every code point (index) for vectorised word splitting.

    Derived with the same ``re`` classes as :func:`_word_re`, so in a
    whitespace-delimited span without :data:`WORD_COMPLEX` characters the
    tokens of :func:`split_words` are exactly the maximal runs of
    :data:`WORD_CHAR` and the single :data:`WORD_SINGLE` characters.
    """
    table = _cached_table("word-classes", _compute_word_classes)
    if len(table) != 0x110000:  # a damaged cache entry that still decompressed
        table = _compute_word_classes()
    return table


def _compute_word_classes() -> bytes:
    codes = array("I", range(0x110000))
    assert codes.itemsize == 4
    every = codes.tobytes().decode("utf-32-le" if sys.byteorder == "little" else "utf-32-be", "surrogatepass")
    table = bytearray([WORD_SINGLE]) * 0x110000
    cjk = _class_body(_CJK_RANGES, _py_escape)
    for pattern, value in ((f"[^\\W{cjk}]+", WORD_CHAR), (r"\s+", WORD_SPACE)):
        for match in re.finditer(pattern, every):
            table[match.start():match.end()] = bytes([value]) * (match.end() - match.start())
    for lo, hi in (*_mark_ranges(), _SKIN_TONE_RANGE, _REGIONAL_INDICATOR_RANGE, (_ZWJ, _ZWJ)):
        table[lo:hi + 1] = bytes([WORD_COMPLEX]) * (hi + 1 - lo)
    return bytes(table)


@cache
def _onig_word_pattern() -> str:
    """The :func:`split_words` rules as an Oniguruma pattern for ``tokenizer.json``.

    Divergence from :func:`split_words`: Python classifies characters with
    its own ``unicodedata`` (Unicode 14.0 on Python 3.11) while Oniguruma
    ships newer tables, so characters assigned after Python's Unicode version
    are symbols for us but may be letters/marks for Hugging Face.  Everything
    else (``\\w`` == ``[\\p{L}\\p{N}_]``, marks == ``\\p{M}``, whitespace ==
    ``str.isspace``) matches exactly.
    """
    whitespace = _whitespace_ranges()
    cjk = _class_body(_CJK_RANGES, _onig_escape)
    word = f"[\\p{{L}}\\p{{N}}_&&[^{cjk}]]"
    ext = f"[\\p{{M}}{_class_body([_SKIN_TONE_RANGE], _onig_escape)}]"
    symbol = f"[^\\p{{L}}\\p{{N}}_{_class_body(whitespace, _onig_escape)}]"
    ri = f"[{_class_body([_REGIONAL_INDICATOR_RANGE], _onig_escape)}]"
    unit = f"(?:{ri}{ri}|{symbol})"
    zwj = _onig_escape(_ZWJ)
    return f"{word}+(?:{ext}+{word}*)*|[{cjk}]{ext}*|{unit}{ext}*(?:{zwj}{unit}{ext}*)*"


def split_words(text: str) -> list[str]:
    """Split ``text`` into word-level tokens (the ``word`` kind's pre-tokenizer).

    Whitespace separates tokens and is dropped; ``\\w`` runs are words, each
    CJK character is a token, every other character is a punctuation/symbol
    token.  Combining marks stay attached to the character before them and
    emoji ZWJ sequences, skin tones and flags stay whole.

    >>> split_words("Hello, 世界! naïve")
    ['Hello', ',', '世', '界', '!', 'naïve']
    """
    if text.isascii():
        return _ASCII_WORD_RE.findall(text)
    return _word_re().findall(text)


# Spacing rules used by WordTokenizer.decode.
_CLOSING_CHARS: Final = frozenset(".,;:!?%…。，、；：！？")
_OPENING_CHARS: Final = frozenset("¿¡")
_INTRA_WORD_JOINERS: Final = frozenset("'’-")
_CJK_PUNCTUATION_RANGES: Final = ((0x3000, 0x303F), (0xFF00, 0xFF65))


def _is_cjk_like(token: str) -> bool:
    cp = ord(token[0])
    return any(lo <= cp <= hi for lo, hi in (*_CJK_RANGES, *_CJK_PUNCTUATION_RANGES))


def _is_word(token: str) -> bool:
    return token[0].isalnum() or token[0] == "_"


def _is_opening(token: str) -> bool:
    return token[-1] in _OPENING_CHARS or unicodedata.category(token[-1]) in ("Ps", "Pi")


def _is_closing(token: str) -> bool:
    return token[0] in _CLOSING_CHARS or unicodedata.category(token[0]) in ("Pe", "Pf")


def _detokenize(tokens: Sequence[str]) -> str:
    """Join word-level tokens with heuristic spacing (a lossy inverse of :func:`split_words`).

    No space goes before closing punctuation (``.,;:!?%``, closing brackets
    and quotes), after opening brackets and quotes, between two CJK
    characters, or around ``'``/``’``/``-`` between two words (``don't``,
    ``well-known``); ASCII double quotes alternately open and close.
    Everything else is separated by one space.
    """
    parts: list[str] = []
    quote_open = False
    glue_next = True  # no space before the first token
    for k, token in enumerate(tokens):
        if token == '"':
            quote_open = not quote_open
            opening, closing = quote_open, not quote_open
        else:
            opening, closing = _is_opening(token), _is_closing(token)
        joiner = (
            token in _INTRA_WORD_JOINERS
            and 0 < k < len(tokens) - 1
            and _is_word(tokens[k - 1])
            and _is_word(tokens[k + 1])
        )
        cjk_pair = k > 0 and _is_cjk_like(tokens[k - 1]) and _is_cjk_like(token)
        if not (glue_next or closing or joiner or cjk_pair):
            parts.append(" ")
        parts.append(token)
        glue_next = opening or joiner
    return "".join(parts)


# --------------------------------------------------------------------------
# Tokenizer interface
# --------------------------------------------------------------------------


class Tokenizer(ABC):
    """Common interface of all llmctl tokenizers.

    Instances are immutable.  Special tokens always occupy ids 0-4 (see
    :data:`SPECIAL_TOKENS`); ``encode`` never emits them except
    :data:`UNK_ID` for out-of-vocabulary input, so callers add
    ``BOS_ID``/``EOS_ID``/``SEP_ID``/``PAD_ID`` themselves.
    """

    def __init__(self) -> None:
        self._fingerprint: str | None = None

    @property
    @abstractmethod
    def kind(self) -> str:
        """One of :data:`TOKENIZER_KINDS`."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Encode ``text``; characters/words not in the vocabulary become :data:`UNK_ID`."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode several texts; equivalent to ``[encode(t) for t in texts]``."""
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Turn ids back into text.

        With ``skip_special`` (the default) all special ids, ``<unk>``
        included, are dropped; otherwise they are rendered as their token
        strings.  Raises ``ValueError`` for ids outside ``[0, vocab_size)``.
        """

    @abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """Return the token string of ``token_id``; ``IndexError`` if out of range."""

    @abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """Return the id of ``token``, or ``None`` if it is not in the vocabulary."""

    @abstractmethod
    def _canonical_content(self) -> dict[str, Any]:
        """JSON-serialisable content that fully determines the tokenizer's behaviour."""

    @abstractmethod
    def _hf_tokenizer(self) -> tokenizers.Tokenizer:
        """An equivalent Hugging Face tokenizer, for ``tokenizer.json``."""

    @abstractmethod
    def _metadata_content(self) -> dict[str, Any]:
        """Kind-specific entries of ``llmctl_tokenizer.json``."""

    def fingerprint(self) -> str:
        """Return a 16-hex-digit SHA-256 digest of the kind and vocabulary (and merges).

        Stable across save/load, processes and machines; suitable as a cache key.
        """
        if self._fingerprint is None:
            content = self._canonical_content()
            canonical = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            self._fingerprint = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
        return self._fingerprint

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` and ``llmctl_tokenizer.json`` into ``directory``.

        The directory is created if needed.  Each file is written to a
        temporary file in the same directory and atomically renamed into
        place (metadata last); if an overwrite is interrupted between the
        two files, :func:`load_tokenizer`'s consistency checks catch the
        mismatch.  Returns the directory as a :class:`~pathlib.Path`.
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path / HF_TOKENIZER_FILE, self._hf_json())
        metadata = {
            "format": _METADATA_FORMAT,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "special_tokens": {token: i for i, token in enumerate(SPECIAL_TOKENS)},
            "fingerprint": self.fingerprint(),
            **self._metadata_content(),
        }
        atomic.write_text(path / METADATA_FILE, _metadata_json(metadata))
        return path

    def _hf_json(self) -> str:
        """The text of ``tokenizer.json``."""
        return self._hf_tokenizer().to_str(pretty=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, fingerprint={self.fingerprint()!r})"

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        """Return ``ids`` as a list of Python ints, rejecting out-of-range values."""
        checked = list(map(operator.index, ids))
        if checked and (min(checked) < 0 or max(checked) >= self.vocab_size):
            bad = next(i for i in checked if not 0 <= i < self.vocab_size)
            raise ValueError(f"token id {bad} is out of range for a vocabulary of size {self.vocab_size}")
        return checked


def _metadata_json(metadata: dict[str, Any]) -> str:
    """``json.dumps(metadata, indent=2, ensure_ascii=False) + "\\n"`` (what ``atomic.write_json`` writes), with a
    ``vocab`` list rendered by the C string encoder: the indenting encoder is pure Python, slow for large
    vocabularies."""
    vocab = metadata.get("vocab")
    if not isinstance(vocab, list) or not vocab or set(map(type, vocab)) != {str}:
        return json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"
    placeholder = "\x00vocab\x00"
    text = json.dumps({**metadata, "vocab": placeholder}, indent=2, ensure_ascii=False)
    items = ",\n    ".join(map(json.encoder.encode_basestring, vocab))  # list items of a top-level key
    return text.replace(json.dumps(placeholder), "[\n    " + items + "\n  ]", 1) + "\n"


class _VocabTokenizer(Tokenizer):
    """Shared implementation of the vocabulary-list kinds (``char`` and ``word``)."""

    def __init__(self, vocab: Sequence[str], *, check: bool = True) -> None:
        """Build from ``vocab``, the token of every id; it must start with :data:`SPECIAL_TOKENS`. ``check=False``
        skips checking that every token is a string this kind's splitting produces (for tokens counted from split
        text); duplicates are always rejected."""
        super().__init__()
        vocab = list(vocab)
        if vocab[:_NUM_SPECIAL] != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with the special tokens {SPECIAL_TOKENS}")
        if check:
            tokens = vocab[_NUM_SPECIAL:]
            for token in tokens:
                if not isinstance(token, str):
                    raise ValueError(f"vocabulary entries must be strings, got {token!r}")
            self._check_tokens(tokens)
        self._itos: list[str] = vocab
        self._stoi: dict[str, int] = {token: i for i, token in enumerate(vocab)}
        if len(self._stoi) != len(vocab):
            duplicate = next(token for token, n in Counter(vocab).items() if n > 1)
            raise ValueError(f"duplicate token {duplicate!r} in vocabulary")

    @abstractmethod
    def _check_token(self, token: str) -> None:
        """Raise ``ValueError`` if ``token`` cannot be produced by this kind's splitting."""

    def _check_tokens(self, tokens: list[str]) -> None:
        """:meth:`_check_token` for every token."""
        for token in tokens:
            self._check_token(token)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def id_to_token(self, token_id: int) -> str:
        if not 0 <= token_id < len(self._itos):
            raise IndexError(f"token id {token_id} is out of range for a vocabulary of size {len(self._itos)}")
        return self._itos[token_id]

    def token_to_id(self, token: str) -> int | None:
        return self._stoi.get(token)

    def tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        """The id of each token (already split), :data:`UNK_ID` for those not in the vocabulary."""
        return list(map(self._stoi.get, tokens, repeat(UNK_ID)))

    def _tokens(self, ids: Iterable[int], skip_special: bool) -> list[str]:
        itos = self._itos
        checked = self._check_ids(ids)
        if skip_special:
            return [itos[i] for i in checked if i >= _NUM_SPECIAL]
        return [itos[i] for i in checked]

    def _canonical_content(self) -> dict[str, Any]:
        return {"kind": self.kind, "scheme": _SCHEME_VERSION[self.kind], "vocab": self._itos}

    def _metadata_content(self) -> dict[str, Any]:
        return {"vocab": self._itos}

    def _hf_json(self) -> str:
        """HF's own serialisation of this kind with the special tokens only, this vocabulary put in by json's C
        encoder: building the HF model of a large vocabulary and serialising it costs several times more (80k
        words: 33 vs 6 ms). The same JSON document as ``_hf_tokenizer().to_str()``."""
        document = json.loads(type(self)(SPECIAL_TOKENS, check=False)._hf_tokenizer().to_str())
        placeholder = "\x00vocab\x00"
        document["model"]["vocab"] = placeholder
        text = json.dumps(document, indent=2, ensure_ascii=False)
        return text.replace(json.dumps(placeholder), json.dumps(self._stoi, ensure_ascii=False), 1)

    def _word_level_hf(
        self, pre_tokenizer: pre_tokenizers.PreTokenizer, decoder: decoders.Decoder | None
    ) -> tokenizers.Tokenizer:
        hf = tokenizers.Tokenizer(models.WordLevel(vocab=self._stoi, unk_token=SPECIAL_TOKENS[UNK_ID]))
        hf.pre_tokenizer = pre_tokenizer
        if decoder is not None:
            hf.decoder = decoder
        # Already in the vocabulary, so this keeps ids 0-4 and only marks them special.
        hf.add_special_tokens(SPECIAL_TOKENS)
        return hf


class CharTokenizer(_VocabTokenizer):
    """One token per Unicode code point; ``decode(encode(s)) == s`` for in-vocabulary ``s``."""

    @property
    def kind(self) -> str:
        return "char"

    def _check_token(self, token: str) -> None:
        if len(token) != 1:
            raise ValueError(f"char vocabulary entries must be single code points, got {token!r}")

    def encode(self, text: str) -> list[int]:
        # map() over a bound dict.get is the dict-lookup comprehension without
        # the per-item bytecode (~35-40 MB/s on English text).
        return list(map(self._stoi.get, text, repeat(UNK_ID)))

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return "".join(self._tokens(ids, skip_special))

    def _hf_tokenizer(self) -> tokenizers.Tokenizer:
        # "[\s\S]" isolates every code point (newlines included; "\X" would
        # group grapheme clusters such as "e\u0301" and 👍🏽, which we split),
        # and Fuse concatenates on decode.  Like ours, the HF tokenizer maps
        # unknown characters to <unk>.  Divergence: HF matches the literal
        # strings "<pad>", "<unk>", ... in input text as special tokens (the
        # ``encode_special_tokens`` switch is not saved in tokenizer.json).
        return self._word_level_hf(pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), "isolated"), decoders.Fuse())


class WordTokenizer(_VocabTokenizer):
    """Words, punctuation and single CJK characters (see :func:`split_words`); decoding is lossy."""

    @property
    def kind(self) -> str:
        return "word"

    def _check_token(self, token: str) -> None:
        if split_words(token) != [token]:
            raise ValueError(f"word vocabulary entry {token!r} is not a single word-level token")

    def _check_tokens(self, tokens: list[str]) -> None:
        # One split of all tokens joined by spaces: no match spans whitespace and every non-space character is in
        # a match, so the result is the tokens themselves exactly when each token alone splits into itself.
        if split_words(" ".join(tokens)) != tokens:
            super()._check_tokens(tokens)  # names the first bad token

    def encode(self, text: str) -> list[int]:
        return list(map(self._stoi.get, split_words(text), repeat(UNK_ID)))

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return _detokenize(self._tokens(ids, skip_special))

    def _hf_tokenizer(self) -> tokenizers.Tokenizer:
        # Split(invert=True, "removed") keeps the pattern's matches as tokens
        # and drops the whitespace between them, like re.findall.  See
        # _onig_word_pattern for the (Unicode-version) divergence.  HF has no
        # decoder for our spacing rules, so HF decoding joins tokens with " ";
        # the special-token caveat of CharTokenizer applies too.
        pattern = pre_tokenizers.Split(tokenizers.Regex(_onig_word_pattern()), "removed", invert=True)
        return self._word_level_hf(pattern, None)


class BpeTokenizer(Tokenizer):
    """Byte-level BPE backed by a Hugging Face tokenizer; lossless for any text.

    Literal special-token strings in input text (e.g. ``"<eos>"``) are
    encoded as ordinary text, like the other kinds do.  Token strings are in
    the byte-level alphabet (``"Ġthe"`` is ``" the"``).
    """

    def __init__(self, hf: tokenizers.Tokenizer) -> None:
        """Wrap ``hf``, a BPE model with the special tokens at ids 0-4 (sets its ``encode_special_tokens``)."""
        super().__init__()
        if not isinstance(hf.model, models.BPE):
            raise ValueError(f"expected a BPE model, got {type(hf.model).__name__}")
        for i, token in enumerate(SPECIAL_TOKENS):
            if hf.token_to_id(token) != i:
                raise ValueError(f"special token {token!r} must have id {i}, found {hf.token_to_id(token)}")
        hf.encode_special_tokens = True
        self._hf = hf

    @property
    def kind(self) -> str:
        return "bpe"

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode several texts with the multi-threaded Rust batch encoder."""
        return [enc.ids for enc in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return self._hf.decode(self._check_ids(ids), skip_special_tokens=skip_special)

    def id_to_token(self, token_id: int) -> str:
        token = self._hf.id_to_token(token_id) if token_id >= 0 else None
        if token is None:
            raise IndexError(f"token id {token_id} is out of range for a vocabulary of size {self.vocab_size}")
        return token

    def token_to_id(self, token: str) -> int | None:
        return self._hf.token_to_id(token)

    def _canonical_content(self) -> dict[str, Any]:
        model = json.loads(self._hf.to_str())["model"]
        by_id = sorted(self._hf.get_vocab(with_added_tokens=True).items(), key=operator.itemgetter(1))
        # tokenizers < 0.20 stores merges as "a b" strings, newer versions as
        # pairs; byte-level tokens never contain a space, so both normalise.
        merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model["merges"]]
        return {"kind": "bpe", "scheme": _SCHEME_VERSION["bpe"], "vocab": [t for t, _ in by_id], "merges": merges}

    def _hf_tokenizer(self) -> tokenizers.Tokenizer:
        return self._hf

    def _metadata_content(self) -> dict[str, Any]:
        return {}


_TOKENIZER_CLASSES: Final[dict[str, type[_VocabTokenizer]]] = {"char": CharTokenizer, "word": WordTokenizer}

# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    *,
    vocab_size: int | None = None,
    min_freq: int = 1,
    max_vocab: int | None = None,
) -> Tokenizer:
    """Train a tokenizer of ``kind`` on ``texts``, streaming (the corpus is never held in memory).

    ``char``/``word``: keep tokens seen at least ``min_freq`` times, ordered by
    descending frequency then by token string, and cap the vocabulary at
    ``max_vocab`` entries, special tokens included; ``vocab_size`` is ignored.

    ``bpe``: ``vocab_size`` (default :data:`DEFAULT_BPE_VOCAB_SIZE`) is the
    target size, special tokens included, and must leave room for the 256
    byte symbols (>= 261); ``min_freq`` is the minimum frequency of a merged
    pair; ``max_vocab`` is ignored.

    Raises ``ValueError`` for an unknown kind, a size too small for one
    non-special token, ``min_freq < 1`` or training data without any token.
    """
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(TOKENIZER_KINDS)}")
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of strings, not a single string")
    if min_freq < 1:
        raise ValueError(f"min_freq must be at least 1, got {min_freq}")
    if kind == "bpe":
        target = DEFAULT_BPE_VOCAB_SIZE if vocab_size is None else vocab_size
        smallest = _NUM_SPECIAL + _BYTE_ALPHABET_SIZE
        if target < smallest:
            raise ValueError(
                f"vocab_size {target} is too small for a bpe tokenizer: need at least {smallest} "
                f"({_NUM_SPECIAL} special tokens + {_BYTE_ALPHABET_SIZE} byte symbols)"
            )
        return _train_bpe(texts, target, min_freq)

    _check_max_vocab(kind, max_vocab)
    counts: Counter[str] = Counter()
    for text in _checked_texts(texts):
        counts.update(split_words(text) if kind == "word" else text)
    return tokenizer_from_counts(kind, counts, min_freq, max_vocab)


def tokenizer_from_counts(
    kind: str, counts: Mapping[str, int], min_freq: int = 1, max_vocab: int | None = None, *, split: bool = False
) -> Tokenizer:
    """Build a ``char``/``word`` tokenizer from token counts with :func:`train_tokenizer`'s vocabulary rule.

    ``counts`` maps each token (a code point for ``char``, a :func:`split_words`
    token for ``word``) to how often it occurs in the training text.  Tokens
    seen at least ``min_freq`` times are kept, ordered by descending count then
    by token string, and the vocabulary is capped at ``max_vocab`` entries,
    special tokens included.  ``train_tokenizer(kind, texts, ...)`` equals
    ``tokenizer_from_counts(kind, <counts of texts>, ...)``; use this when the
    counts come from elsewhere (e.g. counted in parallel).

    Raises ``ValueError`` for a kind other than ``char``/``word``,
    ``min_freq < 1``, a ``max_vocab`` too small for one non-special token or
    empty ``counts``, and for a token the kind cannot produce (not checked
    with ``split``: the tokens were counted from text split by the kind's own
    rule).
    """
    if kind not in _TOKENIZER_CLASSES:
        raise ValueError(f"cannot build a {kind!r} tokenizer from counts; expected one of "
                         f"{', '.join(_TOKENIZER_CLASSES)}")
    if min_freq < 1:
        raise ValueError(f"min_freq must be at least 1, got {min_freq}")
    _check_max_vocab(kind, max_vocab)
    if not counts:
        raise ValueError(f"training data is empty: no {kind} tokens found")
    # Descending count, ties by token string: sort by token, then stably by count (reverse keeps ties in order).
    kept = sorted(token for token, n in counts.items() if n >= min_freq)
    kept.sort(key=counts.__getitem__, reverse=True)
    return tokenizer_from_ranked(kind, kept, max_vocab, split=split)


def tokenizer_from_ranked(kind: str, ranked: Sequence[str], max_vocab: int | None = None, *,
                          split: bool = False) -> Tokenizer:
    """The ``char``/``word`` tokenizer of :func:`tokenizer_from_counts` from its tokens already chosen and ordered:
    ``ranked`` holds the tokens seen at least ``min_freq`` times, by descending count then token string (as
    ``fast_words.WordCounter.ranked`` gives them); the vocabulary is the special tokens then ``ranked``, capped at
    ``max_vocab`` entries. ``split`` as in :func:`tokenizer_from_counts`."""
    if kind not in _TOKENIZER_CLASSES:
        raise ValueError(f"cannot build a {kind!r} tokenizer from counts; expected one of "
                         f"{', '.join(_TOKENIZER_CLASSES)}")
    _check_max_vocab(kind, max_vocab)
    kept = list(ranked) if max_vocab is None else list(ranked[: max_vocab - _NUM_SPECIAL])
    return _TOKENIZER_CLASSES[kind](SPECIAL_TOKENS + kept, check=not split)


def extend_tokenizer(base: Tokenizer, counts: Mapping[str, int], min_freq: int = 1,
                     max_vocab: int | None = None) -> Tokenizer:
    """``base`` (a ``char``/``word`` tokenizer) with the tokens of ``counts`` it lacks appended after its ids.

    New tokens follow :func:`tokenizer_from_counts`' rule (seen at least ``min_freq`` times, descending count,
    ties by token string) and stop when the vocabulary reaches ``max_vocab``; every id of ``base`` keeps its
    token, so a model trained with ``base`` reads the extended ids unchanged (ULMFiT's vocabulary extension).
    Raises ``ValueError`` for a ``bpe`` base (merges cannot be extended this way) or a ``max_vocab`` below the
    base's vocabulary size.
    """
    if base.kind not in _TOKENIZER_CLASSES:
        raise ValueError(f"cannot extend a {base.kind!r} tokenizer (only {', '.join(_TOKENIZER_CLASSES)})")
    vocab = [base.id_to_token(i) for i in range(base.vocab_size)]
    if max_vocab is not None and max_vocab < len(vocab):
        raise ValueError(f"max_vocab={max_vocab} is below the vocabulary size of the tokenizer to extend "
                         f"({len(vocab)})")
    known = set(vocab)
    new = sorted(token for token, n in counts.items() if n >= min_freq and token not in known)
    new.sort(key=counts.__getitem__, reverse=True)
    if max_vocab is not None:
        new = new[: max_vocab - len(vocab)]
    return _TOKENIZER_CLASSES[base.kind](vocab + new)


def _check_max_vocab(kind: str, max_vocab: int | None) -> None:
    if max_vocab is not None and max_vocab < _NUM_SPECIAL + 1:
        raise ValueError(
            f"max_vocab {max_vocab} is too small for a {kind} tokenizer: need at least {_NUM_SPECIAL + 1} "
            f"({_NUM_SPECIAL} special tokens + 1 token)"
        )


def _checked_texts(texts: Iterable[str]) -> Iterator[str]:
    """Yield ``texts``, raising ``TypeError`` on a non-string item."""
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"training texts must be strings, got {type(text).__name__}")
        yield text


def _train_bpe(texts: Iterable[str], vocab_size: int, min_freq: int) -> BpeTokenizer:
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_freq,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen_text = False

    def stream() -> Iterator[str]:
        nonlocal seen_text
        for text in _checked_texts(texts):
            if text:
                seen_text = True
                yield text

    hf.train_from_iterator(stream(), trainer=trainer)
    if not seen_text:
        raise ValueError("training data is empty: no non-empty texts")
    return BpeTokenizer(hf)


# --------------------------------------------------------------------------
# Loading and file helpers
# --------------------------------------------------------------------------


def load_tokenizer(directory: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer written by :meth:`Tokenizer.save`.

    ``char``/``word`` are rebuilt from the vocabulary in
    ``llmctl_tokenizer.json`` alone; ``bpe`` also reads ``tokenizer.json``.
    Raises ``FileNotFoundError`` if a needed file is missing and
    ``ValueError`` if one is corrupt, inconsistent or from a newer format;
    both messages name the file.
    """
    path = Path(directory)
    meta_path = path / METADATA_FILE
    meta = _read_json(meta_path)

    def invalid(problem: str) -> ValueError:
        return ValueError(f"invalid tokenizer metadata in {meta_path}: {problem}")

    if not isinstance(meta, dict) or meta.get("format") != _METADATA_FORMAT:
        raise invalid(f"not an llmctl tokenizer file (expected format {_METADATA_FORMAT!r})")
    version = meta.get("version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise invalid(f"unsupported version {version!r} (this llmctl reads versions 1..{FORMAT_VERSION})")
    kind = meta.get("kind")
    if kind not in TOKENIZER_KINDS:
        raise invalid(f"unknown kind {kind!r}")
    if meta.get("special_tokens") != {token: i for i, token in enumerate(SPECIAL_TOKENS)}:
        raise invalid(f"special tokens must be {SPECIAL_TOKENS} at ids 0-{_NUM_SPECIAL - 1}")

    tokenizer: Tokenizer
    if kind == "bpe":
        hf_path = path / HF_TOKENIZER_FILE
        if not hf_path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {hf_path}")
        try:
            tokenizer = BpeTokenizer(tokenizers.Tokenizer.from_file(str(hf_path)))
        except Exception as exc:  # tokenizers raises a bare Exception on parse errors
            raise ValueError(f"invalid tokenizer file {hf_path}: {exc}") from exc
    else:
        vocab = meta.get("vocab")
        if not isinstance(vocab, list):
            raise invalid("missing vocabulary list 'vocab'")
        try:
            tokenizer = _TOKENIZER_CLASSES[kind](vocab)
        except ValueError as exc:
            raise invalid(str(exc)) from exc

    # For bpe a mismatch may equally come from tokenizer.json, so name both files.
    source = f"{path / HF_TOKENIZER_FILE} does not match {meta_path}" if kind == "bpe" else f"in {meta_path}"
    if meta.get("vocab_size") != tokenizer.vocab_size:
        raise ValueError(
            f"inconsistent tokenizer files: {source}: vocab_size {meta.get('vocab_size')!r} "
            f"but {tokenizer.vocab_size} tokens loaded"
        )
    if meta.get("fingerprint") != tokenizer.fingerprint():
        raise ValueError(
            f"inconsistent tokenizer files: {source}: fingerprint {meta.get('fingerprint')!r} "
            f"but the loaded tokenizer has {tokenizer.fingerprint()!r} (modified or mixed-up files)"
        )
    return tokenizer


def _read_json(path: Path) -> Any:
    """Parse a UTF-8 JSON file, naming ``path`` in any error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"tokenizer metadata file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"tokenizer metadata file {path} is not valid UTF-8: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"tokenizer metadata file {path} is not valid JSON: {exc}") from exc
