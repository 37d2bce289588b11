"""Dynamic batching: one decoder thread runs the in-graph decode loop over every prompt in flight.

    batcher = Batcher(decoder, tokenizer, max_batch=32, batch_wait_ms=5, max_queue=256, chunk=16, width=1024)
    batcher.start()
    batcher.submit([Job(ids, RowSettings(...), stops, stream, sink)])   # raises ApiError 429 when the queue is full

Requests put their prompts (`Job`s, one per prompt) on a bounded queue and return at once; the decoder thread
admits queued jobs into its `RowBatch` between calls of the compiled loop (`Decoder.advance`, `chunk` steps each),
so a request that arrives while others are being decoded joins them at the next chunk. Each row keeps its own
sampling settings, seed, stop strings and length; after each chunk a row that produced EOS, reached its
`max_tokens`, hit a stop string or whose client went away (`Job.cancel`) leaves the batch, and the others go on.
When the decoder is idle it waits up to `batch_wait_ms` after the first arrival so that requests arriving
together start together.

A job's results go to its `sink` (called on the decoder thread; the HTTP side hands them to its event loop):
`("delta", text)` while streaming (`text_output.StreamPrinter`: what is printed is always a prefix of the final
text), then `("done", text, finish_reason, completion_tokens)` or `("error", message)`. The text is exactly what
`llmctl generate` writes for the same prompt and settings: `continuation` + `cut_at_stop` of the same tokens.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from llmctl.generate.decode import RowSettings
from llmctl.generate.text_output import StreamPrinter, continuation, cut_at_stop
from llmctl.serve.errors import queue_full, shutting_down

log = logging.getLogger("llmctl.serve")


@dataclass
class Job:
    """One prompt to complete."""

    ids: list[int]
    settings: RowSettings
    stops: list[str]
    stream: bool
    sink: Callable[[tuple], Any]
    cancelled: bool = False
    # decoder-thread state
    tokens: list[int] = field(default_factory=list)
    printer: StreamPrinter | None = None

    def cancel(self) -> None:
        """The client went away: the row leaves the batch at the next chunk (or is never admitted)."""
        self.cancelled = True


class Batcher:
    def __init__(self, decoder, tokenizer, *, max_batch: int, batch_wait_ms: float, max_queue: int, chunk: int,
                 width: int, metrics=None):
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.max_batch = int(max_batch)
        self.batch_wait = float(batch_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.chunk = int(chunk)
        self.width = int(width)
        self.metrics = metrics
        self.eos_id = decoder.eos_id
        self._pending: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._active: list[Job] = []
        self._batch = None   # a decode.RowBatch (tensors for the graph backend, numpy for tflite)
        # an XLA loop compiles once per row count: run it on power-of-two row counts (padded) instead
        # and always the one loop variant that handles every mix of rows (XLA compiles each variant per size)
        self.buckets = bucket_sizes(self.max_batch) if decoder.jit_compile else []
        self.full = bool(decoder.jit_compile)
        self.calls = 0        # decode-loop calls so far
        self.max_rows = 0     # most rows decoded together so far

    # ---------------------------------------------------------------- HTTP side (any thread)

    def submit(self, jobs: list[Job]) -> None:
        """Queue `jobs` (all or none): 429 when they do not fit in `max_queue`, 503 while shutting down."""
        with self._cond:
            if self._stopping:
                raise shutting_down()
            if len(self._pending) + len(jobs) > self.max_queue:
                raise queue_full(self.max_queue)
            self._pending.extend(jobs)
            self._gauges()
            self._cond.notify_all()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llmctl-decoder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Take no new jobs; finish the queued and running ones, then end the decoder thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def pad_to(self, rows: int) -> int | None:
        """The row count the loop runs on for `rows` rows (None: exactly `rows`)."""
        return next((b for b in self.buckets if b >= rows), None)

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        return len(self._active)

    # ---------------------------------------------------------------- decoder thread

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._pending))
            self.metrics.active_rows.set(len(self._active))

    def _take_pending(self) -> list[Job]:
        """Jobs to admit now (blocking while there is nothing to do); [] with nothing active means: stop."""
        with self._cond:
            while not self._active and not self._pending:
                if self._stopping:
                    return []
                self._cond.wait(0.5)
            if not self._active and self.batch_wait > 0:
                deadline = time.monotonic() + self.batch_wait
                while len(self._pending) < self.max_batch and not self._stopping:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            room = self.max_batch - len(self._active)
            taken = []
            while self._pending and len(taken) < room:
                job = self._pending.popleft()
                if not job.cancelled:
                    taken.append(job)
            return taken

    def _run(self) -> None:
        while True:
            jobs = self._take_pending()
            if not jobs and not self._active:
                if self._stopping and not self._pending:
                    break
                continue
            try:
                self._admit(jobs)
                self._chunk()
            except Exception as exc:  # noqa: BLE001 - a failed chunk fails its rows, never the server
                log.exception("decode loop failed")
                for job in self._active + jobs:
                    self._send(job, ("error", f"decoding failed ({type(exc).__name__}): please report it"))
                self._active, self._batch = [], None
            self._gauges()

    def _admit(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        new = self.decoder.start([j.ids for j in jobs], [j.settings for j in jobs], self.width)
        for job in jobs:
            if job.stream:
                job.printer = StreamPrinter(self.tokenizer, job.ids, job.stops,
                                            lambda text, job=job: self._send(job, ("delta", text)))
        self._batch = new if self._batch is None else type(new).concat(self._batch, new)
        self._active.extend(jobs)

    def _chunk(self) -> None:
        batch = self._batch
        if batch is None:
            return
        self.calls += 1
        self.max_rows = max(self.max_rows, batch.size)
        if self.metrics is not None:
            self.metrics.batch_rows.observe(batch.size)
        batch, _ = self.decoder.advance(batch, self.chunk, pad_to=self.pad_to(batch.size), full=self.full)
        generated = host(batch.generated)
        finished = host(batch.finished)
        lengths = host(batch.lengths)
        keep: list[int] = []
        produced = 0
        for r, job in enumerate(self._active):
            new = generated[r, len(job.tokens):lengths[r]].tolist()
            produced += len(new)
            job.tokens.extend(new)
            if job.cancelled:
                continue
            visible = [t for t in new if t != self.eos_id]
            if finished[r] or self._hit_stop(job, visible):
                self._finish(job)
            else:
                keep.append(r)
        if self.metrics is not None:
            self.metrics.generated_tokens.inc(produced)
        if len(keep) < len(self._active):
            self._active = [self._active[r] for r in keep]
            batch = batch.take(keep) if keep else None
        self._batch = batch

    def _hit_stop(self, job: Job, visible: list[int]) -> bool:
        """Feed the new tokens to the stream printer / stop-string check; True once a stop string appeared."""
        if job.printer is not None:
            return job.printer.feed(visible) is False
        if not job.stops or not visible:
            return False
        _, found = cut_at_stop(continuation(self.tokenizer, job.ids, self._seq(job)), job.stops)
        return found

    def _seq(self, job: Job) -> list[int]:
        ids = job.tokens
        return ids[:-1] if ids and self.eos_id is not None and ids[-1] == self.eos_id else ids

    def _finish(self, job: Job) -> None:
        seq = self._seq(job)
        ended = len(seq) < len(job.tokens)
        text, stopped = cut_at_stop(continuation(self.tokenizer, job.ids, seq), job.stops)
        if job.printer is not None:
            job.printer.finish(text)
        reason = "stop" if stopped or ended else "length"
        self._send(job, ("done", text, reason, len(seq)))

    @staticmethod
    def _send(job: Job, event: tuple) -> None:
        try:
            job.sink(event)
        except Exception:  # noqa: BLE001 - a client's closed event loop must not stop the decoder
            log.debug("could not deliver %s", event[0], exc_info=True)


def host(value) -> np.ndarray:
    """A numpy view of a batch field (graph backend: eager tensors; tflite backend: numpy already)."""
    return value if isinstance(value, np.ndarray) else value.numpy()


def bucket_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... below `max_batch`, and `max_batch` itself."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, int(max_batch)]
