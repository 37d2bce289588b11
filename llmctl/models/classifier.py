"""Sequence classifier: the language model's Embedding + LSTM stack as encoder, masked pooling, a small Dense head.

    model = build_classifier(model_cfg, vocab_size=..., num_classes=..., finetune_cfg=...)
    logits = model(tokens, training=False)          # tokens [B, T] int32, right-padded with PAD_ID → [B, C] float32

The encoder is an `LSTMLanguageModel` built from the same `ModelConfig` as the parent run (its `features` gives the
top-layer outputs); only its embedding and LSTM layers get weights — the vocabulary head is never built, so a
classifier carries no dead output matrix. `copy_encoder_weights` loads a pretrained language model into it.

With `start_id` (set when the encoder comes from a language model trained on `<eos>`-separated documents) the
encoder first reads that token, as the language model did before every document; its output is not pooled.

Pooling looks at non-pad positions only (pads are id 0 and sequences are right-padded, so the LSTM outputs at real
positions never saw a pad): `last` = output at the last real token, `mean`/`max` over real tokens, `concat` = all
three side by side (ULMFiT). A document with no real token pools to zeros.

With `word_dropout` p, training replaces each real token by `<unk>` with probability p (Iyyer et al. 2015): a
regulariser that also trains the `<unk>` embedding, which words unseen in training map to.

With `bidirectional` (classifiers trained from scratch: a language model reads forward only) a second LSTM stack
reads every document backwards on the same embedding; both directions are pooled and concatenated.

Layer groups, bottom to top, for gradual unfreezing and discriminative learning rates (ULMFiT):
`[embedding, lstm_0, ..., lstm_{n-1}, head]` (a bidirectional layer group holds both directions' layer).
"""

from __future__ import annotations

from typing import Any

from llmctl.data.specials import PAD_ID, UNK_ID
from llmctl.models.lstm_lm import LSTMLanguageModel
from llmctl.tfenv import import_tf

tf = import_tf()
import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

POOLINGS = ("last", "mean", "max", "concat")
ENCODER_KEYS = ("vocab_size", "embedding_dim", "num_layers", "units", "embedding_dropout", "dropout",
                "recurrent_dropout", "freeze_embeddings")


def masked_pool(hidden, mask, pooling: str):
    """Pool `hidden` [B, T, D] over positions where `mask` [B, T] is true → [B, D] (or [B, 3D] for `concat`).

    `mask` must be a right-padded prefix mask (real tokens first). Rows without any real position give zeros.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    maskf = ops.cast(mask, hidden.dtype)                                   # [B, T]
    count = ops.sum(maskf, axis=1)                                         # [B]
    has_any = ops.expand_dims(ops.cast(count > 0, hidden.dtype), -1)       # [B, 1]
    parts = []
    if pooling in ("last", "concat"):
        last_index = ops.maximum(ops.cast(count, "int32") - 1, 0)          # [B]
        index = ops.reshape(last_index, (-1, 1, 1)) * ops.ones_like(hidden[:, :1, :], dtype="int32")  # [B, 1, D]
        last = ops.take_along_axis(hidden, index, axis=1)
        parts.append(last[:, 0] * has_any)
    if pooling in ("mean", "concat"):
        total = ops.sum(hidden * ops.expand_dims(maskf, -1), axis=1)
        parts.append(total / ops.expand_dims(ops.maximum(count, 1.0), -1))
    if pooling in ("max", "concat"):
        low = -6e4 if keras.backend.standardize_dtype(hidden.dtype) == "float16" else -1e9
        very_negative = ops.cast(low, hidden.dtype)
        masked = ops.where(ops.expand_dims(mask, -1), hidden, very_negative)
        parts.append(ops.max(masked, axis=1) * has_any)
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)


def reverse_real_tokens(tokens, mask):
    """Each row's real tokens (`mask` [B, T], a right-padded prefix mask) in reverse order, padding left in place
    (what `tf.reverse_sequence` does, in `keras.ops` so that a stock Keras graph can hold it)."""
    positions = ops.cumsum(ops.ones_like(tokens), axis=1) - 1                   # [B, T]: 0, 1, ...
    lengths = ops.sum(ops.cast(mask, tokens.dtype), axis=1, keepdims=True)      # [B, 1]
    return ops.take_along_axis(tokens, ops.where(positions < lengths, lengths - 1 - positions, positions), axis=1)


@keras.saving.register_keras_serializable(package="llmctl")
class FirstBatchStandardization(layers.BatchNormalization):
    """Per-feature standardisation whose mean and variance are taken from the first training batch and then kept
    fixed, with a trainable scale and shift; training and inference apply the same transform.

    Why not batch normalisation's moving statistics: a pretrained encoder's pooled features have variances near
    1e-4 while fine-tuning moves their means by many standard deviations, so moving averages lag the batches and
    inference sees differently normalised features than training did (docs/benchmarks.md).
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.primed = self.add_weight(shape=(), initializer="zeros", trainable=False, name="primed")

    def call(self, inputs, training=None, mask=None):
        if training:
            mean, variance = ops.moments(ops.cast(inputs, "float32"), axes=[0])
            fresh = ops.equal(self.primed, 0.0)
            self.moving_mean.assign(ops.where(fresh, mean, self.moving_mean))
            self.moving_variance.assign(ops.where(fresh, variance, self.moving_variance))
            self.primed.assign(1.0)
        return super().call(inputs, training=False, mask=mask)


