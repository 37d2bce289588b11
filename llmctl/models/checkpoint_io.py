"""Reading a run's checkpoints: the `state.json` pointer, prefix resolution, and loading model weights.

The writer (`CheckpointStore`, with optimizer and carried state) belongs to training (`llmctl.train.checkpoints`,
which re-exports these names); everything that only *reads* a model's weights — inference, export, evaluation,
the classifier loader — uses this module, so no layer below training imports training.

    model, info = restore_model(RunDir(path), "best")   # rebuild from config.yaml + vocab, load weights
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmctl.errors import ArtifactError
from llmctl.runs import RunDir
from llmctl.tfenv import import_tf

tf = import_tf()

POINTER = "state.json"
SEED_STATE_NAME = "seed_generator_state"


class VariableMap(tf.Module):
    """A named set of variables for `tf.train.Checkpoint` (names stay stable across processes)."""

    def __init__(self, variables: dict[str, Any]):
        super().__init__()
        self.vars = dict(variables)


def model_variable_map(model) -> dict[str, Any]:
    """Every variable of `model` by a stable name: weights by their path below the model ("lstm_0/lstm_cell/
    kernel"), dropout seed-generator states by order ("rng/0", ...)."""
    out: dict[str, Any] = {}
    prefix = f"{model.name}/"
    weight_ids = {id(w) for w in model.weights}
    rng = 0
    for v in model.variables:
        if id(v) not in weight_ids or v.name == SEED_STATE_NAME:
            key = f"rng/{rng}"
            rng += 1
        else:
            key = v.path[len(prefix):] if v.path.startswith(prefix) else v.path
        if key in out:
            key = f"{key}#{len(out)}"
        out[key] = v
    return out


def read_pointer(directory: Path) -> dict[str, Any]:
    """The `state.json` of a checkpoint folder ({} when there is none yet)."""
    path = Path(directory) / POINTER
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"checkpoint pointer {path} is unreadable ({exc})",
                            hint="restore it from a backup or start the run again with --overwrite") from None


def _prefix_exists(directory: Path, prefix: str) -> bool:
    return (directory / f"{prefix}.index").is_file() and any(directory.glob(f"{prefix}.data-*"))


def resolve_checkpoint(directory: Path, which: str = "best") -> tuple[Path, dict[str, Any]]:
    """(checkpoint prefix, its pointer entry) for `best`, `last`, or an explicit prefix / `.index` path."""
    directory = Path(directory)
    pointer = read_pointer(directory)
    if which in ("best", "last"):
        entry = pointer.get("best") if which == "best" else (pointer.get("last") or [None])[-1]
        if entry is None and which == "best" and pointer.get("last") and not pointer.get("validates", True):
            entry = dict(pointer["last"][-1], note="no validation split: best = last")
        if entry is None:
            raise ArtifactError(f"no `{which}` checkpoint in {directory}",
                                hint="train the run first (llmctl pretrain) or pick another checkpoint")
        prefix = directory / entry["prefix"]
        if not _prefix_exists(directory, entry["prefix"]):
            raise ArtifactError(f"checkpoint {prefix} named in {POINTER} is missing its files",
                                hint="the run directory is damaged; resume from another checkpoint or retrain")
        return prefix, entry
    path = Path(which).expanduser()
    if path.suffix == ".index":
        path = path.with_suffix("")
    if not path.is_absolute() and not Path(f"{path}.index").is_file():
        path = directory / path
    if not Path(f"{path}.index").is_file():
        raise ArtifactError(f"checkpoint {which} not found (no {path}.index)",
                            hint="use best, last, or the path of a checkpoint prefix such as "
                                 f"{directory}/last-<step>")
    entry = {}
    for item in [pointer.get("best")] + list(pointer.get("last") or []):
        if item and item.get("prefix") == path.name:
            entry = dict(item)
    return path, entry


