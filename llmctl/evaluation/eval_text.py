"""The text an LM evaluation scores: its token stream and its size in characters and whitespace-separated words.

* A dataset split: the memory-mapped token stream; characters from the manifest (the split's normalised text);
  words counted from the tokens (vectorised for `char`, decoded between special tokens for `bpe`).
* New text files: read, normalised and tokenised exactly as `preprocess` does for a language-model split, with the
  run's own settings (`data.encoding`, `data.documents`, `data.normalize`, tokenizer): every document is followed by
  `<eos>`, except for a single plain-text file read with `documents: file` (one continuous document).

Word counts are None for `word` tokenizers (their tokens are words).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from llmctl.errors import DataError

DECODE_CHUNK = 1 << 20  # tokens decoded at a time when counting words


@dataclass
class EvalText:
    tokens: np.ndarray                     # 1-D integer token stream
    characters: int | None                 # characters of the evaluated (normalised) text
    words: int | None                      # whitespace-separated words (None for word tokenizers)
    documents: int | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        """Hash of the token stream: identifies exactly what was scored."""
        return hashlib.sha256(np.ascontiguousarray(self.tokens, dtype=np.int64).tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------- words in a token stream


def _special_ids() -> int:
    from llmctl.data.tokenizers import SPECIAL_TOKENS

    return len(SPECIAL_TOKENS)


def count_words(tokenizer, tokens: np.ndarray) -> int | None:
    """Whitespace-separated words of the text `tokens` decode to; special tokens (document ends) separate words."""
    if tokenizer.kind == "word":
        return None
    tokens = np.asarray(tokens)
    n_special = _special_ids()
    if tokenizer.kind == "char":
        space = np.zeros(tokenizer.vocab_size, dtype=bool)
        space[:n_special] = True
        for i in range(n_special, tokenizer.vocab_size):
            space[i] = tokenizer.id_to_token(i).isspace()
        is_space = space[tokens]
        starts = ~is_space
        starts[1:] &= is_space[:-1]
        return int(starts.sum())
    # bpe: decode the segments between special tokens, cut into chunks before a token that starts with whitespace
    # (so no chunk boundary splits a word or a multi-byte character)
    leading_space = np.zeros(tokenizer.vocab_size, dtype=bool)
    for i in range(n_special, tokenizer.vocab_size):
        leading_space[i] = tokenizer.decode([i])[:1].isspace()
    words = 0
    bounds = np.flatnonzero(tokens < n_special)
    start = 0
    for stop in [*bounds.tolist(), len(tokens)]:
        words += _segment_words(tokenizer, tokens[start:stop], leading_space)
        start = stop + 1
    return words


def _segment_words(tokenizer, segment: np.ndarray, leading_space: np.ndarray) -> int:
    words = 0
    start = 0
    while start < len(segment):
        stop = min(start + DECODE_CHUNK, len(segment))
        if stop < len(segment):
            cuts = np.flatnonzero(leading_space[segment[stop:]])
            stop = stop + int(cuts[0]) if len(cuts) else len(segment)
        words += len(tokenizer.decode(segment[start:stop].tolist()).split())
        start = stop
    return words


# ---------------------------------------------------------------- a dataset split


def split_text(dataset, split: str, tokenizer) -> EvalText:
    """The token stream of `split` with its character count (manifest) and word count."""
    tokens = dataset.tokens(split)
    info = dataset.manifest["splits"].get(split, {})
    characters = info.get("characters")
    if characters is None and tokenizer.kind != "word":
        characters = len(tokenizer.decode(np.asarray(tokens).tolist()))
    return EvalText(tokens=tokens, characters=None if characters is None else int(characters),
                    words=count_words(tokenizer, tokens), documents=info.get("documents"))


# ---------------------------------------------------------------- new text files


def _expand(paths: Iterable[Path], data) -> list:
    from llmctl.data import sources as src
    from llmctl.schema import SourceConfig

    specs = []
    for i, path in enumerate(paths):
        specs.extend(src.expand(SourceConfig(path=Path(path)), data, f"evaluate.files[{i}]"))
    return specs


def files_text(paths: list[Path], data, normalizer, tokenizer) -> EvalText:
    """Read, normalise and tokenise `paths` like preprocess does for an LM split (see the module docstring).

    `data` is the run's `DataConfig` (encoding, documents, text field), `normalizer` its `Normalizer`.
    """
    from llmctl.data import sources as src
    from llmctl.data.preprocess import encoder
    from llmctl.data.tokenizers import EOS_ID

    if not paths:
        raise DataError("no files to evaluate", hint="pass --file PATH (repeatable) or set evaluate.files")
    data = data.model_copy(update={"task": "lm"})
    specs = _expand(paths, data)
    opts = src.ReadOptions.of(data)
    single_stream = len(specs) == 1 and specs[0].format == "text" and opts.documents == "file"
    encode = encoder(tokenizer)
    norm = None if normalizer.identity else normalizer
    pieces: list[np.ndarray] = []
    characters = 0
    words = 0
    documents = 0
    sources = []
    for spec in specs:
        info = src.inspect_file(spec.path, opts.encoding)
        if opts.errors == "strict" and info.bad_offset is not None:
            raise src.decode_error(info.path, opts.encoding, info.bad_offset)
        sources.append({"path": str(spec.path), "format": spec.format, "size": info.size, "sha256": info.sha256})
        open_doc = False
        in_word = False  # the open document's text so far ends inside a word
        for rec in src.read_records(spec, opts, info=info):
            text = norm(rec.text) if norm else rec.text
            if rec.end and not open_doc and (spec.format != "text" or opts.documents == "line") and not text.strip():
                continue  # preprocess drops empty records
            if text:
                ids, _ = encode([text])
                pieces.append(ids)
                characters += len(text)
                n_words = len(text.split())
                if n_words and in_word and not text[0].isspace():
                    n_words -= 1  # the piece continues the previous piece's last word
                words += n_words
                in_word = not text[-1].isspace()
                open_doc = True
            if rec.end:
                if open_doc:
                    documents += 1
                    if not single_stream:
                        pieces.append(np.asarray([EOS_ID], dtype=np.int64))
                open_doc = False
                in_word = False
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    if len(tokens) < 2:
        names = ", ".join(str(p) for p in paths[:3])
        raise DataError(f"evaluate.files ({names}) hold {len(tokens)} token(s) after normalisation: nothing to "
                        "predict", hint="pass files with at least two tokens of text")
    return EvalText(tokens=tokens, characters=characters, words=None if tokenizer.kind == "word" else words,
                    documents=documents, sources=sources)