@keras.saving.register_keras_serializable(package="llmctl")
class SequenceClassifier(keras.Model):
    """Embedding → LSTM × N (shared with `LSTMLanguageModel`) → masked pooling → Dense head → class logits."""

    def __init__(self, encoder: dict[str, Any], num_classes: int, pooling: str = "concat", head_units: int = 64,
                 head_dropout: float = 0.2, start_id: int | None = None, bidirectional: bool = False,
                 word_dropout: float = 0.0, head_norm: str = "none", **kwargs: Any):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.encoder_config = {key: encoder[key] for key in ENCODER_KEYS if key in encoder}
        self.num_classes = int(num_classes)
        self.pooling = pooling
        self.head_units = int(head_units)
        self.head_dropout_rate = float(head_dropout)
        self.start_id = None if start_id is None else int(start_id)
        self.bidirectional = bool(bidirectional)
        self.word_dropout = float(word_dropout)
        if head_norm not in ("none", "batch"):
            raise ValueError(f"head_norm must be 'none' or 'batch', got {head_norm!r}")
        self.head_norm = head_norm
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"word_dropout must be in [0, 1), got {word_dropout!r}")
        if self.bidirectional and self.start_id is not None:
            raise ValueError("a bidirectional classifier has no language-model parent (start_id must be None)")
        self.encoder = LSTMLanguageModel(**self.encoder_config, name="encoder")
        # bidirectional: a second LSTM stack reads every document backwards, on the same embedding
        self.backward_lstms = [
            layers.LSTM(self.encoder.units, return_sequences=True, return_state=True,
                        recurrent_dropout=self.encoder.recurrent_dropout, name=f"backward_lstm_{i}")
            for i in range(self.encoder.num_layers)] if self.bidirectional else []
        self.backward_dropouts = [layers.Dropout(self.encoder.dropout_rate, name=f"backward_dropout_{i}")
                                  for i in range(len(self.backward_lstms) - 1)]
        # word dropout draws from its own seeded generator (created only when used: older checkpoints keep the
        # order of their dropout generators)
        self.word_seeds = keras.random.SeedGenerator(name="word_dropout_seed") if self.word_dropout else None
        self.pool_dropout = layers.Dropout(self.head_dropout_rate, name="pool_dropout")
        self.hidden = layers.Dense(self.head_units, activation="relu", name="head_hidden") if self.head_units else None
        self.hidden_dropout = layers.Dropout(self.head_dropout_rate, name="head_dropout")
        self.logits_layer = layers.Dense(self.num_classes, name="class_logits")
        # the pooled features (and the hidden layer) standardised, as ULMFiT's batch-normalised head does
        batch_norm = head_norm == "batch"
        self.pool_norm = FirstBatchStandardization(name="pool_norm") if batch_norm else None
        self.hidden_norm = (FirstBatchStandardization(name="hidden_norm")
                            if batch_norm and self.hidden is not None else None)

    @property
    def pooled_width(self) -> int:
        return self.encoder.units * (3 if self.pooling == "concat" else 1) * (2 if self.bidirectional else 1)

    def build(self, input_shape=None):
        if self.built:
            return
        self.encoder.embedding.build((None, None))
        width = self.encoder.embedding_dim
        for lstm in self.encoder.lstms:
            lstm.build((None, None, width))
            width = self.encoder.units
        width = self.encoder.embedding_dim
        for lstm in self.backward_lstms:
            lstm.build((None, None, width))
            width = self.encoder.units
        width = self.pooled_width
        if self.pool_norm is not None:
            self.pool_norm.build((None, width))
        if self.hidden is not None:
            self.hidden.build((None, width))
            width = self.head_units
            if self.hidden_norm is not None:
                self.hidden_norm.build((None, width))
        self.logits_layer.build((None, width))
        super().build(input_shape)

    def pooled(self, tokens, training: bool = False):
        """The pooled document representation [B, pooled_width]."""
        tokens = ops.cast(tokens, "int32")
        if training and self.word_dropout:  # real tokens become <unk> at this rate (pads stay pads)
            drop = keras.random.uniform(ops.shape(tokens), seed=self.word_seeds) < self.word_dropout
            tokens = ops.where(ops.logical_and(drop, ops.not_equal(tokens, PAD_ID)), UNK_ID, tokens)
        if self.start_id is None:
            hidden, _ = self.encoder.features(tokens, None, training=training)
        else:
            start = ops.full((ops.shape(tokens)[0], 1), self.start_id, dtype="int32")
            hidden, _ = self.encoder.features(ops.concatenate([start, tokens], axis=1), None, training=training)
            hidden = hidden[:, 1:]
        mask = ops.not_equal(tokens, PAD_ID)
        pooled = masked_pool(hidden, mask, self.pooling)
        if not self.bidirectional:
            return pooled
        return ops.concatenate([pooled, masked_pool(self._backward(tokens, mask, training), mask, self.pooling)],
                               axis=-1)

    def _backward(self, tokens, mask, training: bool):
        """Outputs of the backward stack [B, T, units], in reading order: each document's real tokens reversed in
        place (`reverse_real_tokens`), so the padding stays on the right and `masked_pool` applies unchanged (`last`
        = the state after reading the whole document backwards)."""
        reversed_tokens = reverse_real_tokens(tokens, mask)
        x = self.encoder.embedding_dropout(self.encoder.embedding(reversed_tokens), training=training)
        zeros = ops.zeros((ops.shape(tokens)[0], self.encoder.units), dtype=x.dtype)
        for i, lstm in enumerate(self.backward_lstms):
            x, _, _ = lstm(x, initial_state=[zeros, zeros], training=training)
            if i < len(self.backward_dropouts):
                x = self.backward_dropouts[i](x, training=training)
        return x

    def call(self, tokens, training: bool = False):
        return self.head(self.pooled(tokens, training=training), training=training)

    # -- whole documents read chunk by chunk (BPT3C): `encode_chunk` carries the LSTM state and running pooling
    # statistics from one chunk to the next; `head(pool_from_stats(...))` gives the same logits as one full pass.
    def document_start(self, tokens):
        """(tokens, mask) as the encoder reads them: the start token (if any) prepended and masked out."""
        tokens = ops.cast(tokens, "int32")
        mask = ops.not_equal(tokens, PAD_ID)
        if self.start_id is None:
            return tokens, mask
        batch = ops.shape(tokens)[0]
        start = ops.full((batch, 1), self.start_id, dtype="int32")
        return (ops.concatenate([start, tokens], axis=1),
                ops.concatenate([ops.zeros((batch, 1), dtype="bool"), mask], axis=1))

    def initial_chunk_state(self, batch_size):
        """(LSTM states [layers*2, B, units], pooling statistics) before a document's first chunk."""
        units = self.encoder.units
        zeros = ops.zeros((batch_size, units), dtype="float32")
        states = ops.zeros((2 * self.encoder.num_layers, batch_size, units), dtype="float32")
        return states, (zeros, ops.full((batch_size, units), -1e9, dtype="float32"), zeros,
                        ops.zeros((batch_size,), dtype="float32"))

    def encode_chunk(self, tokens, mask, states, stats, training: bool = False):
        """Read one chunk `tokens` [B, T] (`mask` [B, T]: positions that are pooled) from `states`; returns the new
        states and the pooling statistics (sum, max, last, count) updated with this chunk's outputs."""
        if self.bidirectional:
            raise ValueError("a bidirectional classifier reads whole documents at once (no chunks)")
        tokens = ops.cast(tokens, "int32")
        if training and self.word_dropout:
            drop = keras.random.uniform(ops.shape(tokens), seed=self.word_seeds) < self.word_dropout
            tokens = ops.where(ops.logical_and(drop, mask), UNK_ID, tokens)
        pairs = [(states[2 * i], states[2 * i + 1]) for i in range(self.encoder.num_layers)]
        hidden, new_states = self.encoder.features(tokens, pairs, training=training)
        hidden = ops.cast(hidden, "float32")
        total, high, last, count = stats
        maskf = ops.cast(mask, "float32")
        chunk_count = ops.sum(maskf, axis=1)
        total = total + ops.sum(hidden * ops.expand_dims(maskf, -1), axis=1)
        high = ops.maximum(high, ops.max(ops.where(ops.expand_dims(mask, -1), hidden, -1e9), axis=1))
        positions = ops.cast(ops.arange(ops.shape(tokens)[1]) + 1, "float32")
        last_index = ops.cast(ops.argmax(maskf * positions[None, :], axis=1), "int32")
        index = ops.broadcast_to(ops.reshape(last_index, (-1, 1, 1)), (ops.shape(hidden)[0], 1, ops.shape(hidden)[2]))
        chunk_last = ops.squeeze(ops.take_along_axis(hidden, index, axis=1), axis=1)
        last = ops.where(ops.expand_dims(chunk_count > 0, -1), chunk_last, last)
        flat = ops.stack([ops.cast(t, "float32") for pair in new_states for t in pair], axis=0)
        return flat, (total, high, last, count + chunk_count)

    def pool_from_stats(self, stats):
        """The pooled representation [B, pooled_width] from running statistics (zeros for an empty document)."""
        total, high, last, count = stats
        has_any = ops.expand_dims(ops.cast(count > 0, "float32"), -1)
        parts = {"last": last * has_any, "mean": total / ops.expand_dims(ops.maximum(count, 1.0), -1),
                 "max": high * has_any}
        if self.pooling == "concat":
            return ops.concatenate([parts["last"], parts["mean"], parts["max"]], axis=-1)
        return parts[self.pooling]

    def head(self, pooled, training: bool = False):
        """Class logits [B, C] float32 from a pooled representation."""
        x = pooled if self.pool_norm is None else self.pool_norm(pooled, training=training)
        x = self.pool_dropout(x, training=training)
        if self.hidden is not None:
            x = self.hidden(x)
            if self.hidden_norm is not None:
                x = self.hidden_norm(x, training=training)
            x = self.hidden_dropout(x, training=training)
        return ops.cast(self.logits_layer(x), "float32")

    def layer_groups(self) -> list[tuple[str, list[Any]]]:
        """(name, variables) bottom to top: embedding, lstm_0 .. lstm_{n-1}, head."""
        head = self.logits_layer.trainable_weights + [
            weight for layer in (self.hidden, self.pool_norm, self.hidden_norm) if layer is not None
            for weight in layer.trainable_weights]
        groups = [("embedding", list(self.encoder.embedding.weights))]
        backward = self.backward_lstms or [None] * len(self.encoder.lstms)
        groups += [(lstm.name, list(lstm.weights) + (list(back.weights) if back is not None else []))
                   for lstm, back in zip(self.encoder.lstms, backward, strict=True)]
        groups.append(("head", head))
        return groups

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(encoder=dict(self.encoder_config), num_classes=self.num_classes, pooling=self.pooling,
                      head_units=self.head_units, head_dropout=self.head_dropout_rate, start_id=self.start_id,
                      bidirectional=self.bidirectional, word_dropout=self.word_dropout, head_norm=self.head_norm)
        return config


