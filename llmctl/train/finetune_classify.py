"""`finetune.task: classify` — a text classifier on top of a pretrained language model's encoder (ULMFiT), or the
same architecture from scratch when `finetune.parent` is null (the baseline to compare against).

Labels come from the dataset (ids in manifest order; names saved to the run's labels.json). Training: padded,
length-bucketed batches of whole documents (first `finetune.max_length` tokens), cross-entropy weighted per class
with `class_weights: balanced` (w_c = N / (C · n_c)), layer groups `[embedding, lstm_0 .., head]` with gradual
unfreezing and discriminative learning rates (`llmctl.train.ulmfit`), any `train.schedule` (slanted_triangular is
ULMFiT's). The validation split is evaluated after every epoch; the best epoch by accuracy (macro-F1 with balanced
class weights) is kept and saved as `model.keras`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llmctl import atomic
from llmctl.data.doc_batches import Documents
from llmctl.errors import DataError
from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.runs import RunDir
from llmctl.tfenv import import_tf
from llmctl.train import parent as parent_mod
from llmctl.train.tasks import DocumentTask, init_embeddings, model_sizes, require_valid

tf = import_tf()


def check_labelled(ds) -> list[str]:
    """The dataset's label names, or a one-line error when it has none."""
    names = ds.label_names
    if ds.task != "classify" or not names or not ds.layout.labels("train").is_file():
        raise DataError(f"finetune.task=classify needs a labelled dataset, but {ds.root} was built with "
                        f"data.task={ds.task} (no labels)",
                        hint="set data.task=classify with a label column and run `llmctl preprocess` again")
    return names


def check_class_counts(counts: np.ndarray, names: list[str], minimum: int) -> None:
    """Refuse a class with fewer than `minimum` training examples."""
    for name, count in zip(names, counts, strict=True):
        if count < minimum:
            raise DataError(f"class {name!r} has {int(count)} training example(s), fewer than "
                            f"finetune.min_class_examples={minimum}",
                            hint="add training examples for it, drop the class, or lower finetune.min_class_examples")


def check_eval_labels(eval_labels: np.ndarray, train_counts: np.ndarray, names: list[str], split: str) -> None:
    """Refuse evaluation labels the training split never shows (the label sets differ)."""
    if eval_labels.size and (eval_labels.min() < 0 or eval_labels.max() >= len(names)):
        raise DataError(f"the {split} split has label ids outside the {len(names)} training labels",
                        hint="run `llmctl preprocess` again so both splits share one label set")
    unseen = sorted({names[i] for i in np.unique(eval_labels) if train_counts[i] == 0})
    if unseen:
        raise DataError(f"label set differs between train and {split}: {', '.join(map(repr, unseen))} occur(s) in "
                        f"{split} but never in train",
                        hint="add training examples with those labels or remove them from the evaluation data")


