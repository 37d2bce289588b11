"""Encoders (texts → token ids, as fast as each tokenizer kind allows) and the workers that run the word work on
large corpora: in threads with native word stores (`Threads`; `CountingThreads` for the single word pass), or
without them in worker processes (`worker_slots` and `worker_export` for the single pass, `worker_encode` for
encoding with a known tokenizer).

Large corpora use both cores: char encodes with numpy, bpe with the Rust batch encoder's threads, word as above
(`data.workers`).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from llmctl.data.fast_words.counter import WordCounter
from llmctl.data.fast_words.counter import count_words as count_words
from llmctl.data.fast_words.encoder import WordEncoder
from llmctl.data.fast_words.scan import warm_up
from llmctl.data.tokenizers import SPECIAL_TOKENS, UNK_ID, load_tokenizer

PARALLEL_MIN_BYTES = 8 << 20      # below this, one process is faster than starting workers (numpy word path)
# the single word pass in threads with native word stores (`CountingThreads`): nothing to start or pickle, but the
# stores are merged at the end, so threads pay from a few MB on (break-even measured: docs/benchmarks.md)
PARALLEL_MIN_BYTES_THREADS = 8 << 20
CHUNK_CHARS = 1 << 20             # text per encoding task
MAX_CODE_POINT = 0x10FFFF


# ---------------------------------------------------------------- encoders


def encoder(tokenizer):
    """`texts -> (ids of all texts concatenated, length of each)` for a tokenizer, as fast as its kind allows.

    `char` maps code points through a lookup table built from the vocabulary (the same mapping as
    `CharTokenizer.encode`: every code point is its token, unknown ones `<unk>`), much faster than
    encoding in Python; `bpe` uses the multi-threaded batch encoder; `word` splits and looks words up with numpy
    (`fast_words.encoder.WordEncoder`: the ids of `WordTokenizer.encode`).
    """
    if tokenizer.kind == "char":
        table = char_table(tokenizer)

        def encode_chars(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
            lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
            points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype="<u4")
            return table[points], lengths

        return encode_chars
    if tokenizer.kind == "bpe":
        return lambda texts: flatten(tokenizer.encode_batch(texts))
    if tokenizer.kind == "word":
        return WordEncoder(tokenizer)
    return lambda texts: flatten([tokenizer.encode(t) for t in texts])


def flatten(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-text id lists → (all ids concatenated, length of each)."""
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths


def char_table(tokenizer) -> np.ndarray:
    """Code point → id of a char tokenizer, `<unk>` for code points outside its vocabulary."""
    table = np.full(MAX_CODE_POINT + 1, UNK_ID, dtype=np.int32)
    for token_id in range(len(SPECIAL_TOKENS), tokenizer.vocab_size):
        table[ord(tokenizer.id_to_token(token_id))] = token_id
    return table


# ---------------------------------------------------------------- the worker pool


def workers_for(total_bytes: int, setting: int, threads: bool = False) -> int:
    """`data.workers`, or (0 = auto) one per core for corpora large enough to repay starting processes (`threads`:
    counting threads)."""
    if setting:
        return setting
    if total_bytes < (PARALLEL_MIN_BYTES_THREADS if threads else PARALLEL_MIN_BYTES):
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class Workers:
    """A process pool, its size and whether its workers were forked."""

    pool: Any
    n: int
    forked: bool = False

    @classmethod
    def start(cls, n: int) -> "Workers":
        """Forked when that is safe (instant start, nothing re-imported; the word tables are computed once, here,
        and inherited), else spawned (safe with threaded libraries such as TensorFlow loaded): see
        `fork_is_safe`."""
        fork = fork_is_safe()
        if fork:
            warm_up()
        ctx = multiprocessing.get_context("fork" if fork else "spawn")
        pool = ctx.Pool(n, initializer=_worker_init, initargs=(ctx.Barrier(n), ctx.Value("i", 0), n))
        return cls(pool, n, fork)

    def preload(self, folder: str, encode) -> None:
        """Give forked workers `encode` as their encoder for the tokenizer in `folder` (see `worker_encode`), so that
        none loads the tokenizer and builds its own: the pool is restarted, which forks workers that inherit it. Only
        between passes — the workers' state (word counts) is lost. Spawned workers load `folder` as before."""
        if not self.forked:
            return
        _WORKER_ENCODERS[folder] = encode
        self.stop()
        fresh = Workers.start(self.n)
        self.pool, self.forked = fresh.pool, fresh.forked

    def stop(self) -> None:
        self.pool.terminate()
        self.pool.join()


def _tasks() -> set[str] | None:
    """Ids of this process's native threads (Linux), None where they cannot be listed."""
    try:
        return set(os.listdir("/proc/self/task"))
    except OSError:
        return None


# native threads running when this module was imported, numpy loaded: the process's own and BLAS's idle worker
# threads (OpenBLAS re-initialises its pool in a forked child)
_IMPORT_TASKS = _tasks()
_FORK_UNSAFE_MODULES = ("tensorflow", "torch", "jax")


def fork_is_safe() -> bool:
    """Whether worker processes may be forked: no Python thread but this one, no native thread started since numpy
    (and its BLAS threads) loaded, and no library known to run thread pools of its own (TensorFlow, PyTorch, JAX)
    imported. Otherwise they are spawned."""
    if _IMPORT_TASKS is None or any(name in sys.modules for name in _FORK_UNSAFE_MODULES):
        return False
    if threading.active_count() != 1:
        return False
    for _ in range(20):  # a thread just joined (a stopped pool's) can take a moment to leave the task list
        now = _tasks()
        if now is None or now <= _IMPORT_TASKS:
            return now is not None
        time.sleep(0.005)
    return False


