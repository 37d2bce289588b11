"""The sequence classifier: masked pooling, pad invariance, layer groups, encoder transfer, save/load."""

import numpy as np
import pytest

from llmctl.tfenv import import_tf

tf = import_tf()
import keras  # noqa: E402

from llmctl.models.classifier import (  # noqa: E402
    ClassifierPredictor,
    SequenceClassifier,
    copy_encoder_weights,
    masked_pool,
)
from llmctl.models.lstm_lm import LSTMLanguageModel  # noqa: E402

ENCODER = {"vocab_size": 30, "embedding_dim": 8, "num_layers": 2, "units": 6, "embedding_dropout": 0.1,
           "dropout": 0.2, "recurrent_dropout": 0.0}


def _manual(hidden, lengths):
    last = np.stack([h[n - 1] if n else np.zeros(h.shape[1]) for h, n in zip(hidden, lengths, strict=True)])
    mean = np.stack([h[:n].mean(0) if n else np.zeros(h.shape[1]) for h, n in zip(hidden, lengths, strict=True)])
    high = np.stack([h[:n].max(0) if n else np.zeros(h.shape[1]) for h, n in zip(hidden, lengths, strict=True)])
    return {"last": last, "mean": mean, "max": high, "concat": np.concatenate([last, mean, high], -1)}


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "concat"])
def test_masked_pool_matches_a_manual_computation(pooling):
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(4, 7, 5)).astype(np.float32) - 3.0  # all-negative-ish: max must not pick pads' 0
    lengths = [7, 3, 1, 0]
    mask = np.arange(7)[None, :] < np.asarray(lengths)[:, None]
    hidden_with_junk = np.where(mask[..., None], hidden, 100.0).astype(np.float32)  # pads hold huge values
    got = masked_pool(tf.constant(hidden_with_junk), tf.constant(mask), pooling).numpy()
    assert np.allclose(got, _manual(hidden, lengths)[pooling], atol=1e-5)


def _classifier(pooling="concat", head_units=4, **options):
    model = SequenceClassifier(ENCODER, 3, pooling=pooling, head_units=head_units, head_dropout=0.1,
                               name="classifier", **options)
    model.build()
    return model


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "concat"])
def test_logits_do_not_depend_on_padding(pooling):
    model = _classifier(pooling)
    doc = [5, 9, 11, 7]
    short = np.asarray([doc + [0] * 4], dtype=np.int32)
    long = np.asarray([doc + [0] * 20], dtype=np.int32)
    assert np.allclose(model(short).numpy(), model(long).numpy(), atol=1e-5)


def test_pooled_last_is_the_encoder_output_at_the_last_real_token():
    model = _classifier("last")
    tokens = np.asarray([[5, 9, 11, 0, 0], [4, 0, 0, 0, 0]], dtype=np.int32)
    hidden, _ = model.encoder.features(tf.constant(tokens))
    pooled = model.pooled(tf.constant(tokens)).numpy()
    assert np.allclose(pooled[0], hidden.numpy()[0, 2], atol=1e-6)
    assert np.allclose(pooled[1], hidden.numpy()[1, 0], atol=1e-6)


def test_layer_groups_cover_every_trainable_weight_once():
    model = _classifier()
    groups = model.layer_groups()
    assert [name for name, _ in groups] == ["embedding", "lstm_0", "lstm_1", "head"]
    grouped = [id(v) for _, vs in groups for v in vs]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(v) for v in model.trainable_variables}


def test_encoder_weights_come_from_a_language_model():
    lm = LSTMLanguageModel(vocab_size=30, embedding_dim=8, num_layers=2, units=6, name="lstm_lm")
    lm.build()
    model = _classifier()
    copy_encoder_weights(lm, model)
    tokens = tf.constant([[3, 7, 9, 12]])
    assert np.allclose(lm.features(tokens)[0].numpy(), model.encoder.features(tokens)[0].numpy(), atol=1e-6)
    assert not model.encoder.head.weights  # the vocabulary head is never built


def test_save_and_load_keep_the_logits(tmp_path):
    model = _classifier("mean", head_units=0)
    tokens = np.asarray([[5, 9, 11, 0], [1, 2, 0, 0]], dtype=np.int32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SequenceClassifier) and loaded.pooling == "mean"
    assert np.allclose(model(tokens).numpy(), loaded(tokens).numpy(), atol=1e-6)


