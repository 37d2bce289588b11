"""The `model.keras` file: written as a functional graph of stock Keras layers, read back into llmctl's models.

Writing (`save_model_file`): the language model becomes `token_ids [B, T] int32 → Embedding → Dropout → LSTM ×
layers (Dropout between) → Dropout → [Dense tie_projection] → Dense head → logits [B, T, vocab]`; the classifier
`token_ids → Embedding → LSTMs → masked pooling (keras.ops) → Dense head → class logits [B, C]`. Every layer is a
stock Keras layer in float32 and the few tensor operations are `keras.ops` calls, which Keras serialises itself:
`keras.saving.load_model(path)` works in a Python that has never imported llmctl and computes llmctl's logits. The
fused CPU LSTM kernel (`fused_lstm`) is a training detail: the file holds plain `keras.layers.LSTM` layers with the
same weights. Tied embeddings are written as an ordinary `head` Dense whose kernel is the embedding transposed.

Reading (`read_model_file`): Keras safe mode, one whole-sentence `ArtifactError` for a damaged or unsafe file (a
truncated zip is named as such, not "File not found"; Keras' Lambda refusal is kept whole); the stock graph's
weights are copied by layer name into the llmctl model the run's config describes (which carries explicit LSTM
state, chunked reading and the fused kernel). Files written by older llmctl versions (the model classes registered
with Keras) load as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from llmctl.errors import ArtifactError


def first_sentences(text: str, limit: int = 400) -> str:
    """The first line of an exception message, whole sentences up to `limit` characters (never cut mid-word)."""
    line = " ".join(str(text).split("\n")[0].split()) if text else ""
    if len(line) <= limit:
        return line
    cut = line.rfind(". ", 0, limit)
    return line[:cut + 1] if cut > 0 else line[:line.rfind(" ", 0, limit)] + " ..."


def load_keras_file(path):
    """`keras.saving.load_model(path)` in safe mode; a damaged or unsafe file is one whole-sentence `ArtifactError`."""
    import zipfile

    import keras

    if not zipfile.is_zipfile(path):
        raise ArtifactError(f"{path} is damaged (not a complete .keras zip archive; truncated?)",
                            hint="restore it from a copy or train the run again") from None
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds of errors for a bad file
        raise ArtifactError(f"cannot load {path}: {first_sentences(str(exc))}",
                            hint="use a model.keras written by llmctl, or train the run again") from None


# ---------------------------------------------------------------- the stock-layer graph


def weighted_layers(model) -> list[tuple[str, list[Any]]]:
    """(layer name in the stock graph, the llmctl variables it holds) bottom to top; `None` stands for the tied
    head's kernel (the embedding transposed, not a variable of its own)."""
    from llmctl.models.classifier import SequenceClassifier

    if isinstance(model, SequenceClassifier):
        out = [("embedding", [model.encoder.embedding.embeddings])]
        out += [(f"lstm_{i}", list(lstm.weights)) for i, lstm in enumerate(model.encoder.lstms)]
        out += [(f"backward_lstm_{i}", list(lstm.weights)) for i, lstm in enumerate(model.backward_lstms)]
        if model.pool_norm is not None:
            out.append(("pool_norm", _norm_weights(model.pool_norm)))
        if model.hidden is not None:
            out.append(("head_hidden", list(model.hidden.weights)))
            if model.hidden_norm is not None:
                out.append(("hidden_norm", _norm_weights(model.hidden_norm)))
        return out + [("class_logits", list(model.logits_layer.weights))]
    out = [("embedding", [model.embedding.embeddings])]
    out += [(f"lstm_{i}", list(lstm.weights)) for i, lstm in enumerate(model.lstms)]
    if model.projection is not None:
        out.append(("tie_projection", list(model.projection.weights)))
    return out + [("head", [None, model.output_bias] if model.tie_embeddings else list(model.head.weights))]


def _norm_weights(layer) -> list[Any]:
    """A head norm's variables in stock `BatchNormalization` order (its first-batch flag stays behind: inference
    uses the fixed statistics either way)."""
    return [layer.gamma, layer.beta, layer.moving_mean, layer.moving_variance]


def _lstm_stack(x, lstms, dropout: float, prefix: str, dropout_prefix: str):
    from keras import layers

    for i, lstm in enumerate(lstms):
        x = layers.LSTM(lstm.units, return_sequences=True, recurrent_dropout=lstm.recurrent_dropout,
                        dtype="float32", name=f"{prefix}{i}")(x)
        if i < len(lstms) - 1:
            x = layers.Dropout(dropout, dtype="float32", name=f"{dropout_prefix}{i}")(x)
    return x


