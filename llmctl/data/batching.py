"""tf.data input pipelines over memory-mapped token streams: `stream` (truncated BPTT) and `windows` batching.

Both modes predict every token of a split after the first exactly once per epoch — nothing is dropped — and both
index the memmap per batch (a batch is gathered with one fancy-indexing read), so the corpus is never copied.

`stream` — the word_language_model ``batchify``: the N tokens become B contiguous columns, read in windows of
`bptt` steps; the LSTM state is carried from one window to the next. Inputs are ``batchify(tokens[:-1], B)`` and
targets ``batchify(tokens[1:], B)``: column c covers inputs ``tokens[s_c + t]`` and targets ``tokens[s_c + t + 1]``.
When B does not divide N-1 the first ``(N-1) % B`` columns are one step longer; the missing last step of the other
columns is padding with weight 0 (so it never counts), and so is the tail of the last, partial window — that window
is kept, padded to `bptt` so every batch has one shape (one XLA compilation). With `variable_bptt` the window
lengths follow AWD-LSTM (``bptt`` with p=0.95 else ``bptt/2``, plus N(0, 5) noise, at least 5, at most bptt+40),
drawn from an RNG seeded by (seed, epoch): the window sequence of an epoch is a pure function of the seed, so the
data position (the window index) is all a checkpoint needs to resume exactly.

`windows` — independent windows of `bptt` tokens (consecutive, non-overlapping, the last one partial and padded),
shuffled with an RNG seeded by (seed, epoch), B per batch; the last batch is padded with weight-0 rows. The state is
reset for every window. The data position is the batch index.

A training *step* consumes `accum` consecutive batches (gradient accumulation); the final step of an epoch is
completed with weight-0 batches. Each batch is a triple ``(inputs int32 [b, T], targets int32 [b, T],
weights float32 [b, T])``. Under a distribution strategy every replica gets its own slice of the B columns (rows).
Single-device training reads steps with `step_arrays`; strategies use the tf.data pipeline `step_dataset` through
`distribute_datasets_from_function` (`dataset_fn_for`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from llmctl.errors import ConfigError, DataError

VARIABLE_BPTT_P = 0.95  # AWD-LSTM: probability of the full bptt (else bptt / 2)
VARIABLE_BPTT_SIGMA = 5.0  # AWD-LSTM: standard deviation of the window length
VARIABLE_BPTT_MIN = 5  # AWD-LSTM: shortest window
VARIABLE_BPTT_MAX_DELTA = 40  # AWD-LSTM: longest window is bptt + this


def epoch_rng(seed: int, epoch: int, purpose: int) -> np.random.Generator:
    """The RNG for one epoch and one purpose (0 = window lengths, 1 = window order): a pure function of its key."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(purpose)]))


# ---------------------------------------------------------------- stream (B contiguous columns)


