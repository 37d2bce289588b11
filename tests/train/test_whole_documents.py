"""Whole-document classification (BPT3C): chunked reading equals one full pass, gradients reach the tail only,
and `data.train_limit` subsets."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from llmctl import config
from llmctl.train.finetune_classify import limit_subset


def _classifier(pooling="concat", start_id=2, layers=2, dropout=0.0, head_norm="none"):
    from llmctl.models.classifier import SequenceClassifier

    encoder = {"vocab_size": 50, "embedding_dim": 8, "num_layers": layers, "units": 12, "embedding_dropout": 0.0,
               "dropout": dropout, "recurrent_dropout": 0.0, "freeze_embeddings": False}
    model = SequenceClassifier(encoder, 3, pooling=pooling, head_units=6, head_dropout=0.0, start_id=start_id,
                               head_norm=head_norm)
    model.build()
    return model


def _docs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(lengths), max(lengths)), dtype=np.int32)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.integers(5, 50, size=n)
    return tokens


def _chunked_logits(model, tokens, chunk):
    from llmctl.train.bpt3c import ChunkedReader

    reader = ChunkedReader(model, chunk=chunk, backprop_tokens=chunk)
    full, mask = reader.layout(tokens)
    states, stats = model.initial_chunk_state(full.shape[0])
    for start in range(0, full.shape[1], chunk):
        states, stats = model.encode_chunk(full[:, start:start + chunk], mask[:, start:start + chunk], states, stats)
    return np.asarray(model.head(model.pool_from_stats(stats)))


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "concat"])
@pytest.mark.parametrize("start_id", [None, 2])
def test_chunked_reading_equals_one_full_pass(pooling, start_id):
    model = _classifier(pooling, start_id)
    tokens = _docs([37, 5, 16, 1, 29])
    full = np.asarray(model(tokens, training=False))
    for chunk in (4, 7, 64):
        np.testing.assert_allclose(_chunked_logits(model, tokens, chunk), full, rtol=1e-4, atol=1e-5)


def test_batch_norm_head_trains_its_statistics_and_infers_per_document():
    """`finetune.head_norm: batch`: the normalisation's scale/shift train with the head group, its statistics come
    from the first training batch and stay fixed, so training and inference apply the same transform (a document's
    logits do not depend on its batch)."""
    import tensorflow as tf

    model = _classifier("concat", start_id=2, layers=1, head_norm="batch")
    head = {w.path for w in dict(model.layer_groups())["head"]}
    assert {w.path for w in model.pool_norm.trainable_weights + model.hidden_norm.trainable_weights} <= head
    tokens = _docs([37, 5, 16, 1, 29])
    before = np.asarray(model.pool_norm.moving_mean)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=np.array([0, 1, 2, 0, 1]), logits=model(tokens, training=True)))
    grads = tape.gradient(loss, model.pool_norm.trainable_weights)
    assert all(g is not None for g in grads)
    primed = np.asarray(model.pool_norm.moving_mean)
    assert not np.allclose(primed, before)
    np.testing.assert_allclose(primed, np.asarray(model.pooled(tokens)).mean(axis=0), rtol=1e-4, atol=1e-6)
    train_mode = np.asarray(model(tokens, training=True))          # a second batch leaves the statistics alone
    np.testing.assert_allclose(np.asarray(model.pool_norm.moving_mean), primed)
    np.testing.assert_allclose(train_mode, np.asarray(model(tokens, training=False)), rtol=1e-4, atol=1e-5)
    alone = np.asarray(model(tokens[1:2, :5], training=False))
    batched = np.asarray(model(tokens, training=False))[1:2]
    np.testing.assert_allclose(alone, batched, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_chunked_logits(model, tokens, 7), np.asarray(model(tokens, training=False)),
                               rtol=1e-4, atol=1e-5)


def test_training_step_pools_the_whole_document_but_backpropagates_through_the_tail_only():
    import tensorflow as tf

    from llmctl.train.bpt3c import ChunkedReader

    model = _classifier("concat", start_id=2, layers=1)
    tokens = _docs([40, 40])
    tokens[:, :8] = 3                      # id 3 appears only in the first chunk ...
    tokens[:, 8:] = np.where(tokens[:, 8:] == 3, 4, tokens[:, 8:])
    labels = np.array([0, 2], dtype=np.int32)
    reader = ChunkedReader(model, chunk=8, backprop_tokens=12)    # rounded up to 2 chunks = 16 tokens
    batch = reader.training_batch(tokens, labels)
    assert batch[0].shape == (2, 16)       # 41 tokens (start + 40) padded to 48; tail = last 16
    loss_fn = reader.loss_function(tf.ones([3]))
    with tf.GradientTape() as tape:
        loss = loss_fn(*[tf.convert_to_tensor(t) for t in batch], training=True)
    grad = tf.convert_to_tensor(tape.gradient(loss, model.encoder.embedding.embeddings))
    assert float(tf.reduce_sum(tf.abs(grad[3]))) == 0.0          # read before the tail: no gradient
    assert float(tf.reduce_sum(tf.abs(grad))) > 0.0
    logits = model(tokens, training=False)                          # same loss as one full pass (no dropout)
    full = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    assert float(loss) == pytest.approx(float(full), rel=1e-4)


def test_limit_subset_is_balanced_seeded_and_stratified():
    labels = np.array([0] * 700 + [1] * 250 + [2] * 50)
    pick = limit_subset(labels, 3, 90, balanced=True, seed=0)
    assert np.bincount(labels[pick]).tolist() == [30, 30, 30]
    assert np.array_equal(pick, limit_subset(labels, 3, 90, balanced=True, seed=0))
    assert not np.array_equal(pick, limit_subset(labels, 3, 90, balanced=True, seed=1))
    assert np.bincount(labels[limit_subset(labels, 3, 300, balanced=True, seed=0)]).tolist() == [125, 125, 50]
    assert np.bincount(labels[limit_subset(labels, 3, 100, balanced=False, seed=0)]).tolist() == [70, 25, 5]
    assert limit_subset(labels, 3, 5000, balanced=True, seed=0).size == 1000


def _write(folder: Path, texts, name="exp.yaml"):
    path = folder / name
    path.write_text(texts, encoding="utf-8")
    return path


def test_schema_refuses_chunks_with_a_bidirectional_encoder_and_limits_for_lm(tmp_path):
    from llmctl.errors import ConfigError

    with pytest.raises(ConfigError, match="backprop_tokens"):
        config.load(_write(tmp_path, "finetune: {task: classify, bidirectional: true, backprop_tokens: 64}\n"), [])
    with pytest.raises(ConfigError, match="train_limit"):
        config.load(_write(tmp_path, "data: {task: lm, train_limit: 100}\n"), [])


LONG = """
run: {{name: {run}, dir: runs, progress: none, seed: 1}}
data: {{dir: data/long, task: classify, train: [train.tsv], valid: [valid.tsv]}}
tokenizer: {{kind: word}}
model: {{embedding_dim: 16, layers: 1, units: 24, dropout: 0.0, output_dropout: 0.0}}
train: {{epochs: 6, batch_size: 16, bptt: 16, lr: 0.01, log_every: 5}}
finetune: {{task: classify, pooling: concat, head_units: 16, head_dropout: 0.0, max_length: null,
           backprop_tokens: 16}}
