"""Whitespace-separated words of texts, vectorised: `len(text.split())` for many texts at once.

The protocol card's per-word figures (`llmctl.evaluation.lm`) divide by the words of the evaluated text, whatever
the tokenizer; preprocess counts them per split with this while it writes the token files. A word starts at a
non-whitespace character (`str.isspace`, the rule of `str.split`) that follows whitespace or starts the text.
"""

from __future__ import annotations

from functools import cache
from typing import Sequence

import numpy as np


@cache
def _ascii_space() -> np.ndarray:
    return np.array([chr(c).isspace() for c in range(256)], dtype=bool)


@cache
def _space() -> np.ndarray:
    """`str.isspace` of every code point."""
    from llmctl.data.tokenizers.words import _whitespace_ranges

    table = np.zeros(0x110000, dtype=bool)
    for lo, hi in _whitespace_ranges():
        table[lo:hi + 1] = True
    return table


def words_per_text(texts: Sequence[str]) -> np.ndarray:
    """`[len(t.split()) for t in texts]` as int64."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    joined = "\n".join(texts)
    try:
        if joined.isascii():
            space = _ascii_space()[np.frombuffer(joined.encode("ascii"), dtype=np.uint8)]
        else:
            space = _space()[np.frombuffer(joined.encode("utf-32-le"), dtype="<u4")]
    except UnicodeEncodeError:  # lone surrogates
        return np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))
    starts = ~space
    starts[1:] &= space[:-1]
    cumulative = np.zeros(starts.size + 1, dtype=np.int64)
    np.cumsum(starts, out=cumulative[1:])
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    begin = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=begin[1:])
    return cumulative[begin + lengths] - cumulative[begin]


def continues_word(previous_ends_in_word: bool, text: str) -> bool:
    """Whether `text`, appended to a text that ends inside a word, continues that word (so it is counted once)."""
    return previous_ends_in_word and bool(text) and not text[0].isspace()


def ends_in_word(text: str, before: bool) -> bool:
    """Whether the text so far ends inside a word after appending `text` (`before`: it did before)."""
    return (not text[-1].isspace()) if text else before
