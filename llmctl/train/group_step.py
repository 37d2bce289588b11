"""A compiled train step over layer groups: one optimizer per group, frozen groups left out of the step entirely.

    stepper = GroupStepper(groups, train_cfg, loss_fn, multipliers=[...])
    stepper.set_lr(base_lr)                         # every group's optimizer → base_lr × its multiplier
    loss, grad_norm = stepper.step(trainable, *batch)   # trainable: tuple of bools, one per group (bottom → top)

Why one optimizer per group: discriminative learning rates must scale each group's *update*. Scaling gradients
would be exact for plain SGD but a no-op for Adam/AdamW, whose update m/√v does not change when the gradient is
multiplied by a constant. Frozen groups (gradual unfreezing) are not differentiated and not updated, so their
optimizer moments do not drift. One `tf.function` is traced per distinct trainable mask (at most groups + 1).

Gradient clipping is by global norm over the trainable groups' gradients (`train.clip_norm`). With
`average_decay`, the step also updates a moving average of the weights (`weight_average.WeightAverage`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from llmctl.tfenv import import_tf
from llmctl.train.optimizers import build_optimizer, inner_optimizer

tf = import_tf()

LossFn = Callable[..., Any]  # (*batch, training=True) -> scalar loss tensor


class GroupStepper:
    """Owns the per-group optimizers and the compiled steps (one per trainable mask)."""

    def __init__(self, groups: Sequence[tuple[str, list[Any]]], train_cfg, loss_fn: LossFn, *,
                 multipliers: Sequence[float], input_signature: Sequence[Any], jit_compile: bool = False,
                 average_decay: float | None = None):
        if len(multipliers) != len(groups):
            raise ValueError(f"{len(groups)} groups but {len(multipliers)} lr multipliers")
        self.names = [name for name, _ in groups]
        self.variables = [[v for v in variables if v.trainable] for _, variables in groups]
        self.multipliers = [float(m) for m in multipliers]
        self.clip_norm = train_cfg.clip_norm
        self.loss_fn = loss_fn
        self.optimizers = []
        for variables in self.variables:
            optimizer = build_optimizer(train_cfg)
            optimizer.build(variables)
            self.optimizers.append(optimizer)
        self.average = None
        if average_decay:  # Polyak averaging over every group's weights, updated in the compiled step
            from llmctl.train.weight_average import WeightAverage

            self.average = WeightAverage([v for group in self.variables for v in group], average_decay)
        self._signature = list(input_signature)
        self._jit = bool(jit_compile)
        self._steps: dict[tuple[bool, ...], Any] = {}

    def set_lr(self, base_lr: float) -> None:
        for optimizer, multiplier in zip(self.optimizers, self.multipliers, strict=True):
            inner_optimizer(optimizer).learning_rate.assign(base_lr * multiplier)

    def group_lrs(self, base_lr: float) -> dict[str, float]:
        return {name: base_lr * m for name, m in zip(self.names, self.multipliers, strict=True)}

    def step(self, trainable: Sequence[bool], *batch):
        """One optimizer step on `batch` updating the groups marked trainable; returns (loss, gradient norm)."""
        key = tuple(bool(t) for t in trainable)
        if len(key) != len(self.names):
            raise ValueError(f"trainable mask has {len(key)} entries for {len(self.names)} groups")
        if not any(key):
            raise ValueError("at least one layer group must be trainable")
        if key not in self._steps:
            self._steps[key] = self._compile(key)
        return self._steps[key](*batch)

    def _compile(self, key: tuple[bool, ...]):
        active = [i for i, on in enumerate(key) if on and self.variables[i]]
        sizes = [len(self.variables[i]) for i in active]
        flat = [v for i in active for v in self.variables[i]]

        def step(*batch):
            with tf.GradientTape() as tape:
                loss = self.loss_fn(*batch, training=True)
            grads = tape.gradient(loss, flat)
            grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, flat, strict=True)]
            if self.clip_norm:
                grads, norm = tf.clip_by_global_norm(grads, self.clip_norm)
            else:
                norm = tf.linalg.global_norm(grads)
            start = 0
            for i, size in zip(active, sizes, strict=True):
                self.optimizers[i].apply(grads[start:start + size], self.variables[i])
                start += size
            if self.average is not None:
                self.average.apply()
            return loss, norm

        return tf.function(step, input_signature=self._signature, jit_compile=self._jit, reduce_retracing=True)

    def checkpoint_objects(self) -> dict[str, Any]:
        """The optimizers by group name, for a `tf.train.Checkpoint`."""
        return {f"optimizer_{name}": opt for name, opt in zip(self.names, self.optimizers, strict=True)}