def encoder_config(model_cfg, vocab_size: int) -> dict[str, Any]:
    """The encoder part of a `ModelConfig` (the same stack a pretrained `LSTMLanguageModel` has)."""
    return {"vocab_size": int(vocab_size), "embedding_dim": model_cfg.embedding_dim, "num_layers": model_cfg.layers,
            "units": model_cfg.units, "embedding_dropout": model_cfg.embedding_dropout, "dropout": model_cfg.dropout,
            "recurrent_dropout": model_cfg.recurrent_dropout, "freeze_embeddings": model_cfg.freeze_embeddings}


def build_classifier(model_cfg, *, vocab_size: int, num_classes: int, finetune_cfg,
                     start_id: int | None = None) -> SequenceClassifier:
    """A classifier (weights created) whose encoder matches `model_cfg` and whose head follows `finetune_cfg`."""
    model = SequenceClassifier(encoder_config(model_cfg, vocab_size), num_classes, pooling=finetune_cfg.pooling,
                               head_units=finetune_cfg.head_units, head_dropout=finetune_cfg.head_dropout,
                               start_id=start_id, bidirectional=finetune_cfg.bidirectional,
                               word_dropout=finetune_cfg.word_dropout, head_norm=finetune_cfg.head_norm,
                               name="classifier")
    model.build()
    return model


