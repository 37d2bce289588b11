"""Scanning text for words, vectorised with numpy: `split_words`' rules as token bounds and hashes.

Splitting with the regex engine makes one string object per token, and counting or encoding then costs a dict
operation per token; on a multi-MB corpus that is what limits word preprocessing. Here a text is classified code
point by code point (one table lookup, `tokenizers._word_classes`), token boundaries come from comparing
neighbouring classes, and every token gets a 64-bit polynomial hash of its code points (`_scan` → `_Tokens`).
Tokens are then grouped (counting, `fast_words.counter`) or looked up in the vocabulary (encoding,
`fast_words.encoder`) by hash, and every token is *checked* code point by code point against the token it was
matched with, so results never depend on hashing luck: a collision only sends that text to `split_words`. Both are
exactly `Counter(split_words(t))` / `WordTokenizer.encode(t)` on every text.

With the native word store (`llmctl/data/_wordscan.c`, built by `pip install` where a C compiler exists: `native`
here, None without it) the words live in C (`_wordscan.Words`): one call splits a unit, read in place from the str,
and looks every token up in an open-addressing hash table of the stored words, checked code point by code point as
above (short words of 1-byte strs against a packed copy in the table entry), storing new ones — without the GIL, so
counting threads run in parallel (`encoding.CountingThreads`). The store also ranks its words by the vocabulary rule
and merges with another store. A unit it declines (a complex character) goes through the numpy path, whose tokens it
looks up too (`Words.tokens`), so results are the same with or without it (speeds: docs/benchmarks.md).

The vectorised rule covers whitespace-delimited spans without a combining mark, skin-tone modifier, regional
indicator or ZERO WIDTH JOINER: there a token is a maximal run of word characters (`\\w` outside the CJK ranges) or
any other single non-space character. A span with one of those characters is split by `split_words` itself, in
place; a text dense in them (e.g. Devanagari, where most words carry marks) goes to `split_words` whole.

`counter` and `encoder` use the underscored names here, and look `native` and `_hashes` up on this module when
they run (tests replace them).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from itertools import repeat
from typing import Callable, Iterator, Sequence

import numpy as np

from llmctl.data.tokenizers import (
    WORD_CHAR,
    WORD_COMPLEX,
    WORD_SINGLE,
    WORD_SPACE,
    _word_classes,
    split_words,
)

try:  # the native scanner (llmctl/data/_wordscan.c), built at install time when a C compiler is present
    from llmctl.data import _wordscan as native
except ImportError:  # pragma: no cover - depends on the build
    native = None

UNIT_CHARS = 1 << 16        # text per vectorised step: its arrays stay in the CPU caches
MAX_UNIT = 1 << 17          # longest unit; longer texts are cut after whitespace
NATIVE_COMPLEX = -1          # the native scanner's answer for a unit with a complex character
NATIVE_UNIT_CHARS = 1 << 18  # the same for the native scanner (the fastest size: docs/benchmarks.md)
NATIVE_MAX_UNIT = 1 << 19
DENSE_SPAN_CHARS = 64       # fewer characters per complex span than this: split_words the whole unit
_BASE = 0x100000001B3       # odd, so invertible modulo 2**64
_UTF32, _POINT = "utf-32-le", np.dtype("<u4")  # code points as little-endian uint32


@cache
def _classes() -> np.ndarray:
    return np.frombuffer(_word_classes(), dtype=np.uint8)


def warm_up() -> None:
    """Compute the tables every process needs (before forking workers, so that they inherit them)."""
    _classes()
    _unit_powers()


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """`_BASE ** i` and `_BASE ** -i` modulo 2**64 for i < n."""
    if n <= MAX_UNIT + 1:
        pw, ipw = _unit_powers()
        return pw[:n], ipw[:n]
    return _compute_powers(n)


@cache
def _unit_powers() -> tuple[np.ndarray, np.ndarray]:
    return _compute_powers(MAX_UNIT + 1)


def _compute_powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for base in (_BASE, pow(_BASE, -1, 1 << 64)):
        pw = np.full(n, base, dtype=np.uint64)
        pw[0] = 1
        np.cumprod(pw, out=pw)  # wraps modulo 2**64
        out.append(pw)
    return out[0], out[1]


def _hashes(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hash of each token `points[starts[i]:ends[i]]`: sum of code point * BASE**offset, modulo 2**64 (equal hashes
    are always checked, so its quality only matters for speed)."""
    pw, ipw = _powers(points.size + 1)
    prefix = np.empty(points.size + 1, dtype=np.uint64)
    prefix[0] = 0
    np.cumsum(np.multiply(points, pw[:points.size]), out=prefix[1:])
    return (prefix[ends] - prefix[starts]) * ipw[starts]