"""


def _write_long_reviews(folder: Path, seed=0):
    """The deciding word sits among the last 10 tokens of 60-120-token documents: a classifier that reads only the
    first `max_length` tokens cannot tell the classes apart; BPT3C reads everything and learns from the tail."""
    rng = random.Random(seed)
    filler = "the a movie film story plot actor scene was is very quite and then".split()
    for name, n in (("train", 160), ("valid", 40)):
        rows = ["text\tlabel"]
        for i in range(n):
            label = ("pos", "neg")[i % 2]
            key = rng.choice({"pos": ["great", "superb"], "neg": ["awful", "boring"]}[label])
            words = [rng.choice(filler) for _ in range(rng.randint(60, 120))]
            words.insert(len(words) - rng.randint(0, 9), key)
            rows.append(" ".join(words) + "\t" + label)
        (folder / f"{name}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def test_whole_documents_train_evaluate_and_predict_agree(tmp_path, monkeypatch):
    from llmctl.data import preprocess
    from llmctl.data.dataset import open_dataset
    from llmctl.data.doc_batches import Documents
    from llmctl.evaluation.classify import evaluate_classifier
    from llmctl.models.classifier import ClassifierPredictor, load_classifier
    from llmctl.predict import run as predict
    from llmctl.progress import Reporter
    from llmctl.runs import RunDir
    from llmctl.train import finetune

    monkeypatch.chdir(tmp_path)
    _write_long_reviews(tmp_path)
    exp = config.load(_write(tmp_path, LONG.format(run="long")), [])
    preprocess.run(exp)
    result = finetune.run(exp)
    assert result.values["valid_accuracy"] >= 0.9
    run = RunDir.of(exp)
    card = evaluate_classifier(exp, run, Reporter("none")).values
    assert card["accuracy"] == pytest.approx(result.values["valid_accuracy"])
    model, _ = load_classifier(run, "best")
    valid = Documents.from_dataset(open_dataset(exp.data.dir), "valid", max_length=None, labels=True)
    assert int(valid.lengths.max()) > 60           # nothing truncated
    logits = ClassifierPredictor(model, max_length=None).logits(valid)
    text = (tmp_path / "valid.tsv").read_text().splitlines()[1].split("\t")[0]
    predicted = predict(exp, Reporter("none"), texts=[text]).values["predictions"][0]
    probs = np.exp(logits[0] - logits[0].max())
    assert predicted["probability"] == pytest.approx(float(probs.max() / probs.sum()), rel=1e-4)
    # the same classifier cut to its first 48 tokens never sees the deciding word
    cut = config.load(_write(tmp_path, LONG.format(run="cut"), "cut.yaml"),
                      ["finetune.backprop_tokens=null", "finetune.max_length=48"])
    assert finetune.run(cut).values["valid_accuracy"] <= 0.7


def test_batch_norm_head_with_eval_every_evaluates_at_those_steps_and_at_the_end(tmp_path, monkeypatch):
    """With `train.eval_every`, epoch ends are not evaluated again (only the end of training is): few-label runs
    with short epochs would otherwise spend their budget on the valid split."""
    import csv

    from llmctl.data import preprocess
    from llmctl.runs import RunDir
    from llmctl.train import finetune

    monkeypatch.chdir(tmp_path)
    _write_long_reviews(tmp_path)
    exp = config.load(_write(tmp_path, LONG.format(run="bn")), ["finetune.head_norm=batch", "train.eval_every=7"])
    preprocess.run(exp)
    result = finetune.run(exp)
    assert result.values["valid_accuracy"] >= 0.9
    with RunDir.of(exp).metrics.open(encoding="utf-8") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle) if row["split"] == "valid"]
    total = 10 * exp.train.epochs                   # 160 documents / 16 = 10 steps per epoch
    assert steps == [*range(7, total, 7), total]    # every 7 steps and the end, never an epoch end in between
