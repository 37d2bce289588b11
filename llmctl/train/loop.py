"""Stream language-model training parts: kernel/XLA decisions, losses and the stream step.

    trainer = Trainer(model, optimizer, dist, clip_norm=1.0, carry_state=True, jit=True)
    states = trainer.zero_states()
    loss_sum, tokens, grad_norm, states = trainer.step(element, states, step_index)   # element: `accum` batches

The step itself (normalisation by the global token count, accumulation, all-reduce, clipping, the update) is
`llmctl.train.step.GradientStep`; `Trainer` supplies the stream forward pass — the explicit (h, c) state carried
across windows, the sum of per-token sparse cross-entropies from float32 logits (weight-0 padding excluded; or
`tf.nn.sampled_softmax_loss` for `model.output: sampled`) — and moves the state in and out of checkpoints.

The exact evaluation of a whole split (`StreamEvaluator`, shared with `llmctl evaluate`) lives in
`llmctl.models.stream_nll`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from llmctl.tfenv import import_tf

tf = import_tf()

from llmctl.models.lstm_lm import flatten_states, unflatten_states  # noqa: E402
from llmctl.models.stream_nll import token_nll  # noqa: E402

# ---------------------------------------------------------------- XLA decision


def decide_jit(setting, *, gpus: int, mixed_precision: str, variable_bptt: bool, distributed: bool
               ) -> tuple[bool | None, str]:
    """(use XLA?, why) for `train.jit_compile`; None = measure it (`llmctl.train.xla_choice.choose_xla`): `auto` on
    a single CPU device in float32. A chosen XLA step is still probed (`Trainer.probe_jit`) before it is used."""
    if setting is True:
        return True, "train.jit_compile=true"
    if setting is False:
        return False, "train.jit_compile=false"
    if gpus:
        return False, "auto: GPUs present — the cuDNN LSTM kernel and XLA don't combine"
    if mixed_precision != "none":
        return False, f"auto: {mixed_precision} on CPU is slower with XLA (docs/benchmarks.md)"
    if variable_bptt:
        return False, "auto: variable bptt changes the window length every batch (XLA would recompile each)"
    if distributed:
        return False, "auto: distributed steps keep the collectives outside XLA; the step runs as a graph"
    return None, "auto: measure XLA against the graph step on this CPU"


def decide_lstm_kernel(setting: str, *, gpus: int, mixed_precision: str, variable_bptt: bool) -> tuple[str, str]:
    """(kernel, why) for `train.lstm_kernel` — a value of `LSTMLanguageModel.lstm_kernel`."""
    if setting == "keras":
        return "keras", "train.lstm_kernel=keras: the Keras layer"
    if gpus:
        return "keras", "auto: GPUs present — the Keras layer, which runs the cuDNN kernel"
    if variable_bptt:
        return "fused", "auto: fused CPU kernel, graph recurrence (variable bptt: XLA would recompile per length)"
    if mixed_precision != "none":
        return "fused", f"auto: fused CPU kernel, graph recurrence ({mixed_precision})"
    return "fused_xla", "auto: fused CPU kernel with an XLA-compiled recurrence (fixed window length)"


# ---------------------------------------------------------------- losses


class SampledSoftmax:
    """Sampled-softmax training loss with negatives drawn from the (smoothed) unigram distribution of the train split.

    Negatives are drawn with a stateless sampler keyed by (seed, step), so a resumed run draws the same negatives;
    all replicas of a step share them (one set per global batch, as on one device).
    """

    def __init__(self, counts: np.ndarray, num_sampled: int, *, power: float = 0.75):
        probs = (np.asarray(counts, dtype=np.float64) + 1.0) ** power
        probs /= probs.sum()
        self.vocab_size = int(len(probs))
        self.num_sampled = int(min(num_sampled, self.vocab_size))
        self.log_q = tf.constant(np.log(probs)[None, :], dtype=tf.float32)
        self.q = tf.constant(probs, dtype=tf.float32)

    @staticmethod
    def count_tokens(tokens: np.ndarray, vocab_size: int, chunk: int = 1 << 24) -> np.ndarray:
        """Token frequencies, read in chunks from the memmap (the corpus is never copied whole)."""
        counts = np.zeros(vocab_size, dtype=np.int64)
        for start in range(0, len(tokens), chunk):
            counts += np.bincount(np.asarray(tokens[start:start + chunk]), minlength=vocab_size)[:vocab_size]
        return counts

    def losses(self, model, hidden, targets, seed, training: bool = True):
        """Per-token sampled-softmax losses [B, T] (float32)."""
        x = model.pre_logits(hidden, training=training)
        dim = tf.shape(x)[-1]
        flat = tf.cast(tf.reshape(x, [-1, dim]), tf.float32)
        labels = tf.reshape(tf.cast(targets, tf.int64), [-1, 1])
        kernel, bias = model.output_weights()
        sampled = tf.reshape(tf.random.stateless_categorical(self.log_q, self.num_sampled, seed, dtype=tf.int64),
                             [-1])
        true_expected = tf.gather(self.q, labels) * float(self.num_sampled)
        sampled_expected = tf.gather(self.q, sampled) * float(self.num_sampled)
        per_token = tf.nn.sampled_softmax_loss(
            weights=tf.transpose(tf.cast(kernel, tf.float32)), biases=tf.cast(bias, tf.float32), labels=labels,
            inputs=flat, num_sampled=self.num_sampled, num_classes=self.vocab_size,
            sampled_values=(sampled, true_expected, sampled_expected), remove_accidental_hits=True)
        return tf.reshape(per_token, tf.shape(targets))


# ---------------------------------------------------------------- training step


class Trainer:
    """The stream language-model step (`llmctl.train.step.GradientStep` with one group) and its carried state."""

    def __init__(self, model, optimizer, dist, *, clip_norm: float | None, carry_state: bool = True,
                 jit: bool = False, sampled: SampledSoftmax | None = None, seed: int = 0, state_reset: float = 0.0):
        from llmctl.train.step import GradientStep

        self.model = model
        self.optimizer = optimizer
        self.dist = dist
        self.strategy = dist.strategy
        self.carry_state = bool(carry_state)
        self.sampled = sampled
        self.seed = int(seed)
        self.state_reset = float(state_reset) if carry_state else 0.0
        self.replica_batch: int | None = None
        self._gather_fn = None
        self.gradient = GradientStep(dist, [("model", list(model.trainable_variables))], [optimizer],
                                     forward=self._forward, clip_norm=clip_norm)
        self._lstm_kernel = getattr(self.model, "lstm_kernel", None)  # the kernel asked for
        self._build(jit)

    @property
    def jit(self) -> bool:
        return self.gradient.jit

    # -- compilation
    def _build(self, jit: bool) -> None:
        if self._lstm_kernel == "fused_xla":
            # an XLA step compiles the fused recurrence itself; a nested XLA function inside it runs ~15x slower
            self.model.lstm_kernel = "fused" if jit else "fused_xla"
        self.gradient.set_jit(jit)

    def probe_jit(self, element, states, step_index: int) -> str | None:
        """Check that the XLA step compiles for this element (without running it); on failure switch XLA off and
        return the reason. Only the single-device step is probed."""
        if not self.jit or self.dist.distributed:
            return None
        element = tf.nest.map_structure(tf.convert_to_tensor, element)
        try:
            self.gradient.function((True,)).experimental_get_compiler_ir(
                element, states, self._seed(step_index), self._lr(None))(stage="hlo")
        except Exception as exc:  # noqa: BLE001 - any lowering failure means "no XLA for this step"
            self._build(False)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return first[:160]
        return None

    def _seed(self, step_index: int):
        return tf.constant([self.seed & 0x7FFFFFFF, int(step_index)], dtype=tf.int64)

    # -- state
    def zero_states(self):
        """Zero (h, c) for every layer on every replica (flat list [h0, c0, h1, c1, ...])."""
        b = self.replica_batch
        if b is None:
            raise RuntimeError("Trainer.replica_batch must be set before creating states")

        def zeros():
            return flatten_states(self.model.initial_state(b))

        if not self.dist.distributed:
            return zeros()
        return self.strategy.experimental_distribute_values_from_function(lambda ctx: zeros())

    def gather_states(self, states) -> list[np.ndarray]:
        """The carried state of all replicas (all workers) as float32 numpy arrays [B, units] in row order.
        Under multi_worker every worker must call this (it is a collective)."""
        if not self.dist.distributed:
            return [np.asarray(tf.cast(s, tf.float32)) for s in states]

        if self._gather_fn is None:
            b = self.replica_batch

            def gather(flat):
                # each replica places its rows in a zero [B, units] block; one SUM all-reduce assembles them
                # (exact: every element is a single value plus zeros)
                ctx = tf.distribute.get_replica_context()
                r = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
                after = ctx.num_replicas_in_sync - 1 - r
                blocks = [tf.pad(tf.cast(s, tf.float32), [[r * b, after * b], [0, 0]]) for s in flat]
                return ctx.all_reduce(tf.distribute.ReduceOp.SUM, blocks)

            self._gather_fn = tf.function(lambda flat: self.strategy.run(gather, args=(flat,)))
        gathered = self._gather_fn(list(states))
        return [np.asarray(self.strategy.experimental_local_results(g)[0]) for g in gathered]

    def scatter_states(self, arrays: Sequence[np.ndarray]):
        """Inverse of `gather_states`: global [B, units] arrays → per-replica state."""
        dtype = self.model.compute_dtype
        if not self.dist.distributed:
            return [tf.cast(tf.constant(a), dtype) for a in arrays]
        b = self.replica_batch

        def value(ctx):
            r = ctx.replica_id_in_sync_group
            return [tf.cast(tf.constant(a[r * b:(r + 1) * b]), dtype) for a in arrays]

        return self.strategy.experimental_distribute_values_from_function(value)

    # -- the step
    def step(self, element, states, step_index: int, lr: float | None = None):
        """Run one optimizer step on `element` (`accum` (x, y, w) batches: tensors, numpy arrays or distributed
        values) at learning rate `lr` (None: keep the optimizer's), assigned inside the compiled step.
        Returns (loss_sum, token_count, grad_norm) as floats — one host sync — and the new states."""
        if not self.dist.distributed:
            element = tf.nest.map_structure(tf.convert_to_tensor, element)
        summary, new_states = self.gradient.run((True,), element, states, self._seed(step_index),
                                                self._lr(lr))
        loss_sum, count, norm = (float(v) for v in summary.numpy())
        return loss_sum, count, norm, new_states

    def _lr(self, lr: float | None):
        value = float(self.optimizer.learning_rate.numpy()) if lr is None else float(lr)
        return tf.constant(value, tf.float32)

    def _forward(self, batch, states, seed, m):
        """Σ weighted token losses of micro-batch `m` from the carried (h, c) state; the new state."""
        x, y, w = batch
        states = list(states)
        if not self.carry_state:
            states = [tf.zeros_like(s) for s in states]
        elif self.state_reset > 0:
            states = self._random_resets(states, seed, m)
        seed = tf.random.experimental.stateless_fold_in(seed, m)
        hidden, new_states = self.model.features(x, unflatten_states(states), training=True)
        if self.sampled is not None:
            per_token = self.sampled.losses(self.model, hidden, y, seed, training=True)
        else:
            per_token = token_nll(self.model.project(hidden, training=True), y)
        return tf.reduce_sum(per_token * tf.cast(w, tf.float32)), flatten_states(new_states)

    def _random_resets(self, states, seed, m):
        """Zero each column's state with probability `state_reset` (keyed by seed, step, batch and replica)."""
        ctx = tf.distribute.get_replica_context()
        replica = ctx.replica_id_in_sync_group if ctx is not None else 0
        key = tf.random.experimental.stateless_fold_in(tf.random.experimental.stateless_fold_in(seed, 1000 + m),
                                                       replica)
        rows = tf.shape(states[0])[0]
        keep = tf.random.stateless_uniform([rows, 1], key) >= self.state_reset
        return [tf.where(keep, s, tf.zeros_like(s)) for s in states]
