"""Word splitting of the ``word`` kind (:func:`split_words`), its Unicode tables and the lossy detokenizer."""

from __future__ import annotations

import re
import sys
import unicodedata
from array import array
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Final

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
#: supplement in plane 14); scanning only these keeps the one-off cost small.
_MARK_SCAN_SPANS: Final = ((0, 0x20000), (0xE0000, 0xE1000))
_MARK_CATEGORIES: Final = frozenset({"Mn", "Mc", "Me"})

#: ASCII-only text has no CJK, marks or emoji, so the rules above reduce to
#: this much cheaper pattern; ``\s`` here is Unicode ``\s``,
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
