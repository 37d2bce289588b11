"""The compiled train step and the exact evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmctl.tfenv import import_tf

tf = import_tf()

from lm_fixtures import corpus  # noqa: E402

from llmctl.data.batching import StreamSteps, WindowSteps, step_dataset  # noqa: E402
from llmctl.data.tokenizers import train_tokenizer  # noqa: E402
from llmctl.models.lstm_lm import build_language_model  # noqa: E402
from llmctl.models.stream_nll import StreamEvaluator  # noqa: E402
from llmctl.schema import ModelConfig, TrainConfig  # noqa: E402
from llmctl.train.distribution import Distribution  # noqa: E402
from llmctl.train.loop import SampledSoftmax, Trainer, decide_jit  # noqa: E402
from llmctl.train.optimizers import build_optimizer  # noqa: E402


@pytest.fixture(scope="module")
def char_tokens():
    text = corpus(30000)
    tok = train_tokenizer("char", iter([text]), vocab_size=None, min_freq=1, max_vocab=None)
    return np.asarray(tok.encode(text), dtype=np.uint16), tok.vocab_size


def _model(vocab, seed=0, **kw):
    import keras

    keras.utils.set_random_seed(seed)
    cfg = ModelConfig(embedding_dim=16, layers=2, units=32, dropout=0.0, output_dropout=0.0, **kw)
    return build_language_model(cfg, vocab)


def _trainer(model, *, lr=0.01, jit=False, carry=True, sampled=None, accum=1, clip=1.0):
    opt = build_optimizer(TrainConfig(optimizer="adam", lr=lr, grad_accum=accum))
    opt.build(model.trainable_variables)
    dist = Distribution("none", tf.distribute.get_strategy())
    trainer = Trainer(model, opt, dist, clip_norm=clip, carry_state=carry, jit=jit, sampled=sampled, seed=1)
    return trainer


def _train(trainer, source, steps, epoch=0):
    trainer.replica_batch = source.replica_batch
    states = trainer.zero_states()
    losses = []
    for i, element in enumerate(step_dataset(source, epoch)):
        if i == steps:
            break
        loss_sum, count, _, states = trainer.step(element, states, i)
        losses.append(float(loss_sum) / float(count))
    return losses


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_loss_decreases_on_a_tiny_char_corpus(char_tokens, jit):
    tokens, vocab = char_tokens
    model = _model(vocab)
    source = StreamSteps(tokens, batch_size=16, bptt=32)
    losses = _train(_trainer(model, jit=jit), source, 60)
    assert losses[0] > math.log(vocab) - 0.3  # starts near uniform
    assert np.mean(losses[-10:]) < losses[0] - 0.8


def test_windows_mode_and_accumulation_train(char_tokens):
    tokens, vocab = char_tokens
    model = _model(vocab)
    source = WindowSteps(tokens, batch_size=8, bptt=32, accum=2, seed=1)
    losses = _train(_trainer(model, carry=False, accum=2), source, 40)
    assert np.mean(losses[-5:]) < losses[0] - 0.5


def test_accumulating_two_halves_equals_one_full_batch(char_tokens):
    """accum=2 over B/2-column halves gives the update of one B-column step (loss normalised by total tokens)."""
    tokens, vocab = char_tokens
    full = StreamSteps(tokens, batch_size=8, bptt=16)
    element = next(iter(step_dataset(full, 0)))
    (x, y, w), = element
    halves = ((x[:4], y[:4], w[:4]), (x[4:], y[4:], w[4:]))
    a, b = _model(vocab, seed=3), _model(vocab, seed=3)
    ta, tb = _trainer(a, carry=False), _trainer(b, carry=False, accum=2)
    ta.replica_batch, tb.replica_batch = 8, 4
    la = ta.step(element, ta.zero_states(), 0)
    lb = tb.step(halves, tb.zero_states(), 0)
    assert abs(float(la[0]) - float(lb[0])) < 1e-3 and float(la[1]) == float(lb[1])
    for u, v in zip(a.trainable_variables, b.trainable_variables, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-6)


def _manual_nll(model, tokens, columns):
    """Per-token NLL of the whole stream, computed in one pass per column with numpy log-softmax."""
    from llmctl.data.batching import StreamLayout

    layout = StreamLayout(len(tokens), columns)
    total, count = 0.0, 0
    for start, length in zip(layout.starts, layout.lengths, strict=True):
        seq = np.asarray(tokens[start:start + length + 1], dtype=np.int32)
        logits, _ = model(tf.constant(seq[None, :-1]), None, training=False)
        logits = np.asarray(logits, dtype=np.float64)[0]
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        total += -logp[np.arange(length), seq[1:]].sum()
        count += int(length)
    return total / count, count


@pytest.mark.parametrize("columns,bptt", [(1, 7), (3, 10), (5, 64)])
def test_exact_eval_equals_manual_per_token_computation(char_tokens, columns, bptt):
    tokens, vocab = char_tokens
    model = _model(vocab, seed=5)
    _train(_trainer(model), StreamSteps(tokens, batch_size=8, bptt=16), 20)
    valid = tokens[:602]  # 601 targets: not divisible by 3 or 5, last window partial
    expected, count = _manual_nll(model, valid, columns)
    result = StreamEvaluator(model)(valid, batch_size=columns, bptt=bptt)
    assert result.tokens == count == len(valid) - 1
    assert abs(result.loss - expected) < 1e-5
    assert abs(result.bits_per_token - expected / math.log(2)) < 1e-5


def test_eval_is_independent_of_window_length_and_xla(char_tokens):
    tokens, vocab = char_tokens
    model = _model(vocab, seed=2)
    valid = tokens[:900]
    a = StreamEvaluator(model)(valid, batch_size=4, bptt=9)
    b = StreamEvaluator(model, jit=True)(valid, batch_size=4, bptt=50)
    assert abs(a.loss - b.loss) < 1e-5


def test_carried_state_differs_from_reset(char_tokens):
    tokens, vocab = char_tokens
    model = _model(vocab, seed=4)
    _train(_trainer(model), StreamSteps(tokens, batch_size=8, bptt=32), 80)
    valid = tokens[-3000:]
    carry = StreamEvaluator(model)(valid, batch_size=2, bptt=8, context="carry")
    reset = StreamEvaluator(model)(valid, batch_size=2, bptt=8, context="reset")
    assert carry.tokens == reset.tokens
    assert carry.loss < reset.loss - 0.02  # context helps a trained model


def test_sampled_softmax_trains_and_full_softmax_evaluates(char_tokens):
    tokens, vocab = char_tokens
    model = _model(vocab, seed=6)
    counts = SampledSoftmax.count_tokens(tokens, vocab, chunk=1000)
    np.testing.assert_array_equal(counts, np.bincount(tokens, minlength=vocab))
    sampled = SampledSoftmax(counts, 16)
    before = StreamEvaluator(model)(tokens[-2000:], batch_size=4, bptt=32).loss
    _train(_trainer(model, sampled=sampled), StreamSteps(tokens, batch_size=16, bptt=32), 60)
    after = StreamEvaluator(model)(tokens[-2000:], batch_size=4, bptt=32).loss
    assert after < before - 0.5


def test_jit_decision_rules():
    assert decide_jit("auto", gpus=1, mixed_precision="none", variable_bptt=False, distributed=False)[0] is False
    assert decide_jit("auto", gpus=0, mixed_precision="none", variable_bptt=False, distributed=False)[0] is None
    assert decide_jit("auto", gpus=0, mixed_precision="bfloat16", variable_bptt=False, distributed=False)[0] is False
    assert decide_jit(True, gpus=1, mixed_precision="none", variable_bptt=False, distributed=False)[0] is True
    assert "cuDNN" in decide_jit("auto", gpus=2, mixed_precision="none", variable_bptt=False, distributed=False)[1]


def test_auto_xla_is_measured_once_and_cached(tmp_path, monkeypatch):
    from llmctl.train import xla_choice

    monkeypatch.setenv("LLMCTL_CACHE", str(tmp_path))
    model_cfg = ModelConfig(embedding_dim=8, layers=1, units=16)
    train_cfg = TrainConfig(batch_size=4, bptt=8)
    first = xla_choice.choose_xla(model_cfg, train_cfg, 20, 8, 4)
    assert "measured now" in first[1] and "tok/s" in first[1]
    calls = []
    monkeypatch.setattr(xla_choice, "_measure", lambda *a, **k: calls.append(1))
    second = xla_choice.choose_xla(model_cfg, train_cfg, 20, 8, 4)
    assert not calls and second[0] == first[0] and "cached" in second[1]


def test_state_reset_zeroes_carried_columns(char_tokens):
    tokens, vocab = char_tokens
    source = StreamSteps(tokens, batch_size=8, bptt=16)
    elements = [e for _, e in zip(range(2), step_dataset(source, 0), strict=False)]
    losses = {}
    for name, kw in {"reset": dict(carry=True), "windows": dict(carry=False)}.items():
        model = _model(vocab, seed=9)
        trainer = _trainer(model, **kw)
        if name == "reset":
            trainer.state_reset = 0.999999  # every column restarts cold: the same as independent windows
        trainer.replica_batch = 8
        states = trainer.zero_states()
        for i, element in enumerate(elements):
            loss_sum, count, _, states = trainer.step(element, states, i)
        losses[name] = float(loss_sum)
    assert losses["reset"] == pytest.approx(losses["windows"], abs=1e-6)
