"""The encode pass: every group's records → routed to splits → encoded in chunks → written in order.

A word tokenizer that is trained here takes a single pass instead of train + encode (`encode_counting`): the pass
counts the train split's words while it writes a provisional id for every token (its word's slot in the counting
process, `fast_words.counter.WordCounter.slots`), and once the vocabulary is built from the counts the token files'
provisional ids are replaced by the real ones (`Sink.remap`).

Document boundaries: every document of a language-model corpus is followed by `<eos>`, except when a split's
sources are a single text file read with `documents: file` (one continuous document, nothing appended).
Classification documents are the text's ids (label id per document); pairs documents follow `pair_template`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from llmctl.data import sources as src
from llmctl.data import stats as stats_mod
from llmctl.data.dataset import SplitWriter, token_dtype
from llmctl.data.encoding import (
    CHUNK_CHARS,
    CountingThreads,
    Ordered,
    Threads,
    WorkerLost,
    Workers,
    encoder,
    provisional_ids,
    worker_encode,
    worker_export,
    worker_slots,
)
from llmctl.data.fast_words import scan as word_scan
from llmctl.data.fast_words.counter import HashCollision, WordCounter, merge_exports
from llmctl.data.meter import Meter
from llmctl.data.records import ScanInfo, records
from llmctl.data.splits import Router
from llmctl.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    tokenizer_from_counts,
    tokenizer_from_ranked,
)
from llmctl.data.word_count import continues_word, ends_in_word, words_per_text
from llmctl.errors import DataError, ResourceError
from llmctl.progress import Reporter
from llmctl.runs import DatasetDir

if TYPE_CHECKING:
    from llmctl.data.plan import Group, Plan


def pair_template(prompt_ids: Sequence[int], response_ids: Sequence[int]) -> tuple[list[int], int]:
    """One prompt→response document: `<bos> prompt <sep> response <eos>`.

    Returns the ids and `response_start`, the index of the first response token. At generation time the prompt is
    `ids[:response_start]` of `pair_template(prompt_ids, [])`.
    """
    ids = [BOS_ID, *(int(i) for i in prompt_ids), SEP_ID, *(int(i) for i in response_ids), EOS_ID]
    return ids, len(prompt_ids) + 2


REMAP_BLOCK = 1 << 20  # tokens per step when provisional ids are replaced


class Sink:
    """One split's `SplitWriter` and report counts. With `provisional`, the ids written are provisional (int32, see
    `encode_counting`): `remap` replaces them once the vocabulary is known."""

    def __init__(self, layout: DatasetDir, split: str, dtype: np.dtype, vocab_size: int, *,
                 provisional: bool = False):
        self.provisional = provisional
        self.writer = SplitWriter(layout, split, np.dtype(np.int32) if provisional else dtype)
        self.counts = stats_mod.SplitCounts(vocab_size=vocab_size)
        self.open = False  # a streamed document is open
        self.in_word = False  # the open document's text so far ends inside a word
        self._uncounted: list[np.ndarray] = []

    def piece(self, ids: np.ndarray, chars: int, words: int = 0, text: str = "") -> None:
        """Append part of the open document, opening one if needed (`words` of `text`, the piece: one less when it
        continues the previous piece's last word)."""
        self.open = True
        if ids.size:
            self.writer.extend_document(ids)
            self._uncounted.append(ids)
        self.counts.characters += chars
        if words and continues_word(self.in_word, text):
            words -= 1
        self.counts.words += words
        self.in_word = ends_in_word(text, self.in_word)

    def close(self, eos: bool) -> None:
        """End the open document (with `<eos>` if asked); its pieces become one document."""
        if not self.open:
            return
        if eos:
            end = np.asarray([EOS_ID], dtype=np.int64)
            self.writer.extend_document(end)
            self._uncounted.append(end)
        self.writer.end_document()
        self.open = False
        self.in_word = False
        self.counts.documents += 1

    def documents(self, ids: np.ndarray, lengths: np.ndarray, chars: int, *, eos: bool = False,
                  labels: Sequence[int] | None = None, words: int = 0) -> None:
        """Append several whole documents at once: `ids` concatenated, `lengths` per document."""
        if eos:
            ids = np.insert(ids, np.cumsum(lengths), EOS_ID)
            lengths = lengths + 1
        self.writer.add_many(ids, lengths, labels=labels)
        self._uncounted.append(ids)
        self.counts.documents += len(lengths)
        self.counts.characters += chars
        self.counts.words += words
        if labels is not None:
            for label in labels:
                self.counts.add_label(label)

    def pair(self, ids: Sequence[int], response_start: int, chars: int) -> None:
        arr = np.asarray(ids, dtype=np.int64)
        self.writer.add(arr, response_start=response_start)
        self._uncounted.append(arr)
        self.counts.documents += 1
        self.counts.characters += chars

    def flush_counts(self) -> None:
        """Token counts are taken per chunk (one bincount), not per document; for provisional ids, by `remap`."""
        if self._uncounted and not self.provisional:
            self.counts.add_tokens(np.concatenate(self._uncounted))
        self._uncounted = []

    def finish(self) -> dict[str, Any]:
        self.flush_counts()
        return self.writer.close()

    def remap(self, table: np.ndarray, vocab_size: int, dtype: np.dtype) -> None:
        """After `finish`: rewrite the token file with `table[id]` for every provisional id, as `dtype`, counting
        the tokens for the report."""
        counts = stats_mod.SplitCounts(vocab_size=vocab_size, documents=self.counts.documents,
                                       characters=self.counts.characters, label_counts=self.counts.label_counts,
                                       words=self.counts.words)
        path = self.writer.layout.tokens(self.writer.split)
        target = path.with_name(path.name + ".ids")
        lost = ResourceError("a worker process died while encoding (out of memory?)",
                             hint="run again, or set data.workers=1")
        if word_scan.native is not None:  # the whole file in C, without the GIL
            tokens = word_scan.native.remap(path, target, table, counts.token_counts, dtype.itemsize == 4)
            if tokens < 0:
                raise lost
            counts.tokens += tokens
        else:
            # plain reads, block by block: a memory map would keep the pages read in this process's resident memory
            with open(path, "rb") as source, open(target, "wb") as handle:
                while (block := np.fromfile(source, dtype=np.int32, count=REMAP_BLOCK)).size:
                    if int(block.max()) >= table.size:
                        raise lost
                    ids = table[block]
                    handle.write(ids.astype(dtype).tobytes())
                    counts.add_tokens(ids)
        os.replace(target, path)
        self.counts, self.provisional = counts, False


class Chunk:
    """Texts to encode together, and what to do with their ids (events, in order)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.counted: list[bool] = []  # whether each text is train text (its words form the vocabulary)
        self.events: list[tuple] = []
        self.chars = 0

    def text(self, value: str, split: str) -> int:
        self.texts.append(value)
        self.counted.append(split == "train")
        self.chars += len(value)
        return len(self.texts) - 1


@dataclass
class Task:
    """What encodes a chunk: `fn(*fixed, texts)`, or with `counted`, `fn(*fixed, texts, counted flags)`."""

    fn: Callable
    fixed: tuple = ()
    counted: bool = False

    def args(self, chunk: Chunk) -> tuple:
        return (*self.fixed, chunk.texts, chunk.counted) if self.counted else (*self.fixed, chunk.texts)


def encode_all(plan: Plan, scans: dict[str, ScanInfo], tokenizer, tok_dir: Path, layout: DatasetDir,
               label_ids: dict[str, int], reporter: Reporter, workers: Workers | None,
               threads: int = 1) -> dict[str, Sink]:
    """The encode pass over every group with a known tokenizer; returns the split sinks (still to be finished)."""
    dtype = token_dtype(tokenizer.vocab_size)
    sinks = {s: Sink(layout, s, dtype, tokenizer.vocab_size) for s in plan.splits()}
    # word encodes in `threads` threads with the native word store (its lookups release the GIL), else in worker
    # processes, on large corpora. char (numpy) and bpe (Rust threads) stay here.
    if tokenizer.kind == "word" and threads > 1 and word_scan.native is not None:
        pool = Threads(threads)
        try:
            _encode_groups(plan, scans, Ordered(pool), Task(encoder(tokenizer)), sinks, label_ids, reporter)
        finally:
            pool.stop()
        return sinks
    workers = workers if tokenizer.kind == "word" else None
    if workers is not None:
        if workers.forked:
            workers.preload(str(tok_dir), encoder(tokenizer))
        task = Task(worker_encode, (str(tok_dir),))
    else:
        task = Task(encoder(tokenizer))
    _encode_groups(plan, scans, Ordered(workers), task, sinks, label_ids, reporter)
    return sinks


def encode_counting(plan: Plan, scans: dict[str, ScanInfo], layout: DatasetDir, label_ids: dict[str, int],
                    reporter: Reporter, workers: Workers | None, threads: int = 1):
    """The single pass of a word tokenizer trained here: encode every group to provisional ids while counting the
    train split's words, build the tokenizer from the counts (`tokenizer_from_counts`, the rule of
    `train_tokenizer`), save it to the layout's tokenizer folder and replace the provisional ids by its ids (in a
    thread, while the tokenizer is saved). Returns the tokenizer, the sinks and their manifest entries. Raises
    `HashCollision` if words cannot be told apart by hash (take the two-pass path then).

    The pass runs in `workers` (processes), or in `threads` threads with native word stores (merged at the end,
    `WordCounter.absorb`), or inline."""
    tok = plan.exp.tokenizer
    sinks = {s: Sink(layout, s, np.dtype(np.int32), 0, provisional=True) for s in plan.splits()}
    n = workers.n if workers is not None else 1
    ranked = None
    try:
        if workers is not None:
            _encode_groups(plan, scans, Ordered(workers), Task(worker_slots, counted=True), sinks, label_ids, reporter)
            exports = [part.get() for part in [workers.pool.apply_async(worker_export) for _ in range(n)]]
        else:
            counters = _count_in_threads(plan, scans, sinks, label_ids, reporter, threads)
            n, counter = len(counters), counters[0]
            own = [np.arange(len(counter), dtype=np.int64)]  # each counter's slots in the first one
            for other in counters[1:]:
                slots = counter.absorb(other)
                if slots is None:
                    raise HashCollision("two words share a hash")
                own.append(slots)
            limit = tok.max_vocab - len(SPECIAL_TOKENS) if tok.max_vocab is not None else None
            ranked = counter.ranked(tok.min_freq, max(limit, 0) if limit is not None else None)
            exports = [(0, *counter.export())] if ranked is None else []
    except (HashCollision, WorkerLost) as exc:
        for sink in sinks.values():  # close the token files (the two-pass path writes them again)
            sink.writer.close()
        if isinstance(exc, WorkerLost):
            raise ResourceError("a worker process died while encoding (out of memory?)",
                                hint="run again, or set data.workers=1") from None
        raise
    if ranked is not None:  # one store whose words come sorted by the vocabulary rule: no merge, no Python sort
        counted = bool(ranked[0]) or len(counter.ranked(1, 1)[1]) > 0
        return _finish_counting(plan, layout, sinks, *ranked, counted=counted, stored=len(counter), own=own)
    if sorted(index for index, *_ in exports) != list(range(n)):
        raise ResourceError("a worker process died while encoding (out of memory?)",
                            hint="run again, or set data.workers=1")
    try:
        counts, distinct, where = merge_exports([part for _, *part in exports])
    except HashCollision:
        for sink in sinks.values():
            sink.writer.close()
        raise
    with _tokenizer_errors():
        tokenizer = tokenizer_from_counts("word", counts, tok.min_freq, tok.max_vocab, split=True)
    ids = np.asarray(tokenizer.tokens_to_ids(distinct), dtype=np.int64)
    by_worker = dict(zip((index for index, *_ in exports), (ids[part] for part in where), strict=True))
    return _remap_and_save(layout, sinks, tokenizer, _id_table([by_worker[i] for i in range(n)]))


def _count_in_threads(plan: Plan, scans: dict[str, ScanInfo], sinks: dict[str, Sink], label_ids: dict[str, int],
                      reporter: Reporter, threads: int) -> list[WordCounter]:
    """The single pass in this process: in `threads` threads (native word stores only) or inline. Returns the
    counters, one per thread."""
    if threads > 1 and word_scan.native is not None:
        pool = CountingThreads(threads)
        try:
            _encode_groups(plan, scans, Ordered(pool), Task(pool.slots, counted=True), sinks, label_ids, reporter)
        finally:
            pool.stop()
        return pool.counters
    counter = WordCounter()

    def encode(texts: list[str], counted: list[bool]) -> tuple[np.ndarray, np.ndarray]:
        slots, lengths = counter.slots(texts, counted)
        return provisional_ids(slots, 1, 0, len(counter)), lengths

    _encode_groups(plan, scans, Ordered(None), Task(encode, counted=True), sinks, label_ids, reporter)
    return [counter]


def _finish_counting(plan: Plan, layout: DatasetDir, sinks: dict[str, Sink], words: list[str], slots: np.ndarray, *,
                     counted: bool, stored: int, own: list[np.ndarray]):
    """`encode_counting`'s end for counting stores merged into one (of `stored` words, `counted` if any was
    counted) whose words come ranked (`WordCounter.ranked`): the vocabulary is the specials then `words`, slot
    `slots[k]` gets id `specials + k` and every other slot `<unk>`; `own[i]` is the slot there of each slot of
    thread i (provisional id `specials + slot * n + i`)."""
    tok = plan.exp.tokenizer
    with _tokenizer_errors():
        if not counted:
            raise ValueError("training data is empty: no word tokens found")
        tokenizer = tokenizer_from_ranked("word", words, tok.max_vocab, split=True)
    first = len(SPECIAL_TOKENS)
    final = np.full(stored, UNK_ID, dtype=np.int64)
    kept = tokenizer.vocab_size - first
    final[slots[:kept]] = first + np.arange(kept)
    return _remap_and_save(layout, sinks, tokenizer, _id_table([final[part] for part in own]))


def _id_table(ids: list[np.ndarray]) -> np.ndarray:
    """Provisional id → id, from `ids[i]`, the id of each slot of worker (or thread) i of n: the specials are
    themselves, worker i's slot s is at `specials + s * n + i` (`encoding.provisional_ids`)."""
    first, n = len(SPECIAL_TOKENS), len(ids)
    table = np.full(first + n * max(part.size for part in ids), UNK_ID, dtype=np.int64)
    table[:first] = np.arange(first)
    for i, part in enumerate(ids):
        table[first + i::n][:part.size] = part
    return table


