"""Checkpoints of a training run — everything needed to continue bit-exactly — and the inference loader.

A checkpoint (`tf.train.Checkpoint`) holds: every model variable (weights AND the dropout seed-generator states),
every optimizer variable (moments, iteration count, loss scale), the carried LSTM state of all B stream columns, and
a JSON progress record (step / epoch / data position / tokens / time, schedule state, early-stopping and best-loss
bookkeeping, RNG keys). Variables are listed explicitly by name (`model_variable_map`): the model keeps its LSTM
layers in a Python list, which `tf.train.Checkpoint(model=model)` would silently skip.

Layout of `<run>/checkpoints/`::

    last-<step>.index / .data-*     the newest `train.keep_last` periodic checkpoints
    best-<step>.index / .data-*     the checkpoint with the lowest validation loss
    state.json                      the pointer: which prefixes exist, their step and metrics

A save writes into a temporary folder, moves the files to new, never-referenced names, and only then rewrites
`state.json` atomically: a killed save (or a full disk) leaves the previous pointer, hence the previous checkpoint,
in force; leftovers are removed on the next start. Readers only trust prefixes named in `state.json`.

    model, info = restore_model(RunDir(path), "best")   # rebuild from config.yaml + vocab, load weights
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmctl import atomic
from llmctl.errors import ArtifactError, ResourceError
from llmctl.runs import RunDir
from llmctl.tfenv import import_tf

tf = import_tf()

POINTER = "state.json"
FORMAT_VERSION = 1
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


def optimizer_variable_map(optimizer) -> dict[str, Any]:
    """Every optimizer variable by its path ("adam/iteration", "adam/<weight>_momentum", ...)."""
    out: dict[str, Any] = {}
    for i, v in enumerate(optimizer.variables):
        key = v.path if v.path not in out else f"{v.path}#{i}"
        out[key] = v
    return out


# ---------------------------------------------------------------- pointer


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


# ---------------------------------------------------------------- the training-run store


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return "no space left" in text or "disk quota" in text or isinstance(exc, tf.errors.ResourceExhaustedError)


class CheckpointStore:
    """Saves and restores the full training state of one run (`last` every N steps, `best` by valid loss).

    Only the chief writes to the run directory; under multi_worker the other workers write to a throw-away folder
    (every worker must take part in a save)."""

    def __init__(self, directory: Path, *, model, optimizer, carry_shapes: Sequence[Sequence[int]],
                 keep_last: int = 2, is_chief: bool = True):
        self.directory = Path(directory)
        self.keep_last = int(keep_last)
        self.is_chief = bool(is_chief)
        with tf.init_scope():
            self.carry = [tf.Variable(tf.zeros(shape, tf.float32), trainable=False, name=f"carry_{i}")
                          for i, shape in enumerate(carry_shapes)]
            self.progress = tf.Variable("{}", dtype=tf.string, trainable=False, name="progress")
        self.checkpoint = tf.train.Checkpoint(
            model=VariableMap(model_variable_map(model)),
            optimizer=VariableMap(optimizer_variable_map(optimizer)),
            carry=VariableMap({f"state_{i}": v for i, v in enumerate(self.carry)}),
            progress=VariableMap({"json": self.progress}))
        if self.is_chief:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic.clean_stale(self.directory)

    # -- queries
    def pointer(self) -> dict[str, Any]:
        return read_pointer(self.directory)

    def has_last(self) -> bool:
        return bool(self.pointer().get("last"))

    # -- save
    def save(self, kind: str, *, step: int, progress: dict[str, Any], states: Sequence[np.ndarray] | None,
             metrics: dict[str, Any] | None = None, validates: bool = True) -> Path | None:
        """Write a `last` or `best` checkpoint at `step`. Returns its prefix (None on non-chief workers)."""
        if kind not in ("last", "best"):
            raise ValueError(kind)
        name = f"{kind}-{step:09d}"
        self.progress.assign(json.dumps(progress, sort_keys=True))
        for var, value in zip(self.carry, states or [], strict=False):
            var.assign(np.asarray(value, dtype=np.float32))
        if not self.is_chief:
            scratch = Path(tempfile.mkdtemp(prefix="llmctl-worker-ckpt-"))
            try:
                self.checkpoint.write(str(scratch / name))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return None
        pointer = self.pointer()
        referenced = self._referenced(pointer)
        if name in referenced and _prefix_exists(self.directory, name):
            return self.directory / name  # same step, same state: already saved
        tmp = Path(tempfile.mkdtemp(prefix=atomic.TMP_PREFIX + "ckpt.", dir=self.directory))
        try:
            self.checkpoint.write(str(tmp / name))
            data = sorted(p for p in tmp.iterdir() if p.name.startswith(name + ".data-"))
            index = tmp / f"{name}.index"
            for part in data + [index]:  # .index last: a prefix "exists" only once its data is in place
                os.replace(part, self.directory / part.name)
            entry = {"prefix": name, "step": int(step), "epoch": int(progress.get("epoch", 0)),
                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(metrics or {})}
            pointer = self.pointer()
            pointer["format_version"] = FORMAT_VERSION
            pointer["validates"] = bool(validates)
            if kind == "best":
                pointer["best"] = entry
            else:
                lasts = [e for e in pointer.get("last", []) if e["prefix"] != name] + [entry]
                pointer["last"] = lasts[-self.keep_last:]
            atomic.write_json(self.directory / POINTER, pointer)
        except (OSError, tf.errors.OpError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if _disk_full(exc):
                previous = (self.pointer().get("last") or [{}])[-1].get("step")
                kept = f"the previous checkpoint (step {previous}) is intact" if previous is not None else \
                    "no earlier checkpoint was touched"
                raise ResourceError(f"disk full while saving the {kind} checkpoint at step {step} in "
                                    f"{self.directory}", hint=f"free space and resume with --resume; {kept}") from None
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        self._prune()
        return self.directory / name

    @staticmethod
    def _referenced(pointer: dict[str, Any]) -> set[str]:
        names = {e["prefix"] for e in pointer.get("last", [])}
        if pointer.get("best"):
            names.add(pointer["best"]["prefix"])
        return names

    def _prune(self) -> None:
        """Delete checkpoint files no longer named in the pointer (older `last`s, replaced `best`, leftovers)."""
        keep = self._referenced(self.pointer())
        for path in self.directory.iterdir():
            stem = path.name.split(".")[0]
            if (stem.startswith("last-") or stem.startswith("best-")) and stem not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()

    # -- restore
    def restore(self, which: str = "last") -> tuple[dict[str, Any], list[np.ndarray], Path]:
        """Load a checkpoint into the model/optimizer; returns (progress, carried states, prefix)."""
        prefix, _ = resolve_checkpoint(self.directory, which)
        try:
            status = self.checkpoint.read(str(prefix))
            status.assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as exc:
            if _damaged(prefix, exc):
                raise _damaged_error(prefix) from None
            raise ArtifactError(f"checkpoint {prefix} does not match this model/optimizer "
                                f"({str(exc).splitlines()[0][:160]})",
                                hint="resume with the same model and train settings, or start over with "
                                     "--overwrite") from None
        except Exception as exc:  # noqa: BLE001 - a truncated .data file fails deep in TF (IndexError, ...)
            raise _damaged_error(prefix) from exc
        progress = json.loads(self.progress.numpy().decode("utf-8"))
        states = [np.asarray(v.numpy()) for v in self.carry]
        return progress, states, prefix


# ---------------------------------------------------------------- inference loader


def load_weights(model, prefix: Path) -> None:
    """Restore only the model variables of checkpoint `prefix` into `model` (ArtifactError on mismatch)."""
    checkpoint = tf.train.Checkpoint(model=VariableMap(model_variable_map(model)))
    try:
        status = checkpoint.read(str(prefix))
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        if _damaged(prefix, exc):
            raise _damaged_error(prefix) from None
        raise ArtifactError(f"checkpoint {prefix} does not match the model in the run's config.yaml "
                            f"({str(exc).splitlines()[0][:160]})",
                            hint="the checkpoint belongs to another model; pick the right run or checkpoint") from None
    except Exception as exc:  # noqa: BLE001 - a truncated .data file fails deep in TF (IndexError, ...)
        raise _damaged_error(prefix) from exc


def _damaged(prefix: Path, exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, tf.errors.DataLossError) or "read less bytes" in text or "truncated" in text \
        or "corrupt" in text


def _damaged_error(prefix: Path) -> ArtifactError:
    return ArtifactError(f"checkpoint {prefix} is damaged (its .data/.index files are truncated or corrupt)",
                         hint="use another checkpoint, e.g. --set evaluate.checkpoint=last or "
                              "generate.checkpoint=last, or resume or retrain the run")


def restore_model(run: RunDir, which: str = "best"):
    """Rebuild the language model of a run from its saved config.yaml and tokenizer, with the weights of
    checkpoint `which` (`best`, `last`, or a checkpoint prefix path). Returns (model, info)."""
    from llmctl import config as config_mod
    from llmctl.models.lstm_lm import build_language_model

    run = RunDir(Path(run.root))
    if not run.root.is_dir():
        raise ArtifactError(f"run directory {run.root} does not exist", hint="check run.name/run.dir or train first")
    if not run.config.is_file():
        raise ArtifactError(f"{run.root} has no config.yaml", hint="pass a run directory made by llmctl")
    exp = config_mod.validate(run.saved_config(), source=str(run.config))
    info = run.read_info() if run.info.is_file() else {}
    vocab_size = info.get("vocab_size")
    if not vocab_size:
        if not run.tokenizer.is_dir():
            raise ArtifactError(f"{run.root} has no tokenizer/ and run.json records no vocab size",
                                hint="the run directory is incomplete; train it again")
        from llmctl.data.tokenizers import load_tokenizer

        vocab_size = load_tokenizer(run.tokenizer).vocab_size
    prefix, entry = resolve_checkpoint(run.checkpoints, which)
    model = build_language_model(exp.model, int(vocab_size))
    load_weights(model, prefix)
    details = {"checkpoint": str(prefix), "which": which, "step": entry.get("step"),
               "valid_loss": entry.get("valid_loss"), "vocab_size": int(vocab_size), "kind": info.get("kind"),
               "tokenizer_fingerprint": info.get("tokenizer_fingerprint"), "experiment": exp}
    if entry.get("note"):
        details["note"] = entry["note"]
    return model, details