class StreamLayout:
    """B contiguous columns over a stream of `n_tokens` tokens; every token after the first is a target once."""

    def __init__(self, n_tokens: int, batch_size: int):
        if n_tokens < 2:
            raise DataError(f"a token stream of {n_tokens} token(s) has nothing to predict",
                            hint="give the split more text")
        n_targets = n_tokens - 1
        if batch_size > n_targets:
            raise DataError(f"{batch_size} stream columns need at least {batch_size + 1} tokens, the split has "
                            f"{n_tokens}", hint=f"lower the batch size to ≤ {n_targets}")
        self.n_tokens = int(n_tokens)
        self.batch_size = int(batch_size)
        self.n_targets = n_targets
        q, r = divmod(n_targets, batch_size)
        cols = np.arange(batch_size, dtype=np.int64)
        self.starts = cols * q + np.minimum(cols, r)  # token offset of each column's first input
        self.lengths = np.where(cols < r, q + 1, q).astype(np.int64)  # targets in each column
        self.steps = int(q + (1 if r else 0))  # time steps of the longest column

    def fixed_windows(self, bptt: int) -> np.ndarray:
        """[n, 2] (start, length) windows of `bptt` steps; the last one may be shorter."""
        starts = np.arange(0, self.steps, bptt, dtype=np.int64)
        return np.stack([starts, np.minimum(bptt, self.steps - starts)], axis=1)

    def variable_windows(self, bptt: int, rng: np.random.Generator) -> np.ndarray:
        """[n, 2] (start, length) windows with AWD-LSTM random lengths."""
        out = []
        start = 0
        shortest = min(VARIABLE_BPTT_MIN, bptt)
        while start < self.steps:
            mean = bptt if rng.random() < VARIABLE_BPTT_P else bptt / 2
            length = int(rng.normal(mean, VARIABLE_BPTT_SIGMA))
            length = min(max(shortest, length), bptt + VARIABLE_BPTT_MAX_DELTA, self.steps - start)
            out.append((start, length))
            start += length
        return np.asarray(out, dtype=np.int64).reshape(-1, 2)

    def gather(self, tokens: np.ndarray, start: int, length: int, rows: slice = slice(None),
               pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs, targets, weights) of one window for the columns in `rows`, padded to `pad_to` steps."""
        width = max(int(pad_to or length), int(length))
        starts = self.starts[rows]
        lengths = self.lengths[rows]
        t = start + np.arange(width + 1, dtype=np.int64)
        valid_in = t[None, :width] < lengths[:, None]
        index = starts[:, None] + t[None, :]
        index = np.minimum(index, self.n_tokens - 1)
        block = np.asarray(tokens[index.ravel()], dtype=np.int32).reshape(index.shape)
        inputs = np.where(valid_in, block[:, :width], 0).astype(np.int32)
        targets = np.where(valid_in, block[:, 1:], 0).astype(np.int32)
        weights = valid_in.astype(np.float32)
        if width > length:
            weights[:, length:] = 0.0
            inputs[:, length:] = 0
            targets[:, length:] = 0
        return inputs, targets, weights


def check_stream_fits(n_tokens: int, batch_size: int, bptt: int, *, split: str = "train") -> None:
    """Training needs at least one full `bptt` window in every column: N-1 ≥ B·bptt. DataError with the fix."""
    n_targets = max(n_tokens - 1, 0)
    if n_targets >= batch_size * bptt:
        return
    if n_targets < bptt:
        raise DataError(f"train.bptt={bptt} is longer than the {split} split ({n_tokens:,} tokens)",
                        hint=f"lower train.bptt to ≤ {max(n_targets // max(batch_size, 1), 2)} or add data")
    raise DataError(f"the {split} split has {n_tokens:,} tokens: {batch_size} columns × bptt {bptt} needs at least "
                    f"{batch_size * bptt + 1:,}", hint=f"lower train.batch_size to ≤ {n_targets // bptt} or "
                                                        f"train.bptt to ≤ {max(n_targets // batch_size, 1)}")


def check_windows_fit(n_tokens: int, batch_size: int, bptt: int, *, split: str = "train") -> None:
    """`windows` batching needs one full window and at least `batch_size` windows."""
    n_targets = max(n_tokens - 1, 0)
    if n_targets < bptt:
        raise DataError(f"train.bptt={bptt} is longer than the {split} split ({n_tokens:,} tokens)",
                        hint=f"lower train.bptt to ≤ {max(n_targets, 2)} or add data")
    n_windows = math.ceil(n_targets / bptt)
    if n_windows < batch_size:
        raise DataError(f"the {split} split has {n_windows:,} windows of {bptt} tokens, fewer than "
                        f"train.batch_size={batch_size}",
                        hint=f"lower train.batch_size to ≤ {n_windows} or train.bptt to ≤ "
                             f"{max(n_targets // batch_size, 2)}")


# ---------------------------------------------------------------- step sources


Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


class StepSource:
    """What one optimizer step reads: `accum` batches for one replica's rows. Subclasses define the two modes."""

    mode = "stream"
    carry_state = True

    def __init__(self, tokens: np.ndarray, *, batch_size: int, bptt: int, accum: int = 1, seed: int = 0,
                 num_replicas: int = 1):
        if batch_size % num_replicas:
            raise ConfigError(f"train.batch_size={batch_size} does not split evenly over {num_replicas} replicas",
                              hint=f"use a multiple of {num_replicas}")
        self.tokens = tokens
        self.batch_size = int(batch_size)
        self.bptt = int(bptt)
        self.accum = int(accum)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.replica_batch = self.batch_size // self.num_replicas
        self._cache: dict[int, np.ndarray] = {}

    # -- per epoch
    def batches(self, epoch: int) -> int:
        """Batches (windows) in `epoch`."""
        raise NotImplementedError

    def steps(self, epoch: int) -> int:
        """Optimizer steps in `epoch` (the last one may hold weight-0 filler batches)."""
        return math.ceil(self.batches(epoch) / self.accum)

    def tokens_per_epoch(self) -> int:
        """Targets per epoch (every token after the first)."""
        return int(len(self.tokens) - 1)

    @property
    def fixed_width(self) -> int | None:
        """The time dimension of every batch, or None when it varies (variable bptt)."""
        return self.bptt

    # -- one step
    def batch(self, epoch: int, index: int, replica: int) -> Batch:
        raise NotImplementedError

    def filler(self) -> Batch:
        width = self.fixed_width or 1
        zeros = np.zeros((self.replica_batch, width), dtype=np.int32)
        return zeros, zeros, np.zeros((self.replica_batch, width), dtype=np.float32)

    def step(self, epoch: int, step: int, replica: int = 0) -> tuple[Batch, ...]:
        """The `accum` batches of optimizer step `step` of `epoch`, for `replica`."""
        n = self.batches(epoch)
        out = []
        for m in range(self.accum):
            index = step * self.accum + m
            out.append(self.batch(epoch, index, replica) if index < n else self.filler())
        return tuple(out)

    def rows(self, replica: int) -> slice:
        return slice(replica * self.replica_batch, (replica + 1) * self.replica_batch)

    def describe(self) -> dict[str, object]:
        return {"mode": self.mode, "batch_size": self.batch_size, "bptt": self.bptt, "accum": self.accum,
                "batches_per_epoch": self.batches(0), "steps_per_epoch": self.steps(0),
                "tokens_per_epoch": self.tokens_per_epoch()}


