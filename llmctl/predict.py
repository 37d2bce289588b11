"""`llmctl predict`: label new texts with a classification run — label and class probabilities per text.

    result = run(exp, texts=["a gripping, funny film", ...], as_json=True)
    result.values["predictions"]   # [{"text", "label", "probability", "probabilities": {label: p}}, ...]

Texts go through the run's own normalisation (`data.normalize` of its saved config) and tokenizer, and are truncated
to its `finetune.max_length` tokens, exactly like its training data. With `as_json` the result's `lines` are JSON
Lines, one object per text, in input order. A language-model or prompt→response run is refused: those continue text
with `llmctl generate`.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from llmctl.errors import ArtifactError, DataError
from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.runs import RunDir

BATCH_SIZE = 64


def _normalizer(run: RunDir):
    from llmctl.data.normalize import Normalizer
    from llmctl.schema import NormalizeConfig

    saved = (run.saved_config().get("data") or {}).get("normalize") or {}
    return Normalizer(NormalizeConfig.model_validate(saved))


class Classifier:
    """A classification run loaded once, labelling any number of texts (`llmctl predict`, `llmctl serve`)."""

    def __init__(self, run_dir: RunDir, checkpoint: str = "best"):
        from llmctl.data.tokenizers.checked import load_checked_tokenizer
        from llmctl.evaluation.classify import run_labels, run_max_length
        from llmctl.models.classifier import ClassifierPredictor, load_classifier

        run_dir.require_model()
        kind = run_dir.read_info().get("kind")
        if kind != "classify":
            raise ArtifactError(f"{run_dir.root} is a `{kind}` run, not a classifier: predict labels texts with a "
                                "finetune.task=classify run",
                                hint=f"use `llmctl generate {run_dir.root}` to continue text with it")
        self.run = run_dir
        self.labels = run_labels(run_dir)
        self.normalize = _normalizer(run_dir)
        self.tokenizer = load_checked_tokenizer(run_dir.tokenizer, run_dir.root)
        from llmctl.schema import FinetuneConfig

        self.max_length = run_max_length(run_dir, FinetuneConfig.model_fields["max_length"].default)
        self.model, self.loaded = load_classifier(run_dir, checkpoint)
        self.predictor = ClassifierPredictor(self.model, batch_size=BATCH_SIZE, max_length=self.max_length)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text after the run's normalisation (empty when nothing is left)."""
        return [self.tokenizer.encode(self.normalize(text)) for text in texts]

    def predict(self, texts: Sequence[str], ids: list[list[int]] | None = None) -> list[dict[str, Any]]:
        """{text, label, probability, probabilities} per text, in order."""
        from llmctl.data.doc_batches import Documents

        ids = self.encode(texts) if ids is None else ids
        logits = self.predictor.logits(Documents.from_token_lists(ids, max_length=self.max_length))
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        predictions: list[dict[str, Any]] = []
        for text, row in zip(texts, probs, strict=True):
            best = int(row.argmax())
            predictions.append({"text": text, "label": self.labels[best], "probability": float(row[best]),
                                "probabilities": {name: float(p) for name, p in zip(self.labels, row, strict=True)}})
        return predictions


def run(exp, reporter: Reporter | None = None, texts: Sequence[str] | None = None, as_json: bool = False) -> Result:
    """Predict a label for every text with the classifier of run `exp.run.dir/exp.run.name`."""
    reporter = reporter or Reporter("none")
    run_dir = RunDir.of(exp)
    run_dir.require_model()
    info = run_dir.read_info()
    kind = info.get("kind")
    if kind != "classify":
        raise ArtifactError(f"{run_dir.root} is a `{kind}` run, not a classifier: predict labels texts with a "
                            "finetune.task=classify run",
                            hint=f"use `llmctl generate {run_dir.root}` to continue text with it")
    texts = list(texts or [])
    if not texts:
        raise DataError("no texts to classify", hint="pass --text TEXT, --file FILE, or pipe lines on stdin (--file -)")
    classifier = Classifier(run_dir, exp.evaluate.checkpoint)
    ids = classifier.encode(texts)
    empty = sum(1 for i in ids if not i)
    if empty:
        reporter.warn(f"{empty} text(s) have no tokens after normalisation; their prediction is the classifier's "
                      "prior")
    predictions = classifier.predict(texts, ids)
    lines = [json.dumps(p, ensure_ascii=False) for p in predictions] if as_json else []
    return Result(title=f"predict: {run_dir.root.name}", lines=lines,
                  values={"run": str(run_dir.root), "checkpoint": classifier.loaded.get("checkpoint"),
                          "labels": classifier.labels, "predictions": predictions})