def copy_encoder_weights(source: LSTMLanguageModel, target: SequenceClassifier) -> None:
    """Load a pretrained language model's embedding and LSTM weights into the classifier's encoder."""
    if len(source.lstms) != len(target.encoder.lstms):
        raise ValueError(f"parent has {len(source.lstms)} LSTM layers, classifier {len(target.encoder.lstms)}")
    target.encoder.embedding.set_weights(source.embedding.get_weights())
    for src, dst in zip(source.lstms, target.encoder.lstms, strict=True):
        dst.set_weights(src.get_weights())


class ClassifierPredictor:
    """Compiled inference over documents: class logits for every document, batched by length."""

    def __init__(self, model: SequenceClassifier, *, batch_size: int = 128, max_length: int | None = 128):
        from llmctl.data.doc_batches import length_cap

        self.model = model
        self.batch_size = int(batch_size)
        self.max_length = length_cap(max_length)
        self._fn = tf.function(lambda tokens: model(tokens, training=False),
                               input_signature=[tf.TensorSpec([None, None], tf.int32)], reduce_retracing=True)

    def logits(self, docs):
        """float32 [N, classes] for a `doc_batches.Documents`, in document order."""
        import numpy as np

        from llmctl.data.doc_batches import iterate

        out = np.zeros((len(docs), self.model.num_classes), dtype=np.float32)
        for index, tokens in iterate(docs, self.batch_size, self.max_length, shuffle=False, by_length=True):
            out[index] = self._fn(tokens).numpy()
        return out