def load_weights(model, prefix: Path) -> None:
    """Restore only the model variables of checkpoint `prefix` into `model` (ArtifactError on mismatch)."""
    read_checkpoint(tf.train.Checkpoint(model=VariableMap(model_variable_map(model))), prefix, partial=True,
                    what="the model in the run's config.yaml",
                    hint="the checkpoint belongs to another model; pick the right run or checkpoint")


def read_checkpoint(checkpoint, prefix: Path, *, partial: bool, what: str, hint: str) -> None:
    """Read checkpoint `prefix` into the `tf.train.Checkpoint` `checkpoint`, every object it holds matched (the
    checkpoint may hold more when `partial`). A damaged checkpoint, or one that does not match `what`, is an
    `ArtifactError` with `hint`."""
    try:
        status = checkpoint.read(str(prefix))
        if partial:
            status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        if _damaged(prefix, exc):
            raise _damaged_error(prefix) from None
        raise ArtifactError(f"checkpoint {prefix} does not match {what} ({str(exc).splitlines()[0][:160]})",
                            hint=hint) from None
    except Exception as exc:  # noqa: BLE001 - a truncated .data file fails deep in TF (IndexError, ...)
        raise _damaged_error(prefix) from exc


def check_readable(prefix: Path) -> None:
    """Read every tensor of checkpoint `prefix` (ArtifactError when its files are truncated or corrupt): a resume
    checks this before it touches the run directory."""
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (ValueError, IndexError, OSError, tf.errors.OpError):
        raise _damaged_error(prefix) from None


def _damaged(prefix: Path, exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, tf.errors.DataLossError) or "read less bytes" in text or "truncated" in text \
        or "corrupt" in text


def _damaged_error(prefix: Path) -> ArtifactError:
    return ArtifactError(f"checkpoint {prefix} is damaged (its .data/.index files are truncated or corrupt)",
                         hint="use another checkpoint, e.g. --set evaluate.checkpoint=last or "
                              "generate.checkpoint=last, or resume or retrain the run")


def run_language_model(run: RunDir):
    """(model with fresh weights, experiment config, run.json info, vocab size) as the run's saved config.yaml
    and tokenizer describe it."""
    from llmctl.config_validation import validate
    from llmctl.models.lstm_lm import build_language_model

    run = RunDir(Path(run.root))
    if not run.root.is_dir():
        raise ArtifactError(f"run directory {run.root} does not exist", hint="check run.name/run.dir or train first")
    if not run.config.is_file():
        raise ArtifactError(f"{run.root} has no config.yaml", hint="pass a run directory made by llmctl")
    exp = validate(run.saved_config(), source=str(run.config))
    info = run.read_info() if run.info.is_file() else {}
    vocab_size = info.get("vocab_size")
    if not vocab_size:
        if not run.tokenizer.is_dir():
            raise ArtifactError(f"{run.root} has no tokenizer/ and run.json records no vocab size",
                                hint="the run directory is incomplete; train it again")
        from llmctl.data.tokenizers import load_tokenizer

        vocab_size = load_tokenizer(run.tokenizer).vocab_size
    return build_language_model(exp.model, int(vocab_size)), exp, info, int(vocab_size)


def restore_model(run: RunDir, which: str = "best"):
    """Rebuild the language model of a run from its saved config.yaml and tokenizer, with the weights of
    checkpoint `which` (`best`, `last`, or a checkpoint prefix path). Returns (model, info)."""
    run = RunDir(Path(run.root))
    model, exp, info, vocab_size = run_language_model(run)
    prefix, entry = resolve_checkpoint(run.checkpoints, which)
    load_weights(model, prefix)
    details = {"checkpoint": str(prefix), "which": which, "step": entry.get("step"),
               "valid_loss": entry.get("valid_loss"), "vocab_size": vocab_size, "kind": info.get("kind"),
               "tokenizer_fingerprint": info.get("tokenizer_fingerprint"), "experiment": exp}
    if entry.get("note"):
        details["note"] = entry["note"]
    return model, details