def limit_subset(labels: np.ndarray, num_classes: int, limit: int, *, balanced: bool, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, stratified subset of `limit` documents (`data.train_limit`): per class
    `limit / classes` when `balanced` (the remainder to the first classes; a class with fewer documents gives all
    it has and the rest is filled from the others), else proportional to the class sizes. All documents when
    `limit` >= their number."""
    labels = np.asarray(labels)
    if limit >= labels.size:
        return np.arange(labels.size)
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    sizes = np.array([p.size for p in pools])
    if balanced:
        want = np.full(num_classes, limit // num_classes) + (np.arange(num_classes) < limit % num_classes)
    else:
        want = np.floor(sizes * limit / labels.size).astype(np.int64)
        order = np.argsort(-(sizes * limit / labels.size - want), kind="stable")
        want[order[:limit - want.sum()]] += 1
    take = np.minimum(want, sizes)
    while take.sum() < limit:  # a small class gave all it has: fill from the classes with documents left
        take[np.argmin(np.where(take < sizes, take, np.iinfo(np.int64).max))] += 1   # the smallest first
    return np.sort(np.concatenate([p[:n] for p, n in zip(pools, take, strict=True)]))


def class_weights(counts: np.ndarray, mode: str) -> np.ndarray:
    """Per-class loss weights: ones, or `balanced` = N / (C · n_c) (0 for a class without examples)."""
    counts = np.asarray(counts, dtype=np.float64)
    if mode == "none":
        return np.ones_like(counts, dtype=np.float32)
    weights = np.zeros_like(counts)
    present = counts > 0
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def start_id_for(parent) -> int | None:
    """`<eos>` when the parent language model read `<eos>`-separated documents (the state it starts a document
    from), else None."""
    from llmctl.data.tokenizers import EOS_ID

    if parent is None:
        return None
    try:
        manifest = json.loads(Path(parent.info.get("dataset", "")).joinpath("manifest.json").read_text("utf-8"))
    except (OSError, ValueError):
        return EOS_ID  # dataset gone: documents end with <eos> unless the corpus was one continuous text file
    eos = (manifest.get("documents") or {}).get("eos_after_document", {}).get("train", True)
    return EOS_ID if eos else None


class ClassifyTask(DocumentTask):
    """Labelled whole documents → class logits; the best evaluation by accuracy (macro-F1 when balanced)."""

    kind, title, mode = "classify", "finetune classify", "max"

    def open(self, dist) -> None:
        from llmctl.data.dataset import open_dataset

        super().open(dist)
        exp, ft = self.exp, self.exp.finetune
        self.ds = ds = open_dataset(exp.data.dir)
        self.names = names = check_labelled(ds)
        if self.parent is not None:
            parent_mod.check_dataset_tokenizer(self.parent, ds)
        require_valid(ds)
        self.vocab_size = ds.vocab_size
        train = Documents.from_dataset(ds, "train", max_length=ft.max_length, labels=True)
        self.valid_docs = Documents.from_dataset(ds, "valid", max_length=ft.max_length, labels=True)
        if exp.data.train_limit is not None:
            train = train.subset(limit_subset(train.labels, len(names), exp.data.train_limit,
                                              balanced=exp.data.train_limit_balanced, seed=exp.data.train_limit_seed))
        self.train_docs = train
        self.counts = np.bincount(train.labels, minlength=len(names))
        check_class_counts(self.counts, names, ft.min_class_examples)
        check_eval_labels(self.valid_docs.labels, self.counts, names, "valid")
        self.weights = class_weights(self.counts, ft.class_weights)
        self.monitor = "macro_f1" if ft.class_weights == "balanced" else "accuracy"
        self.start_id = start_id_for(self.parent)

    def run_info(self) -> dict:
        return {"parent": None if self.parent is None else self.parent.name, "labels": self.names,
                "num_classes": len(self.names), "start_id": self.start_id}

    def build(self, resuming: bool) -> None:
        from llmctl.models.classifier import ClassifierPredictor, build_classifier, copy_encoder_weights

        exp, ft, cfg = self.exp, self.exp.finetune, self.exp.train
        if self.dist.is_chief:
            atomic.write_json(RunDir.of(exp).labels, self.names)
        self.model = build_classifier(exp.model, vocab_size=self.vocab_size, num_classes=len(self.names),
                                      finetune_cfg=ft, start_id=self.start_id)
        if self.parent is None:
            stats = init_embeddings(exp, self.model.encoder.embedding, self.ds.tokenizer())
            self.origin = "from scratch"
            if stats:
                self.reporter.info(f"embedding initialised from {exp.model.pretrained_embeddings}: "
                                   f"{stats['coverage']:.1%} of the vocabulary covered")
        else:
            lm, info = parent_mod.load_parent_model(self.parent, ft.checkpoint)
            copy_encoder_weights(lm, self.model)
            self.origin = f"encoder from {self.parent.name} ({ft.checkpoint} checkpoint, step {info.get('step')})"
        self.reader = None
        if ft.backprop_tokens is not None:  # BPT3C: chunks of train.bptt, gradients through the tail only
            from llmctl.train.bpt3c import ChunkedReader

            self.reader = ChunkedReader(self.model, chunk=cfg.bptt, backprop_tokens=ft.backprop_tokens)
            self.batch_axes = self.reader.batch_axes + (0,)
        self.weight_table = tf.constant(self.weights)
        self.predictor = ClassifierPredictor(self.model, batch_size=max(cfg.batch_size, 64), max_length=ft.max_length)

    def host_batch(self, index: np.ndarray, tokens: np.ndarray) -> tuple:
        labels = self.train_docs.labels[index].astype(np.int32)
        w = self.weights[labels]
        if self.reader is None:
            return tokens, labels, w
        return (*self.reader.training_batch(tokens, labels), w)

    def loss_sum(self, batch, training: bool):
        if self.reader is None:
            tokens, labels, w = batch
            logits = self.model(tokens, training=training)
        else:
            *inputs, w = batch
            logits, labels = self.reader.logits(*inputs, training=training)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.cast(logits, tf.float32))
        return tf.reduce_sum(ce * tf.cast(w, tf.float32))

    def evaluate(self) -> dict[str, float]:
        from llmctl.evaluation.classify_metrics import class_report

        valid = self.valid_docs
        logits = self.predictor.logits(valid)
        report = class_report(valid.labels, logits.argmax(-1), len(self.names))
        logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        loss = float(-logp[np.arange(len(valid)), valid.labels].mean())
        return {"loss": loss, "accuracy": report.accuracy, "macro_f1": report.macro_f1}

    def logged(self, metrics: dict[str, float]) -> dict:
        return {"loss": metrics["loss"], "ppl": None}

    def describe_data(self) -> list:
        names, ft = self.names, self.exp.finetune
        return [("dataset", f"{self.ds.root} ({len(self.train_docs):,} train / {len(self.valid_docs):,} valid docs)"),
                ("classes", ", ".join(f"{n} ({c:,})" for n, c in zip(names, self.counts, strict=True))),
                ("class weights", ft.class_weights if ft.class_weights == "none" else
                 ", ".join(f"{n}: {w:.3g}" for n, w in zip(names, self.weights, strict=True)))]

    def describe_model(self, trainer) -> list:
        ft = self.exp.finetune
        return [("model", f"{self.origin}: {model_sizes(self.model)}"),
                ("head", f"pooling {ft.pooling}, {ft.head_units} hidden units, dropout {ft.head_dropout}, "
                         f"norm {ft.head_norm}; {self.model.count_params():,} parameters")]

    def summary(self, p) -> dict:
        best = p.best_metrics
        return {**super().summary(p), "train_documents": len(self.train_docs), "train_limit": self.exp.data.train_limit,
                "valid_accuracy": best.get("accuracy"), "valid_macro_f1": best.get("macro_f1"),
                "valid_loss": best.get("loss")}

    def summary_details(self, p) -> dict:
        return {**super().summary_details(p), "labels": self.names}

    def result_lines(self, run, p, which: str, stop: str) -> list[str]:
        return [f"model.keras holds the best epoch ({p.best_epoch}) by valid {self.monitor}; "
                f"`llmctl evaluate {run.root}` for per-class scores, `llmctl predict` for new texts"]


def run(exp, reporter: Reporter, parent) -> Result:
    from llmctl.train.driver import drive

    return drive(exp, ClassifyTask(exp, parent), reporter)
