"""The fused CPU LSTM kernel computes what the Keras LSTM layer computes: outputs, final state and every gradient."""

from __future__ import annotations

import numpy as np
import pytest

from llmctl.tfenv import import_tf

tf = import_tf()
import keras  # noqa: E402

from llmctl.models.fused_lstm import fusable, lstm_sequence  # noqa: E402
from llmctl.models.lstm_lm import build_language_model  # noqa: E402
from llmctl.schema import ModelConfig, TrainConfig  # noqa: E402
from llmctl.train.distribution import Distribution  # noqa: E402
from llmctl.train.loop import Trainer, decide_lstm_kernel  # noqa: E402
from llmctl.train.optimizers import build_optimizer  # noqa: E402

B, T, D, H = 3, 7, 5, 6


def _layer(seed=0, **kw):
    keras.utils.set_random_seed(seed)
    layer = keras.layers.LSTM(H, return_sequences=True, return_state=True, **kw)
    layer.build((None, None, D))
    # non-zero biases so every gate's bias gradient is exercised
    layer.cell.bias.assign(np.random.default_rng(seed).normal(size=4 * H).astype("float32"))
    return layer


def _inputs(seed=1):
    rng = np.random.default_rng(seed)
    x, h0, c0 = (tf.constant(rng.normal(size=s).astype("float32")) for s in ((B, T, D), (B, H), (B, H)))
    weights = [tf.constant(rng.normal(size=s).astype("float32")) for s in ((B, T, H), (B, H), (B, H))]
    return x, h0, c0, weights


def _loss_and_grads(run, layer, x, h0, c0, weights):
    cell = layer.cell
    with tf.GradientTape() as tape:
        tape.watch([x, h0, c0])
        out, h, c = run(x, h0, c0)
        loss = sum(tf.reduce_sum(a * w) for a, w in zip((out, h, c), weights, strict=True))
    grads = tape.gradient(loss, [x, h0, c0, cell.kernel, cell.recurrent_kernel, cell.bias])
    return [out, h, c], grads


@pytest.mark.parametrize("xla", [False, True], ids=["graph", "xla"])
def test_outputs_and_gradients_equal_the_keras_layer(xla):
    layer = _layer()
    x, h0, c0, weights = _inputs()
    cell = layer.cell

    @tf.function
    def keras_run():
        return _loss_and_grads(lambda *a: layer(a[0], initial_state=[a[1], a[2]]), layer, x, h0, c0, weights)

    @tf.function
    def fused_run():
        return _loss_and_grads(lambda *a: lstm_sequence(*a, cell.kernel.value, cell.recurrent_kernel.value,
                                                        cell.bias.value, xla=xla), layer, x, h0, c0, weights)

    (ref_out, ref_grads), (out, grads) = keras_run(), fused_run()
    for a, b in zip(ref_out, out, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
    for name, a, b in zip(["x", "h0", "c0", "kernel", "recurrent_kernel", "bias"], ref_grads, grads, strict=True):
        assert b is not None, name
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_only_plain_forward_lstms_are_fused():
    assert fusable(_layer())
    assert not fusable(_layer(recurrent_dropout=0.1))
    assert not fusable(_layer(dropout=0.1))
    assert not fusable(_layer(go_backwards=True))
    assert not fusable(_layer(activation="relu"))


def test_model_kernels_agree_and_keras_runs_the_rest():
    model = build_language_model(ModelConfig(embedding_dim=8, layers=2, units=H, dropout=0.0, output_dropout=0.0),
                                 30)
    tokens = tf.constant(np.random.default_rng(0).integers(0, 30, (B, T)), tf.int32)
    outputs = {}
    for kind in ("keras", "fused", "fused_xla"):
        model.lstm_kernel = kind
        assert model.kernel_for(model.lstms[0]) == kind
        outputs[kind] = tf.function(lambda t: model(t)[0])(tokens).numpy()
    np.testing.assert_allclose(outputs["fused"], outputs["keras"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs["fused_xla"], outputs["keras"], rtol=1e-5, atol=1e-5)
    rdrop = build_language_model(ModelConfig(embedding_dim=8, layers=1, units=H, recurrent_dropout=0.1), 30)
    rdrop.lstm_kernel = "fused_xla"
    assert rdrop.kernel_for(rdrop.lstms[0]) == "keras"


def test_kernel_decision():
    assert decide_lstm_kernel("keras", gpus=0, mixed_precision="none", variable_bptt=False)[0] == "keras"
    kind, why = decide_lstm_kernel("auto", gpus=1, mixed_precision="none", variable_bptt=False)
    assert kind == "keras" and "cuDNN" in why
    assert decide_lstm_kernel("auto", gpus=0, mixed_precision="none", variable_bptt=False)[0] == "fused_xla"
    assert decide_lstm_kernel("auto", gpus=0, mixed_precision="none", variable_bptt=True)[0] == "fused"
    assert decide_lstm_kernel("auto", gpus=0, mixed_precision="bfloat16", variable_bptt=False)[0] == "fused"


def test_an_xla_step_compiles_the_recurrence_itself():
    """A nested XLA function inside an XLA step is very slow: the XLA step runs the plain fused kernel."""
    model = build_language_model(ModelConfig(embedding_dim=8, layers=1, units=H), 30)
    model.lstm_kernel = "fused_xla"
    optimizer = build_optimizer(TrainConfig(optimizer="sgd", lr=0.1))
    optimizer.build(model.trainable_variables)
    trainer = Trainer(model, optimizer, Distribution("none", tf.distribute.get_strategy()), clip_norm=None, jit=True)
    assert model.lstm_kernel == "fused"
    trainer._build(False)  # e.g. the XLA probe failed
    assert model.lstm_kernel == "fused_xla"


def test_finetune_honours_train_lstm_kernel_keras():
    from llmctl.schema import Experiment, FinetuneConfig
    from llmctl.train import ulmfit
    from llmctl.train.tasks import DocumentTask

    model = build_language_model(ModelConfig(embedding_dim=8, layers=1, units=H), 30)
    groups = ulmfit.language_model_groups(model)
    dist = Distribution("none", tf.distribute.get_strategy())

    def trainer(cfg):
        task = DocumentTask(Experiment(train=cfg, finetune=FinetuneConfig()))
        task.model = model
        task.trainer(dist, groups, [build_optimizer(cfg) for _ in groups], [1.0] * len(groups), None, gpus=0)

    trainer(TrainConfig())
    assert model.lstm_kernel == "auto" and model.kernel_for(model.lstms[0]) == "fused"
    trainer(TrainConfig(lstm_kernel="keras"))
    assert model.kernel_for(model.lstms[0]) == "keras"
