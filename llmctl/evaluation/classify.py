"""`llmctl evaluate` on a classification run: accuracy, per-class precision/recall/F1, macro-F1, confusion matrix.

    result = evaluate_classifier(exp, run, reporter)     # `exp.evaluate.split` of `exp.data.dir`
    result = evaluate_run(exp, opened, reporter)         # the same, as `llmctl.evaluate` dispatches it

Shown as Rich tables through the reporter; the confusion matrix is also drawn to `RunDir.confusion_plot` (PNG), and
the whole protocol card is saved as `eval/<split>.json`. `--json` prints the values: `accuracy`, `macro_f1`,
`macro_precision`, `macro_recall`, `weighted_f1`, `loss`, `per_class`, `confusion`, `labels`, ...
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmctl import atomic
from llmctl.errors import ArtifactError, ConfigError, DataError
from llmctl.evaluation.card import save_card
from llmctl.results import Result
from llmctl.runs import RunDir


def run_labels(run: RunDir) -> list[str]:
    if not run.labels.is_file():
        raise ArtifactError(f"{run.root} has no labels.json", hint="the run is incomplete; run finetune again")
    try:
        labels = json.loads(run.labels.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"{run.labels} is damaged ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})",
                            hint="the run is damaged; run finetune again") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, (str, int)) for x in labels):
        raise ArtifactError(f"{run.labels} is damaged (not a list of label names)",
                            hint="the run is damaged; run finetune again")
    return [str(x) for x in labels]


def check_same_labels(run_names: list[str], data_names: list[str], ds_root) -> None:
    if list(run_names) != list(data_names):
        raise DataError(f"label set differs between the run ({', '.join(run_names)}) and dataset {ds_root} "
                        f"({', '.join(data_names) or 'no labels'})",
                        hint="evaluate on data preprocessed with the run's labels (same label column and classes)")


def check_run_dataset(run: RunDir, ds) -> None:
    """The dataset must speak the run's tokenizer (and normalisation)."""
    ds.check_fingerprint(run.read_info().get("tokenizer_fingerprint") or None, what=f"run {run.root}",
                         hint=f"run preprocess with `tokenizer: {{from: {run.root}}}`")


def confusion_png(matrix: np.ndarray, names: Sequence[str], path: Path, *, title: str) -> Path:
    """Draw a confusion matrix (rows = reference, columns = predicted) with counts; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    size = min(2.0 + 0.6 * n, 16.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size), dpi=110)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=list(names), rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels=list(names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title)
    if n <= 30:
        high = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > high else "black")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic.write_bytes(path, buffer.getvalue())


def run_max_length(run: RunDir, default: int | None) -> int | None:
    """The `finetune.max_length` the run was trained with (documents are truncated the same way; None = whole)."""
    value = (run.saved_config().get("finetune") or {}).get("max_length", default)
    return None if value is None else int(value)


def evaluate_run(exp, opened, reporter) -> Result:
    """Entry point for `llmctl.evaluate` (`opened`: `llmctl.inference_run.InferenceRun`)."""
    return evaluate_classifier(exp, opened.run, reporter)


def evaluate_classifier(exp, run: RunDir, reporter) -> Result:
    """Score the run's classifier on `exp.evaluate.split`; see the module docstring for the outputs."""
    from llmctl.data.dataset import open_dataset
    from llmctl.data.doc_batches import Documents
    from llmctl.evaluation.classify_metrics import class_report
    from llmctl.models.classifier import ClassifierPredictor, load_classifier

    ev = exp.evaluate
    if ev.files:
        raise ConfigError("evaluate.files holds unlabelled text; a classifier is evaluated on a labelled split",
                          hint="use --split train|valid|test, or `llmctl predict` to label new texts")
    t0 = time.perf_counter()
    names = run_labels(run)
    ds = open_dataset(exp.data.dir)
    check_run_dataset(run, ds)
    check_same_labels(names, ds.label_names, ds.root)
    split = ev.split
    max_length = run_max_length(run, exp.finetune.max_length)
    docs = Documents.from_dataset(ds, split, max_length=max_length, labels=True)
    model, loaded = load_classifier(run, ev.checkpoint)
    logits = ClassifierPredictor(model, batch_size=max(exp.train.batch_size, 64), max_length=max_length).logits(docs)
    predicted = logits.argmax(-1)
    report = class_report(docs.labels, predicted, len(names))
    logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
    loss = float(-logp[np.arange(len(docs)), docs.labels].mean()) if len(docs) else float("nan")

    per_class = report.per_class(names)
    reporter.table(f"{run.root.name}: {split} per class",
                   [[c["label"], c["precision"], c["recall"], c["f1"], c["support"]] for c in per_class]
                   + [["macro", report.macro_precision, report.macro_recall, report.macro_f1,
                       int(report.support.sum())]],
                   columns=("class", "precision", "recall", "F1", "support"))
    reporter.table(f"{run.root.name}: {split} confusion (rows = reference, columns = predicted)",
                   [[name, *map(int, row)] for name, row in zip(names, report.confusion, strict=True)],
                   columns=("", *names))
    confusion_png(report.confusion, names, run.confusion_plot,
                  title=f"{run.root.name} — {split} (accuracy {report.accuracy:.1%})")
    measures: dict[str, Any] = {
        "accuracy": report.accuracy, "macro_f1": report.macro_f1, "macro_precision": report.macro_precision,
        "macro_recall": report.macro_recall, "weighted_f1": report.weighted_f1, "loss": loss,
        "checkpoint": loaded.get("checkpoint"), "confusion_plot": str(run.confusion_plot),
        "labels": names, "per_class": per_class, "confusion": report.confusion.tolist(),
    }
    return save_card(run, ds, task="classify", split=split, examples=len(docs), measures=measures, started=t0,
                     settings={"max_length": max_length}, shown=[f"confusion matrix: {run.confusion_plot}"])
