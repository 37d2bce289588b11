"""The sort-free nucleus filter and the inverse-CDF draw against `logit_processors` and exact probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from llmctl.tfenv import import_tf

tf = import_tf()

from llmctl.generate.graph_sampling import (  # noqa: E402
    GraphSampler,
    categorical_draw,
    nucleus_filter,
    ordered_keys,
    row_uniforms,
    top_k_filter,
)
from llmctl.generate.logit_processors import TOP_P_TOLERANCE, apply_top_k, apply_top_p  # noqa: E402


def test_ordered_keys_follow_float_order():
    values = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, 7.25, np.inf], np.float32)
    keys = ordered_keys(tf.constant(values[None])).numpy()[0]
    assert np.all(np.diff(keys[[0, 1, 2, 3, 5, 6, 7, 8]]) > 0)
    assert keys[3] == keys[4]  # -0.0 == +0.0


@pytest.mark.parametrize("jit", [False, True])
def test_nucleus_filter_keeps_the_same_tokens_as_the_sorting_version(jit):
    rng = np.random.default_rng(0)
    fn = tf.function(nucleus_filter, jit_compile=jit, reduce_retracing=True)
    ambiguous = 0
    # XLA compiles once per shape and p: keep both fixed there
    for trial in range(40 if jit else 150):
        vocab = 48 if jit else int(rng.integers(2, 60))
        x = (rng.normal(size=(3, vocab)) * rng.uniform(0.1, 5)).astype(np.float32)
        if trial % 3 == 0:
            x = np.round(x)  # ties, -0.0
        if trial % 5 == 0:
            x[:, : vocab // 3] = -np.inf  # already filtered tokens
        p = float(rng.choice([0.05, 0.5, 0.9, 0.999] if jit else [0.05, 0.5, 0.9, 0.95, 0.999, rng.uniform(0.01, 1)]))
        ref = apply_top_p(tf.constant(x), p).numpy()
        got = fn(tf.constant(x), p).numpy()
        for row in range(3):
            if np.array_equal(ref[row], got[row]):
                continue
            # allowed only when the mass before the disputed tie group is within float32 rounding of the target
            probs = np.exp(x[row].astype(np.float64) - x[row].max())
            probs /= probs.sum()
            value = x[row][np.flatnonzero(np.isfinite(ref[row]) != np.isfinite(got[row]))[0]]
            assert abs(probs[x[row] > value].sum() - (p - TOP_P_TOLERANCE)) < 2e-6
            ambiguous += 1
    assert ambiguous <= 3


@pytest.mark.parametrize("jit", [False, True])
def test_top_k_filter_keeps_exactly_the_tokens_of_apply_top_k(jit):
    rng = np.random.default_rng(1)
    fn = tf.function(top_k_filter, jit_compile=jit, reduce_retracing=True)
    for trial in range(30 if jit else 100):
        vocab = 40 if jit else int(rng.integers(1, 60))
        x = (rng.normal(size=(3, vocab)) * 3).astype(np.float32)
        if trial % 3 == 0:
            x = np.round(x)  # ties at the k-th value are all kept
        if trial % 4 == 0:
            x[:, : vocab // 2] = -np.inf
        k = int(rng.choice([1, 2, 5, 39] if jit else [1, 2, 3, 7, 50, 100]))
        np.testing.assert_array_equal(fn(tf.constant(x), k).numpy(), apply_top_k(tf.constant(x), k).numpy())


def test_nucleus_filter_p_one_keeps_everything():
    x = tf.constant([[1.0, 2.0, -np.inf, 0.5]])
    np.testing.assert_array_equal(nucleus_filter(x, 1.0).numpy(), x.numpy())


def test_row_uniforms_are_uniform_deterministic_and_row_specific():
    u = row_uniforms(tf.constant(7), tf.range(100_000), tf.constant(3)).numpy()
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    hist, _ = np.histogram(u, bins=10, range=(0, 1))
    assert hist.min() > 9_500 and hist.max() < 10_500
    again = row_uniforms(tf.constant(7), tf.constant([5, 99_999]), tf.constant(3)).numpy()
    np.testing.assert_array_equal(again, u[[5, 99_999]])
    assert not np.array_equal(row_uniforms(tf.constant(8), tf.range(4), tf.constant(3)).numpy(), u[:4])
    assert not np.array_equal(row_uniforms(tf.constant(7), tf.range(4), tf.constant(4)).numpy(), u[:4])


def test_categorical_draw_follows_the_distribution_and_skips_zero_probability():
    probs = np.zeros(300, np.float64)
    probs[[0, 2, 3, 4, 150, 299]] = [0.1, 0.2, 0.3, 0.25, 0.1, 0.05]
    logits = np.log(np.where(probs > 0, probs, 1.0)).astype(np.float32)
    logits[probs == 0] = -np.inf
    n = 60_000
    draws = categorical_draw(tf.repeat(tf.constant(logits[None]), n, axis=0),
                             row_uniforms(tf.constant(1), tf.range(n), tf.constant(0))).numpy()
    counts = np.bincount(draws, minlength=300)
    assert counts[probs == 0].sum() == 0
    expected = probs * n
    chi2 = (((counts - expected) ** 2) / np.where(expected > 0, expected, 1))[probs > 0].sum()
    assert chi2 < 25  # 5 degrees of freedom: p < 1e-4


def test_graph_sampler_applies_temperature_top_k_top_p():
    logits = tf.constant([[4.0, 3.0, 2.0, 1.0, 0.0]])
    kept = np.isfinite(GraphSampler(top_k=2).process(logits).numpy())
    np.testing.assert_array_equal(kept, [[True, True, False, False, False]])
    kept = np.isfinite(GraphSampler(temperature=100.0, top_p=0.5).process(logits).numpy())
    assert kept.sum() == 3  # flattened by the temperature: three tokens are needed to reach half the mass
    tokens = GraphSampler(top_k=1)(tf.repeat(logits, 50, axis=0), tf.constant(3), tf.range(50), tf.constant(0))
    assert set(tokens.numpy().tolist()) == {0}
    with pytest.raises(ValueError):
        GraphSampler(temperature=0.0)
    with pytest.raises(ValueError):
        GraphSampler(top_p=1.5)
    with pytest.raises(ValueError):
        GraphSampler(top_k=0)
