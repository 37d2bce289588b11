"""The Embedding → LSTM × N → Dense language model, with explicit LSTM state.

One set of layers serves every use: training over a stream (state carried between windows), evaluation, and the
one-step decoding model (`tokens` of shape [B, 1]). State is passed in and returned — never `stateful=True` — so it
can be checkpointed, reset per column, and carried inside a `tf.while_loop`.

    logits, states = model(tokens, states, training=...)   # tokens [B, T] int32; states: [(h, c)] * layers
    hidden, states = model.features(tokens, states)        # top LSTM outputs [B, T, units]
    logits = model.project(hidden)                         # [B, T, vocab] float32
"""

from __future__ import annotations

from functools import cache
from typing import Any

from llmctl.tfenv import import_tf

tf = import_tf()
import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from llmctl.models.fused_lstm import fusable, lstm_sequence  # noqa: E402


def cudnn_reasons(*, recurrent_dropout: float, activation: str = "tanh", recurrent_activation: str = "sigmoid",
                  unroll: bool = False, use_bias: bool = True) -> list[str]:
    """Why an LSTM with these settings cannot use the cuDNN kernel (empty list → eligible)."""
    reasons = []
    if activation != "tanh":
        reasons.append(f"activation={activation}")
    if recurrent_activation != "sigmoid":
        reasons.append(f"recurrent_activation={recurrent_activation}")
    if recurrent_dropout:
        reasons.append(f"recurrent_dropout={recurrent_dropout}")
    if unroll:
        reasons.append("unroll=True")
    if not use_bias:
        reasons.append("use_bias=False")
    return reasons


@cache
def _has_gpu() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


