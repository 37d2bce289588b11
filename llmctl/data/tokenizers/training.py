"""Training (streamed), building from counts, extending and loading tokenizers."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from llmctl.data.specials import DEFAULT_UNK_TOKEN, SPECIAL_TOKENS
from llmctl.data.specials import NUM_SPECIAL as _NUM_SPECIAL
from llmctl.data.tokenizers.base import (
    _METADATA_FORMAT,
    FORMAT_VERSION,
    HF_TOKENIZER_FILE,
    METADATA_FILE,
    TOKENIZER_KINDS,
    Tokenizer,
)
from llmctl.data.tokenizers.kinds import _TOKENIZER_CLASSES, BpeTokenizer
from llmctl.data.tokenizers.words import split_words

#: BPE target size used when ``vocab_size`` is not given (the config default).
DEFAULT_BPE_VOCAB_SIZE: Final = 8000
_BYTE_ALPHABET_SIZE: Final = 256


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    *,
    vocab_size: int | None = None,
    min_freq: int = 1,
    max_vocab: int | None = None,
    unk_token: str = DEFAULT_UNK_TOKEN,
) -> Tokenizer:
    """Train a tokenizer of ``kind`` on ``texts``, streaming (the corpus is never held in memory).

    ``char``/``word``/``whitespace``: keep tokens seen at least ``min_freq`` times, ordered by
    descending frequency then by token string, and cap the vocabulary at
    ``max_vocab`` entries, special tokens included; ``vocab_size`` is ignored.

    ``bpe``: ``vocab_size`` (default :data:`DEFAULT_BPE_VOCAB_SIZE`) is the
    target size, special tokens included, and must leave room for the 256
    byte symbols (>= 261); ``min_freq`` is the minimum frequency of a merged
    pair; ``max_vocab`` is ignored. ``unk_token``: the ``whitespace`` kind's literal unknown-word token.

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
        counts.update(split_words(text) if kind == "word" else text.split() if kind == "whitespace" else text)
    return tokenizer_from_counts(kind, counts, min_freq, max_vocab, unk_token=unk_token)


def tokenizer_from_counts(
    kind: str, counts: Mapping[str, int], min_freq: int = 1, max_vocab: int | None = None, *, split: bool = False,
    unk_token: str = DEFAULT_UNK_TOKEN,
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
    reserved = _reserved(unk_token)
    kept = sorted(token for token, n in counts.items() if n >= min_freq and token not in reserved)
    kept.sort(key=counts.__getitem__, reverse=True)
    return tokenizer_from_ranked(kind, kept, max_vocab, split=split, unk_token=unk_token)


def _reserved(unk_token: str) -> frozenset[str]:
    """Token strings that never enter a vocabulary: the special tokens (a ``whitespace`` corpus may write them as
    words; they keep their ids) and the literal unknown-word token."""
    return frozenset((*SPECIAL_TOKENS, unk_token))


def tokenizer_from_ranked(kind: str, ranked: Sequence[str], max_vocab: int | None = None, *,
                          split: bool = False, unk_token: str = DEFAULT_UNK_TOKEN) -> Tokenizer:
    """The ``char``/``word`` tokenizer of :func:`tokenizer_from_counts` from its tokens already chosen and ordered:
    ``ranked`` holds the tokens seen at least ``min_freq`` times, by descending count then token string (as
    ``fast_words.counter.WordCounter.ranked`` gives them); the vocabulary is the special tokens then ``ranked``,
    capped at ``max_vocab`` entries. ``split`` as in :func:`tokenizer_from_counts`."""
    if kind not in _TOKENIZER_CLASSES:
        raise ValueError(f"cannot build a {kind!r} tokenizer from counts; expected one of "
                         f"{', '.join(_TOKENIZER_CLASSES)}")
    _check_max_vocab(kind, max_vocab)
    kept = list(ranked)
    if kind == "whitespace":  # only whitespace tokens can be special-token strings
        reserved = _reserved(unk_token)
        kept = [token for token in kept if token not in reserved]
    if max_vocab is not None:
        kept = kept[: max_vocab - _NUM_SPECIAL]
    options = {"unk_token": unk_token} if kind == "whitespace" else {}
    return _TOKENIZER_CLASSES[kind](SPECIAL_TOKENS + kept, check=not split, **options)


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
    known = set(vocab) | _reserved(getattr(base, "unk_token", DEFAULT_UNK_TOKEN))
    new = sorted(token for token, n in counts.items() if n >= min_freq and token not in known)
    new.sort(key=counts.__getitem__, reverse=True)
    if max_vocab is not None:
        new = new[: max_vocab - len(vocab)]
    return base.with_vocab(vocab + new)


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


def load_tokenizer(directory: str | os.PathLike[str]) -> Tokenizer:
    """Load a tokenizer written by :meth:`Tokenizer.save`.

    ``char``/``word``/``whitespace`` are rebuilt from the vocabulary in
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
        options = {"unk_token": meta.get("unk_token", DEFAULT_UNK_TOKEN)} if kind == "whitespace" else {}
        try:
            tokenizer = _TOKENIZER_CLASSES[kind](vocab, **options)
        except (TypeError, ValueError) as exc:
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
