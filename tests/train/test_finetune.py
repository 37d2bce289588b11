"""`llmctl finetune`: ULMFiT policy, the grouped train step, batching, guard rails, and tiny end-to-end runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from llmctl import config
from llmctl.data import preprocess
from llmctl.data.doc_batches import Documents, batch_indices, pad_batch, response_mask
from llmctl.errors import ArtifactError, ConfigError, DataError
from llmctl.train import ulmfit

# ---------------------------------------------------------------- tiny data


def write_sentiment(folder: Path, n_train: int = 240, n_valid: int = 60, seed: int = 0) -> None:
    """A trivially separable task: the label is decided by one key word among filler words."""
    rng = random.Random(seed)
    filler = "the a movie film story plot actor scene was is very quite".split()
    keys = {"pos": ["great", "superb"], "neg": ["awful", "boring"]}
    for name, n in (("train", n_train), ("valid", n_valid)):
        rows = ["text\tlabel"]
        for i in range(n):
            label = ("pos", "neg")[i % 2]
            words = [rng.choice(filler) for _ in range(rng.randint(2, 8))]
            words.insert(rng.randint(0, len(words)), rng.choice(keys[label]))
            rows.append(" ".join(words) + "\t" + label)
        (folder / f"{name}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def experiment(folder: Path, text: str, name: str = "exp.yaml", overrides=()):
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return config.load(path, list(overrides))


CLASSIFY = """
run: {{name: {run}, dir: runs, progress: none, seed: 1}}
data: {{dir: data/{data}, task: classify, train: [train.tsv], valid: [valid.tsv]}}
tokenizer: {{kind: word}}
model: {{embedding_dim: 16, layers: 1, units: 24, dropout: 0.0, output_dropout: 0.0}}
train: {{epochs: 2, batch_size: 16, lr: 0.01, log_every: 5}}
finetune: {{task: classify, pooling: concat, head_units: 16, head_dropout: 0.0}}
"""


@pytest.fixture
def sentiment(tmp_path):
    write_sentiment(tmp_path)
    exp = experiment(tmp_path, CLASSIFY.format(run="clf", data="clf"))
    preprocess.run(exp)
    return tmp_path, exp


# ---------------------------------------------------------------- ULMFiT policy


def test_gradual_unfreezing_opens_one_more_group_per_epoch():
    groups = 4  # embedding, lstm_0, lstm_1, head
    assert ulmfit.trainable_groups(0, groups, True) == [False, False, False, True]
    assert ulmfit.trainable_groups(1, groups, True) == [False, False, True, True]
    assert ulmfit.trainable_groups(2, groups, True) == [False, True, True, True]
    assert ulmfit.trainable_groups(3, groups, True) == [True, True, True, True]
    assert ulmfit.trainable_groups(9, groups, True) == [True] * 4
    assert ulmfit.trainable_groups(0, groups, False) == [True] * 4


def test_discriminative_lr_divides_by_the_factor_per_group_down_the_stack():
    assert ulmfit.lr_multipliers(4, 2.6) == pytest.approx([1 / 2.6 ** 3, 1 / 2.6 ** 2, 1 / 2.6, 1.0])
    assert ulmfit.lr_multipliers(3, None) == [1.0, 1.0, 1.0]


def test_describe_says_when_a_group_never_trains():
    rows = ulmfit.describe(["embedding", "lstm_0", "head"], 2, 2.0, True)
    assert rows[0][2].startswith("never") and rows[1][2] == "2" and rows[2][2] == "1"


# ---------------------------------------------------------------- the grouped step


class _Stepper:
    """The shared `GradientStep` over two layer groups, with a mean-squared-error loss."""

    def __init__(self, tf, gradient, batch):
        self.tf, self.gradient, self.batch, self.lr = tf, gradient, batch, 0.0
        self.optimizers = gradient.optimizers

    def set_lr(self, lr):
        self.lr = lr

    def step(self, trainable, x, y):
        tf = self.tf
        element = ((tf.constant(x), tf.constant(y), tf.ones([x.shape[0]])),)
        return self.gradient.run(trainable, element, (), tf.constant([0, 0], tf.int64), tf.constant(self.lr))


def _stepper(optimizer="sgd", multipliers=(0.25, 1.0)):
    from llmctl.schema import TrainConfig
    from llmctl.tfenv import import_tf
    from llmctl.train.distribution import Distribution
    from llmctl.train.optimizers import build_optimizer
    from llmctl.train.step import GradientStep

    tf = import_tf()
    import keras

    low, high = keras.layers.Dense(3, name="low"), keras.layers.Dense(2, name="high")
    low.build((None, 4))
    high.build((None, 3))

    def loss_fn(x, y, training=True):
        return tf.reduce_mean(tf.square(high(low(x)) - y))

    def forward(batch, carry, seed, m):  # Σ per-row losses × weights: normalised by Σ weights = the mean above
        x, y, w = batch
        return tf.reduce_sum(tf.reduce_mean(tf.square(high(low(x)) - y), axis=-1) * w), carry

    cfg = TrainConfig(optimizer=optimizer, lr=0.1, clip_norm=None)
    optimizers = []
    for layer in (low, high):
        opt = build_optimizer(cfg)
        opt.build(layer.weights)
        optimizers.append(opt)
    gradient = GradientStep(Distribution("none", tf.distribute.get_strategy()), [("low", low.weights),
                            ("high", high.weights)], optimizers, forward=forward, clip_norm=None,
                            multipliers=list(multipliers))
    rng = np.random.default_rng(0)
    batch = (rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 2)).astype(np.float32))
    return tf, _Stepper(tf, gradient, batch), low, high, loss_fn, batch


def test_frozen_groups_do_not_change():
    _, stepper, low, high, _, batch = _stepper("adam")
    before = [w.numpy().copy() for w in low.weights + high.weights]
    stepper.set_lr(0.1)
    for _ in range(3):
        stepper.step((False, True), *batch)
    after = [w.numpy() for w in low.weights + high.weights]
    assert all(np.array_equal(a, b) for a, b in zip(before[:2], after[:2], strict=True))   # low: frozen
    assert not any(np.array_equal(a, b) for a, b in zip(before[2:], after[2:], strict=True))  # high: trained


def test_sgd_updates_scale_with_the_group_multiplier():
    tf, stepper, low, high, loss_fn, batch = _stepper("sgd", multipliers=(0.25, 1.0))
    variables = low.weights + high.weights
    with tf.GradientTape() as tape:
        loss = loss_fn(*batch)
    grads = [g.numpy() for g in tape.gradient(loss, variables)]
    before = [v.numpy().copy() for v in variables]
    stepper.set_lr(0.1)
    stepper.step((True, True), *batch)
    for i, (v, b, g) in enumerate(zip(variables, before, grads, strict=True)):
        lr = 0.1 * (0.25 if i < 2 else 1.0)
        assert np.allclose(v.numpy(), b - lr * g, atol=1e-6)


def test_adam_groups_have_their_own_learning_rates():
    _, stepper, *_, batch = _stepper("adam", multipliers=(1 / 2.6, 1.0))
    stepper.set_lr(0.01)
    stepper.step((True, True), *batch)  # the step sets every group's rate
    assert [float(o.learning_rate.numpy()) for o in stepper.optimizers] == pytest.approx([0.01 / 2.6, 0.01])


# ---------------------------------------------------------------- batches


def test_padded_batches_and_response_mask():
    tokens = np.asarray([2, 10, 11, 4, 12, 13, 3, 2, 20, 4, 21, 3], dtype=np.int32)
    docs = Documents(tokens, np.asarray([0, 7]), np.asarray([7, 5]), response_starts=np.asarray([4, 3]))
    batch = pad_batch(docs, np.asarray([0, 1]), max_length=64)
    assert batch.shape == (2, 8)
    assert batch[1].tolist() == [2, 20, 4, 21, 3, 0, 0, 0]
    mask = response_mask(batch, docs.response_starts)
    # targets are tokens[:, 1:]; weight 1 on the response (12 13 / 21) and <eos>, 0 on prompt, <sep> and pads
    assert mask[0].tolist() == [0, 0, 0, 1, 1, 1, 0]
    assert mask[1].tolist() == [0, 0, 1, 1, 0, 0, 0]


def test_bucketed_batches_cover_every_document_once():
    lengths = np.random.default_rng(0).integers(1, 50, size=1003)
    batches = batch_indices(lengths, 16, shuffle=True, seed=3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1003))
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 10  # similar lengths share a batch
    assert not np.array_equal(flat, np.concatenate(batch_indices(lengths, 16, shuffle=True, seed=4)))


def test_balanced_class_weights():
    from llmctl.train.finetune_classify import class_weights

    weights = class_weights(np.asarray([30, 10]), "balanced")
    assert weights == pytest.approx([40 / 60, 40 / 20])
    assert class_weights(np.asarray([30, 10]), "none").tolist() == [1.0, 1.0]


# ---------------------------------------------------------------- guard rails


def _fake_parent(folder: Path, kind: str, tokenizer_texts=("some other words here",)) -> Path:
    from llmctl.data.tokenizers import train_tokenizer

    root = folder / "runs" / f"parent_{kind}"
    (root / "checkpoints").mkdir(parents=True)
    tok = train_tokenizer("word", list(tokenizer_texts))
    tok.save(root / "tokenizer")
    (root / "run.json").write_text(json.dumps({"kind": kind, "tokenizer_fingerprint": tok.fingerprint()}))
    (root / "config.yaml").write_text("model: {embedding_dim: 8, layers: 1, units: 8}\n")
    (root / "model.keras").write_bytes(b"placeholder")
    return root


def test_parent_must_be_a_language_model(sentiment):
    from llmctl.train import finetune

    folder, _ = sentiment
    parent = _fake_parent(folder, "classify")
    exp = experiment(folder, CLASSIFY.format(run="child", data="clf"), overrides=[f"finetune.parent={parent}"])
    with pytest.raises(ArtifactError, match="not a language model"):
        finetune.run(exp)


def test_data_made_with_another_tokenizer_than_the_parent_is_refused(sentiment):
    from llmctl.train import finetune

    folder, _ = sentiment
    parent = _fake_parent(folder, "lm")
    exp = experiment(folder, CLASSIFY.format(run="child", data="clf"), overrides=[f"finetune.parent={parent}"])
    with pytest.raises(ArtifactError) as info:
        finetune.run(exp)
    line = info.value.one_line()
    assert "another tokenizer than parent run" in line and f"tokenizer: {{from: {parent}}}" in line
    assert "\n" not in line


def test_a_rare_class_is_refused(sentiment):
    from llmctl.train import finetune

    folder, _ = sentiment
    exp = experiment(folder, CLASSIFY.format(run="rare", data="clf"), overrides=["finetune.min_class_examples=500"])
    with pytest.raises(DataError, match="min_class_examples=500"):
        finetune.run(exp)


def test_classify_needs_labels(tmp_path):
    from llmctl.train import finetune

    (tmp_path / "corpus.txt").write_text("just some text\nwithout any labels\n" * 20, encoding="utf-8")
    exp = experiment(tmp_path, CLASSIFY.format(run="nolabels", data="lm"),
                     overrides=["data.task=lm", f"data.train=[{tmp_path / 'corpus.txt'}]", "data.valid=[]",
                                "data.documents=line"])
    preprocess.run(exp)
    with pytest.raises(DataError, match="needs a labelled dataset"):
        finetune.run(exp)


def test_label_sets_that_differ_are_refused():
    from llmctl.evaluation.classify import check_same_labels
    from llmctl.train.finetune_classify import check_eval_labels

    with pytest.raises(DataError, match="label set differs between train and valid: 'c'"):
        check_eval_labels(np.asarray([0, 2]), np.asarray([5, 5, 0]), ["a", "b", "c"], "valid")
    with pytest.raises(DataError, match="label set differs"):
        check_same_labels(["neg", "pos"], ["neg", "neutral", "pos"], "data/x")


def test_task_lm_needs_a_parent(sentiment):
    from llmctl.train import finetune

    folder, _ = sentiment
    exp = experiment(folder, CLASSIFY.format(run="lm", data="clf"), overrides=["finetune.task=lm"])
    with pytest.raises(ConfigError, match="finetune.parent is not set"):
        finetune.run(exp)


def test_pairs_needs_a_pairs_dataset(sentiment):
    from llmctl.train import finetune

    folder, _ = sentiment
    exp = experiment(folder, CLASSIFY.format(run="p", data="clf"), overrides=["finetune.task=pairs"])
    with pytest.raises(DataError, match="prompt/response dataset"):
        finetune.run(exp)


# ---------------------------------------------------------------- vocabulary extension


def test_extension_is_detected_and_new_rows_start_at_the_mean():
    from llmctl.data.tokenizers import WordTokenizer
    from llmctl.models.lstm_lm import LSTMLanguageModel
    from llmctl.train.finetune_lm import extend_weights
    from llmctl.train.parent import extension_of

    specials = ["<pad>", "<unk>", "<bos>", "<eos>", "<sep>"]
    old = WordTokenizer(specials + ["a", "b", "c"])
    assert extension_of(old, WordTokenizer(specials + ["a", "b", "c", "d", "e"])) == 8
    assert extension_of(old, WordTokenizer(specials + ["b", "a", "c", "d"])) is None
    assert extension_of(old, old) is None

    parent = LSTMLanguageModel(vocab_size=8, embedding_dim=4, num_layers=1, units=5, name="lstm_lm")
    parent.build()
    child = LSTMLanguageModel(vocab_size=10, embedding_dim=4, num_layers=1, units=5, name="lstm_lm")
    child.build()
    extend_weights(parent, child, 8)
    emb, new_emb = parent.embedding.embeddings.numpy(), child.embedding.embeddings.numpy()
    assert np.allclose(new_emb[:8], emb)
    assert np.allclose(new_emb[8], emb[5:].mean(0)) and np.allclose(new_emb[9], emb[5:].mean(0))
    kernel, new_kernel = parent.head.kernel.numpy(), child.head.kernel.numpy()
    assert np.allclose(new_kernel[:, :8], kernel) and np.allclose(new_kernel[:, 8], kernel[:, 5:].mean(1))
    assert np.allclose(child.lstms[0].get_weights()[0], parent.lstms[0].get_weights()[0])


# ---------------------------------------------------------------- end to end


def test_classify_from_scratch_learns_a_separable_task(sentiment):
    from llmctl.evaluation.classify import evaluate_classifier
    from llmctl.progress import Reporter
    from llmctl.runs import RunDir
    from llmctl.train import finetune

    folder, exp = sentiment
    result = finetune.run(exp)
    assert result.values["valid_accuracy"] >= 0.95
    run = RunDir.of(exp)
    assert json.loads(run.labels.read_text()) == ["neg", "pos"]
    assert run.read_info()["kind"] == "classify" and run.model.is_file() and run.summary.is_file()
    card = evaluate_classifier(exp, run, Reporter("none")).values
    assert card["accuracy"] >= 0.95 and card["macro_f1"] >= 0.95
    assert sum(map(sum, card["confusion"])) == 60 and run.confusion_plot.is_file()


def test_bidirectional_classifier_from_scratch_learns_and_predicts(sentiment):
    from llmctl.models.classifier import load_classifier
    from llmctl.runs import RunDir
    from llmctl.train import finetune

    folder, exp = sentiment
    bi = experiment(folder, CLASSIFY.format(run="bi", data="clf"), "bi.yaml", overrides=["finetune.bidirectional=true"])
    result = finetune.run(bi)
    assert result.values["valid_accuracy"] >= 0.95
    model, _ = load_classifier(RunDir.of(bi), "best")
    assert model.bidirectional and model.pooled_width == 2 * 3 * 24


def test_classify_resumes_at_the_next_epoch(sentiment):
    from llmctl.train import finetune

    folder, exp = sentiment
    first = finetune.run(exp.model_copy(update={"train": exp.train.model_copy(update={"epochs": 1})}))
    assert first.values["epochs_completed"] == 1
    resumed = exp.model_copy(deep=True)
    resumed.run.resume = "always"
    second = finetune.run(resumed)
    assert second.values["epochs_completed"] == 2
    assert second.values["steps"] == 2 * first.values["steps"]


PAIRS = """
run: {{name: rev, dir: runs, progress: none, seed: 3}}
data: {{dir: data/rev, task: pairs, train: [{train}], valid: [{valid}]}}
tokenizer: {{kind: word}}
model: {{embedding_dim: 24, layers: 1, units: 96, dropout: 0.0, output_dropout: 0.0}}
train: {{epochs: 8, batch_size: 32, lr: 0.006, log_every: 50}}
finetune: {{task: pairs, max_length: 16}}
evaluate: {{max_generate: 100}}
"""


def test_pairs_learns_to_reverse_three_letters(tmp_path):
    from llmctl.evaluation.pairs import evaluate_pairs
    from llmctl.pairs_demo import write_reverse_data
    from llmctl.progress import Reporter
    from llmctl.runs import RunDir
    from llmctl.train import finetune

    paths = write_reverse_data(tmp_path, n_train=1500, n_valid=100, alphabet="abcdefghijkl", min_len=3, max_len=3)
    exp = experiment(tmp_path, PAIRS.format(train=paths["train"], valid=paths["valid"]))
    preprocess.run(exp)
    result = finetune.run(exp)
    assert result.values["valid_response_ppl"] < 1.5
    card = evaluate_pairs(exp, RunDir.of(exp), Reporter("none")).values
    assert card["exact_match"] >= 0.95, card
    assert card["bleu"] > 80 and card["chrf"] > 80


LM = """
run: {{name: {run}, dir: runs, progress: none}}
data: {{dir: data/{data}, task: lm, train: [{corpus}], documents: line, split: {{valid: 0.2}}}}
tokenizer: {{kind: word}}
model: {{embedding_dim: 8, layers: 1, units: 8}}
train: {{epochs: 1, batch_size: 4, bptt: 8, lr: 0.01, jit_compile: false}}
"""


@pytest.mark.slow
def test_domain_adaptation_starts_from_the_parent_and_reports_unk(tmp_path):
    from llmctl.runs import RunDir
    from llmctl.train import finetune, pretrain
    from llmctl.train.checkpoints import restore_model

    (tmp_path / "general.txt").write_text("the film was good\nthe plot was bad\n" * 30, encoding="utf-8")
    (tmp_path / "domain.txt").write_text("the plot was good\nthe zebra was bad\n" * 30, encoding="utf-8")
    parent = experiment(tmp_path, LM.format(run="parent", data="general", corpus="general.txt"), "parent.yaml")
    preprocess.run(parent)
    pretrain.run(parent)
    child_text = LM.format(run="child", data="domain", corpus="domain.txt") + (
        "finetune: {task: lm, parent: runs/parent, checkpoint: last}\n")
    child_text = child_text.replace("tokenizer: {kind: word}", "tokenizer: {from: runs/parent}")
    child_text = child_text.replace("lr: 0.01", "lr: 1.0e-12")  # a no-op update: weights stay the parent's
    child = experiment(tmp_path, child_text, "child.yaml", overrides=["train.max_steps=1"])
    preprocess.run(child)
    result = finetune.run(child)
    assert result.values["unk_rate_train"] == pytest.approx(30 / (30 * 10), abs=1e-9)  # "zebra": 1 of 10 tokens
    info = RunDir.of(child).read_info()
    assert info["kind"] == "lm" and info["parent"] == str(RunDir.of(parent).root)
    parent_model, _ = restore_model(RunDir.of(parent), "last")
    child_model, _ = restore_model(RunDir.of(child), "last")
    for a, b in zip(parent_model.get_weights(), child_model.get_weights(), strict=True):
        assert np.allclose(a, b, atol=1e-6)

    # the same corpus with an extending tokenizer (preprocess `tokenizer.extend`) and finetune.extend_vocab
    ext_text = child_text.replace("run: {name: child", "run: {name: child_ext").replace("data/domain", "data/ext")
    ext_text = ext_text.replace("tokenizer: {from: runs/parent}", "tokenizer: {from: runs/parent, extend: true}")
    ext_text = ext_text.replace("checkpoint: last}", "checkpoint: last, extend_vocab: true}")
    ext = experiment(tmp_path, ext_text, "child_ext.yaml", overrides=["train.max_steps=1"])
    preprocess.run(ext)
    result = finetune.run(ext)
    assert result.values["unk_rate_train"] == 0.0
    ext_model, _ = restore_model(RunDir.of(ext), "last")
    old_vocab = parent_model.vocab_size
    assert ext_model.vocab_size == old_vocab + 1  # "zebra"
    emb = parent_model.embedding.embeddings.numpy()
    new_emb = ext_model.embedding.embeddings.numpy()
    assert np.allclose(new_emb[:old_vocab], emb, atol=1e-6)
    assert np.allclose(new_emb[old_vocab], emb[5:].mean(0), atol=1e-6)


def test_prompt_prefix_matches_the_training_template():
    from llmctl.data.pair_prompts import cut_at_eos, prompt_prefix_ids
    from llmctl.data.preprocess import pair_template
    from llmctl.data.tokenizers import train_tokenizer

    tok = train_tokenizer("word", ["a b c"])
    ids, start = pair_template(tok.encode("c b a"), [])
    assert prompt_prefix_ids(tok, "c b a") == ids[:start]
    assert cut_at_eos([7, 8, 3, 9]) == [7, 8]
