"""Exponential moving average of the weights (Polyak averaging) for the document fine-tuning tasks.

    average = WeightAverage(variables, decay=0.999)
    average.apply()                  # after every optimizer step (inside the compiled step)
    with average.swapped():          # the model holds the averaged weights: evaluate, select, save
        ...

Training always continues on the raw weights; what is evaluated, selected as `best` and saved in checkpoints as the
model's weights is the average (so `evaluate`, `predict` and `export` read it). Early in training the decay is
`min(decay, (1 + n) / (10 + n))` after n updates (TensorFlow's `ExponentialMovingAverage` with `num_updates`), so a
short run is not dominated by the initial weights. The shadow copies and the update count are checkpointed with the
optimizers (`variables`), so `--resume` continues exactly.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

from llmctl.tfenv import import_tf

tf = import_tf()


class WeightAverage:
    def __init__(self, variables: Sequence[Any], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay!r}")
        self.targets = list(variables)
        self.decay = float(decay)
        import keras

        # Keras variables (they have the `path` checkpoints key optimizer variables by)
        self.shadow = [keras.Variable(tf.convert_to_tensor(v), trainable=False, name=f"average_{i}")
                       for i, v in enumerate(self.targets)]
        self.updates = keras.Variable(0, dtype="int64", trainable=False, name="average_updates")

    @property
    def variables(self) -> list[Any]:
        """What a checkpoint must hold to resume the average exactly."""
        return [*self.shadow, self.updates]

    def apply(self) -> None:
        """Fold the current weights into the average (graph-friendly: call it inside the train step)."""
        self.updates.assign_add(1)
        n = tf.cast(self.updates, tf.float32)
        decay = tf.minimum(tf.constant(self.decay, tf.float32), (1.0 + n) / (10.0 + n))
        for shadow, target in zip(self.shadow, self.targets, strict=True):
            d = tf.cast(decay, shadow.dtype)
            shadow.assign(d * shadow + (1.0 - d) * tf.cast(target, shadow.dtype))

    def swap(self) -> None:
        """Exchange the weights and their averages (twice = unchanged)."""
        for shadow, target in zip(self.shadow, self.targets, strict=True):
            held = tf.convert_to_tensor(target)
            target.assign(shadow)
            shadow.assign(held)

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its raw weights again after it."""
        self.swap()
        try:
            yield
        finally:
            self.swap()
