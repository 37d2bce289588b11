"""The one compiled optimizer step every task trains with: layer groups, accumulation, replicas, clipping.

    step = GradientStep(dist, groups, optimizers, forward=forward, clip_norm=1.0, multipliers=[...])
    summary, carry = step.run(trainable, element, carry, seed, lr)    # summary = [loss_sum, count, grad_norm]

`element` is a tuple of `accum` micro-batches (per replica under a strategy); the last array of every micro-batch
holds the per-target loss weights (0 = padding). `forward(batch, carry, seed, m)` returns (Σ weighted losses,
new carry) for micro-batch `m` on one replica; `carry` is whatever the task threads between micro-batches and steps
(the stream's LSTM state, or `()`).

One step: the GLOBAL weight total of the step (all micro-batches, all replicas; one scalar all-reduce) normalises
the loss before differentiation; gradients are summed over the micro-batches and all-reduced over the replicas, so
any replica count or accumulation gives the update of one device on the same global batch. Then global-norm
clipping over the trainable groups' (unscaled) gradients, and one update per trainable group by its own optimizer at
`lr × multiplier` (discriminative rates must scale each group's *update*: scaling Adam's gradients is a no-op).
Frozen groups are neither differentiated nor updated; one function is traced per trainable mask. With a
`WeightAverage`, the step also folds the new weights into the average.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from llmctl.tfenv import import_tf
from llmctl.train.optimizers import inner_optimizer

tf = import_tf()
import keras  # noqa: E402

Forward = Callable[..., Any]  # (batch, carry, seed, m) -> (loss_sum, new_carry)


class GradientStep:
    """Owns the compiled steps (one per trainable mask) over `groups` = [(name, variables)], bottom to top."""

    def __init__(self, dist, groups: Sequence[tuple[str, Sequence[Any]]], optimizers: Sequence[Any], *,
                 forward: Forward, clip_norm: float | None = None, multipliers: Sequence[float] | None = None,
                 jit: bool = False, average=None):
        if len(optimizers) != len(groups):
            raise ValueError(f"{len(groups)} groups but {len(optimizers)} optimizers")
        multipliers = [1.0] * len(groups) if multipliers is None else [float(m) for m in multipliers]
        if len(multipliers) != len(groups):
            raise ValueError(f"{len(groups)} groups but {len(multipliers)} lr multipliers")
        self.dist = dist
        self.strategy = dist.strategy
        self.names = [name for name, _ in groups]
        self.variables = [[v for v in variables if v.trainable] for _, variables in groups]
        self.optimizers = list(optimizers)
        self.multipliers = multipliers
        self.clip_norm = float(clip_norm) if clip_norm else None
        self.forward = forward
        self.average = average
        self.loss_scaled = isinstance(self.optimizers[0], keras.optimizers.LossScaleOptimizer)
        self.jit = bool(jit)
        self._steps: dict[tuple[bool, ...], Any] = {}

    def set_jit(self, jit: bool) -> None:
        """Compile the step with XLA or as a graph (the next call traces again)."""
        self.jit = bool(jit)
        self._steps = {}

    def group_lrs(self, base_lr: float) -> dict[str, float]:
        return {name: base_lr * m for name, m in zip(self.names, self.multipliers, strict=True)}

    def function(self, trainable: Sequence[bool]):
        """The compiled step for one trainable mask: (element, carry, seed, lr) -> (summary, carry)."""
        key = tuple(bool(t) for t in trainable)
        if len(key) != len(self.names):
            raise ValueError(f"trainable mask has {len(key)} entries for {len(self.names)} groups")
        if not any(key):
            raise ValueError("at least one layer group must be trainable")
        if key not in self._steps:
            self._steps[key] = self._compile(key)
        return self._steps[key]

    def run(self, trainable: Sequence[bool], element, carry, seed, lr):
        return self.function(trainable)(element, carry, seed, lr)

    # -- compilation
    def _compile(self, key: tuple[bool, ...]):
        active = [i for i, on in enumerate(key) if on and self.variables[i]]
        flat = [v for i in active for v in self.variables[i]]
        sizes = [len(self.variables[i]) for i in active]
        if self.dist.distributed:
            grads = tf.function(lambda *a: self._grads(flat, *a), jit_compile=True) if self.jit else \
                (lambda *a: self._grads(flat, *a))
            inner = grads
        else:
            inner = lambda *a: self._grads(flat, *a)  # noqa: E731

        def step(element, carry, seed, lr):
            for i in active:
                inner_optimizer(self.optimizers[i]).learning_rate.assign(lr * self.multipliers[i])
            grads, loss_sum, count, carry = self.strategy.run(lambda e, c, s: self._replica(inner, e, c, s),
                                                              args=(element, carry, seed))
            if self.dist.distributed:
                def first(v):
                    return self.strategy.experimental_local_results(v)[0]
                grads = [first(g) for g in grads]
                loss_sum, count = first(loss_sum), first(count)
            grads = [_unique_rows(g) for g in grads]
            scale = self._scale(active[0]) if self.loss_scaled else tf.constant(1.0)
            norm = tf.sqrt(tf.add_n([_squared_norm(g) for g in grads])) / scale
            if self.clip_norm is not None:
                factor = self.clip_norm / tf.maximum(norm, self.clip_norm)
                grads = [_scaled(g, factor) for g in grads]
            start = 0
            for i, size in zip(active, sizes, strict=True):
                part = grads[start:start + size]
                if self.loss_scaled and i != active[0]:  # every group's optimizer unscales by its own scale
                    part = [_scaled(g, self._scale(i) / scale) for g in part]
                self.optimizers[i].apply(part, self.variables[i])
                start += size
            if self.average is not None:
                self.average.apply()
            return tf.stack([loss_sum, count, norm]), carry

        if self.dist.distributed:
            return tf.function(step, reduce_retracing=True)
        # reduce_retracing: variable-length windows / documents share one trace with None dimensions
        return tf.function(step, jit_compile=self.jit, reduce_retracing=not self.jit)

    def _scale(self, i: int):
        return tf.cast(self.optimizers[i].dynamic_scale, tf.float32)

    def _replica(self, grads_fn, micro, carry, seed):
        grads, loss_sum, count, carry = grads_fn(micro, carry, seed)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            grads, loss_sum = ctx.all_reduce(tf.distribute.ReduceOp.SUM, (grads, loss_sum))
        return grads, loss_sum, count, carry

    def _grads(self, variables, micro, carry, seed):
        """Per replica: gradients of (loss sum / GLOBAL weight total) over the micro-batches, the loss sum, the
        global weight total and the new carry. Without accumulation and outside XLA the embedding gradient stays
        sparse (`tf.IndexedSlices`), as Keras' own training does; otherwise gradients are summed densely."""
        sparse = len(micro) == 1 and not self.jit
        count = tf.add_n([tf.reduce_sum(tf.cast(batch[-1], tf.float32)) for batch in micro])
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
        inverse = 1.0 / tf.maximum(count, 1.0)
        grads_sum = [None if sparse else tf.zeros_like(v) for v in variables]
        loss_total = tf.constant(0.0, tf.float32)
        for m, batch in enumerate(micro):
            with tf.GradientTape() as tape:
                loss_sum, new_carry = self.forward(batch, carry, seed, m)
                loss_sum = tf.cast(loss_sum, tf.float32)
                target = loss_sum * inverse
                if self.loss_scaled:
                    target = self.optimizers[0].scale_loss(target)
            grads = tape.gradient(target, variables)
            if sparse:
                grads_sum = [tf.zeros_like(v) if g is None else g for v, g in zip(variables, grads, strict=True)]
            else:
                grads_sum = [acc if g is None else acc + tf.convert_to_tensor(g)
                             for acc, g in zip(grads_sum, grads, strict=True)]
            loss_total += loss_sum
            carry = tf.nest.map_structure(tf.stop_gradient, new_carry)
        return grads_sum, loss_total, count, carry


def _unique_rows(g):
    """IndexedSlices with each row once (duplicates summed), so norms and updates are those of the dense gradient."""
    if not isinstance(g, tf.IndexedSlices):
        return g
    rows, position = tf.unique(g.indices)
    values = tf.math.unsorted_segment_sum(g.values, position, tf.shape(rows)[0])
    return tf.IndexedSlices(values, rows, g.dense_shape)


def _scaled(g, factor):
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(g.values * tf.cast(factor, g.values.dtype), g.indices, g.dense_shape)
    return g * tf.cast(factor, g.dtype)


def _squared_norm(g):
    values = g.values if isinstance(g, tf.IndexedSlices) else g
    return tf.reduce_sum(tf.square(tf.cast(values, tf.float32)))
