"""The Keras optimizer `train.optimizer` names, with a settable learning-rate variable.

The training loop owns the learning rate (`llmctl.train.schedules`) and gradient clipping (global norm, so it can
report the norm and clip accumulated gradients), so the optimizer is built with a plain float learning rate (Keras
then keeps it in a non-trainable variable: `optimizer.learning_rate.assign(value)` works eagerly and inside
`tf.function`, also through `LossScaleOptimizer`) and without clipnorm/clipvalue.
"""

from __future__ import annotations

from llmctl.errors import ConfigError
from llmctl.schema import TrainConfig
from llmctl.tfenv import import_tf

tf = import_tf()
import keras  # noqa: E402

MIXED_PRECISION = ("none", "bfloat16", "float16")


def build_optimizer(train_cfg: TrainConfig, *, mixed_precision: str = "none") -> keras.optimizers.Optimizer:
    """SGD (momentum), Adam or AdamW (decoupled weight decay) at `train.lr`; wrapped in a dynamic
    `LossScaleOptimizer` when `mixed_precision == "float16"` (bfloat16 needs no loss scaling)."""
    kind = train_cfg.optimizer
    if mixed_precision not in MIXED_PRECISION:
        raise ConfigError(f"train.mixed_precision={mixed_precision!r} is not one of {', '.join(MIXED_PRECISION)}; "
                          "pick one of those")
    if train_cfg.momentum and kind != "sgd":
        raise ConfigError(f"train.momentum={train_cfg.momentum} only applies to train.optimizer=sgd; "
                          "set train.momentum=0 or train.optimizer=sgd")
    if train_cfg.weight_decay and kind != "adamw":
        raise ConfigError(f"train.weight_decay={train_cfg.weight_decay} only applies to train.optimizer=adamw; "
                          "set train.weight_decay=0 or train.optimizer=adamw")

    lr = float(train_cfg.lr)
    if kind == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=float(train_cfg.momentum), nesterov=False,
                                         name="sgd")
    elif kind == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=lr, name="adam")
    elif kind == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=float(train_cfg.weight_decay),
                                           name="adamw")
    else:  # the schema's Literal makes this unreachable for validated configs
        raise ConfigError(f"train.optimizer={kind!r} is not supported; use sgd, adam or adamw")

    if mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, name="loss_scale")
    return optimizer


def inner_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The optimizer doing the updates (unwraps `LossScaleOptimizer`)."""
    return getattr(optimizer, "inner_optimizer", optimizer)
