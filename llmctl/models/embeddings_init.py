"""Initialise an embedding matrix from pretrained word2vec / GloVe vectors in text format.

Format: one `token v1 v2 ... vD` line per token, space-separated; word2vec files start with an `N D` header line,
GloVe files do not. `.gz` files are read through gzip. The file is streamed line by line and only numbers of tokens
that map into the vocabulary are parsed, so multi-GB files cost one pass and little memory. A token may itself
contain spaces (some GloVe releases have them): the last D fields are the vector, the rest is the token.

Matching, for each vector line (first hit wins; an exact hit always replaces a lowercase one):
1. exact: `tokenizer.token_to_id(token)`;
2. lowercase: `tokenizer.token_to_id(token.lower())` (lowercased vocabulary, cased vectors), and — when the tokenizer
   offers `id_to_token` — vocabulary tokens whose lowercase form equals the token (cased vocabulary, GloVe's
   lowercased vectors).
Rows without a match get N(0, 0.02²) noise (seeded); the special ids 0..num_special-1 are zeros.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import numpy as np

from llmctl.errors import DataError

NUM_SPECIAL = 5
INIT_STD = 0.02
_NONE, _LOWER, _EXACT = 0, 1, 2


def _open(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line without its end), skipping blank lines."""
    with _open(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{number}: not valid UTF-8 ({exc.reason}); "
                                "re-save the vectors file as UTF-8") from None
            line = line.rstrip("\r\n").rstrip(" ")
            if line.strip():
                yield number, line


def _header(line: str) -> int | None:
    """D from a word2vec `N D` header line, else None."""
    fields = line.split(" ")
    if len(fields) == 2 and all(f.isdigit() for f in fields):
        return int(fields[1])
    return None


def _lowercase_index(tokenizer: Any, vocab_size: int, num_special: int) -> dict[str, list[int]]:
    """lowercase form → vocabulary ids whose token differs from it (only when the tokenizer can list its vocab)."""
    id_to_token = getattr(tokenizer, "id_to_token", None)
    if id_to_token is None:
        return {}
    index: dict[str, list[int]] = {}
    for i in range(num_special, vocab_size):
        token = id_to_token(i)
        if token is not None and token.lower() != token:
            index.setdefault(token.lower(), []).append(i)
    return index


def load_pretrained_vectors(path: str | Path, tokenizer: Any, embedding_dim: int, *, seed: int = 0,
                            num_special: int = NUM_SPECIAL) -> tuple[np.ndarray, dict[str, Any]]:
    """A float32 [vocab_size, embedding_dim] matrix from the vectors in `path`, and coverage stats:
    {"covered", "exact", "lowercase", "vocab", "coverage", "dim", "lines", "path"} (coverage = covered / vocab)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pretrained embeddings file not found: {path}; fix model.pretrained_embeddings")
    vocab_size = int(tokenizer.vocab_size)
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, INIT_STD, size=(vocab_size, embedding_dim)).astype(np.float32)
    matrix[:num_special] = 0.0
    quality = np.zeros(vocab_size, dtype=np.int8)
    lower_index = _lowercase_index(tokenizer, vocab_size, num_special)

    dim: int | None = None
    vectors = 0
    for number, line in _lines(path):
        if dim is None:
            dim = _header(line)
            if dim is None:  # GloVe: the first line is already a vector
                dim = len(line.split(" ")) - 1
                _check_dim(path, dim, embedding_dim)
            else:
                _check_dim(path, dim, embedding_dim)
                continue
        fields = line.rsplit(" ", dim)
        if len(fields) != dim + 1 or not fields[0]:
            found = f"{len(fields) - 1} numbers" if len(fields) != dim + 1 else "an empty token"
            raise DataError(f"{path}:{number}: expected a token and {dim} numbers, got {found}; "
                            "fix or remove that line")
        vectors += 1
        token = fields[0]
        targets = _targets(tokenizer, token, lower_index, quality, num_special, vocab_size)
        if not targets:
            continue
        try:
            vector = np.asarray(fields[1:], dtype=np.float32)
        except ValueError:
            raise DataError(f"{path}:{number}: vector of {token!r} holds a value that is not a number; "
                            "fix or remove that line") from None
        if not np.isfinite(vector).all():
            raise DataError(f"{path}:{number}: vector of {token!r} holds inf or nan; fix or remove that line")
        for row, level in targets:
            matrix[row] = vector
            quality[row] = level

    if dim is None or vectors == 0:
        raise DataError(f"{path} holds no vectors; point model.pretrained_embeddings at a word2vec/GloVe text file")
    exact = int(np.count_nonzero(quality == _EXACT))
    lower = int(np.count_nonzero(quality == _LOWER))
    covered = exact + lower
    if covered == 0:
        raise DataError(f"none of the {vectors} vectors in {path} match a token of the {vocab_size}-token vocabulary; "
                        "use vectors for this tokenization (word-level) or unset model.pretrained_embeddings")
    stats = {"covered": covered, "exact": exact, "lowercase": lower, "vocab": vocab_size,
             "coverage": covered / vocab_size, "dim": dim, "lines": vectors, "path": str(path)}
    return matrix, stats


def _check_dim(path: Path, dim: int, embedding_dim: int) -> None:
    if dim < 1:
        raise DataError(f"{path}: first line holds no vector; point model.pretrained_embeddings at a word2vec/GloVe "
                        "text file")
    if dim != embedding_dim:
        raise DataError(f"{path}: vectors have {dim} dims but model.embedding_dim is {embedding_dim}; "
                        f"set model.embedding_dim={dim}")


def _targets(tokenizer: Any, token: str, lower_index: dict[str, list[int]], quality: np.ndarray,
             num_special: int, vocab_size: int) -> list[tuple[int, int]]:
    """Rows this vector should fill, with their match level; rows already filled at that level or better are kept."""
    def usable(row: int | None, level: int) -> bool:
        return row is not None and num_special <= row < vocab_size and quality[row] < level

    targets: list[tuple[int, int]] = []
    row = tokenizer.token_to_id(token)
    if usable(row, _EXACT):
        targets.append((row, _EXACT))
    candidates = [tokenizer.token_to_id(token.lower())] if token.lower() != token else []
    candidates += lower_index.get(token, [])
    targets += [(r, _LOWER) for r in dict.fromkeys(candidates) if r != row and usable(r, _LOWER)]
    return targets
