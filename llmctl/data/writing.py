"""The encode pass: every group's records → routed to splits → encoded in chunks → written in order.

Document boundaries: every document of a language-model corpus is followed by `<eos>`, except when a split's
sources are a single text file read with `documents: file` (one continuous document, nothing appended).
Classification documents are the text's ids (label id per document); pairs documents follow `pair_template`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from llmctl.data import sources as src
from llmctl.data import stats as stats_mod
from llmctl.data.dataset import SplitWriter, token_dtype
from llmctl.data.encoding import CHUNK_CHARS, Ordered, Workers, encoder, worker_encode
from llmctl.data.meter import Meter
from llmctl.data.records import ScanInfo, records
from llmctl.data.splits import Router
from llmctl.data.tokenizers import BOS_ID, EOS_ID, SEP_ID
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


class Sink:
    """One split's `SplitWriter` and report counts."""

    def __init__(self, layout: DatasetDir, split: str, dtype: np.dtype, vocab_size: int):
        self.writer = SplitWriter(layout, split, dtype)
        self.counts = stats_mod.SplitCounts(vocab_size=vocab_size)
        self.open = False  # a streamed document is open
        self._uncounted: list[np.ndarray] = []

    def piece(self, ids: np.ndarray, chars: int) -> None:
        """Append part of the open document, opening one if needed."""
        self.open = True
        if ids.size:
            self.writer.extend_document(ids)
            self._uncounted.append(ids)
        self.counts.characters += chars

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
        self.counts.documents += 1

    def documents(self, ids: np.ndarray, lengths: np.ndarray, chars: int, *, eos: bool = False,
                  labels: Sequence[int] | None = None) -> None:
        """Append several whole documents at once: `ids` concatenated, `lengths` per document."""
        if eos:
            ids = np.insert(ids, np.cumsum(lengths), EOS_ID)
            lengths = lengths + 1
        self.writer.add_many(ids, lengths, labels=labels)
        self._uncounted.append(ids)
        self.counts.documents += len(lengths)
        self.counts.characters += chars
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
        """Token counts are taken per chunk (one bincount), not per document."""
        if self._uncounted:
            self.counts.add_tokens(np.concatenate(self._uncounted))
            self._uncounted = []

    def finish(self) -> dict[str, Any]:
        self.flush_counts()
        return self.writer.close()


class Chunk:
    """Texts to encode together, and what to do with their ids (events, in order)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.events: list[tuple] = []
        self.chars = 0

    def text(self, value: str) -> int:
        self.texts.append(value)
        self.chars += len(value)
        return len(self.texts) - 1


def encode_all(plan: Plan, scans: dict[str, ScanInfo], tokenizer, tok_dir: Path, layout: DatasetDir,
               label_ids: dict[str, int], reporter: Reporter, workers: Workers | None) -> dict[str, Sink]:
    """The encode pass over every group; returns the split sinks (still to be finished)."""
    dtype = token_dtype(tokenizer.vocab_size)
    sinks = {s: Sink(layout, s, dtype, tokenizer.vocab_size) for s in plan.splits()}
    # word encodes in Python: worker processes on large corpora. char (numpy) and bpe (Rust threads) stay here.
    workers = workers if tokenizer.kind == "word" else None
    runner = Ordered(workers)
    task = (worker_encode, (str(tok_dir),)) if workers is not None else (encoder(tokenizer), ())
    with Meter(reporter, "encode", plan.total_bytes) as meter:
        for name, group in plan.groups.items():
            router = Router(plan, scans["train"]) if name == "train" else None
            encode_group(plan, name, group, router, runner, task, sinks, label_ids, meter)
    return sinks


def encode_group(plan: Plan, name: str, group: Group, router: Router | None, runner: Ordered, task: tuple,
                 sinks: dict[str, Sink], label_ids: dict[str, int], meter: Meter) -> None:
    """Route, chunk and encode one group's records; results are written in order as they come back."""
    fn, fixed = task
    counter = src.ReadCounter()
    state: dict[str, Any] = {"open": None, "eos": group.eos}
    chunk = Chunk()
    streaming = False  # a document streamed in pieces is open
    for rec in records(plan, group, counter):
        for split, part in (router.route(rec) if router is not None else [(name, rec)]):
            if plan.task == "pairs":
                chunk.events.append(("pair", split, chunk.text(part.prompt), chunk.text(part.response)))
            elif plan.task == "classify":
                chunk.events.append(("doc", split, chunk.text(part.text), label_ids[part.label]))
            elif part.end and not streaming and part.text:  # a whole document in one text
                chunk.events.append(("doc", split, chunk.text(part.text), None))
            else:
                if part.text:
                    chunk.events.append(("piece", split, chunk.text(part.text)))
                    streaming = True
                if part.end:
                    chunk.events.append(("end", split))
                    streaming = False
        if chunk.chars >= CHUNK_CHARS:
            for done, ids in runner.submit(fn, (*fixed, chunk.texts), chunk):
                apply(done, ids, sinks, state)
            chunk = Chunk()
            meter.update(counter.bytes_read)
    if chunk.events:
        for done, ids in runner.submit(fn, (*fixed, chunk.texts), chunk):
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
                                   eos=labels is None and state["eos"], labels=labels)
            k = j + 1
            continue
        if kind == "piece":
            if state["open"] not in (None, split):  # the tail boundary cut a document: close its first part
                sinks[state["open"]].close(eos=False)
            state["open"] = split
            i = events[k][2]
            sinks[split].piece(flat[starts[i]:ends[i]], len(texts[i]))
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