class StreamSteps(StepSource):
    """Truncated-BPTT stream batches (state carried between windows)."""

    mode = "stream"
    carry_state = True

    def __init__(self, tokens: np.ndarray, *, batch_size: int, bptt: int, accum: int = 1, seed: int = 0,
                 num_replicas: int = 1, variable_bptt: bool = False, check: bool = True):
        super().__init__(tokens, batch_size=batch_size, bptt=bptt, accum=accum, seed=seed,
                         num_replicas=num_replicas)
        if check:
            check_stream_fits(len(tokens), batch_size, bptt)
        self.layout = StreamLayout(len(tokens), batch_size)
        self.variable_bptt = bool(variable_bptt)
        self._fixed = self.layout.fixed_windows(self.bptt)

    @property
    def fixed_width(self) -> int | None:
        return None if self.variable_bptt else self.bptt

    def windows(self, epoch: int) -> np.ndarray:
        """[n, 2] (start step, length) of every window of `epoch`."""
        if not self.variable_bptt:
            return self._fixed
        if epoch not in self._cache:
            self._cache = {epoch: self.layout.variable_windows(self.bptt, epoch_rng(self.seed, epoch, 0))}
        return self._cache[epoch]

    def batches(self, epoch: int) -> int:
        return len(self.windows(epoch))

    def mean_window(self, epoch: int, step: int) -> float:
        """Mean window length of a step (variable bptt scales the learning rate by it / bptt, as AWD-LSTM does)."""
        w = self.windows(epoch)[step * self.accum:(step + 1) * self.accum]
        return float(w[:, 1].mean()) if len(w) else float(self.bptt)

    def batch(self, epoch: int, index: int, replica: int) -> Batch:
        start, length = self.windows(epoch)[index]
        return self.layout.gather(self.tokens, int(start), int(length), self.rows(replica), pad_to=self.fixed_width)


class WindowSteps(StepSource):
    """Shuffled independent windows (state reset per window)."""

    mode = "windows"
    carry_state = False

    def __init__(self, tokens: np.ndarray, *, batch_size: int, bptt: int, accum: int = 1, seed: int = 0,
                 num_replicas: int = 1, check: bool = True):
        super().__init__(tokens, batch_size=batch_size, bptt=bptt, accum=accum, seed=seed,
                         num_replicas=num_replicas)
        if check:
            check_windows_fit(len(tokens), batch_size, bptt)
        self.n_targets = len(tokens) - 1
        self.n_windows = math.ceil(self.n_targets / self.bptt)

    def order(self, epoch: int) -> np.ndarray:
        """Window indices of `epoch` in training order (-1 marks filler rows of the last batch)."""
        if epoch not in self._cache:
            perm = epoch_rng(self.seed, epoch, 1).permutation(self.n_windows)
            pad = (-len(perm)) % self.batch_size
            self._cache = {epoch: np.concatenate([perm, -np.ones(pad, dtype=perm.dtype)])}
        return self._cache[epoch]

    def batches(self, epoch: int) -> int:
        return math.ceil(self.n_windows / self.batch_size)

    def batch(self, epoch: int, index: int, replica: int) -> Batch:
        rows = self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size][self.rows(replica)]
        return gather_windows(self.tokens, rows, self.bptt)