@contextmanager
def _tokenizer_errors() -> Iterator[None]:
    try:
        yield
    except ValueError as exc:
        raise DataError(f"cannot train the word tokenizer on data.train: {exc}",
                        hint="check tokenizer.* settings and that the training text is not empty") from None


def _remap_and_save(layout: DatasetDir, sinks: dict[str, Sink], tokenizer, table: np.ndarray):
    """Give the token files their final ids (`table[provisional id]`) while the tokenizer is saved."""
    dtype = token_dtype(tokenizer.vocab_size)
    splits = {name: sink.finish() for name, sink in sinks.items()}

    def remap_all() -> None:
        for sink in sinks.values():
            sink.remap(table, tokenizer.vocab_size, dtype)

    with ThreadPoolExecutor(1, thread_name_prefix="llmctl-remap") as pool:
        remapped = pool.submit(remap_all)
        try:
            tokenizer.save(layout.tokenizer)  # meanwhile (the remap runs without the GIL)
        finally:
            remapped.result()
    return tokenizer, sinks, splits


def _encode_groups(plan: Plan, scans: dict[str, ScanInfo], runner: Ordered, task: Task, sinks: dict[str, Sink],
                   label_ids: dict[str, int], reporter: Reporter) -> None:
    with Meter(reporter, "encode", plan.total_bytes) as meter:
        for name, group in plan.groups.items():
            router = Router(plan, scans["train"]) if name == "train" else None
            encode_group(plan, name, group, router, runner, task, sinks, label_ids, meter)