def _language_model_graph(model, tokens):
    from keras import layers

    x = layers.Embedding(model.vocab_size, model.embedding_dim, trainable=not model.freeze_embeddings,
                         dtype="float32", name="embedding")(tokens)
    x = layers.Dropout(model.embedding_dropout_rate, dtype="float32", name="embedding_dropout")(x)
    x = _lstm_stack(x, model.lstms, model.dropout_rate, "lstm_", "dropout_")
    x = layers.Dropout(model.output_dropout_rate, dtype="float32", name="output_dropout")(x)
    if model.projection is not None:
        x = layers.Dense(model.embedding_dim, dtype="float32", name="tie_projection")(x)
    return layers.Dense(model.vocab_size, dtype="float32", name="head")(x)


def _classifier_graph(model, tokens):
    from keras import layers, ops

    from llmctl.models.classifier import PAD_ID, masked_pool, reverse_real_tokens

    enc = model.encoder
    embedding = layers.Embedding(enc.vocab_size, enc.embedding_dim, trainable=not enc.freeze_embeddings,
                                 dtype="float32", name="embedding")
    embedding_dropout = layers.Dropout(enc.embedding_dropout_rate, dtype="float32", name="embedding_dropout")
    mask = ops.not_equal(tokens, PAD_ID)
    read = tokens if model.start_id is None else ops.concatenate(
        [ops.full_like(tokens[:, :1], model.start_id), tokens], axis=1)
    hidden = _lstm_stack(embedding_dropout(embedding(read)), enc.lstms, enc.dropout_rate, "lstm_", "dropout_")
    if model.start_id is not None:
        hidden = hidden[:, 1:]
    pooled = masked_pool(hidden, mask, model.pooling)
    if model.bidirectional:
        backward = embedding_dropout(embedding(reverse_real_tokens(tokens, mask)))
        backward = _lstm_stack(backward, model.backward_lstms, enc.dropout_rate, "backward_lstm_",
                               "backward_dropout_")
        pooled = ops.concatenate([pooled, masked_pool(backward, mask, model.pooling)], axis=-1)
    if model.pool_norm is not None:  # the head norms' fixed statistics: stock batch normalisation at inference
        pooled = layers.BatchNormalization(epsilon=model.pool_norm.epsilon, dtype="float32", name="pool_norm")(pooled)
    x = layers.Dropout(model.head_dropout_rate, dtype="float32", name="pool_dropout")(pooled)
    if model.hidden is not None:
        x = layers.Dense(model.head_units, activation="relu", dtype="float32", name="head_hidden")(x)
        if model.hidden_norm is not None:
            x = layers.BatchNormalization(epsilon=model.hidden_norm.epsilon, dtype="float32", name="hidden_norm")(x)
        x = layers.Dropout(model.head_dropout_rate, dtype="float32", name="head_dropout")(x)
    return layers.Dense(model.num_classes, dtype="float32", name="class_logits")(x)


def stock_graph(model):
    """A functional `keras.Model` of stock layers computing `model`'s logits from `token_ids`, with its weights."""
    import keras
    from keras import ops

    from llmctl.models.classifier import SequenceClassifier

    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    classifier = isinstance(model, SequenceClassifier)
    logits = (_classifier_graph if classifier else _language_model_graph)(model, tokens)
    graph = keras.Model(tokens, logits, name=model.name)
    for name, variables in weighted_layers(model):
        values = [ops.convert_to_numpy(v) if v is not None else None for v in variables]
        if values[0] is None:  # tied head: the embedding, transposed
            values[0] = ops.convert_to_numpy(model.embedding.embeddings).T
        graph.get_layer(name).set_weights(values)
    return graph


def save_model_file(model, path: Path) -> None:
    """Write `model` (language model or classifier) to `path` as a stock-layer graph, atomically."""
    import keras

    from llmctl import atomic

    path = Path(path)
    tmp = path.with_name(f"{atomic.TMP_PREFIX}{path.name}")
    try:
        keras.saving.save_model(stock_graph(model), tmp)
        atomic.write_bytes(path, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)


def read_model_file(path: Path, build: Callable[[], Any], kind: type):
    """The llmctl model (`kind`, an instance from `build()`) holding the weights of model.keras at `path`; a file
    whose layers do not fit that model is an `ArtifactError`."""
    import numpy as np

    import llmctl.models.classifier  # noqa: F401 - registers llmctl's classes: older files name them
    loaded = load_keras_file(path)
    if isinstance(loaded, kind):
        return loaded
    model = build()
    try:
        for name, variables in weighted_layers(model):
            for variable, value in zip(variables, loaded.get_layer(name).get_weights(), strict=True):
                if variable is None:
                    continue
                if tuple(variable.shape) != np.shape(value):
                    raise ValueError(f"layer {name}: {np.shape(value)} instead of {tuple(variable.shape)}")
                variable.assign(value)
    except ValueError as exc:
        raise ArtifactError(f"{path} does not match the model in the run's config.yaml ({first_sentences(str(exc))})",
                            hint="use the model.keras this run wrote, or train the run again") from None
    return model