@dataclass
class _Tokens:
    """The tokens of one unit of text: vectorised ones (bounds, hashes) and the spans left to `split_words`."""

    text: str
    points: np.ndarray     # uint32 code points of text
    chars: np.ndarray      # positions of the characters of the vectorised tokens, in order
    starts: np.ndarray
    ends: np.ndarray
    hashes: np.ndarray
    spans: list[tuple[int, int]]

    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """`(first, group)`: one token index per distinct hash (in increasing hash order) and each token's group.
        Tokens of one group are one string only once checked (`matches`)."""
        order = np.argsort(self.hashes)
        ordered = self.hashes[order]
        new = np.empty(ordered.size, dtype=bool)
        new[:1] = True
        np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
        group = np.empty(order.size, dtype=np.int64)
        group[order] = np.cumsum(new) - 1
        return order[new], group

    def matches(self, ref_points: np.ndarray, ref_starts: np.ndarray, ref_lengths: np.ndarray,
                known: np.ndarray | None = None) -> bool:
        """Whether every token (every one flagged in `known`) equals its reference
        `ref_points[ref_starts[i]:][:ref_lengths[i]]`, code point by code point."""
        lengths = self.ends - self.starts
        if known is None:
            if not np.array_equal(lengths, ref_lengths):
                return False
            shift = np.repeat(ref_starts - self.starts, lengths)
            return bool(np.array_equal(ref_points[self.chars + shift], self.points[self.chars]))
        if not np.array_equal(lengths[known], ref_lengths[known]):
            return False
        shift = np.repeat(np.where(known, ref_starts - self.starts, 0), lengths)
        expected = ref_points.take(self.chars + shift, mode="clip")
        return bool(np.all((expected == self.points[self.chars]) | ~np.repeat(known, lengths)))

    def strings(self, index: np.ndarray) -> list[str]:
        text = self.text
        return [text[a:b] for a, b in zip(self.starts[index].tolist(), self.ends[index].tolist(), strict=True)]

    def span_tokens(self) -> list[tuple[int, list[str]]]:
        return [(a, split_words(self.text[a:b])) for a, b in self.spans]


def _scan(text: str) -> _Tokens | None:
    """Tokens of `text` (at most `MAX_UNIT` characters), or None if it is dense in complex characters."""
    points = np.frombuffer(text.encode(_UTF32), dtype=_POINT)
    n = points.size
    cls = np.take(_classes(), points)
    spans: list[tuple[int, int]] = []
    if n and cls.max() == WORD_COMPLEX:
        spans = _complex_spans(cls)
        if len(spans) * DENSE_SPAN_CHARS > n:
            return None
        for a, b in spans:
            cls[a:b] = WORD_SPACE
    word = cls == WORD_CHAR
    single = cls == WORD_SINGLE
    shifted = np.zeros(n + 1, dtype=bool)
    shifted[1:] = word                                   # shifted[i] = word[i - 1]
    starts = np.flatnonzero(single | (word & ~shifted[:n]))
    shifted[1:n] = word[1:]                              # shifted[i + 1] = word[i + 1]
    shifted[n] = False
    ends = np.flatnonzero(single | (word & ~shifted[1:])) + 1
    chars = np.flatnonzero(cls != WORD_SPACE)
    return _Tokens(text, points, chars, starts, ends, _hashes(points, starts, ends), spans)


