"""What an export is made from: a trained run directory, checked and loaded (model, tokenizer, labels, metrics).

    source = load_source(RunDir(path))      # ArtifactError (one line) for anything missing or inconsistent

Language models (`lm`, `pairs`) come back through `llmctl.train.checkpoints.restore_model`, classifiers through
`llmctl.models.classifier.load_classifier` (both: the `best` checkpoint, or `last` for runs without validation).
A run that only has `model.keras` (no checkpoint left) is loaded with `keras.saving.load_model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmctl.data.normalize import Normalizer
from llmctl.errors import ArtifactError
from llmctl.runs import RunDir

KINDS = ("lm", "classify", "pairs")
CHECKPOINT = "best"  # falls back to `last` for runs without a validation split (see checkpoints.resolve_checkpoint)


@dataclass
class ExportSource:
    run: RunDir
    kind: str                   # lm | classify | pairs
    exp: Any                    # the run's own Experiment (config.yaml): model / finetune settings it was trained with
    model: Any
    tokenizer: Any
    labels: list[str] | None
    checkpoint: dict[str, Any]  # which, path, step, valid_loss
    normalizer: Any             # llmctl.data.normalize.Normalizer of the run's data.normalize
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def max_length(self) -> int:
        return int(self.exp.finetune.max_length)


def load_source(run: RunDir) -> ExportSource:
    run.require_model()
    info = run.read_info()
    kind = info.get("kind")
    if kind not in KINDS:
        raise ArtifactError(f"{run.info} has kind {kind!r}; export knows {', '.join(KINDS)}",
                            hint="the run directory is damaged or from another tool; train it again")
    tokenizer = _tokenizer(run)
    labels = _labels(run) if kind == "classify" else None
    if kind == "classify" and not info.get("num_classes"):
        raise ArtifactError(f"{run.info} records no num_classes for this classifier run",
                            hint="the run directory is damaged; run finetune again")
    exp = _experiment(run)
    normalizer = Normalizer(exp.data.normalize)
    _check_fingerprint(run, info, tokenizer, normalizer)
    model, checkpoint = _load_float32(run, kind)
    vocab = model.encoder.vocab_size if kind == "classify" else model.vocab_size
    if vocab != tokenizer.vocab_size:
        raise ArtifactError(f"model of {run.root} has a {vocab}-token vocabulary but its tokenizer has "
                            f"{tokenizer.vocab_size}", hint="the run's tokenizer/ does not belong to its model; "
                                                            "train the run again")
    if kind == "classify" and model.num_classes != len(labels):
        raise ArtifactError(f"classifier of {run.root} has {model.num_classes} classes but labels.json names "
                            f"{len(labels)}", hint="the run's labels.json does not belong to its model")
    return ExportSource(run=run, kind=kind, exp=exp, model=model, tokenizer=tokenizer, labels=labels,
                        checkpoint=checkpoint, normalizer=normalizer, summary=_summary(run))


def _load_float32(run: RunDir, kind: str):
    """The model under the float32 dtype policy (exports compute in float32 whatever the training precision)."""
    from llmctl.tfenv import import_tf

    import_tf()
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        return _from_checkpoint(run, kind) if _has_checkpoint(run) else _from_keras_file(run)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _experiment(run: RunDir):
    from llmctl import config as config_mod

    if not run.config.is_file():
        raise ArtifactError(f"{run.root} has no config.yaml", hint="pass a run directory made by llmctl")
    return config_mod.validate(run.saved_config(), source=str(run.config))


def _tokenizer(run: RunDir):
    from llmctl.data.tokenizers import load_tokenizer

    try:
        return load_tokenizer(run.tokenizer)
    except (FileNotFoundError, ValueError) as exc:
        raise ArtifactError(f"cannot load the tokenizer of {run.root}: {str(exc).splitlines()[0]}",
                            hint="the run directory is incomplete; copy tokenizer/ back or train again") from None


def run_fingerprint(tokenizer, normalizer) -> str:
    """What run.json and datasets call `tokenizer_fingerprint`: the tokenizer *and* the text normalisation."""
    from llmctl.data.preprocess import dataset_fingerprint

    return dataset_fingerprint(tokenizer.fingerprint(), normalizer.settings())


def _check_fingerprint(run: RunDir, info: dict[str, Any], tokenizer, normalizer) -> None:
    expected = info.get("tokenizer_fingerprint")
    if expected and expected not in (run_fingerprint(tokenizer, normalizer), tokenizer.fingerprint()):
        raise ArtifactError(f"the tokenizer in {run.tokenizer} (fingerprint {tokenizer.fingerprint()}) with the "
                            f"run's data.normalize does not match fingerprint {expected} recorded in run.json",
                            hint="restore the run's own tokenizer/ folder and config.yaml")


def _labels(run: RunDir) -> list[str]:
    if not run.labels.is_file():
        raise ArtifactError(f"classifier run {run.root} has no labels.json", hint="train it again with llmctl "
                                                                                 "finetune")
    try:
        data = json.loads(run.labels.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{run.labels} is unreadable ({exc})", hint="train the run again") from None
    labels = data.get("labels") if isinstance(data, dict) else data
    if not isinstance(labels, list) or not labels:
        raise ArtifactError(f"{run.labels} holds no label list", hint="train the run again")
    return [str(label) for label in labels]


def _has_checkpoint(run: RunDir) -> bool:
    from llmctl.train.checkpoints import read_pointer

    pointer = read_pointer(run.checkpoints) if run.checkpoints.is_dir() else {}
    return bool(pointer.get("best") or pointer.get("last"))


def _from_checkpoint(run: RunDir, kind: str):
    if kind == "classify":
        from llmctl.models.classifier import load_classifier

        model, details = load_classifier(run, CHECKPOINT)
    else:
        from llmctl.train.checkpoints import restore_model

        model, details = restore_model(run, CHECKPOINT)
    return model, {"which": CHECKPOINT, "path": details["checkpoint"], "step": details.get("step"),
                   "valid_loss": details.get("valid_loss")}


def _from_keras_file(run: RunDir):
    import keras

    import llmctl.models.classifier  # noqa: F401 - registers the custom classes
    import llmctl.models.lstm_lm  # noqa: F401

    try:
        model = keras.saving.load_model(run.model)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds of errors for a bad file
        raise ArtifactError(f"cannot load {run.model}: {str(exc).splitlines()[0][:160]}",
                            hint="train the run again") from None
    if model.compute_dtype != "float32":
        raise ArtifactError(f"{run.model} computes in {model.compute_dtype}; exports are float32",
                            hint="export from a checkpoint (rebuilt in float32): keep checkpoints/ in the run")
    return model, {"which": "model.keras", "path": str(run.model), "step": None, "valid_loss": None}


def _summary(run: RunDir) -> dict[str, Any]:
    if not run.summary.is_file():
        return {}
    try:
        data = json.loads(run.summary.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


METRIC_WORDS = ("loss", "ppl", "perplexity", "bits", "bpc", "acc", "f1", "precision", "recall", "bleu", "chrf",
                "exact_match")
METRIC_GROUPS = ("metrics", "best", "final", "valid", "test", "eval")
COUNT_KEYS = ("best_step", "steps", "tokens", "params", "epochs_completed")


def summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The quality numbers of summary.json worth carrying into the manifest: top-level metric-like numbers (losses,
    perplexities, accuracies, F1 ...) and training counts, plus those inside `metrics` / `best` / `final` /
    `valid` / `test` / `eval` groups (as `group.key`)."""

    def wanted(key: str, value: Any) -> bool:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and (any(word in key.lower() for word in METRIC_WORDS) or key in COUNT_KEYS))

    out: dict[str, Any] = {}
    for key, value in summary.items():
        if wanted(str(key), value):
            out[str(key)] = value
        elif key in METRIC_GROUPS and isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, (int, float)) and not isinstance(inner, bool):
                    out[f"{key}.{sub}"] = inner
    return out
