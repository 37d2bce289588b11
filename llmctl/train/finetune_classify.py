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
import time
from pathlib import Path

import numpy as np

from llmctl import atomic
from llmctl.data.doc_batches import Documents, iterate
from llmctl.errors import DataError
from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.tfenv import import_tf, seed_everything
from llmctl.train import parent as parent_mod

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


def build_model(exp, ds, parent, num_classes: int, reporter: Reporter):
    """(classifier, description): encoder from the parent's weights, or fresh from `exp.model`."""
    from llmctl.models.classifier import build_classifier, copy_encoder_weights

    ft = exp.finetune
    if parent is None:
        model = build_classifier(exp.model, vocab_size=ds.vocab_size, num_classes=num_classes, finetune_cfg=ft)
        if exp.model.pretrained_embeddings is not None:
            from llmctl.models.embeddings_init import load_pretrained_vectors

            matrix, stats = load_pretrained_vectors(exp.model.pretrained_embeddings, ds.tokenizer(),
                                                    exp.model.embedding_dim, seed=exp.run.seed)
            model.encoder.embedding.embeddings.assign(matrix)
            reporter.info(f"embedding initialised from {exp.model.pretrained_embeddings}: "
                          f"{stats['coverage']:.1%} of the vocabulary covered")
        return model, f"from scratch: {exp.model.layers}×{exp.model.units} LSTM, emb {exp.model.embedding_dim}"
    parent_mod.adopt_architecture(exp, parent, reporter)
    lm, info = parent_mod.load_parent_model(parent, ft.checkpoint)
    arch = exp.model
    model = build_classifier(arch, vocab_size=lm.vocab_size, num_classes=num_classes, finetune_cfg=ft,
                             start_id=start_id_for(parent))
    copy_encoder_weights(lm, model)
    return model, (f"encoder from {parent.name} ({ft.checkpoint} checkpoint, step {info.get('step')}): "
                   f"{arch.layers}×{arch.units} LSTM, emb {arch.embedding_dim}")


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