def _complex_spans(cls: np.ndarray) -> list[tuple[int, int]]:
    """The whitespace-delimited spans `[start, end)` that hold a complex character."""
    n = cls.size
    at = np.flatnonzero(cls == WORD_COMPLEX)
    space = np.flatnonzero(cls == WORD_SPACE)
    if space.size == 0:
        return [(0, n)]
    k = np.searchsorted(space, at)
    lo = np.where(k > 0, space[np.maximum(k - 1, 0)] + 1, 0)
    hi = np.where(k < space.size, space[np.minimum(k, space.size - 1)], n)
    keep = np.ones(lo.size, dtype=bool)
    keep[1:] = lo[1:] != lo[:-1]
    return list(zip(lo[keep].tolist(), hi[keep].tolist(), strict=True))


def _unit_sizes() -> tuple[int, int]:
    """(unit size, longest unit) for `_units`: the native scanner takes larger units (less per-unit overhead)."""
    return (NATIVE_UNIT_CHARS, NATIVE_MAX_UNIT) if native is not None else (UNIT_CHARS, MAX_UNIT)


def _units(texts: Sequence[str], size: int = UNIT_CHARS, limit: int = MAX_UNIT
           ) -> Iterator[tuple[str, int, list[int] | None]]:
    """Texts grouped into units of about `size` characters: `(unit, index of its first text, offsets)`. Short texts
    are joined with a space (no token spans whitespace) and `offsets` is where each starts in the unit; a text longer
    than `limit` is cut after whitespace into units of its own (`offsets` None)."""
    batch: list[str] = []
    chars = first = 0
    for i, text in enumerate(texts):
        if len(text) > limit:
            if batch:
                yield _joined(batch, first)
                batch, chars = [], 0
            for piece in _cut(text, size, limit):
                yield piece, i, None
            continue
        if batch and chars + len(text) > limit:
            yield _joined(batch, first)
            batch, chars = [], 0
        if not batch:
            first = i
        batch.append(text)
        chars += len(text) + 1
        if chars >= size:
            yield _joined(batch, first)
            batch, chars = [], 0
    if batch:
        yield _joined(batch, first)


def _joined(batch: list[str], first: int) -> tuple[str, int, list[int]]:
    offsets, at = [], 0
    for text in batch:
        offsets.append(at)
        at += len(text) + 1
    return " ".join(batch), first, offsets


def _cut(text: str, size: int, limit: int = MAX_UNIT) -> Iterator[str]:
    """`text` in pieces of at most `limit` characters, each cut right after a space or newline; the rest in one
    piece if there is none (`split_words` handles it)."""
    start = 0
    while len(text) - start > limit:
        lo, hi = start + size // 2, start + limit
        cut = max(text.rfind(" ", lo, hi), text.rfind("\n", lo, hi))
        if cut < 0:
            break
        yield text[start:cut + 1]
        start = cut + 1
    yield text[start:]


def _from_words(words: list[str]) -> _Tokens:
    """Words as tokens of their concatenation, with hashes."""
    text = "".join(words)
    points = np.frombuffer(text.encode(_UTF32), dtype=_POINT)
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    return _Tokens(text, points, np.arange(points.size, dtype=np.int64), starts, ends,
                   _hashes(points, starts, ends), [])


def _by_pieces(unit: str, values: Callable[[_Tokens], np.ndarray | None],
               span_values: Callable[[list[str]], Sequence[int] | np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """`(value of every token, start of every token)` of `unit` by the numpy path, piece by piece (at most `MAX_UNIT`
    characters, cut after whitespace): `values(tok)` gives the values of a piece's vectorised tokens (None: give
    up), `span_values(words)` those of the words `split_words` makes of its complex spans. None if a piece cannot be
    vectorised."""
    all_values, all_positions, offset = [], [], 0
    for piece in _cut(unit, UNIT_CHARS, MAX_UNIT):
        tok = _scan(piece) if len(piece) <= MAX_UNIT else None
        got = values(tok) if tok is not None else None
        if got is None:
            return None
        positions = tok.starts
        if tok.spans:
            at, words = [], []
            for a, span_words in tok.span_tokens():
                at.extend(repeat(a, len(span_words)))
                words.extend(span_words)
            where = np.searchsorted(positions, at)
            got = np.insert(got, where, span_values(words))
            positions = np.insert(positions, where, at)
        all_values.append(got)
        all_positions.append(positions + offset)
        offset += len(piece)
    if len(all_values) == 1:
        return all_values[0], all_positions[0]
    return np.concatenate(all_values), np.concatenate(all_positions)
