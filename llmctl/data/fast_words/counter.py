"""Counting words (`WordCounter`), and the slots of preprocess's single word pass.

`WordCounter.add` counts exactly `Counter(split_words(t))` over the texts, by the vectorised scan (`fast_words.scan`,
or its native word store). `WordCounter.slots` serves preprocess's single word pass: it counts the words of the train
split while it gives every token the slot of its word, so token files can be written before the vocabulary exists
(`writing`). Stores of several workers or threads merge by hash (`merge_exports`, `WordCounter.absorb`).
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from llmctl.data.fast_words import scan
from llmctl.data.fast_words.scan import (
    _UTF32,
    NATIVE_COMPLEX,
    NATIVE_MAX_UNIT,
    _by_pieces,
    _from_words,
    _Tokens,
    _unit_sizes,
    _units,
)
from llmctl.data.tokenizers import _word_classes, split_words


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
        self._native = scan.native.Words(_word_classes()) if scan.native is not None else None
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
