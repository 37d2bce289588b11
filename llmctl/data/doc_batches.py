"""Padded batches of whole documents (classification and prompt→response), built from a dataset's memory maps.

Documents are right-padded with PAD_ID (0) to the longest document of their batch, rounded up to a multiple of
`LENGTH_MULTIPLE` (so a compiled step sees a handful of shapes, not one per length), and truncated to `max_length`
tokens (the first tokens are kept). Training batches are *bucketed*: documents are shuffled, sorted by length within
pools of `POOL_BATCHES` batches, cut into batches, and the batches shuffled again — similar lengths share a batch,
so little compute goes to pads, while the order still changes every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from llmctl.data.specials import PAD_ID

LENGTH_MULTIPLE = 8
POOL_BATCHES = 50
WHOLE = 1 << 30          # the length cap of `finetune.max_length: null` (whole documents)


def length_cap(max_length: int | None) -> int:
    """The token cap for a `finetune.max_length` setting: itself, or WHOLE for null."""
    return WHOLE if max_length is None else int(max_length)


@dataclass
class Documents:
    """One split's documents as (start, length) into a token stream, with optional labels / response starts."""

    tokens: np.ndarray          # 1-D token stream (memory map)
    starts: np.ndarray          # int64 [N]
    lengths: np.ndarray         # int64 [N] (already capped at max_length)
    labels: np.ndarray | None = None           # int32 [N]
    response_starts: np.ndarray | None = None  # int64 [N], relative to each document's start

    def __len__(self) -> int:
        return int(self.starts.size)

    @classmethod
    def from_dataset(cls, dataset, split: str, *, max_length: int | None, labels: bool = False,
                     responses: bool = False) -> "Documents":
        max_length = length_cap(max_length)
        offsets = np.asarray(dataset.doc_offsets(split), dtype=np.int64)
        starts = offsets[:-1]
        lengths = np.minimum(np.diff(offsets), max_length)
        doc_labels = np.asarray(dataset.labels(split), dtype=np.int32) if labels else None
        rel = None
        if responses:
            rel = np.asarray(dataset.response_starts(split), dtype=np.int64) - starts
        return cls(dataset.tokens(split), starts, lengths, doc_labels, rel)

    @classmethod
    def from_token_lists(cls, docs: list[list[int]], *, max_length: int | None) -> "Documents":
        """Documents from in-memory id lists (e.g. texts to predict)."""
        max_length = length_cap(max_length)
        lengths = np.asarray([len(d) for d in docs], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(docs) else lengths
        flat = np.asarray([i for d in docs for i in d], dtype=np.int32)
        return cls(flat, starts, np.minimum(lengths, max_length))

    def subset(self, index: np.ndarray) -> "Documents":
        return Documents(self.tokens, self.starts[index], self.lengths[index],
                         None if self.labels is None else self.labels[index],
                         None if self.response_starts is None else self.response_starts[index])


def padded_length(longest: int, max_length: int | None) -> int:
    """Batch width for a longest document of `longest` tokens: rounded up to LENGTH_MULTIPLE, capped at max_length."""
    width = max(1, -(-int(longest) // LENGTH_MULTIPLE) * LENGTH_MULTIPLE)
    return min(width, max(length_cap(max_length), 1))


def pad_batch(docs: Documents, index: np.ndarray, max_length: int | None) -> np.ndarray:
    """int32 [len(index), width] right-padded token ids of the chosen documents."""
    lengths = docs.lengths[index]
    width = padded_length(int(lengths.max()) if lengths.size else 1, max_length)
    out = np.full((len(index), width), PAD_ID, dtype=np.int32)
    for row, (start, length) in enumerate(zip(docs.starts[index], lengths, strict=True)):
        n = min(int(length), width)
        out[row, :n] = docs.tokens[start:start + n]
    return out


def batch_indices(lengths: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0,
                  by_length: bool = False) -> list[np.ndarray]:
    """Document indices per batch: bucketed by length and shuffled when `shuffle`; else in order, or sorted by
    length when `by_length` (fastest for inference: callers put results back with the indices)."""
    n = int(lengths.size)
    if not shuffle:
        order = np.argsort(lengths, kind="stable") if by_length else np.arange(n)
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    pool = batch_size * POOL_BATCHES
    batches = []
    for i in range(0, n, pool):
        chunk = order[i:i + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[j:j + batch_size] for j in range(0, chunk.size, batch_size)]
    return [batches[k] for k in rng.permutation(len(batches))]


def iterate(docs: Documents, batch_size: int, max_length: int | None, *, shuffle: bool, seed: int = 0,
            by_length: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(document indices, padded tokens) per batch."""
    for index in batch_indices(docs.lengths, batch_size, shuffle=shuffle, seed=seed, by_length=by_length):
        yield index, pad_batch(docs, index, max_length)


def response_mask(tokens: np.ndarray, response_starts: np.ndarray) -> np.ndarray:
    """float32 [B, T-1] loss weights for next-token targets `tokens[:, 1:]`: 1 where the target is a response token
    (the response and its EOS), 0 on the prompt and on pads."""
    targets = tokens[:, 1:]
    positions = np.arange(1, tokens.shape[1])[None, :]
    mask = (positions >= np.asarray(response_starts)[:, None]) & (targets != PAD_ID)
    return mask.astype(np.float32)
