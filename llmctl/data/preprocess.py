"""`llmctl preprocess`: sources → normalised documents → tokenizer → memory-mapped token files, manifest and report.

Passes over the inputs (each streams; the corpus is never held in memory):

1. **inspect** — size + sha256 of every source file, refusing empty, binary (NUL) and, under `strict`, undecodable
   files, and checking the columns/fields of table and JSONL files on their first record. The hashes and the
   settings form the *build key*: if the dataset on disk has the same key, the run is a no-op that says so
   (`force` rebuilds).
2. **scan** — read and normalise every record: validates fields/columns/labels before anything is written and
   counts documents and characters, which the split needs.
3. **train** — train the tokenizer on the train split (skipped with `tokenizer.from`).
4. **encode** — encode every document into `<split>.tokens` through `SplitWriter`, gathering the report's counts.

Everything is written into a temporary sibling of `data.dir` that is renamed into place at the very end
(`atomic.directory`), so a killed run never leaves a directory that `Dataset` accepts; the next run removes such
leftovers. Large corpora use both cores: char encodes with numpy, bpe with the Rust batch encoder's threads, word in
worker processes (`data.workers`).

Splits when `data.valid` / `data.test` are not given as files (`data.split`):

* `tail` — for `data.task: lm` the train sources form one character stream (the normalised text of every document,
  in order, nothing inserted between documents). With `N` its length, train is `stream[:int(N * (1 - valid -
  test))]`, valid is `stream[that:int(N * (1 - test))]` and test is the rest. For one text file this is exactly
  `text[:int(len(text) * 0.9)]` / the remaining 10 % for `valid: 0.1`; a document cut by the boundary continues as
  a new document in the next split. For `classify` / `pairs` the tail is taken in whole records:
  the first `int(n * (1 - valid - test))` records train, the next up to `int(n * (1 - test))` valid, the rest test.
* `documents` — `round(n * valid)` and `round(n * test)` documents (at least one each when the fraction is > 0) are
  picked at random with `split.seed`; the others stay in train, in their original order.

Document boundaries: every document of a language-model corpus is followed by `<eos>`, except when a split's
sources are a single text file read with `documents: file` (one continuous document, nothing appended).
Classification documents are the text's ids (label id per document, labels sorted, numerically when they all are
integers); pairs documents follow `pair_template`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from llmctl import __version__, atomic
from llmctl.data import sources as src
from llmctl.data import stats as stats_mod
from llmctl.data.dataset import FORMAT_VERSION, Dataset, SplitWriter, token_dtype
from llmctl.data.normalize import Normalizer
from llmctl.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    METADATA_FILE,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    CharTokenizer,
    WordTokenizer,
    load_tokenizer,
    split_words,
    train_tokenizer,
)
from llmctl.errors import ArtifactError, ConfigError, DataError, LlmctlError, ResourceError
from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.runs import SPLITS, DatasetDir, RunDir

# bumped when this module's output for the same inputs and settings changes, so old datasets rebuild
PREPROCESS_VERSION = 1
PARALLEL_MIN_BYTES = 8 << 20      # below this, one process is faster than starting workers
CHUNK_CHARS = 1 << 20             # text per encoding task


def pair_template(prompt_ids: Sequence[int], response_ids: Sequence[int]) -> tuple[list[int], int]:
    """One prompt→response document: `<bos> prompt <sep> response <eos>`.

    Returns the ids and `response_start`, the index of the first response token. At generation time the prompt is
    `ids[:response_start]` of `pair_template(prompt_ids, [])`.
    """
    ids = [BOS_ID, *(int(i) for i in prompt_ids), SEP_ID, *(int(i) for i in response_ids), EOS_ID]
    return ids, len(prompt_ids) + 2


# ---------------------------------------------------------------- the plan: what to read and how


@dataclass
class Group:
    """The sources of one config list (`data.train`, `data.valid` or `data.test`)."""

    name: str
    files: list[src.FileSpec]
    infos: list[src.FileInfo]
    eos: bool = True

    @property
    def bytes(self) -> int:
        return sum(i.size for i in self.infos)


@dataclass
class Plan:
    exp: Any
    opts: src.ReadOptions
    normalizer: Normalizer
    groups: dict[str, Group]
    carve: dict[str, float]          # split name → fraction carved from the train sources
    build_key: str = ""
    reuse: Path | None = None        # tokenizer directory to reuse (`tokenizer.from`)
    reused: Any = None               # ... and the tokenizer loaded from it

    @property
    def kind(self) -> str:
        return self.reused.kind if self.reused is not None else self.exp.tokenizer.kind

    @property
    def task(self) -> str:
        return self.exp.data.task

    @property
    def total_bytes(self) -> int:
        return sum(g.bytes for g in self.groups.values())

    def splits(self) -> list[str]:
        return [s for s in SPLITS if s in self.groups or s in self.carve]


def _plan(exp, reporter: Reporter) -> Plan:
    data = exp.data
    opts = src.ReadOptions.of(data)
    normalizer = Normalizer(data.normalize)
    if data.normalize.stopwords and data.task != "classify":
        raise ConfigError(f"data.normalize.stopwords removes words a {data.task} model has to produce",
                          hint="use stop words with data.task=classify only, or set data.normalize.stopwords=null")
    if not data.train:
        raise ConfigError("data.train is empty: no training sources", hint="list files, directories or globs "
                                                                            "under data.train")
    dataset_root = Path(data.dir).resolve()
    found: dict[str, list[src.FileSpec]] = {}
    for name in SPLITS:
        files = [f for i, source in enumerate(getattr(data, name))
                 for f in src.expand(source, data, f"data.{name}[{i}]") if dataset_root not in f.path.resolve().parents]
        if getattr(data, name) and not files:
            raise DataError(f"data.{name}: no input files (only files inside data.dir {data.dir} matched)",
                            hint="point the sources at your corpus, not at the processed dataset")
        if files:
            found[name] = files
    groups: dict[str, Group] = {}
    total = sum(f.path.stat().st_size for files in found.values() for f in files)
    with _Meter(reporter, "inspect", total) as meter:
        for name, files in found.items():
            infos = []
            for spec in files:
                counter = src.ReadCounter()
                infos.append(src.inspect_file(spec.path, opts.encoding, counter))
                meter.done(counter.bytes_read)
                meter.update(0)
                if opts.errors == "strict" and infos[-1].bad_offset is not None:
                    raise src.decode_error(spec.path, opts.encoding, infos[-1].bad_offset)
                if spec.format != "text":  # columns/fields are checked on the first record, before long passes
                    next(src.read_records(spec, opts, info=infos[-1]), None)
            single_stream = (data.task == "lm" and data.documents == "file" and len(files) == 1
                             and files[0].format == "text")
            groups[name] = Group(name=name, files=files, infos=infos, eos=not single_stream)
    carve = {}
    if not data.valid and data.split.valid > 0:
        carve["valid"] = data.split.valid
    if not data.test and data.split.test > 0:
        carve["test"] = data.split.test
    plan = Plan(exp=exp, opts=opts, normalizer=normalizer, groups=groups, carve=carve)
    if exp.tokenizer.from_ is not None:
        plan.reuse = _find_tokenizer(Path(exp.tokenizer.from_))
        plan.reused = _load_reused(plan.reuse)
    plan.build_key = _build_key(plan)
    return plan


def _find_tokenizer(path: Path) -> Path:
    """The tokenizer folder of a dataset directory, a run directory, or a tokenizer folder itself."""
    for candidate in (DatasetDir(path).tokenizer, RunDir(path).tokenizer, path):
        if (candidate / METADATA_FILE).is_file():
            return candidate
    raise ArtifactError(f"tokenizer.from: no tokenizer found in {path} (looked for {path}/tokenizer/)",
                        hint="point it at a dataset directory made by `llmctl preprocess` or at a run directory")


def _load_reused(folder: Path):
    try:
        return load_tokenizer(folder)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"tokenizer.from: cannot load the tokenizer in {folder}: {exc}",
                            hint="re-create it with `llmctl preprocess`") from None


def _build_key(plan: Plan) -> str:
    """Hash of everything the dataset depends on: source contents, reading/normalising/splitting settings and the
    tokenizer (its settings, or the fingerprint of the reused one)."""
    exp, data = plan.exp, plan.exp.data
    tok = exp.tokenizer
    if plan.reused is not None:
        tokenizer: dict[str, Any] = {"from": plan.reused.fingerprint()}
    else:
        tokenizer = {"kind": tok.kind, "vocab_size": tok.vocab_size if tok.kind == "bpe" else None,
                     "min_freq": tok.min_freq, "max_vocab": tok.max_vocab if tok.kind != "bpe" else None}
    key = {
        "preprocess_version": PREPROCESS_VERSION, "format_version": FORMAT_VERSION,
        "task": data.task, "documents": data.documents, "encoding": plan.opts.encoding, "errors": data.encoding_errors,
        "normalize": plan.normalizer.settings(), "tokenizer": tokenizer,
        "split": {"carve": plan.carve, "mode": data.split.mode,
                  "seed": data.split.seed if data.split.mode == "documents" else None} if plan.carve else None,
        "sources": {name: [{"path": str(f.path), "format": f.format, "size": i.size, "sha256": i.sha256,
                            "columns": {role: f.columns[role] for role in src.ROLES_BY_TASK[data.task]}}
                           for f, i in zip(g.files, g.infos, strict=True)] for name, g in plan.groups.items()},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()


def dataset_fingerprint(tokenizer_fingerprint: str, normalize_settings: dict[str, Any]) -> str:
    """What data made with this tokenizer *and* this normalisation is identified by (16 hex digits)."""
    blob = json.dumps({"tokenizer": tokenizer_fingerprint, "normalize": normalize_settings}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- normalised records and the split router


@dataclass
class ScanInfo:
    """What the scan pass learns about one group."""

    documents: int = 0
    characters: int = 0
    filtered: int = 0
    labels: Counter = field(default_factory=Counter)


def _records(plan: Plan, group: Group, counter: src.ReadCounter, scan: ScanInfo | None = None
             ) -> Iterator[src.Record]:
    """Normalised records of a group. Empty documents are dropped (counted in `scan.filtered`); a streamed text
    document yields its non-empty pieces and always a final record with `end=True`."""
    norm = None if plan.normalizer.identity else plan.normalizer
    task = plan.task
    for spec, info in zip(group.files, group.infos, strict=True):
        whole = spec.format != "text" or plan.opts.documents == "line"  # records are whole documents
        for rec in src.read_records(spec, plan.opts, counter, info=info):
            if task == "pairs":
                if norm:
                    rec = src.Record(prompt=norm(rec.prompt), response=norm(rec.response))
                if not rec.response or rec.response.isspace():
                    if scan is not None:
                        scan.filtered += 1
                    continue
                yield rec
                continue
            if norm:
                rec = src.Record(norm(rec.text), rec.label, end=rec.end)
            if not rec.end:  # a piece of a streamed document
                if rec.text:
                    yield rec
                continue
            if whole and (not rec.text or rec.text.isspace()):
                if scan is not None:
                    scan.filtered += 1
                continue
            if task == "classify":
                label = rec.label.strip()
                if not label:
                    raise DataError(f"{spec.path}: a record has an empty label (text: {rec.text[:40]!r})",
                                    hint="give every record a label or remove it")
                if label != rec.label:
                    rec = src.Record(rec.text, label)
            yield rec


def _scan(plan: Plan, group: Group, meter: "_Meter") -> ScanInfo:
    info = ScanInfo()
    counter = src.ReadCounter()
    open_doc = False
    pairs = plan.task == "pairs"
    for rec in _records(plan, group, counter, info):
        meter.update(counter.bytes_read)
        if pairs:
            info.characters += len(rec.prompt) + len(rec.response)
            info.documents += 1
            continue
        info.characters += len(rec.text)
        if rec.text:
            open_doc = True
        if rec.end:
            if open_doc:
                info.documents += 1
            open_doc = False
            if rec.label is not None:
                info.labels[rec.label] += 1
    meter.done(counter.bytes_read)
    meter.skipped += counter.skipped
    meter.skipped_where.extend(counter.skipped_where)
    return info


class _Router:
    """Sends each part of the train sources' records to train, valid or test (see the module docstring)."""

    def __init__(self, plan: Plan, scan: ScanInfo):
        self.lm = plan.task == "lm"
        carve = plan.carve
        fv, ft = carve.get("valid", 0.0), carve.get("test", 0.0)
        self.mode = "all" if not carve else plan.exp.data.split.mode
        self.pos = 0    # characters routed so far (lm tail)
        self.k = 0      # index of the current bound
        self.doc = 0    # documents routed so far
        self.has_text = False
        if self.mode == "tail":
            total = scan.characters if self.lm else scan.documents
            self.bounds = [(int(total * (1.0 - fv - ft)), "train"), (int(total * (1.0 - ft)), "valid"),
                           (float("inf"), "test")]
            if self.bounds[0][0] <= 0:
                unit = "characters" if self.lm else "records"
                raise DataError(f"data.train: the split leaves no training data ({total} {unit} in total)",
                                hint="add data or lower data.split.valid / data.split.test")
        elif self.mode == "documents":
            n = scan.documents
            n_valid = max(1, round(n * fv)) if fv > 0 else 0
            n_test = max(1, round(n * ft)) if ft > 0 else 0
            if n - n_valid - n_test < 1:
                raise DataError(f"data.train: {n} document(s) are too few to hold out {n_valid} for valid and "
                                f"{n_test} for test", hint="add data, lower data.split.valid / data.split.test, or "
                                                           "use data.split.mode=tail for a single-file corpus")
            order = np.random.default_rng(plan.exp.data.split.seed).permutation(n)
            self.assign = np.zeros(n, dtype=np.uint8)
            self.assign[order[:n_valid]] = 1
            self.assign[order[n_valid:n_valid + n_test]] = 2

    def route(self, rec: src.Record) -> list[tuple[str, src.Record]]:
        if self.mode == "all":
            return [("train", rec)]
        if self.mode == "documents":
            index = min(self.doc, len(self.assign) - 1)
            split = SPLITS[int(self.assign[index])]
            self._count_doc(rec)
            return [(split, rec)]
        if not self.lm:  # tail in whole records
            split = next(name for bound, name in self.bounds if self.doc < bound)
            self._count_doc(rec)
            return [(split, rec)]
        # tail over the character stream: cut the text where it crosses a boundary
        text, start, out = rec.text, 0, []
        while True:
            while self.pos >= self.bounds[self.k][0]:
                self.k += 1
            bound, split = self.bounds[self.k]
            if self.pos + len(text) - start <= bound:
                self.pos += len(text) - start
                out.append((split, rec if start == 0 else src.Record(text=text[start:], end=rec.end)))
                return out
            room = int(bound - self.pos)
            out.append((split, src.Record(text=text[start:start + room], end=False)))
            start += room
            self.pos += room

    def _count_doc(self, rec: src.Record) -> None:
        if rec.text or rec.prompt is not None:
            self.has_text = True
        if rec.end:
            if self.has_text:
                self.doc += 1
            self.has_text = False


