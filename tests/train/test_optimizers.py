"""Tests for llmctl.train.optimizers: each kind builds, assigned learning rates drive real updates, float16 wrap."""

from __future__ import annotations

import numpy as np
import pytest

from llmctl.errors import ConfigError
from llmctl.schema import TrainConfig
from llmctl.tfenv import import_tf
from llmctl.train.optimizers import build_optimizer, inner_optimizer

tf = import_tf()
import keras  # noqa: E402

KINDS = [("sgd", {"momentum": 0.0}), ("adam", {}), ("adamw", {"weight_decay": 0.01})]


class Stepper:
    """One variable and one (optionally compiled) step: assign the lr, apply gradient [1, 1], return the change."""

    def __init__(self, optimizer, *, compiled: bool):
        self.optimizer = optimizer
        self.var = keras.Variable([1.0, 2.0])
        self.step = tf.function(self._step) if compiled else self._step

    def _step(self, lr):
        self.optimizer.learning_rate.assign(lr)
        self.optimizer.apply_gradients([(tf.ones([2]), self.var)])

    def __call__(self, lr: float) -> np.ndarray:
        before = self.var.numpy().copy()
        self.step(tf.constant(lr))
        return self.var.numpy() - before


@pytest.mark.parametrize("kind, extra", KINDS)
def test_each_kind_builds_with_settable_lr_and_no_clipping(kind, extra):
    opt = build_optimizer(TrainConfig(optimizer=kind, lr=0.01, **extra))
    assert isinstance(opt, keras.optimizers.Optimizer)
    assert opt.name == kind
    assert float(opt.learning_rate.numpy()) == pytest.approx(0.01)
    assert opt.clipnorm is None and opt.global_clipnorm is None and opt.clipvalue is None


def test_sgd_settings():
    opt = build_optimizer(TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9))
    assert isinstance(opt, keras.optimizers.SGD)
    assert opt.momentum == pytest.approx(0.9) and opt.nesterov is False


def test_adamw_weight_decay():
    opt = build_optimizer(TrainConfig(optimizer="adamw", weight_decay=0.05))
    assert isinstance(opt, keras.optimizers.AdamW) and opt.weight_decay == pytest.approx(0.05)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_assigned_lr_drives_the_sgd_update(compiled):
    step = Stepper(build_optimizer(TrainConfig(optimizer="sgd", lr=0.1)), compiled=compiled)
    np.testing.assert_allclose(step(0.1), [-0.1, -0.1], rtol=1e-5)
    np.testing.assert_allclose(step(0.5), [-0.5, -0.5], rtol=1e-5)
    np.testing.assert_allclose(step(0.0), [0.0, 0.0])
    if compiled:
        assert step.step.experimental_get_tracing_count() == 1  # new values, same graph


@pytest.mark.parametrize("kind, extra", [("adam", {}), ("adamw", {})])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_assigned_lr_drives_adam_updates(kind, extra, compiled):
    # Adam's first step moves each weight by ~lr (m̂/√v̂ = 1); lr 0 moves nothing.
    for lr in (0.25, 0.0):
        step = Stepper(build_optimizer(TrainConfig(optimizer=kind, lr=0.1, **extra)), compiled=compiled)
        np.testing.assert_allclose(step(lr), [-lr, -lr], atol=1e-5)


def test_float16_wraps_in_loss_scale_optimizer_and_lr_reaches_inner():
    opt = build_optimizer(TrainConfig(optimizer="sgd", lr=0.1), mixed_precision="float16")
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
    assert isinstance(inner_optimizer(opt), keras.optimizers.SGD)
    var = keras.Variable([1.0, 2.0])

    @tf.function
    def step(lr):
        opt.learning_rate.assign(lr)
        with tf.GradientTape() as tape:
            loss = opt.scale_loss(tf.reduce_sum(var))
        opt.apply_gradients(zip(tape.gradient(loss, [var]), [var], strict=True))

    step(tf.constant(0.5))
    assert float(inner_optimizer(opt).learning_rate.numpy()) == pytest.approx(0.5)
    np.testing.assert_allclose(var.numpy(), [0.5, 1.5], rtol=1e-6)


@pytest.mark.parametrize("precision", ["none", "bfloat16"])
def test_other_precisions_are_not_wrapped(precision):
    opt = build_optimizer(TrainConfig(), mixed_precision=precision)
    assert inner_optimizer(opt) is opt and isinstance(opt, keras.optimizers.Adam)


@pytest.mark.parametrize("settings, fragment", [
    ({"optimizer": "adam", "momentum": 0.9}, "train.momentum=0.9 only applies to train.optimizer=sgd"),
    ({"optimizer": "sgd", "weight_decay": 0.1}, "train.weight_decay=0.1 only applies to train.optimizer=adamw"),
])
def test_settings_for_another_optimizer_are_config_errors(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_optimizer(TrainConfig(**settings))


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="mixed_precision"):
        build_optimizer(TrainConfig(), mixed_precision="float8")
