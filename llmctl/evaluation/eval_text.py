"""The text an LM evaluation scores: its token stream, its size in characters and whitespace-separated words, and
the `<eos>` tokens of the stream (the protocol card's per-word and per-character denominators, the same whatever the
tokenizer: `llmctl.evaluation.lm.lm_card`).

* A dataset split: the memory-mapped token stream; characters and words from the manifest, which preprocess
  records per split (`len(text.split())` over the split's normalised documents); a dataset made before it did has
  no word count (the card then says "not available").
* New text files: read, normalised and tokenised exactly as `preprocess` does for a language-model split, with the
  run's own settings (`data.encoding`, `data.documents`, `data.normalize`, tokenizer): every document is followed by
  `<eos>`, except for a single plain-text file read with `documents: file` (one continuous document).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from llmctl.data.specials import EOS_ID
from llmctl.errors import DataError


@dataclass
class EvalText:
    tokens: np.ndarray                     # 1-D integer token stream
    characters: int | None                 # characters of the evaluated (normalised) text
    words: int | None                      # whitespace-separated words of the evaluated text
    documents: int | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        """Hash of the token stream: identifies exactly what was scored."""
        return hashlib.sha256(np.ascontiguousarray(self.tokens, dtype=np.int64).tobytes()).hexdigest()[:16]

    @property
    def eos(self) -> int:
        """`<eos>` tokens in the stream (document ends)."""
        return int(np.count_nonzero(np.asarray(self.tokens) == EOS_ID))


# ---------------------------------------------------------------- a dataset split


def split_text(dataset, split: str, tokenizer=None) -> EvalText:
    """The token stream of `split` with its character and word counts (manifest; None when not recorded)."""
    tokens = dataset.tokens(split)
    info = dataset.manifest["splits"].get(split, {})
    characters, words = info.get("characters"), info.get("words")
    return EvalText(tokens=tokens, characters=None if characters is None else int(characters),
                    words=None if words is None else int(words), documents=info.get("documents"))


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
    from llmctl.data.source_decoding import decode_error, inspect_file
    from llmctl.data.source_reading import read_records

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
        info = inspect_file(spec.path, opts.encoding)
        if opts.errors == "strict" and info.bad_offset is not None:
            raise decode_error(info.path, opts.encoding, info.bad_offset)
        sources.append({"path": str(spec.path), "format": spec.format, "size": info.size, "sha256": info.sha256})
        open_doc = False
        in_word = False  # the open document's text so far ends inside a word
        for rec in read_records(spec, opts, info=info):
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
    return EvalText(tokens=tokens, characters=characters, words=words, documents=documents, sources=sources)