# ---------------------------------------------------------------- progress


class _Meter:
    """Byte progress in MB with MB/s through the reporter, throttled (rich redraws often, plain/jsonl rarely)."""

    def __init__(self, reporter: Reporter, label: str, total: int):
        self.reporter = reporter
        self.total_mb = max(1, math.ceil(total / 1e6))
        self.base = 0
        self.skipped = 0
        self.skipped_where: list[str] = []
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.every = 0.1 if reporter.mode == "rich" else 2.0
        reporter.start(label, total=self.total_mb)

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._show(self.base + done, now)

    def _show(self, seen: int, now: float) -> None:
        rate = seen / 1e6 / max(now - self.t0, 1e-9)
        self.reporter.advance(min(self.total_mb, math.ceil(seen / 1e6)), **{"MB/s": f"{rate:.1f}"})

    def done(self, done: int) -> None:
        """A group finished: later groups count on top of it."""
        self.base += done

    def stop(self) -> None:
        self._show(self.base, time.perf_counter())
        self.reporter.stop()

    def __enter__(self) -> "_Meter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()  # also on errors: a live progress bar must never outlive its pass


# ---------------------------------------------------------------- encoding (optionally in worker processes)

MAX_CODE_POINT = 0x10FFFF
_WORKER_ENCODERS: dict[str, Any] = {}