def gather_windows(tokens: np.ndarray, window_ids: np.ndarray, bptt: int) -> Batch:
    """(inputs, targets, weights) for windows `window_ids` (window i starts at token i·bptt; -1 = filler row)."""
    n_targets = len(tokens) - 1
    ids = np.asarray(window_ids, dtype=np.int64)
    starts = np.where(ids >= 0, ids * bptt, 0)
    t = np.arange(bptt + 1, dtype=np.int64)
    index = np.minimum(starts[:, None] + t[None, :], n_targets)
    block = np.asarray(tokens[index.ravel()], dtype=np.int32).reshape(index.shape)
    valid = (starts[:, None] + t[None, :bptt] < n_targets) & (ids[:, None] >= 0)
    inputs = np.where(valid, block[:, :-1], 0).astype(np.int32)
    targets = np.where(valid, block[:, 1:], 0).astype(np.int32)
    return inputs, targets, valid.astype(np.float32)


def build_steps(tokens: np.ndarray, train_cfg, *, seed: int, num_replicas: int = 1) -> StepSource:
    """The step source `train.batching` names, checked against the split size (DataError with the fix)."""
    if train_cfg.batching == "stream":
        return StreamSteps(tokens, batch_size=train_cfg.batch_size, bptt=train_cfg.bptt, accum=train_cfg.grad_accum,
                           seed=seed, num_replicas=num_replicas, variable_bptt=train_cfg.variable_bptt)
    if train_cfg.variable_bptt:
        raise ConfigError("train.variable_bptt only applies to train.batching=stream",
                          hint="set train.variable_bptt=false or train.batching=stream")
    return WindowSteps(tokens, batch_size=train_cfg.batch_size, bptt=train_cfg.bptt, accum=train_cfg.grad_accum,
                       seed=seed, num_replicas=num_replicas)


# ---------------------------------------------------------------- feeding


def step_arrays(source: StepSource, epoch: int, *, start_step: int = 0, replica: int = 0):
    """The steps of `epoch` from `start_step` on as numpy arrays, gathered on demand (single-device training).

    Gathering one step is a few microseconds of fancy indexing, so the loop reads it synchronously: less CPU per
    token than the tf.data pipeline below, whose map/prefetch threads compete with the cores (docs/benchmarks.md)."""
    for step in range(start_step, source.steps(epoch)):
        yield source.step(epoch, step, replica)


# ---------------------------------------------------------------- tf.data


def step_dataset(source: StepSource, epoch: int, *, start_step: int = 0, replicas: Sequence[int] = (0,),
                 prefetch: int = 4):
    """A tf.data.Dataset of the steps of `epoch` from `start_step` on (exact resume: skipped steps are never read).

    With several `replicas` (the local replicas of this worker), elements come in replica order for each step —
    the round-robin order in which `distribute_datasets_from_function` hands elements to local replicas.
    """
    from llmctl.tfenv import import_tf

    tf = import_tf()
    replicas = [int(r) for r in replicas]
    n_local = len(replicas)
    n_steps = source.steps(epoch)
    width = source.fixed_width
    k = source.accum

    def produce(i):
        i = int(i)
        arrays = source.step(epoch, i // n_local, replicas[i % n_local])
        return [a for batch in arrays for a in batch]

    tout = [tf.int32, tf.int32, tf.float32] * k
    shape = [source.replica_batch, width]

    def to_structure(i):
        flat = tf.numpy_function(produce, [i], tout, stateful=False)
        out = []
        for m in range(k):
            x, y, w = flat[3 * m:3 * m + 3]
            out.append((tf.ensure_shape(x, shape), tf.ensure_shape(y, shape), tf.ensure_shape(w, shape)))
        return tuple(out)

    ds = tf.data.Dataset.range(start_step * n_local, n_steps * n_local)
    ds = ds.map(to_structure, num_parallel_calls=1, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    return ds.with_options(options).prefetch(prefetch)


def dataset_fn_for(source: StepSource, epoch: int, start_step: int, *, replicas_per_worker: int
                   ) -> Callable[[object], object]:
    """The `dataset_fn(input_context)` for `strategy.distribute_datasets_from_function`: worker w reads the rows
    of replicas w·R_local … (w+1)·R_local − 1."""

    def fn(ctx):
        worker = int(ctx.input_pipeline_id)
        local = range(worker * replicas_per_worker, (worker + 1) * replicas_per_worker)
        return step_dataset(source, epoch, start_step=start_step, replicas=list(local))

    return fn