def encode_group(plan: Plan, name: str, group: Group, router: Router | None, runner: Ordered, task: Task,
                 sinks: dict[str, Sink], label_ids: dict[str, int], meter: Meter) -> None:
    """Route, chunk and encode one group's records; results are written in order as they come back."""
    counter = src.ReadCounter()
    state: dict[str, Any] = {"open": None, "eos": group.eos}
    chunk = Chunk()
    streaming = False  # a document streamed in pieces is open
    for rec in records(plan, group, counter):
        for split, part in (router.route(rec) if router is not None else [(name, rec)]):
            if plan.task == "pairs":
                chunk.events.append(("pair", split, chunk.text(part.prompt, split), chunk.text(part.response, split)))
            elif plan.task == "classify":
                chunk.events.append(("doc", split, chunk.text(part.text, split), label_ids[part.label]))
            elif part.end and not streaming and part.text:  # a whole document in one text
                chunk.events.append(("doc", split, chunk.text(part.text, split), None))
            else:
                if part.text:
                    chunk.events.append(("piece", split, chunk.text(part.text, split)))
                    streaming = True
                if part.end:
                    chunk.events.append(("end", split))
                    streaming = False
        if chunk.chars >= CHUNK_CHARS:
            for done, ids in runner.submit(task.fn, task.args(chunk), chunk):
                apply(done, ids, sinks, state)
            chunk = Chunk()
            meter.update(counter.bytes_read)
    if chunk.events:
        for done, ids in runner.submit(task.fn, task.args(chunk), chunk):
            apply(done, ids, sinks, state)
    for done, ids in runner.drain():
        apply(done, ids, sinks, state)
    if state["open"] is not None:
        sinks[state["open"]].close(eos=False)
    meter.done(counter.bytes_read)


