"""Encoding texts with a word tokenizer (`WordEncoder`): exactly `tokenizer.encode(text)` for every text, by the
vectorised scan (`fast_words.scan`, or its native word store) and a vocabulary looked up by hash.
"""

from __future__ import annotations

from itertools import repeat
from typing import Sequence

import numpy as np

from llmctl.data.fast_words import scan
from llmctl.data.fast_words.scan import (
    _POINT,
    _UTF32,
    NATIVE_COMPLEX,
    _by_pieces,
    _classes,
    _Tokens,
    _unit_sizes,
    _units,
)
from llmctl.data.tokenizers import SPECIAL_TOKENS, UNK_ID, WORD_COMPLEX, _word_classes, split_words


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
        hashes = scan._hashes(self._points, self._starts[ids], ends[ids])
        order = np.argsort(hashes)
        self._hashes, self._ids = hashes[order], ids[order].astype(np.int32)
        # two vocabulary tokens with one hash: look every token up in Python (never seen in practice)
        self._vectorised = bool(self._hashes.size) and bool(np.all(self._hashes[1:] != self._hashes[:-1]))
        self._native = None  # the native store of those tokens: token i of `ids` at slot i
        if scan.native is not None and self._vectorised:
            store, slots = scan.native.Words(_word_classes()), np.empty(ids.size, dtype=np.int64)
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
