"""The train pass: train the tokenizer on the train split (after routing), streamed.

char counts code points with numpy; word counts words with numpy (`fast_words.counter.WordCounter`), whitespace counts
`str.split` tokens with `Counter`; all then build the
tokenizer with `tokenizers.tokenizer_from_counts`, the vocabulary rule of `train_tokenizer`. bpe trains with
`train_tokenizer` (the Rust trainer). A word tokenizer normally skips this pass: preprocess counts its words while
it encodes (`writing.encode_counting`), and comes here only if that cannot tell words apart.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Iterator

import numpy as np

from llmctl.data import sources as src
from llmctl.data.encoding import CHUNK_CHARS, MAX_CODE_POINT
from llmctl.data.fast_words.counter import WordCounter
from llmctl.data.meter import Meter
from llmctl.data.records import ScanInfo, records
from llmctl.data.splits import Router
from llmctl.data.tokenizers import extend_tokenizer, tokenizer_from_counts, train_tokenizer
from llmctl.errors import DataError
from llmctl.progress import Reporter

if TYPE_CHECKING:
    from llmctl.data.plan import Plan


def train(plan: Plan, scans: dict[str, ScanInfo], reporter: Reporter):
    """Train the tokenizer on the train split, with a progress meter."""
    tok = plan.exp.tokenizer
    with Meter(reporter, f"train {tok.kind} tokenizer", plan.groups["train"].bytes) as meter:
        return train_with(tok, train_texts(plan, scans, meter))


def extend(plan: Plan, scans: dict[str, ScanInfo], reporter: Reporter):
    """`tokenizer.extend`: the reused char/word tokenizer plus the train split's tokens it lacks
    (`extend_tokenizer`)."""
    tok, base = plan.exp.tokenizer, plan.reused
    with Meter(reporter, f"extend {base.kind} tokenizer", plan.groups["train"].bytes) as meter:
        texts = train_texts(plan, scans, meter)
        counts = (char_counts(texts) if base.kind == "char" else whitespace_counts(texts)
                  if base.kind == "whitespace" else word_counts(texts))
    try:
        tokenizer = extend_tokenizer(base, counts, tok.min_freq, tok.max_vocab)
    except ValueError as exc:
        raise DataError(f"tokenizer.extend: {exc}", hint="raise tokenizer.max_vocab or drop tokenizer.extend") from None
    added = tokenizer.vocab_size - base.vocab_size
    reporter.info(f"tokenizer.extend: {added:,} new token(s) after the {base.vocab_size:,} of {plan.reuse} "
                  f"(vocabulary {tokenizer.vocab_size:,})")
    return tokenizer


def train_texts(plan: Plan, scans: dict[str, ScanInfo], meter: Meter) -> Iterator[str]:
    """Text of the train split only (after routing), streamed."""
    group = plan.groups["train"]
    router = Router(plan, scans["train"])
    counter = src.ReadCounter()
    pairs = plan.task == "pairs"
    for rec in records(plan, group, counter):
        meter.update(counter.bytes_read)
        for split, part in router.route(rec):
            if split != "train":
                continue
            if pairs:
                yield part.prompt
                yield part.response
            elif part.text:
                yield part.text
    meter.done(counter.bytes_read)


def train_with(tok, texts: Iterator[str]):
    """Train a tokenizer with the `tokenizer.*` settings `tok` on `texts`."""
    try:
        if tok.kind == "char":
            tokenizer = tokenizer_from_counts("char", char_counts(texts), tok.min_freq, tok.max_vocab)
        elif tok.kind == "word":
            tokenizer = tokenizer_from_counts("word", word_counts(texts), tok.min_freq, tok.max_vocab)
        elif tok.kind == "whitespace":
            tokenizer = tokenizer_from_counts("whitespace", whitespace_counts(texts), tok.min_freq, tok.max_vocab,
                                              split=True, unk_token=tok.unk_token)
        else:
            tokenizer = train_tokenizer(tok.kind, texts, vocab_size=tok.vocab_size if tok.kind == "bpe" else None,
                                        min_freq=tok.min_freq, max_vocab=tok.max_vocab if tok.kind != "bpe" else None)
    except ValueError as exc:
        raise DataError(f"cannot train the {tok.kind} tokenizer on data.train: {exc}",
                        hint="check tokenizer.* settings and that the training text is not empty") from None
    return tokenizer


def batches(texts: Iterator[str], chars: int = CHUNK_CHARS) -> Iterator[list[str]]:
    """Texts grouped into lists of about `chars` characters."""
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def char_counts(texts: Iterator[str]) -> Counter:
    """Code point counts of `texts` (numpy bincount per batch)."""
    totals = np.zeros(MAX_CODE_POINT + 1, dtype=np.int64)
    for batch in batches(texts):
        points = np.frombuffer("".join(batch).encode("utf-32-le"), dtype="<u4")
        totals += np.bincount(points, minlength=MAX_CODE_POINT + 1)
    seen = np.flatnonzero(totals)
    return Counter({chr(int(p)): int(totals[p]) for p in seen})


def whitespace_counts(texts: Iterator[str]) -> Counter:
    """Counts of the whitespace-separated tokens of `texts` (`str.split`, counted in C by `Counter.update`)."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(text.split())
    return counts


def word_counts(texts: Iterator[str]) -> Counter:
    """Word counts of `texts`, in this process."""
    counter = WordCounter()
    for batch in batches(texts):
        counter.add(batch)
    return counter.counts()
