"""Tiny but real run directories for the export tests, built the way llmctl's trainers leave them.

A char tokenizer trained on a few sentences, a 2-layer LSTM language model (or a classifier over the same encoder)
given a few Adam steps on that text (as `<eos>`-separated documents), config.yaml from `config.dump_yaml`, run.json
through `RunDir.write_info`, the weights in a `best` checkpoint written by `llmctl.train.checkpoints.CheckpointStore`,
and a summary.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmctl import atomic
from llmctl.config import dump_yaml
from llmctl.data.tokenizers import EOS_ID
from llmctl.runs import RunDir
from llmctl.schema import Experiment

TEXT = (
    "The quick brown fox jumps over the lazy dog. A language model predicts the next character from the ones "
    "before it. The dog sleeps in the sun while the fox runs into the forest. Small models run fast on phones. "
    "The quick brown fox jumps again, and the lazy dog does not move at all. "
)
PROMPT = "The quick brown "
LABELS = ["negative", "positive"]
REVIEWS = [("a dull and tiring film", 0), ("bad acting and a weak plot", 0), ("a wonderful and moving story", 1),
           ("great fun from start to end", 1)]


def tiny_experiment(root: Path, name: str, **sections) -> Experiment:
    data = {"run": {"name": name, "dir": str(root), "seed": 7},
            "model": {"embedding_dim": 16, "layers": 2, "units": 24, "dropout": 0.1, "output_dropout": 0.1},
            "finetune": {"max_length": 24, "head_units": 8, "pooling": "concat"}}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return Experiment.model_validate(data)


def _tokenizer(texts):
    from llmctl.data.tokenizers import train_tokenizer

    return train_tokenizer("char", texts)


def _write_common(exp: Experiment, tokenizer, kind: str, **info) -> RunDir:
    """config.yaml, tokenizer/ and run.json; like the trainers, run.json's `tokenizer_fingerprint` is the dataset
    fingerprint (tokenizer + the data.normalize settings)."""
    from llmctl.data.normalize import Normalizer
    from llmctl.data.preprocess import dataset_fingerprint

    run = RunDir.of(exp)
    run.root.mkdir(parents=True, exist_ok=True)
    atomic.write_text(run.config, dump_yaml(exp))
    tokenizer.save(run.tokenizer)
    fingerprint = dataset_fingerprint(tokenizer.fingerprint(), Normalizer(exp.data.normalize).settings())
    run.write_info(kind=kind, tokenizer_fingerprint=fingerprint, vocab_size=tokenizer.vocab_size, **info)
    return run


def _train(model, loss_fn, steps: int, seed: int) -> float:
    import keras

    from llmctl.tfenv import import_tf

    tf = import_tf()
    keras.utils.set_random_seed(seed)
    optimizer = keras.optimizers.Adam(learning_rate=0.02)
    optimizer.build(model.trainable_variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    loss = None
    for _ in range(steps):
        loss = float(step())
    return loss, optimizer


def _save_best(run: RunDir, model, optimizer, loss: float, steps: int) -> None:
    from llmctl.train.checkpoints import CheckpointStore

    store = CheckpointStore(run.checkpoints, model=model, optimizer=optimizer, carry_shapes=[], keep_last=1)
    store.save("best", step=steps, progress={"epoch": 0, "step": steps}, states=None,
               metrics={"valid_loss": loss})
    atomic.write_json(run.summary, {"status": "finished", "best_valid_loss": loss, "best_step": steps,
                                    "steps": steps, "devices": {"cpus": 1}})


def make_lm_run(root: Path, name: str = "tiny_lm", steps: int = 150, kind: str = "lm", keras_only: bool = False,
                **sections) -> RunDir:
    """A trained language-model run (`kind` lm or pairs); `keras_only`: model.keras instead of checkpoints."""
    from llmctl.models.lstm_lm import build_language_model
    from llmctl.tfenv import import_tf

    tf = import_tf()
    exp = tiny_experiment(root, name, **sections)
    tokenizer = _tokenizer([TEXT])
    run = _write_common(exp, tokenizer, kind)
    model = build_language_model(exp.model, tokenizer.vocab_size)
    # like a multi-document corpus after preprocess: every document (here: sentence) ends with <eos>
    ids = np.asarray([i for doc in TEXT.split(". ") * 2 for i in [*tokenizer.encode(doc.strip()), EOS_ID]], np.int32)
    width = 48
    rows = len(ids) // (width + 1)
    windows = ids[: rows * (width + 1)].reshape(rows, width + 1)
    inputs, targets = tf.constant(windows[:, :-1]), tf.constant(windows[:, 1:])

    def loss_fn():
        logits, _ = model(inputs, training=True)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))

    loss, optimizer = _train(model, loss_fn, steps, exp.run.seed)
    if keras_only:
        from llmctl.models.keras_file import save_model_file

        save_model_file(model, run.model)
    else:
        _save_best(run, model, optimizer, loss, steps)
    return run


def make_classifier_run(root: Path, name: str = "tiny_classifier", steps: int = 30, **sections) -> RunDir:
    from llmctl.models.classifier import build_classifier
    from llmctl.tfenv import import_tf

    tf = import_tf()
    from llmctl.data.normalize import Normalizer

    normalize = {"lowercase": True, "collapse_whitespace": True, "stopwords": "english"}
    finetune = {"task": "classify", **sections.pop("finetune", {})}
    exp = tiny_experiment(root, name, data={"task": "classify", "normalize": normalize}, finetune=finetune,
                          **sections)
    normalizer = Normalizer(exp.data.normalize)
    texts = [normalizer(text) for text, _ in REVIEWS]
    tokenizer = _tokenizer(texts)
    run = _write_common(exp, tokenizer, "classify", labels=LABELS, num_classes=len(LABELS))
    atomic.write_json(run.labels, LABELS)
    model = build_classifier(exp.model, vocab_size=tokenizer.vocab_size, num_classes=len(LABELS),
                             finetune_cfg=exp.finetune)
    width = exp.finetune.max_length
    ids = np.zeros((len(REVIEWS), width), np.int32)
    for row, text in enumerate(texts):
        encoded = tokenizer.encode(text)[:width]
        ids[row, : len(encoded)] = encoded
    inputs = tf.constant(ids)
    labels = tf.constant([label for _, label in REVIEWS], tf.int32)

    def loss_fn():
        logits = model(inputs, training=True)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))

    loss, optimizer = _train(model, loss_fn, steps, exp.run.seed)
    _save_best(run, model, optimizer, loss, steps)
    return run


def read_manifest(folder: Path) -> dict:
    return json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