@keras.saving.register_keras_serializable(package="llmctl")
class LSTMLanguageModel(keras.Model):
    """Embedding → LSTM × `layers` → (projection) → Dense over the vocabulary, with explicit (h, c) states."""

    def __init__(self, vocab_size: int, embedding_dim: int = 128, num_layers: int = 2, units: int = 256,
                 embedding_dropout: float = 0.0, dropout: float = 0.2, output_dropout: float = 0.2,
                 recurrent_dropout: float = 0.0, tie_embeddings: bool = False, freeze_embeddings: bool = False,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.embedding_dim = int(embedding_dim)
        self.num_layers = int(num_layers)
        self.units = int(units)
        self.embedding_dropout_rate = float(embedding_dropout)
        self.dropout_rate = float(dropout)
        self.output_dropout_rate = float(output_dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.tie_embeddings = bool(tie_embeddings)
        self.freeze_embeddings = bool(freeze_embeddings)
        self.lstm_kernel = "auto"  # how LSTM layers run (`kernel_for`); a runtime choice, not saved with the model

        self.embedding = layers.Embedding(self.vocab_size, self.embedding_dim, name="embedding",
                                          trainable=not self.freeze_embeddings)
        self.embedding_dropout = layers.Dropout(self.embedding_dropout_rate, name="embedding_dropout")
        self.lstms = [
            layers.LSTM(self.units, return_sequences=True, return_state=True,
                        recurrent_dropout=self.recurrent_dropout, name=f"lstm_{i}")
            for i in range(self.num_layers)
        ]
        self.between_dropouts = [layers.Dropout(self.dropout_rate, name=f"dropout_{i}")
                                 for i in range(self.num_layers - 1)]
        self.output_dropout = layers.Dropout(self.output_dropout_rate, name="output_dropout")
        self.projection = None
        if self.tie_embeddings:
            if self.units != self.embedding_dim:
                self.projection = layers.Dense(self.embedding_dim, name="tie_projection")
            self.output_bias = None
            self.head = None
        else:
            self.head = layers.Dense(self.vocab_size, name="head")

    # -- building blocks
    def build(self, input_shape=None):
        if self.built:
            return
        self.embedding.build((None, None))
        width = self.embedding_dim
        for lstm in self.lstms:
            lstm.build((None, None, width))
            width = self.units
        if self.tie_embeddings:
            if self.projection is not None:
                self.projection.build((None, None, self.units))
            self.output_bias = self.add_weight(name="output_bias", shape=(self.vocab_size,), initializer="zeros")
        else:
            self.head.build((None, None, self.units))
        super().build(input_shape)

    def initial_state(self, batch_size) -> list[tuple[Any, Any]]:
        """Zero (h, c) for every layer."""
        zeros = ops.zeros((batch_size, self.units), dtype=self.compute_dtype)
        return [(zeros, zeros) for _ in range(self.num_layers)]

    def features(self, tokens, states=None, training: bool = False):
        """Top-layer LSTM outputs [B, T, units] and the new states."""
        if states is None:
            states = self.initial_state(ops.shape(tokens)[0])
        x = self.embedding(tokens)
        x = self.embedding_dropout(x, training=training)
        new_states = []
        for i, lstm in enumerate(self.lstms):
            h0, c0 = states[i]
            kernel = self.kernel_for(lstm)
            if kernel == "keras":
                x, h, c = lstm(x, initial_state=[h0, c0], training=training)
            else:
                cell = lstm.cell
                x, h, c = lstm_sequence(x, h0, c0, cell.kernel.value, cell.recurrent_kernel.value, cell.bias.value,
                                        xla=kernel == "fused_xla")
            new_states.append((h, c))
            if i < self.num_layers - 1:
                x = self.between_dropouts[i](x, training=training)
        return x, new_states

    def kernel_for(self, lstm) -> str:
        """The kernel that runs `lstm` over a window: `keras` (the layer itself; cuDNN on GPUs), `fused` or
        `fused_xla` (`llmctl.models.fused_lstm`, CPU only). `self.lstm_kernel` asks for one; `auto` → fused on
        CPU (its XLA recurrence only when the trainer knows windows have one length: `fused_xla`)."""
        if self.lstm_kernel == "keras" or not fusable(lstm) or _has_gpu():
            return "keras"
        return "fused" if self.lstm_kernel == "auto" else self.lstm_kernel

    def output_weights(self):
        """(kernel [dim, vocab] as used by `project`, bias [vocab]) — for sampled-softmax training losses."""
        if self.tie_embeddings:
            return ops.transpose(self.embedding.embeddings), self.output_bias
        return self.head.kernel, self.head.bias

    def pre_logits(self, hidden, training: bool = False):
        """Hidden states right before the output matrix (dropout + tie projection applied)."""
        x = self.output_dropout(hidden, training=training)
        if self.projection is not None:
            x = self.projection(x)
        return x

    def project(self, hidden, training: bool = False):
        """Logits [B, T, vocab] in float32 from top-layer outputs."""
        x = self.pre_logits(hidden, training=training)
        if self.tie_embeddings:
            emb = ops.cast(self.embedding.embeddings, x.dtype)
            logits = ops.einsum("btd,vd->btv", x, emb) + ops.cast(self.output_bias, x.dtype)
        else:
            logits = self.head(x)
        return ops.cast(logits, "float32")

    def call(self, tokens, states=None, training: bool = False):
        hidden, new_states = self.features(tokens, states, training=training)
        return self.project(hidden, training=training), new_states

    # -- reporting
    def cudnn_report(self) -> list[tuple[str, list[str]]]:
        """Per LSTM layer: (name, reasons it cannot use cuDNN); an empty list means cuDNN-eligible."""
        return [(lstm.name, cudnn_reasons(recurrent_dropout=lstm.recurrent_dropout,
                                          activation=keras.activations.serialize(lstm.activation),
                                          recurrent_activation=keras.activations.serialize(lstm.recurrent_activation),
                                          unroll=lstm.unroll, use_bias=lstm.use_bias))
                for lstm in self.lstms]

    def flops_per_token(self) -> int:
        """Forward multiply-adds × 2 per token (embedding lookup free); training ≈ 3× this."""
        flops = 0
        width = self.embedding_dim
        for _ in range(self.num_layers):
            flops += 2 * 4 * self.units * (width + self.units)
            width = self.units
        if self.projection is not None:
            flops += 2 * self.units * self.embedding_dim
            width = self.embedding_dim
        flops += 2 * width * self.vocab_size
        return flops

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, embedding_dim=self.embedding_dim, num_layers=self.num_layers,
                      units=self.units, embedding_dropout=self.embedding_dropout_rate, dropout=self.dropout_rate,
                      output_dropout=self.output_dropout_rate, recurrent_dropout=self.recurrent_dropout,
                      tie_embeddings=self.tie_embeddings, freeze_embeddings=self.freeze_embeddings)
        return config


def build_language_model(model_cfg, vocab_size: int) -> LSTMLanguageModel:
    """Build (and create the weights of) the language model described by a `ModelConfig`."""
    model = LSTMLanguageModel(
        vocab_size=vocab_size, embedding_dim=model_cfg.embedding_dim, num_layers=model_cfg.layers,
        units=model_cfg.units, embedding_dropout=model_cfg.embedding_dropout, dropout=model_cfg.dropout,
        output_dropout=model_cfg.output_dropout, recurrent_dropout=model_cfg.recurrent_dropout,
        tie_embeddings=model_cfg.tie_embeddings, freeze_embeddings=model_cfg.freeze_embeddings,
        name="lstm_lm")
    model.build()
    from llmctl.models.weight_init import apply_init

    apply_init(model, getattr(model_cfg, "init", "keras"), getattr(model_cfg, "init_range", 0.1))
    return model


def one_step(model, token_ids, flat_states) -> tuple[Any, list[Any]]:
    """Advance `model` by one token per row: `token_ids` [B] int32 and the flat state [h0, c0, ...] → (logits [B, V]
    float32, new flat state). Calls each LSTM layer's cell directly (the layer's own weights and math for one step),
    which keeps the graph free of loops: decode loops carry it, and it converts to builtin TFLite ops."""
    x = model.embedding(ops.cast(token_ids, "int32"))
    new_states = []
    for i, lstm in enumerate(model.lstms):
        x, (h, c) = lstm.cell(x, [flat_states[2 * i], flat_states[2 * i + 1]], training=False)
        new_states += [h, c]
    return model.project(x[:, None, :], training=False)[:, 0, :], new_states


def flatten_states(states) -> list[Any]:
    """[(h, c), ...] → [h0, c0, h1, c1, ...] (for signatures and checkpoints)."""
    return [t for pair in states for t in pair]


def unflatten_states(flat) -> list[tuple[Any, Any]]:
    flat = list(flat)
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
