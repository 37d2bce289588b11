"""`model.init`: the initial weights of the language model.

* `keras` — the layers' own defaults (Glorot-uniform embedding, LSTM input and output kernels, orthogonal recurrent
  kernels, zero biases with the LSTM forget-gate bias at 1).
* `uniform` — PyTorch's `word_language_model` (`RNNModel.init_weights` and `torch.nn.LSTM`'s `reset_parameters`):
  embedding and output weights uniform in ±`init_range`, output bias 0; every LSTM weight uniform in ±1/sqrt(units);
  the LSTM bias the sum of two such draws (PyTorch has two bias vectors, `b_ih + b_hh`, where Keras has one).

Draws come from Keras' global seed (`run.seed`), so a run is reproducible.
"""

from __future__ import annotations

import math

import keras

INITS = ("keras", "uniform")


def _uniform(variable, limit: float, draws: int = 1) -> None:
    value = sum(keras.random.uniform(variable.shape, -limit, limit, dtype=variable.dtype) for _ in range(draws))
    variable.assign(value)


def apply_init(model, kind: str = "keras", init_range: float = 0.1) -> None:
    """Re-draw the weights of a built `LSTMLanguageModel` by `kind` (`keras` leaves them as built)."""
    if kind == "keras":
        return
    if kind != "uniform":
        raise ValueError(f"model.init must be one of {', '.join(INITS)}, got {kind!r}")
    _uniform(model.embedding.embeddings, init_range)
    k = 1.0 / math.sqrt(model.units)
    for lstm in model.lstms:
        cell = lstm.cell
        _uniform(cell.kernel, k)
        _uniform(cell.recurrent_kernel, k)
        _uniform(cell.bias, k, draws=2)
    if model.head is not None:
        _uniform(model.head.kernel, init_range)
        model.head.bias.assign(keras.ops.zeros(model.head.bias.shape, dtype=model.head.bias.dtype))
    elif model.output_bias is not None:  # tied: the embedding is the output matrix; its bias starts at 0 already
        model.output_bias.assign(keras.ops.zeros(model.output_bias.shape, dtype=model.output_bias.dtype))
