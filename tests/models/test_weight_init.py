"""`model.init: uniform` (issue #17): the initial weights of PyTorch's word_language_model."""

import math

import numpy as np
import pytest

from llmctl.tfenv import import_tf

import_tf()

import keras  # noqa: E402

from llmctl.models.lstm_lm import build_language_model  # noqa: E402
from llmctl.schema import ModelConfig  # noqa: E402


def _model(**settings):
    keras.utils.set_random_seed(3)
    cfg = ModelConfig(**{"embedding_dim": 12, "layers": 2, "units": 16, **settings})
    return build_language_model(cfg, vocab_size=50)


@pytest.mark.parametrize("init_range", [0.1, 0.05])
def test_uniform_init_draws_within_the_ranges(init_range):
    model = _model(init="uniform", init_range=init_range)
    embedding = model.embedding.embeddings.numpy()
    head = model.head.kernel.numpy()
    for weights in (embedding, head):
        assert np.abs(weights).max() <= init_range
        assert np.abs(weights).max() > 0.8 * init_range  # spread over the range, not a narrower default
    assert not model.head.bias.numpy().any()
    k = 1 / math.sqrt(16)
    for lstm in model.lstms:
        assert np.abs(lstm.cell.kernel.numpy()).max() <= k
        assert np.abs(lstm.cell.recurrent_kernel.numpy()).max() <= k
        assert np.abs(lstm.cell.bias.numpy()).max() <= 2 * k  # b_ih + b_hh
        assert np.abs(lstm.cell.bias.numpy()).max() > k / 2  # not Keras' zeros / forget bias 1


def test_keras_init_is_unchanged_and_uniform_is_seeded():
    keras_model = _model()
    assert np.abs(keras_model.embedding.embeddings.numpy()).max() <= 0.05 + 1e-6  # Keras' uniform ±0.05 default
    assert (keras_model.lstms[0].cell.bias.numpy()[16:32] == 1).all()  # unit forget bias
    a, b = _model(init="uniform"), _model(init="uniform")
    np.testing.assert_array_equal(a.head.kernel.numpy(), b.head.kernel.numpy())


def test_tied_uniform_model_has_a_zero_output_bias():
    model = _model(init="uniform", tie_embeddings=True, embedding_dim=16)
    assert np.abs(model.embedding.embeddings.numpy()).max() <= 0.1
    assert not model.output_bias.numpy().any()