def make_task(exp, model, train: Documents, valid: Documents, weights: np.ndarray, label_names: list[str]):
    from llmctl.evaluation.classify_metrics import class_report
    from llmctl.models.classifier import ClassifierPredictor
    from llmctl.train.doc_trainer import DocTask

    ft, cfg = exp.finetune, exp.train
    weight_table = tf.constant(weights)

    def loss_fn(tokens, labels, training=True):
        logits = model(tokens, training=training)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        w = tf.gather(weight_table, labels)
        return tf.reduce_sum(ce * w) / tf.maximum(tf.reduce_sum(w), 1e-9)

    signature = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)]
    reader = None
    if ft.backprop_tokens is not None:  # BPT3C: chunks of train.bptt, gradients through the tail only
        from llmctl.train.bpt3c import ChunkedReader

        reader = ChunkedReader(model, chunk=cfg.bptt, backprop_tokens=ft.backprop_tokens)
        loss_fn, signature = reader.loss_function(weight_table), reader.input_signature

    def batches(epoch: int):
        for index, tokens in iterate(train, cfg.batch_size, ft.max_length, shuffle=True,
                                     seed=exp.run.seed * 1000 + epoch):
            yield (tokens, train.labels[index]) if reader is None else reader.training_batch(tokens,
                                                                                              train.labels[index])

    predictor = ClassifierPredictor(model, batch_size=max(cfg.batch_size, 64), max_length=ft.max_length)

    def evaluate() -> dict[str, float]:
        logits = predictor.logits(valid)
        report = class_report(valid.labels, logits.argmax(-1), len(label_names))
        logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
        loss = float(-logp[np.arange(len(valid)), valid.labels].mean())
        return {"loss": loss, "accuracy": report.accuracy, "macro_f1": report.macro_f1}

    steps = -(-len(train) // cfg.batch_size)
    monitor = "macro_f1" if ft.class_weights == "balanced" else "accuracy"
    return DocTask(name="classify", model=model, groups=model.layer_groups(), loss_fn=loss_fn,
                   input_signature=signature, batches=batches, steps_per_epoch=steps, evaluate=evaluate,
                   monitor=monitor, mode="max")


def run(exp, reporter: Reporter, parent) -> Result:
    from llmctl.data.dataset import open_dataset
    from llmctl.train import doc_run, doc_trainer

    t_start = time.perf_counter()
    ft = exp.finetune
    doc_trainer.check_supported(exp.train, exp.distribute, "classify")
    seed_everything(exp.run.seed, exp.run.deterministic)
    ds = open_dataset(exp.data.dir)
    names = check_labelled(ds)
    if parent is not None:
        parent_mod.check_dataset_tokenizer(parent, ds)
    doc_run.require_valid(ds)
    train = Documents.from_dataset(ds, "train", max_length=ft.max_length, labels=True)
    valid = Documents.from_dataset(ds, "valid", max_length=ft.max_length, labels=True)
    if exp.data.train_limit is not None:
        train = train.subset(limit_subset(train.labels, len(names), exp.data.train_limit,
                                          balanced=exp.data.train_limit_balanced, seed=exp.data.train_limit_seed))
    counts = np.bincount(train.labels, minlength=len(names))
    check_class_counts(counts, names, ft.min_class_examples)
    check_eval_labels(valid.labels, counts, names, "valid")
    weights = class_weights(counts, ft.class_weights)

    model, described = build_model(exp, ds, parent, len(names), reporter)
    task = make_task(exp, model, train, valid, weights, names)
    stepper = doc_trainer.build_stepper(task, exp.train, ft, jit_compile=exp.train.jit_compile is True)
    run_dir, resuming = doc_run.prepare_run(exp, ds, kind="classify", parent=parent,
                                            extra_info={"labels": names, "num_classes": len(names),
                                                        "start_id": model.start_id})
    atomic.write_json(run_dir.labels, names)
    store = doc_run.checkpoint_store(run_dir, model, stepper, exp.train.keep_last)
    start = doc_run.restore_start(store, model, stepper.average) if resuming else None
    if start:
        reporter.info(f"resuming {run_dir.root} after epoch {start['epoch']} (step {start['step']})")
    reporter.table("finetune classify", [
        ("run", str(run_dir.root)), ("dataset", f"{ds.root} ({len(train):,} train / {len(valid):,} valid docs)"),
        ("model", described), ("head", f"pooling {ft.pooling}, {ft.head_units} hidden units, dropout "
                                       f"{ft.head_dropout}, norm {ft.head_norm}; {model.count_params():,} parameters"),
        ("classes", ", ".join(f"{n} ({c:,})" for n, c in zip(names, counts, strict=True))),
        ("class weights", ft.class_weights if ft.class_weights == "none" else
         ", ".join(f"{n}: {w:.3g}" for n, w in zip(names, weights, strict=True)))])

    outcome, log = doc_run.fit(exp, task, stepper, store, run_dir, start, reporter, perplexity=False)
    final = task.evaluate()
    summary = {**doc_run.summary_base(run_dir, "classify", parent, outcome, model, t_start),
               "train_documents": len(train), "train_limit": exp.data.train_limit,
               "valid_accuracy": final["accuracy"], "valid_macro_f1": final["macro_f1"], "valid_loss": final["loss"],
               "labels": names, "history": outcome.history}
    doc_run.finish(run_dir, model, log, summary)
    values = {k: v for k, v in summary.items() if k not in ("history", "labels")}
    return Result(title=f"finetune classify: {run_dir.root.name}", values=values,
                  lines=[f"model.keras holds the best epoch ({outcome.best_epoch}) by valid {task.monitor}; "
                         f"`llmctl evaluate {run_dir.root}` for per-class scores, `llmctl predict` for new texts"])