# per-worker state: word counts accumulate in each worker and are collected once at the end (merging one Counter
# per chunk in the parent would cost more than the counting itself); encoders are loaded once per worker
_WORKER: dict[str, Any] = {}
_WORKER_ENCODERS: dict[str, Any] = {}


class WorkerLost(Exception):
    """A worker process died and was replaced while its words were needed (out of memory?)."""


def _worker_init(barrier, started, n: int) -> None:
    with started.get_lock():  # workers are numbered 0..n-1 in start order; a replacement for a dead one gets >= n
        index = started.value
        started.value += 1
    _WORKER.update(barrier=barrier, store=WordCounter(), index=index, n=n)


def provisional_ids(slots: np.ndarray, n: int, index: int, stored: int) -> np.ndarray:
    """Ids (int32) of word slots (below `stored`, the words stored) of worker `index` of `n` in the single word
    pass: above the special ids, interleaved so that every worker has its own (`len(SPECIAL_TOKENS) + slot * n +
    index`)."""
    if len(SPECIAL_TOKENS) + stored * n + index > np.iinfo(np.int32).max:
        raise OverflowError("more than 2**31 distinct words")
    ids = slots.astype(np.int32)
    if n > 1:
        ids *= n
    ids += len(SPECIAL_TOKENS) + index
    return ids


def worker_encode(folder: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Worker task: encode texts with the tokenizer saved in `folder` (loaded once per worker)."""
    if folder not in _WORKER_ENCODERS:
        _WORKER_ENCODERS[folder] = encoder(load_tokenizer(folder))
    return _WORKER_ENCODERS[folder](texts)


def worker_slots(texts: list[str], counted: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Worker task of the single word pass: provisional ids (`provisional_ids`) of the words of texts, counting the
    words of the `counted` ones (`WordCounter.slots`); this worker's words are collected by `worker_export`."""
    if _WORKER["index"] >= _WORKER["n"]:
        raise WorkerLost("a worker process was replaced")
    slots, lengths = _WORKER["store"].slots(texts, counted)
    return provisional_ids(slots, _WORKER["n"], _WORKER["index"], len(_WORKER["store"])), lengths


def worker_export() -> tuple[int, np.ndarray, list[str], np.ndarray]:
    """Worker task, submitted once per worker after the single word pass (the barrier makes each worker take
    exactly one): `(worker index, *WordCounter.export())`."""
    _WORKER["barrier"].wait(timeout=600)
    exported = _WORKER["store"].export()
    _WORKER["store"] = WordCounter()
    return (_WORKER["index"], *exported)


class _Pending:
    """A future with `multiprocessing`'s `AsyncResult.get` (a wrapper: a future holding its own bound method would
    be a reference cycle, keeping its result alive until the garbage collector runs)."""

    __slots__ = ("future",)

    def __init__(self, future) -> None:
        self.future = future

    def get(self):
        return self.future.result()


class Threads:
    """`n` threads with `multiprocessing.Pool`'s `apply_async` (`pool` for `Ordered`), each numbered (`index`). For
    word work whose native part releases the GIL: no process to start, nothing to pickle."""

    def __init__(self, n: int):
        from concurrent.futures import ThreadPoolExecutor

        self.n = n
        self._local = threading.local()
        self._started = itertools.count()
        self._executor = ThreadPoolExecutor(n, thread_name_prefix="llmctl-words", initializer=self._number)
        self.pool = self

    def _number(self) -> None:
        self._local.index = next(self._started)

    @property
    def index(self) -> int:
        """The number of the calling thread (0..n-1)."""
        return self._local.index

    def apply_async(self, fn, args: tuple) -> "_Pending":
        return _Pending(self._executor.submit(fn, *args))

    def stop(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class CountingThreads(Threads):
    """The single word pass in `n` threads, each counting into a native word store of its own (which split and look
    up without the GIL, so the threads run on all cores); `slots` is the task (as `worker_slots`: provisional ids
    interleaved by thread)."""

    def __init__(self, n: int):
        super().__init__(n)
        self.counters = [WordCounter() for _ in range(n)]

    def slots(self, texts: list[str], counted: list[bool]) -> tuple[np.ndarray, np.ndarray]:
        index = self.index
        counter = self.counters[index]
        slots, lengths = counter.slots(texts, counted)
        return provisional_ids(slots, self.n, index, len(counter)), lengths


class Ordered:
    """Run tasks in a pool (or inline when there is none) with a bounded number in flight, yielding results in
    submission order — the corpus is never queued whole in memory."""

    def __init__(self, workers: Workers | None):
        self.pool = workers.pool if workers is not None else None
        self.window = 2 * workers.n if workers is not None else 1
        self.pending: deque = deque()

    def submit(self, fn, args: tuple, meta: Any) -> Iterator[tuple[Any, Any]]:
        if self.pool is None:
            yield meta, fn(*args)
            return
        self.pending.append((meta, self.pool.apply_async(fn, args)))
        while len(self.pending) >= self.window:
            meta0, res = self.pending.popleft()
            yield meta0, res.get()

    def drain(self) -> Iterator[tuple[Any, Any]]:
        while self.pending:
            meta0, res = self.pending.popleft()
            yield meta0, res.get()