def test_predictor_returns_logits_in_document_order():
    from llmctl.data.doc_batches import Documents

    model = _classifier()
    docs = [[5, 6, 7, 8, 9, 10, 11], [3], [4, 4, 4]]
    logits = ClassifierPredictor(model, batch_size=2, max_length=16).logits(
        Documents.from_token_lists(docs, max_length=16))
    for i, doc in enumerate(docs):
        assert np.allclose(logits[i], model(np.asarray([doc], dtype=np.int32)).numpy()[0], atol=1e-5)


def test_a_start_token_is_read_first_but_never_pooled():
    model = SequenceClassifier(ENCODER, 3, pooling="concat", head_units=0, start_id=3, name="classifier")
    model.build()
    tokens = np.asarray([[5, 9, 11, 0, 0, 0, 0, 0]], dtype=np.int32)
    hidden, _ = model.encoder.features(tf.constant([[3, 5, 9, 11]]))
    pooled = model.pooled(tf.constant(tokens)).numpy()[0]
    h = hidden.numpy()[0, 1:]
    assert np.allclose(pooled, np.concatenate([h[-1], h.mean(0), h.max(0)]), atol=1e-5)
    assert np.allclose(model(tokens).numpy(), model(tokens[:, :4]).numpy(), atol=1e-5)
    assert model.get_config()["start_id"] == 3


# ---------------------------------------------------------------- bidirectional (from scratch)


def _bidirectional(pooling="concat"):
    return _classifier(pooling, bidirectional=True)


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "concat"])
def test_bidirectional_logits_do_not_depend_on_padding(pooling):
    model = _bidirectional(pooling)
    doc = [5, 9, 11, 7]
    short = np.asarray([doc + [0] * 2, [4, 8] + [0] * 4], dtype=np.int32)
    long = np.asarray([doc + [0] * 20, [4, 8] + [0] * 22], dtype=np.int32)
    assert np.allclose(model(short).numpy(), model(long).numpy(), atol=1e-5)


def test_bidirectional_backward_half_reads_the_document_reversed():
    model = _bidirectional("last")
    tokens = np.asarray([[5, 9, 11, 0, 0]], dtype=np.int32)
    pooled = model.pooled(tf.constant(tokens)).numpy()[0]
    forward, _ = model.encoder.features(tf.constant([[5, 9, 11]]))
    x = model.encoder.embedding(tf.constant([[11, 9, 5]]))
    for lstm in model.backward_lstms:
        x, _, _ = lstm(x)
    assert np.allclose(pooled[:6], forward.numpy()[0, -1], atol=1e-6)
    assert np.allclose(pooled[6:], x.numpy()[0, -1], atol=1e-6)  # after reading 11, 9, 5
    assert model.pooled_width == 12


def test_bidirectional_groups_save_and_load(tmp_path):
    model = _bidirectional()
    groups = model.layer_groups()
    assert [name for name, _ in groups] == ["embedding", "lstm_0", "lstm_1", "head"]
    grouped = [id(v) for _, vs in groups for v in vs]
    assert len(grouped) == len(set(grouped)) and set(grouped) == {id(v) for v in model.trainable_variables}
    tokens = np.asarray([[5, 9, 11, 0], [1, 2, 0, 0]], dtype=np.int32)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert loaded.bidirectional and np.allclose(model(tokens).numpy(), loaded(tokens).numpy(), atol=1e-6)


def test_bidirectional_needs_no_parent_in_the_config():
    from llmctl import config
    from llmctl.errors import ConfigError

    with pytest.raises(ConfigError, match="finetune.bidirectional is for task classify trained from scratch"):
        config.validate({"finetune": {"task": "classify", "parent": "runs/lm", "bidirectional": True}})


def test_word_dropout_only_in_training_and_never_on_pads():
    model = SequenceClassifier(ENCODER, 3, pooling="mean", head_units=0, head_dropout=0.0, word_dropout=0.5,
                               name="classifier")
    model.build()
    tokens = np.asarray([[5, 9, 11, 7, 0, 0]] * 64, dtype=np.int32)
    assert np.allclose(model(tokens).numpy(), model(tokens[:, :4]).numpy(), atol=1e-5)  # inference: no dropout
    seen = []
    original = model.encoder.features

    def spy(t, states=None, training=False):
        seen.append(np.asarray(t))
        return original(t, states, training=training)

    model.encoder.features = spy
    model.pooled(tf.constant(tokens), training=True)
    dropped = seen[-1]
    assert set(np.unique(dropped[:, :4])) <= {1, 5, 9, 11, 7} and 0.3 < (dropped[:, :4] == 1).mean() < 0.7
    assert (dropped[:, 4:] == 0).all()  # pads stay pads
    assert model.get_config()["word_dropout"] == 0.5