def _encode_texts(folder: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Worker task: encode texts with the tokenizer saved in `folder` (loaded once per worker)."""
    if folder not in _WORKER_ENCODERS:
        _WORKER_ENCODERS[folder] = encoder(load_tokenizer(folder))
    return _WORKER_ENCODERS[folder](texts)


def _flatten(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return flat, lengths


def encoder(tokenizer):
    """`texts -> (ids of all texts concatenated, length of each)` for a tokenizer, as fast as its kind allows.

    `char` maps code points through a lookup table built from the vocabulary (the same mapping as
    `CharTokenizer.encode`: every code point is its token, unknown ones `<unk>`), which is ~10x faster than
    encoding in Python; `bpe` uses the multi-threaded batch encoder; `word` encodes text by text.
    """
    if tokenizer.kind == "char":
        table = _char_table(tokenizer)

        def encode_chars(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
            lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
            points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype="<u4")
            return table[points], lengths

        return encode_chars
    if tokenizer.kind == "bpe":
        return lambda texts: _flatten(tokenizer.encode_batch(texts))
    return lambda texts: _flatten([tokenizer.encode(t) for t in texts])


def _char_table(tokenizer) -> np.ndarray:
    table = np.full(MAX_CODE_POINT + 1, UNK_ID, dtype=np.int32)
    for token_id in range(len(SPECIAL_TOKENS), tokenizer.vocab_size):
        table[ord(tokenizer.id_to_token(token_id))] = token_id
    return table


def _workers(total_bytes: int, setting: int) -> int:
    """`data.workers`, or (0 = auto) one per core for corpora large enough to repay starting processes."""
    if setting:
        return setting
    if total_bytes < PARALLEL_MIN_BYTES:
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class _Workers:
    """A process pool and its size."""

    pool: Any
    n: int

    @classmethod
    def start(cls, n: int) -> "_Workers":
        """Forked when this process is single-threaded (instant start), else spawned (safe with threaded libraries
        such as TensorFlow loaded)."""
        try:
            single = len(os.listdir("/proc/self/task")) == 1
        except OSError:
            single = False
        ctx = multiprocessing.get_context("fork" if single else "spawn")
        return cls(ctx.Pool(n, initializer=_worker_init, initargs=(ctx.Barrier(n),)), n)

    def stop(self) -> None:
        self.pool.terminate()
        self.pool.join()


# per-worker state: word counts accumulate in each worker and are collected once at the end (merging one Counter
# per chunk in the parent would cost more than the counting itself)
_WORKER: dict[str, Any] = {}


def _worker_init(barrier) -> None:
    _WORKER.update(barrier=barrier, counts=Counter(), chars=0)


def _worker_count(texts: list[str]) -> None:
    """Worker task: add the word counts of `texts` to this worker's totals."""
    _WORKER["counts"].update(_count_words(texts))
    _WORKER["chars"] += sum(map(len, texts))


def _worker_collect() -> tuple[Counter, int]:
    """Worker task, submitted once per worker: the barrier makes each worker take exactly one."""
    _WORKER["barrier"].wait(timeout=600)
    counts, chars = _WORKER["counts"], _WORKER["chars"]
    _WORKER.update(counts=Counter(), chars=0)
    return counts, chars


class _Ordered:
    """Run tasks in a pool (or inline when there is none) with a bounded number in flight, yielding results in
    submission order — the corpus is never queued whole in memory."""

    def __init__(self, workers: _Workers | None):
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


# ---------------------------------------------------------------- tokenizer training


def _train_texts(plan: Plan, scans: dict[str, ScanInfo], meter: _Meter) -> Iterator[str]:
    """Text of the train split only (after routing), streamed."""
    group = plan.groups["train"]
    router = _Router(plan, scans["train"])
    counter = src.ReadCounter()
    pairs = plan.task == "pairs"
    for rec in _records(plan, group, counter):
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


def _batches(texts: Iterator[str], chars: int = CHUNK_CHARS) -> Iterator[list[str]]:
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


def _train(plan: Plan, scans: dict[str, ScanInfo], reporter: Reporter, workers: _Workers | None):
    """Train the tokenizer on the train split. char counts code points with numpy; word counts in worker processes
    on large corpora; both then apply `train_tokenizer`'s vocabulary rule (`_vocab_tokenizer`)."""
    tok = plan.exp.tokenizer
    with _Meter(reporter, f"train {tok.kind} tokenizer", plan.groups["train"].bytes) as meter:
        return _train_with(plan, tok, _train_texts(plan, scans, meter), workers)


def _train_with(plan: Plan, tok, texts: Iterator[str], workers: _Workers | None):
    try:
        if tok.kind == "char":
            tokenizer = _vocab_tokenizer("char", _char_counts(texts), tok.min_freq, tok.max_vocab)
        elif tok.kind == "word" and workers is not None:
            tokenizer = _vocab_tokenizer("word", _parallel_counts(texts, workers), tok.min_freq, tok.max_vocab)
        else:
            tokenizer = train_tokenizer(tok.kind, texts, vocab_size=tok.vocab_size if tok.kind == "bpe" else None,
                                        min_freq=tok.min_freq, max_vocab=tok.max_vocab if tok.kind != "bpe" else None)
    except ValueError as exc:
        raise DataError(f"cannot train the {tok.kind} tokenizer on data.train: {exc}",
                        hint="check tokenizer.* settings and that the training text is not empty") from None
    return tokenizer


def _char_counts(texts: Iterator[str]) -> Counter:
    totals = np.zeros(MAX_CODE_POINT + 1, dtype=np.int64)
    for batch in _batches(texts):
        points = np.frombuffer("".join(batch).encode("utf-32-le"), dtype="<u4")
        totals += np.bincount(points, minlength=MAX_CODE_POINT + 1)
    seen = np.flatnonzero(totals)
    return Counter({chr(int(p)): int(totals[p]) for p in seen})


def _count_words(texts: list[str]) -> Counter:
    """Word counts of some texts (the counting step of word training)."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(split_words(text))
    return counts


def _parallel_counts(texts: Iterator[str], workers: _Workers) -> Counter:
    sent = 0
    runner = _Ordered(workers)
    for batch in _batches(texts):
        sent += sum(map(len, batch))
        for _ in runner.submit(_worker_count, (batch,), None):
            pass
    for _ in runner.drain():
        pass
    parts = [workers.pool.apply_async(_worker_collect) for _ in range(workers.n)]
    total: Counter = Counter()
    counted = 0
    for part in parts:
        counts, chars = part.get()
        total.update(counts)
        counted += chars
    if counted != sent:
        raise ResourceError("a worker process died while counting words (out of memory?)",
                            hint="run again, or set data.workers=1")
    return total


def _vocab_tokenizer(kind: str, counts: Counter, min_freq: int, max_vocab: int | None):
    """Build a char/word tokenizer from token counts with `train_tokenizer`'s documented rule: keep tokens seen at
    least `min_freq` times, most frequent first (ties by token string), capped at `max_vocab` ids with the
    specials. Tests check this equals `train_tokenizer` on the same text."""
    if not counts:
        raise ValueError(f"training data is empty: no {kind} tokens found")
    kept = sorted((item for item in counts.items() if item[1] >= min_freq), key=lambda item: (-item[1], item[0]))
    if max_vocab is not None:
        kept = kept[: max_vocab - len(SPECIAL_TOKENS)]
    cls = WordTokenizer if kind == "word" else CharTokenizer
    return cls(SPECIAL_TOKENS + [token for token, _ in kept])


# ---------------------------------------------------------------- writing splits


class _Sink:
    """One split's `SplitWriter` and report counts. Tokens are appended with `SplitWriter.add`; where one add()
    holds several documents (a bulk of short ones) or one document took several adds (a streamed one), the
    document boundaries it recorded in `writer.offsets` are rewritten to the real ones."""

    def __init__(self, layout: DatasetDir, split: str, dtype: np.dtype, vocab_size: int):
        self.writer = SplitWriter(layout, split, dtype)
        self.counts = stats_mod.SplitCounts(vocab_size=vocab_size)
        self.open_at: int | None = None  # index into writer.offsets where the open (streamed) document starts
        self._uncounted: list[np.ndarray] = []

    def _append(self, ids: np.ndarray) -> None:
        self.writer.add(ids)
        self._uncounted.append(ids)

    def piece(self, ids: np.ndarray, chars: int) -> None:
        """Append part of the open document, opening one if needed."""
        if self.open_at is None:
            self.open_at = len(self.writer.offsets) - 1
        if ids.size:
            self._append(ids)
        self.counts.characters += chars

    def close(self, eos: bool) -> None:
        """End the open document (with `<eos>` if asked); its pieces become one document."""
        if self.open_at is None:
            return
        if eos:
            self._append(np.asarray([EOS_ID], dtype=np.int64))
        del self.writer.offsets[self.open_at + 1:-1]
        self.open_at = None
        self.counts.documents += 1

    def documents(self, ids: np.ndarray, lengths: np.ndarray, chars: int, *, eos: bool = False,
                  labels: Sequence[int] | None = None) -> None:
        """Append several whole documents at once: `ids` concatenated, `lengths` per document."""
        if eos:
            ids = np.insert(ids, np.cumsum(lengths), EOS_ID)
            lengths = lengths + 1
        start = self.writer.offsets[-1]
        self._append(ids)
        self.writer.offsets[-1:] = (start + np.cumsum(lengths)).tolist()
        self.counts.documents += len(lengths)
        self.counts.characters += chars
        if labels is not None:
            self.writer.labels.extend(labels)
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


class _Chunk:
    """Texts to encode together, and what to do with their ids (events, in order)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.events: list[tuple] = []
        self.chars = 0

    def text(self, value: str) -> int:
        self.texts.append(value)
        self.chars += len(value)
        return len(self.texts) - 1


def _encode_all(plan: Plan, scans: dict[str, ScanInfo], tokenizer, tok_dir: Path, layout: DatasetDir,
                label_ids: dict[str, int], reporter: Reporter, workers: _Workers | None) -> dict[str, _Sink]:
    """The encode pass: every group's records → routed to splits → encoded in chunks → written in order."""
    dtype = token_dtype(tokenizer.vocab_size)
    sinks = {s: _Sink(layout, s, dtype, tokenizer.vocab_size) for s in plan.splits()}
    # word encodes in Python: worker processes on large corpora. char (numpy) and bpe (Rust threads) stay here.
    workers = workers if tokenizer.kind == "word" else None
    runner = _Ordered(workers)
    task = (_encode_texts, (str(tok_dir),)) if workers is not None else (encoder(tokenizer), ())
    with _Meter(reporter, "encode", plan.total_bytes) as meter:
        for name, group in plan.groups.items():
            router = _Router(plan, scans["train"]) if name == "train" else None
            _encode_group(plan, name, group, router, runner, task, sinks, label_ids, meter)
    return sinks


def _encode_group(plan: Plan, name: str, group: Group, router: _Router | None, runner: _Ordered, task: tuple,
                  sinks: dict[str, _Sink], label_ids: dict[str, int], meter: _Meter) -> None:
    """Route, chunk and encode one group's records; results are written in order as they come back."""
    fn, fixed = task
    counter = src.ReadCounter()
    state: dict[str, Any] = {"open": None, "eos": group.eos}
    chunk = _Chunk()
    streaming = False  # a document streamed in pieces is open
    for rec in _records(plan, group, counter):
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
                _apply(done, ids, sinks, state)
            chunk = _Chunk()
            meter.update(counter.bytes_read)
    if chunk.events:
        for done, ids in runner.submit(fn, (*fixed, chunk.texts), chunk):
            _apply(done, ids, sinks, state)
    for done, ids in runner.drain():
        _apply(done, ids, sinks, state)
    if state["open"] is not None:
        sinks[state["open"]].close(eos=False)
    meter.done(counter.bytes_read)


def _apply(chunk: _Chunk, result: tuple[np.ndarray, np.ndarray], sinks: dict[str, _Sink],
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


# ---------------------------------------------------------------- labels


def _label_order(names) -> list[str]:
    names = list(names)
    try:
        return sorted(names, key=lambda n: (float(n), n))
    except ValueError:
        return sorted(names)


def _labels(plan: Plan, scans: dict[str, ScanInfo]) -> list[str]:
    if plan.task != "classify":
        return []
    train = scans["train"].labels
    column = plan.groups["train"].files[0].columns["label"]
    if len(train) < 2:
        only = next(iter(train), "?")
        raise DataError(f"data.train: the label column `{column}` has a single class ({only!r}) in "
                        f"{scans['train'].documents} records",
                        hint="classification needs at least two classes: check the label column and the data")
    names = _label_order(train)
    for split in ("valid", "test"):
        if split in scans:
            unseen = sorted(set(scans[split].labels) - set(train))
            if unseen:
                files = ", ".join(str(f.path) for f in plan.groups[split].files[:3])
                raise DataError(f"data.{split} ({files}): label {unseen[0]!r} does not occur in the training data "
                                f"(train labels: {', '.join(names)})",
                                hint="fix the label, or add training examples with it")
    return names


# ---------------------------------------------------------------- the command


def _up_to_date(layout: DatasetDir, build_key: str) -> dict[str, Any] | None:
    """The existing manifest if the dataset there was built from the same inputs/settings and is intact."""
    if not layout.exists():
        return None
    try:
        dataset = Dataset(layout.root)
        if dataset.manifest.get("build_key") != build_key or not layout.stats.is_file():
            return None
        for split in dataset.splits():
            dataset.tokens(split)
            if len(dataset.doc_offsets(split)) != dataset.manifest["splits"][split]["documents"] + 1:
                return None
        dataset.tokenizer()
    except (LlmctlError, OSError, ValueError, KeyError):
        return None
    return dataset.manifest


def _usual_permissions(layout: DatasetDir) -> None:
    """Temporary directories and atomic files are created private (0700/0600); a dataset gets the modes the
    user's umask gives ordinary files, so others who may read the folder can use it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(layout.root, 0o777 & ~umask)
    for path in (layout.manifest, layout.stats):
        os.chmod(path, 0o666 & ~umask)


def _check_replaceable(final: Path) -> None:
    """`data.dir` is replaced as a whole: refuse a folder that holds anything but an llmctl dataset."""
    if not final.exists():
        return
    if final.is_dir() and (DatasetDir(final).manifest.is_file() or not any(final.iterdir())):
        return
    what = "a file" if not final.is_dir() else "a folder that is not an llmctl dataset (no manifest.json)"
    raise ArtifactError(f"data.dir {final} is {what}; preprocess replaces data.dir as a whole",
                        hint="point data.dir at a new or empty folder")


def _clean_stale(final: Path) -> None:
    """Remove temporaries a killed earlier run of this dataset left next to it."""
    parent = final.parent
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        if entry.name.startswith(f"{atomic.TMP_PREFIX}{final.name}."):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _summary(manifest: dict[str, Any], final: Path, seconds: float | None, status: str) -> dict[str, Any]:
    tok = manifest["tokenizer"]
    values: dict[str, Any] = {"status": status, "dataset": str(final), "task": manifest["task"],
                              "tokenizer": tok["kind"], "vocab_size": tok["vocab_size"],
                              "fingerprint": tok["fingerprint"]}
    for split, info in manifest["splits"].items():
        values[f"{split} documents"] = info["documents"]
        values[f"{split} tokens"] = info["tokens"]
    if manifest.get("labels"):
        values["labels"] = ", ".join(manifest["labels"])
    if seconds is not None:
        values["seconds"] = f"{seconds:.2f}"
        values["MB/s"] = f"{manifest['source_bytes'] / 1e6 / max(seconds, 1e-9):.1f}"
    values["splits"] = manifest["splits"]
    return values


def run(exp, reporter: Reporter | None = None, force: bool = False) -> Result:
    """Build `exp.data.dir` from the configured sources, or confirm it is up to date (no-op unless `force`)."""
    reporter = reporter or Reporter("none")
    t0 = time.perf_counter()
    final = Path(exp.data.dir)
    _check_replaceable(final)
    plan = _plan(exp, reporter)
    _clean_stale(final)
    if not force:
        existing = _up_to_date(DatasetDir(final), plan.build_key)
        if existing is not None:
            return Result(title="preprocess: up to date", values=_summary(existing, final, None, "unchanged"),
                          lines=[f"dataset {final} is up to date (inputs and settings unchanged): nothing to do; "
                                 "use --force to rebuild"])
    workers = _workers(plan.total_bytes, exp.data.workers)
    # one pool for word training and encoding, started before the scan so its start-up overlaps it
    pool = _Workers.start(workers) if workers > 1 and plan.kind == "word" else None
    try:
        manifest, report = _build(plan, final, reporter, pool)
    finally:
        if pool is not None:
            pool.stop()
    seconds = time.perf_counter() - t0
    stats_mod.show(reporter, report)
    values = _summary(manifest, final, seconds, "built")
    return Result(title="preprocess", values=values,
                  lines=[f"dataset written to {final} in {values['seconds']} s ({values['MB/s']} MB/s)"])


def _build(plan: Plan, final: Path, reporter: Reporter, pool: _Workers | None
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    from llmctl import config as config_mod

    exp = plan.exp
    # scan: validate every record and count what the split needs
    scans: dict[str, ScanInfo] = {}
    with _Meter(reporter, "scan", plan.total_bytes) as meter:
        for name, group in plan.groups.items():
            scans[name] = _scan(plan, group, meter)
    skipped = meter.skipped
    if skipped:
        reporter.warn(f"skipped {skipped} record(s) with undecodable bytes (data.encoding_errors=skip), e.g. "
                      + ", ".join(meter.skipped_where[:3]))
    for name, scan in scans.items():
        if scan.documents == 0:
            raise DataError(f"data.{name}: no text left after reading {len(plan.groups[name].files)} file(s) "
                            f"({scan.filtered} empty record(s) after normalisation, {skipped} skipped)",
                            hint="check the sources, the text field/column and data.normalize")
    label_names = _labels(plan, scans)
    label_ids = {name: i for i, name in enumerate(label_names)}

    with atomic.directory(final, replace=True) as tmp:
        layout = DatasetDir(tmp)
        if plan.reused is not None:
            tokenizer = plan.reused
            _warn_normalize_mismatch(plan, reporter)
        else:
            tokenizer = _train(plan, scans, reporter, pool)
        tokenizer.save(layout.tokenizer)
        sinks = _encode_all(plan, scans, tokenizer, layout.tokenizer, layout, label_ids, reporter, pool)
        splits = {name: {**sink.finish(), "characters": sink.counts.characters} for name, sink in sinks.items()}
        if splits["train"]["tokens"] == 0:
            raise DataError("data.train: the training split holds no tokens",
                            hint="add data or lower data.split.valid / data.split.test")
        report = stats_mod.report({n: s.counts for n, s in sinks.items()}, tokenizer, label_names,
                                  skipped=skipped, filtered=sum(s.filtered for s in scans.values()))
        atomic.write_json(layout.stats, report)
        normalize = plan.normalizer.settings()
        manifest = {
            "format_version": FORMAT_VERSION,
            "dtype": token_dtype(tokenizer.vocab_size).name,
            "task": exp.data.task,
            "labels": label_names,
            "splits": splits,
            "tokenizer": {"fingerprint": dataset_fingerprint(tokenizer.fingerprint(), normalize),
                          "tokenizer_fingerprint": tokenizer.fingerprint(), "kind": tokenizer.kind,
                          "vocab_size": tokenizer.vocab_size,
                          "from": str(plan.reuse) if plan.reuse is not None else None},
            "normalize": normalize,
            "documents": {"mode": exp.data.documents,
                          "eos_after_document": {n: g.eos for n, g in plan.groups.items()}},
            "split": {"carved": plan.carve, "mode": exp.data.split.mode if plan.carve else None,
                      "seed": exp.data.split.seed if plan.carve else None},
            "sources": {name: [{"path": str(i.path), "format": f.format, "size": i.size, "sha256": i.sha256}
                               for f, i in zip(g.files, g.infos, strict=True)] for name, g in plan.groups.items()},
            "source_bytes": plan.total_bytes,
            "build_key": plan.build_key,
            "llmctl_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config_mod.to_dict(exp),
        }
        atomic.write_json(layout.manifest, manifest)  # last: a directory with a manifest is complete
        _usual_permissions(layout)
    return manifest, report


def _warn_normalize_mismatch(plan: Plan, reporter: Reporter) -> None:
    """A reused tokenizer from a dataset normalised differently sees differently shaped text: say so."""
    manifest_path = DatasetDir(plan.reuse.parent).manifest
    if not manifest_path.is_file():
        return
    try:
        theirs = json.loads(manifest_path.read_text(encoding="utf-8")).get("normalize")
    except (OSError, json.JSONDecodeError):
        return
    if theirs is not None and theirs != plan.normalizer.settings():
        reporter.warn(f"tokenizer.from: {plan.reuse.parent} was normalised with {theirs}, this dataset with "
                      f"{plan.normalizer.settings()}; the fingerprints will differ")
