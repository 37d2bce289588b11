"""Word-level counting and encoding of large texts with numpy: `split_words`' rules, vectorised.

Splitting with the regex engine makes one string object per token, and counting or encoding then costs a dict
operation per token; on a multi-MB corpus that is what limits word preprocessing. Here a text is classified code
point by code point (one table lookup, `tokenizers._word_classes`), token boundaries come from comparing
neighbouring classes, and every token gets a 64-bit polynomial hash of its code points. Tokens are then grouped
(counting) or looked up in the vocabulary (encoding) by hash, and every token is *checked* code point by code point
against the token it was matched with, so results never depend on hashing luck: a collision only sends that text
to `split_words`. Both are exactly `Counter(split_words(t))` / `WordTokenizer.encode(t)` on every text.

`WordCounter.slots` serves preprocess's single word pass: it counts the words of the train split while it gives
every token the slot of its word, so token files can be written before the vocabulary exists (`writing`).

With the native word store (`llmctl/data/_wordscan.c`, built by `pip install` where a C compiler exists) the words
live in C (`_wordscan.Words`): one call splits a unit, read in place from the str, and looks every token up in an
open-addressing hash table of the stored words, checked code point by code point as above (short words of 1-byte
strs against a packed copy in the table entry), storing new ones — without the GIL, so counting threads run in
parallel (`encoding.CountingThreads`). The store also ranks its words by the vocabulary rule and merges with
another store. A unit it declines (a complex character) goes through the numpy path, whose tokens it looks up too
(`Words.tokens`), so results are the same with or without it. Measured on the 20 MB benchmark corpus (one
process): numpy path 0.73 s, native 0.11 s.

The vectorised rule covers whitespace-delimited spans without a combining mark, skin-tone modifier, regional
indicator or ZERO WIDTH JOINER: there a token is a maximal run of word characters (`\\w` outside the CJK ranges) or
any other single non-space character. A span with one of those characters is split by `split_words` itself, in
place; a text dense in them (e.g. Devanagari, where most words carry marks) goes to `split_words` whole.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache
from itertools import repeat
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from llmctl.data.tokenizers import (
    SPECIAL_TOKENS,
    UNK_ID,
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
NATIVE_UNIT_CHARS = 1 << 18  # the same for the native scanner (measured best: 0.24 s for 20 MB vs 0.29 at 1 << 16)
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


# ---------------------------------------------------------------- counting, and slots for a single pass


class HashCollision(Exception):
    """Two different words split by `split_words` have one hash, so `WordCounter.slots` cannot tell them apart;
    take the two-pass path (count, then encode with the vocabulary). Never seen in practice."""


class WordCounter:
    """Counts the `split_words` tokens of texts: `counts()` equals `Counter` updated with `split_words(text)` for
    every text added (`add`, or the texts flagged as counted in `slots`).

    Words are kept by hash, in the native store (`_wordscan.Words`) where it is built, else here: a sorted array of
    known hashes (plus a small sorted one of recent additions, merged in when it grows) maps to a slot with the
    count, the string and the code points of the word. A unit's tokens are grouped by hash, the groups matched with
    the known words (a new word is stored from one of its tokens), and every token is then compared code point by
    code point with the word of its slot.

    `slots` also returns every token's *slot*, the index of its word among the words stored (see `export`): a single
    pass can so write slots while it counts, and map them to ids once the vocabulary is known."""

    def __init__(self) -> None:
        self._words: list[str] = []
        self._counts = np.zeros(1 << 12, dtype=np.int64)
        self._lengths = np.zeros(1 << 12, dtype=np.int64)
        self._starts = np.zeros(1 << 12, dtype=np.int64)
        self._hashes = np.zeros(1 << 12, dtype=np.uint64)
        self._points = np.zeros(1 << 16, dtype=np.uint32)
        self._used = 0  # code points stored
        self._known = [(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64))] * 2  # (hashes, slots): main, recent
        self._python: Counter = Counter()  # words split by split_words in `add` (kept by string)
        # with the native scanner the words are stored there instead (the arrays above stay empty)
        self._native = native.Words(_word_classes()) if native is not None else None
        self._positions = np.empty(0, dtype=np.int64)  # token starts of a unit (the native scanner's, reused)

    def add(self, texts: Sequence[str]) -> None:
        """Count the tokens of `texts`."""
        for unit, _, _ in _units(texts, *_unit_sizes()):
            out = np.empty(len(unit), dtype=np.int64)
            found = self._unit_slots(unit, out)
            if found is None:
                self._python.update(split_words(unit))
            else:
                self._count(out[:found[0]])

    def slots(self, texts: Sequence[str], counted: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
        """`(slots of all tokens of all texts concatenated, number of tokens of each text)`; the tokens of the texts
        flagged in `counted` are counted. Raises `HashCollision` if two words split by `split_words` share a hash."""
        flat = np.empty(sum(map(len, texts)) + len(texts), dtype=np.int64)  # no more tokens than characters
        at = 0
        lengths = np.zeros(len(texts), dtype=np.int64)
        for unit, first, offsets in _units(texts, *_unit_sizes()):
            n_texts = len(offsets) if offsets is not None else 1
            found = self._unit_slots(unit, flat[at:])
            if found is None:  # split_words, text by text
                for k in range(first, first + n_texts):
                    slots = self._register_words(split_words(texts[k] if offsets is not None else unit))
                    if counted[k]:
                        self._count(slots)
                    flat[at:at + slots.size] = slots
                    at += slots.size
                    lengths[k] += slots.size
                continue
            n, positions = found
            slots = flat[at:at + n]
            at += n
            if offsets is None:
                per_text = np.asarray([n], dtype=np.int64)
            else:
                bounds = np.asarray(offsets + [len(unit) + 1], dtype=np.int64)
                per_text = np.diff(np.searchsorted(positions, bounds))
            lengths[first:first + n_texts] += per_text
            flags = np.asarray(counted[first:first + n_texts], dtype=bool)
            if flags.all():
                counted_slots = slots
            else:
                counted_slots = slots[np.repeat(flags, per_text)]
            self._count(counted_slots)
        return flat[:at], lengths

    def _count(self, slots: np.ndarray) -> None:
        """Count one more of the word of every slot (O(tokens), whatever the number of words stored)."""
        if self._native is not None:
            self._native.count(slots)
        else:
            np.add.at(self._counts, slots, 1)

    def _unit_slots(self, unit: str, out: np.ndarray) -> tuple[int, np.ndarray] | None:
        """`(n, start of every token)` of `unit`, the slot of every token written to `out[:n]`, storing new words:
        by the native scanner, else by the numpy path (`_by_pieces`); None if neither applies (split_words then)."""
        if self._native is not None:
            if self._positions.size < len(unit):
                self._positions = np.empty(max(len(unit), NATIVE_MAX_UNIT), dtype=np.int64)
            n = self._native.unit(unit, out, self._positions)
            if n >= 0:
                return n, self._positions[:n]
            if n != NATIVE_COMPLEX:  # a hash standing for two strings
                return None
        found = _by_pieces(unit, self._vectorised_slots, self._register_words)
        if found is None:
            return None
        out[:found[0].size] = found[0]
        return found[0].size, found[1]

    def _vectorised_slots(self, tok: _Tokens) -> np.ndarray | None:
        if self._native is not None:
            slots = np.empty(tok.starts.size, dtype=np.int64)
            return None if self._native.tokens(tok.points, tok.starts, tok.ends, tok.hashes, slots) < 0 else slots
        grouped = self._register(tok)
        return None if grouped is None else grouped[0][grouped[1]]

    def _register(self, tok: _Tokens) -> tuple[np.ndarray, np.ndarray] | None:
        """`(slot of each distinct token, group of each token)`, storing new words; None if a hash stands for two
        strings (in the unit, or in the unit and the words stored): every token is compared with the stored word
        of its slot (a new word is stored from one of its tokens first)."""
        if not tok.hashes.size:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        first, group = tok.groups()
        hashes = tok.hashes[first]
        slots = np.full(first.size, -1, dtype=np.int64)
        for known, known_slots in self._known:
            if known.size:
                at = np.minimum(np.searchsorted(known, hashes), known.size - 1)
                hit = known[at] == hashes
                slots[hit] = known_slots[at[hit]]
        new = slots < 0
        if new.any():
            slots[new] = self._new_words(tok, first[new], hashes[new], (tok.ends - tok.starts)[first[new]])
        token_slots = slots[group]
        if not tok.matches(self._points, self._starts[token_slots], self._lengths[token_slots]):
            return None
        return slots, group

    def _register_words(self, words: list[str]) -> np.ndarray:
        """Slots of `words` (split by `split_words`), storing new ones."""
        if not words:
            return np.zeros(0, dtype=np.int64)
        slots = self._vectorised_slots(_from_words(words))
        if slots is None:
            raise HashCollision("two words share a hash")
        return slots

    def _new_words(self, tok: _Tokens, index: np.ndarray, hashes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Store new words (distinct, increasing hashes) and return their slots."""
        n, m = len(self._words), index.size
        self._words.extend(tok.strings(index))
        self._counts = _grown(self._counts, n + m)
        self._lengths = _grown(self._lengths, n + m)
        self._starts = _grown(self._starts, n + m)
        self._hashes = _grown(self._hashes, n + m)
        self._hashes[n:n + m] = hashes
        total = int(lengths.sum())
        self._points = _grown(self._points, self._used + total)
        within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        self._points[self._used:self._used + total] = tok.points[np.repeat(tok.starts[index], lengths) + within]
        self._starts[n:n + m] = self._used + np.cumsum(lengths) - lengths
        self._lengths[n:n + m] = lengths
        self._used += total
        slots = np.arange(n, n + m, dtype=np.int64)
        (main, main_slots), (recent, recent_slots) = self._known
        at = np.searchsorted(recent, hashes)
        recent, recent_slots = np.insert(recent, at, hashes), np.insert(recent_slots, at, slots)
        if recent.size * 8 > main.size:  # merge: amortised linear in the number of words
            merged = np.concatenate([main, recent])
            order = np.argsort(merged, kind="stable")
            main, main_slots = merged[order], np.concatenate([main_slots, recent_slots])[order]
            recent, recent_slots = recent[:0], recent_slots[:0]
        self._known = [(main, main_slots), (recent, recent_slots)]
        return slots

    def counts(self) -> Counter:
        """Counts of the counted words (words only seen in texts not counted are left out)."""
        _, words, counts = self.export()
        total = Counter({w: c for w, c in zip(words, counts.tolist(), strict=True) if c})
        total.update(self._python)
        return total

    def absorb(self, other: "WordCounter") -> np.ndarray | None:
        """Add the words and counts of `other` (both native stores): the slot here of each of its slots, or None
        if a word there has the hash of another word here (`HashCollision` then)."""
        if self._native is None or other._native is None or self._python or other._python:
            raise ValueError("absorb needs two native word stores")
        slots = self._native.absorb(other._native)
        return None if slots is None else np.frombuffer(slots, dtype=np.int64)

    def __len__(self) -> int:
        """The number of words stored (the slots given so far)."""
        return len(self._native) if self._native is not None else len(self._words)

    def ranked(self, min_count: int = 1, limit: int | None = None) -> tuple[list[str], np.ndarray] | None:
        """`(words, slots)` of the words counted at least `min_count` times, by descending count then word (the
        vocabulary rule of `tokenizers.tokenizer_from_counts`), the first `limit` only; None without the native
        store (sort `counts()` then) or after `add` counted a unit by `split_words`."""
        if self._native is None or self._python:
            return None
        slots = np.frombuffer(self._native.ranked(min_count), dtype=np.int64)[:limit]
        _, points, starts, lengths, _ = self._native.export()
        text = points.decode(_UTF32, "surrogatepass")
        begin = np.frombuffer(starts, dtype=np.int64)[slots]
        end = begin + np.frombuffer(lengths, dtype=np.int64)[slots]
        return [text[a:b] for a, b in zip(begin.tolist(), end.tolist(), strict=True)], slots

    def export(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """`(hashes, words, counts)` of every slot, for `merge_exports`."""
        if self._native is not None:
            hashes, points, starts, lengths, counts = self._native.export()
            text = points.decode(_UTF32, "surrogatepass")
            ends = np.cumsum(np.frombuffer(lengths, dtype=np.int64))
            words = [text[a:b] for a, b in zip(np.frombuffer(starts, dtype=np.int64).tolist(), ends.tolist(),
                                                strict=True)]
            return np.frombuffer(hashes, dtype=np.uint64).copy(), words, np.frombuffer(counts, dtype=np.int64).copy()
        n = len(self._words)
        return self._hashes[:n].copy(), list(self._words), self._counts[:n].copy()


def merge_exports(parts: Sequence[tuple[np.ndarray, list[str], np.ndarray]]
                  ) -> tuple[dict[str, int], list[str], list[np.ndarray]]:
    """Merge several `WordCounter.export`s (by hash, checking that one hash is one word: else `HashCollision`):
    `(count of every counted word, the distinct words, for each part the index of each of its slots' words in
    the distinct words)`."""
    if len(parts) == 1:  # one store's words are distinct (one hash is one word there)
        _, words, counts = parts[0]
        counted = {w: c for w, c in zip(words, counts.tolist(), strict=True) if c}
        return counted, list(words), [np.arange(len(words), dtype=np.int64)]
    hashes = np.concatenate([p[0] for p in parts])
    words = [w for p in parts for w in p[1]]
    counts = np.concatenate([p[2] for p in parts])
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    new = np.ones(ordered.size, dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    seen = order.tolist()
    again = np.flatnonzero(~new).tolist()
    if any(words[seen[i]] != words[seen[i - 1]] for i in again):
        raise HashCollision("two words share a hash")
    inverse = np.empty(order.size, dtype=np.int64)
    inverse[order] = np.cumsum(new) - 1
    distinct = [words[i] for i in order[new].tolist()]
    totals = np.add.reduceat(counts[order], np.flatnonzero(new)).tolist() if counts.size else []
    counted = {w: c for w, c in zip(distinct, totals, strict=True) if c}
    bounds = np.cumsum([len(p[1]) for p in parts])[:-1]
    return counted, distinct, np.split(inverse, bounds)


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


def _grown(array: np.ndarray, size: int) -> np.ndarray:
    if size <= array.size:
        return array
    grown = np.zeros(max(size, 2 * array.size), dtype=array.dtype)
    grown[:array.size] = array
    return grown


def count_words(texts: Iterable[str]) -> Counter:
    """`Counter` of the `split_words` tokens of all texts."""
    counter = WordCounter()
    counter.add(list(texts))
    return counter.counts()


# ---------------------------------------------------------------- encoding


class WordEncoder:
    """`texts -> (ids of all texts concatenated (int32), length of each)` for a word tokenizer: the ids of
    `tokenizer.encode(text)` for every text."""

    def __init__(self, tokenizer) -> None:
        vocab = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
        self._stoi = {token: i for i, token in enumerate(vocab)}
        # the vocabulary's code points, and by id where a token starts there and its length (specials: empty)
        first = len(SPECIAL_TOKENS)
        self._points = np.frombuffer("".join(vocab[first:]).encode(_UTF32), dtype=_POINT)
        self._lengths = np.zeros(len(vocab), dtype=np.int64)
        self._lengths[first:] = np.fromiter(map(len, vocab[first:]), dtype=np.int64, count=len(vocab) - first)
        ends = np.cumsum(self._lengths)
        self._starts = ends - self._lengths
        # sorted hashes → ids of the tokens that vectorised spans can produce (no complex character)
        ids = np.arange(first, len(vocab), dtype=np.int64)
        if self._points.size:
            complex_at = np.flatnonzero(_classes()[self._points] == WORD_COMPLEX)
            ids = np.setdiff1d(ids, np.searchsorted(ends, complex_at, side="right"))
        hashes = _hashes(self._points, self._starts[ids], ends[ids])
        order = np.argsort(hashes)
        self._hashes, self._ids = hashes[order], ids[order].astype(np.int32)
        # two vocabulary tokens with one hash: look every token up in Python (never seen in practice)
        self._vectorised = bool(self._hashes.size) and bool(np.all(self._hashes[1:] != self._hashes[:-1]))
        self._native = None  # the native store of those tokens: token i of `ids` at slot i
        if native is not None and self._vectorised:
            store, slots = native.Words(_word_classes()), np.empty(ids.size, dtype=np.int64)
            if store.tokens(self._points, self._starts[ids], ends[ids], hashes, slots) == 0:
                self._native = store
                self._slot_ids = np.full(len(store) + 1, UNK_ID, dtype=np.int32)  # the last one is slot -1's
                self._slot_ids[slots] = ids

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        parts: list[np.ndarray] = []
        lengths = np.zeros(len(texts), dtype=np.int64)
        for unit, first, offsets in _units(texts, *_unit_sizes()):
            found = self._unit_ids(unit) if self._vectorised else None
            if found is None:  # split_words, text by text
                for k in range(first, first + len(offsets)) if offsets is not None else [first]:
                    part = self._python(texts[k] if offsets is not None else unit)
                    parts.append(part)
                    lengths[k] += part.size
                continue
            ids, positions = found
            parts.append(ids)
            if offsets is None:
                lengths[first] += ids.size
            else:
                bounds = np.asarray(offsets + [len(unit) + 1], dtype=np.int64)
                lengths[first:first + len(offsets)] += np.diff(np.searchsorted(positions, bounds))
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        return flat, lengths

    def _unit_ids(self, unit: str) -> tuple[np.ndarray, np.ndarray] | None:
        """`(id of every token, start of every token)` of `unit`: by the native scanner, else by the numpy path
        (`_by_pieces`); None if neither applies (split_words then)."""
        if self._native is not None:
            slots, starts = np.empty(len(unit), dtype=np.int64), np.empty(len(unit), dtype=np.int64)
            n = self._native.unit(unit, slots, starts, False)
            if n >= 0:
                return self._slot_ids[slots[:n]], starts[:n]
            if n != NATIVE_COMPLEX:  # a text token and a vocabulary token share a hash
                return None
        return _by_pieces(unit, self._lookup, lambda words: list(map(self._stoi.get, words, repeat(UNK_ID))))

    def _python(self, text: str) -> np.ndarray:
        words = split_words(text)
        return np.fromiter(map(self._stoi.get, words, repeat(UNK_ID)), dtype=np.int32, count=len(words))

    def _lookup(self, tok: _Tokens) -> np.ndarray | None:
        """Vocabulary ids of the vectorised tokens, or None if a hash stands for two strings (never in practice)."""
        if not tok.hashes.size:
            return np.zeros(0, dtype=np.int32)
        first, group = tok.groups()
        hashes = tok.hashes[first]
        at = np.minimum(np.searchsorted(self._hashes, hashes), self._hashes.size - 1)
        ids = np.where(self._hashes[at] == hashes, self._ids[at], np.int32(UNK_ID))[group]
        known = ids != UNK_ID
        if known.any() and not tok.matches(self._points, self._starts[ids], self._lengths[ids],
                                           None if known.all() else known):
            return None
        return ids