def load_classifier(run, which: str = "best") -> tuple[SequenceClassifier, dict[str, Any]]:
    """The classifier of a `classify` run with the weights of checkpoint `which` (`best`, `last` or a prefix):
    rebuilt from the run's config.yaml + run.json; `model.keras` when the run has no checkpoints left."""
    from llmctl import config as config_mod
    from llmctl.errors import ArtifactError
    from llmctl.models.checkpoint_io import load_weights, read_pointer, resolve_checkpoint

    info = run.read_info()
    if info.get("kind") != "classify":
        raise ArtifactError(f"{run.root} is a `{info.get('kind')}` run, not a classifier",
                            hint="use a run made by `llmctl finetune` with finetune.task=classify")

    def build():
        exp = config_mod.validate(run.saved_config(), source=str(run.config))
        return build_classifier(exp.model, vocab_size=int(info["vocab_size"]), num_classes=int(info["num_classes"]),
                                finetune_cfg=exp.finetune, start_id=info.get("start_id"))

    if not read_pointer(run.checkpoints) and run.model.is_file() and which == "best":
        from llmctl.models.keras_file import read_model_file

        return read_model_file(run.model, build, SequenceClassifier), {"checkpoint": str(run.model), "which": which}
    prefix, entry = resolve_checkpoint(run.checkpoints, which)
    model = build()
    load_weights(model, prefix)
    return model, {"checkpoint": str(prefix), "which": which, "step": entry.get("step")}
