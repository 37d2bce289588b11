"""Checkpoints of a training run — everything needed to continue bit-exactly (the reading side, shared with
inference, is `llmctl.models.checkpoint_io`, re-exported here).

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
from llmctl.errors import ResourceError
from llmctl.models.checkpoint_io import (  # noqa: F401 - re-exported: the readers moved to llmctl.models
    POINTER,
    SEED_STATE_NAME,
    VariableMap,
    _prefix_exists,
    load_weights,
    model_variable_map,
    read_checkpoint,
    read_pointer,
    resolve_checkpoint,
    restore_model,
    run_language_model,
)
from llmctl.tfenv import import_tf

tf = import_tf()

FORMAT_VERSION = 1


def optimizer_variable_map(optimizer) -> dict[str, Any]:
    """Every optimizer variable by its path ("adam/iteration", "adam/<weight>_momentum", ...)."""
    out: dict[str, Any] = {}
    for i, v in enumerate(optimizer.variables):
        key = v.path if v.path not in out else f"{v.path}#{i}"
        out[key] = v
    return out


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
        read_checkpoint(self.checkpoint, prefix, partial=False, what="this model/optimizer",
                        hint="resume with the same model and train settings, or start over with --overwrite")
        progress = json.loads(self.progress.numpy().decode("utf-8"))
        states = [np.asarray(v.numpy()) for v in self.carry]
        return progress, states, prefix