def apply(chunk: Chunk, result: tuple[np.ndarray, np.ndarray], sinks: dict[str, Sink],
          state: dict[str, Any]) -> None:
    """Write one encoded chunk, in order. `piece` extends the open streamed document and `end` closes it (with
    `<eos>` unless the group is one continuous text); runs of whole documents (`doc`) for the same split are
    written in bulk; `pair` documents follow `pair_template`."""
    flat, lengths = result
    ends = np.cumsum(lengths)
    starts = ends - lengths
    texts, events = chunk.texts, chunk.events
    # whitespace-separated words of language-model text (the protocol card's per-word figures)
    lm_text = any(e[0] == "piece" or (e[0] == "doc" and e[3] is None) for e in events)
    words = words_per_text(texts) if lm_text else np.zeros(len(texts), dtype=np.int64)
    k, n = 0, len(events)
    while k < n:
        kind, split = events[k][0], events[k][1]
        if kind == "doc":
            j = k
            while j + 1 < n and events[j + 1][0] == "doc" and events[j + 1][1] == split:
                j += 1
            first, last = events[k][2], events[j][2]  # text indices of a run are consecutive
            labels = [e[3] for e in events[k:j + 1]] if events[k][3] is not None else None
            sinks[split].documents(flat[starts[first]:ends[last]], lengths[first:last + 1],
                                   sum(map(len, texts[first:last + 1])),
                                   eos=labels is None and state["eos"], labels=labels,
                                   words=int(words[first:last + 1].sum()))
            k = j + 1
            continue
        if kind == "piece":
            if state["open"] not in (None, split):  # the tail boundary cut a document: close its first part
                sinks[state["open"]].close(eos=False)
            state["open"] = split
            i = events[k][2]
            sinks[split].piece(flat[starts[i]:ends[i]], len(texts[i]), int(words[i]), texts[i])
        elif kind == "end":
            if state["open"] is not None:
                sinks[state["open"]].close(eos=state["eos"])
            state["open"] = None
        else:  # pair
            p, r = events[k][2], events[k][3]
            ids, response_start = pair_template(flat[starts[p]:ends[p]], flat[starts[r]:ends[r]])
            sinks[split].pair(ids, response_start, len(texts[p]) + len(texts[r]))
        k += 1
    for sink in sinks.values():
        sink.flush_counts()
