"""What an export is made from: a trained run directory, checked and loaded (model, tokenizer, labels, metrics).

    source = load_source(exp)      # ArtifactError (one line) for anything missing or inconsistent

The run is opened like `evaluate` / `generate` open it (`llmctl.inference_run.open_run`: config.yaml, tokenizer,
run.json fingerprint = tokenizer + data.normalize). Language models (`lm`, `pairs`) load through
`inference_run.load_language_model`, classifiers through `llmctl.models.classifier.load_classifier` — the `best`
checkpoint (`last` for runs without validation, `model.keras` when no checkpoint is left), always in float32.
How a prompt becomes ids is asked of `llmctl.generate.generate.encode_prompts`, so an export is conditioned exactly
like `llmctl generate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llmctl.data.tokenizers import BOS_ID, EOS_ID, SEP_ID
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
    normalizer: Any             # llmctl.data.normalize.Normalizer of the run's data.normalize
    fingerprint: str            # run.json's: the data fingerprint (tokenizer + normalisation)
    labels: list[str] | None
    checkpoint: dict[str, Any]  # which, path, step, valid_loss
    prompt: dict[str, Any] | None = None   # language models: prefix_ids / suffix_ids / empty_prompt_ids / stop_id
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def max_length(self) -> int:
        """Classifier input length of the fixed-shape exports (TFLite): `finetune.max_length`, or
        WHOLE_DOCUMENT_EXPORT_LENGTH for runs that read whole documents (the SavedModel takes any length)."""
        value = self.exp.finetune.max_length
        return WHOLE_DOCUMENT_EXPORT_LENGTH if value is None else int(value)


WHOLE_DOCUMENT_EXPORT_LENGTH = 1024


def load_source(exp) -> ExportSource:
    from llmctl.inference_run import open_run

    opened = open_run(exp)
    run, kind = opened.run, opened.kind
    if kind not in KINDS:
        raise ArtifactError(f"{run.info} has kind {kind!r}; export knows {', '.join(KINDS)}",
                            hint="the run directory is damaged or from another tool; train it again")
    labels = _labels(run) if kind == "classify" else None
    if kind == "classify" and not opened.info.get("num_classes"):
        raise ArtifactError(f"{run.info} records no num_classes for this classifier run",
                            hint="the run directory is damaged; run finetune again")
    model, checkpoint = _load_float32(opened)
    language_model = model.encoder if kind == "classify" else model
    # exported graphs run the Keras LSTM layers: standard ops that SavedModel and TFLite serve (the fused CPU
    # kernel's custom gradient cannot be saved, and inference gains little from it)
    language_model.lstm_kernel = "keras"
    vocab = language_model.vocab_size
    if vocab != opened.tokenizer.vocab_size:
        raise ArtifactError(f"model of {run.root} has a {vocab}-token vocabulary but its tokenizer has "
                            f"{opened.tokenizer.vocab_size}", hint="the run's tokenizer/ does not belong to its model; "
                                                                   "train the run again")
    if kind == "classify" and model.num_classes != len(labels):
        raise ArtifactError(f"classifier of {run.root} has {model.num_classes} classes but labels.json names "
                            f"{len(labels)}", hint="the run's labels.json does not belong to its model")
    return ExportSource(run=run, kind=kind, exp=opened.exp, model=model, tokenizer=opened.tokenizer,
                        normalizer=opened.normalizer, fingerprint=opened.fingerprint, labels=labels,
                        checkpoint=checkpoint, prompt=None if kind == "classify" else prompt_format(opened),
                        summary=_summary(run))


def prompt_format(opened) -> dict[str, Any]:
    """How `llmctl generate` turns a prompt into the ids it continues, as data: `prefix_ids` + encode(normalised
    prompt) + `suffix_ids`; an empty prompt is `empty_prompt_ids`; generation stops at `stop_id`."""
    from llmctl.generate.generate import encode_prompts
    from llmctl.progress import Reporter

    empty = [int(i) for i in encode_prompts(opened, [""], Reporter("none"))[0]]
    if opened.kind == "pairs":
        prefix, suffix, template = [BOS_ID], [SEP_ID], "<bos> {prompt} <sep>"
    elif empty == [EOS_ID]:  # documents ended with <eos>: a prompt starts a new document
        prefix, suffix, template = [EOS_ID], [], "<eos> {prompt}"
    else:                    # one continuous training text: the prompt alone
        prefix, suffix, template = [], [], "{prompt}"
    return {"template": template, "prefix_ids": prefix, "suffix_ids": suffix, "empty_prompt_ids": empty,
            "stop_id": EOS_ID}


def _load_float32(opened):
    """The model under the float32 dtype policy (exports compute in float32 whatever the training precision)."""
    from llmctl.tfenv import import_tf

    import_tf()
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        if opened.kind == "classify":
            from llmctl.models.classifier import load_classifier

            model, details = load_classifier(opened.run, CHECKPOINT)
            checkpoint = {"which": details.get("which", CHECKPOINT), "path": details["checkpoint"],
                          "step": details.get("step"), "valid_loss": details.get("valid_loss")}
        else:
            from llmctl.inference_run import load_language_model

            model, checkpoint = load_language_model(opened, CHECKPOINT)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    if model.compute_dtype != "float32":
        raise ArtifactError(f"{checkpoint['path']} computes in {model.compute_dtype}; exports are float32",
                            hint="export from a checkpoint (rebuilt in float32): keep checkpoints/ in the run")
    return model, checkpoint


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
            out.update({f"{key}.{sub}": inner for sub, inner in value.items() if wanted(str(sub), inner)})
    return out
