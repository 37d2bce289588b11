"""What every training run shares outside its loop: the run directory, where training stands, budgets, Ctrl-C and
the final `model.keras`.

    run, resuming = open_run(exp, ds, kind="classify", info={...}, dist=dist)
    progress = Progress(...)                                  # saved as JSON inside every checkpoint
    per_epoch, total = planned_steps(exp.train, steps_per_epoch, tokens_per_epoch)
    stop = budget_stop(exp.train, progress) or early_stop(exp.train, progress)

`run.resume` (never / auto / always) and `run.overwrite` decide whether a run is started, resumed or replaced:
`always` needs a `last` checkpoint, `auto` resumes when there is one; a directory left by a run that stopped before
its first checkpoint is replaced by a new start. The run directory is locked (`llmctl.locks`) for the rest of the
command; `RunDir.prepare` saves the resolved config (the one owner of the run's settings from then on) and refuses
a directory holding a different run. A resumed run must still speak the dataset's tokenizer
(`Dataset.check_fingerprint`); a new start drops stale checkpoints and copies the dataset's tokenizer into
the run.
"""

from __future__ import annotations

import math
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from llmctl import atomic, locks
from llmctl.errors import ArtifactError, ConfigError, DataError
from llmctl.runs import RunDir

PRECISION_POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


@dataclass
class Progress:
    """Everything about where training stands; saved as JSON inside every checkpoint."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # current 0-based epoch
    epoch_step: int = 0  # steps taken in the current epoch = data position (in steps)
    tokens: int = 0  # training tokens consumed (padding excluded)
    train_time: float = 0.0  # seconds spent in the training loop, over all sessions of the run
    evals: int = 0
    last_eval_step: int | None = None
    last_valid: float | None = None  # the last valid loss
    best_valid: float | None = None  # the best value of the task's monitored metric
    best_step: int | None = None
    best_epoch: int | None = None  # 1-based epoch of the best evaluation
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0  # evaluations since the last improvement (early stopping)
    skipped_steps: int = 0  # float16 steps skipped by loss scaling
    log_interval: dict[str, float] = field(default_factory=dict)  # sums since the last metrics row
    schedule: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # batching mode, seed: the RNG keys of the data order
    history: list[dict[str, Any]] = field(default_factory=list)  # every evaluation (document tasks' summary)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Progress":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# ---------------------------------------------------------------- budgets


def planned_steps(train_cfg, steps_per_epoch: int, tokens_per_epoch: int) -> int:
    """Planned total steps from epochs / max_steps / max_tokens (at least 1)."""
    total = train_cfg.epochs * steps_per_epoch
    if train_cfg.max_steps:
        total = min(total, train_cfg.max_steps)
    if train_cfg.max_tokens:
        per_step = tokens_per_epoch / max(steps_per_epoch, 1)
        total = min(total, max(1, math.ceil(train_cfg.max_tokens / max(per_step, 1e-9))))
    return max(1, int(total))


def budget_stop(train_cfg, p: Progress) -> str | None:
    """The budget that ends training now, as its stop reason (`max_steps=40`, ...), or None."""
    if train_cfg.max_steps and p.step >= train_cfg.max_steps:
        return f"max_steps={train_cfg.max_steps}"
    if train_cfg.max_tokens and p.tokens >= train_cfg.max_tokens:
        return f"max_tokens={train_cfg.max_tokens:,}"
    if train_cfg.max_time and p.train_time >= train_cfg.max_time:
        return f"max_time={train_cfg.max_time:g}s"
    if p.epoch >= train_cfg.epochs:
        return f"epochs={train_cfg.epochs}"
    return None


def early_stop(train_cfg, p: Progress) -> str | None:
    es = train_cfg.early_stopping
    if es and p.bad_evals >= es:
        return f"early_stopping: {es} evaluation(s) without improvement"
    return None


def improved(value: float, p: Progress, mode: str, loss: float) -> bool:
    """An improvement on the monitored metric; equal values are broken by the lower validation loss."""
    if not math.isfinite(value):
        return False
    if p.best_valid is None:
        return True
    if value == p.best_valid and "loss" in p.best_metrics:
        return loss < p.best_metrics["loss"]
    return value > p.best_valid if mode == "max" else value < p.best_valid


def require_valid_for(train_cfg, has_valid: bool) -> None:
    """Settings that need a validation split."""
    if has_valid:
        return
    if train_cfg.early_stopping:
        raise DataError("train.early_stopping needs a validation split, the dataset has none",
                        hint="set data.split.valid > 0 (or data.valid) and preprocess again, or unset "
                             "train.early_stopping")
    if train_cfg.schedule.kind == "plateau":
        raise DataError("train.schedule.kind=plateau needs a validation split, the dataset has none",
                        hint="set data.split.valid > 0 and preprocess again, or pick another schedule")


# ---------------------------------------------------------------- Ctrl-C


class Interrupts:
    """The first Ctrl-C only sets `requested`: the loop finishes the current step, saves, and stops. A second
    Ctrl-C interrupts at once (nothing saved). Use as a context manager around the loop."""

    def __init__(self):
        self.requested = False
        self._restore: Callable[[], Any] = lambda: None

    def __enter__(self) -> "Interrupts":
        self.requested = False
        try:
            previous = signal.getsignal(signal.SIGINT)
        except ValueError:
            return self

        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: keep Python's default behaviour
            return self
        self._restore = lambda: signal.signal(signal.SIGINT, previous)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
        self._restore = lambda: None


# ---------------------------------------------------------------- the run directory


def open_run(exp, ds, *, kind: str, info: dict[str, Any], parent: RunDir | None = None, dist=None,
             refuse_other_kind: bool = False) -> tuple[RunDir, bool]:
    """Create / reopen the run directory per run.resume and run.overwrite. Returns (run, resuming).

    `info`: run.json fields after the common ones; `parent`: the run fine-tuned from (refused when it is this run);
    `dist` (`llmctl.train.distribution.Distribution`): every worker decides, then only the chief touches the
    directory, between two barriers; `refuse_other_kind`: refuse a directory holding another kind of run that is not
    resumed, before `RunDir.prepare` compares the configs.
    """
    from llmctl.train.checkpoints import read_pointer

    run = RunDir.of(exp)
    want = exp.run.resume
    if exp.run.overwrite and want == "always":
        raise ConfigError("--resume and --overwrite contradict each other", hint="pass only one of them")
    if parent is not None and Path(parent.root).resolve() == run.root.resolve():
        raise ConfigError(f"finetune.parent is the run directory itself ({run.root})",
                          hint="give the fine-tuned run another run.name")
    if want == "always" and not run.exists():
        raise ArtifactError(f"cannot resume: {run.root} does not exist", hint="run without --resume to start the run")
    if dist is None or dist.is_chief:
        locks.acquire_run(run.root)  # one writer per run directory; released when the command ends
    existing = run.exists()
    pointer = read_pointer(run.checkpoints) if existing else {}
    has_checkpoint = bool(pointer.get("last"))
    # a run that failed or was killed before its first checkpoint (config.yaml, run.json, tokenizer/ only) was
    # never started: a plain rerun replaces it, whatever its config said (no --overwrite needed)
    stub = existing and not has_checkpoint and not pointer.get("best") and not run.model.is_file()
    if want == "always" and not has_checkpoint:
        raise ArtifactError(f"cannot resume: {run.root} has no checkpoint (it stopped before the first one)",
                            hint="run the same command without --resume to start it again")
    resuming = want in ("auto", "always") and has_checkpoint and not exp.run.overwrite
    if refuse_other_kind and existing and not stub and not exp.run.overwrite and not resuming:
        recorded = run.read_info() if run.info.is_file() else {}
        if recorded.get("kind") not in (None, kind):
            raise ArtifactError(f"run directory {run.root} holds a `{recorded.get('kind')}` run",
                                hint="choose another run.name, or pass --overwrite to replace it")
    if dist is not None:
        dist.barrier()  # every worker decided before the chief touches the directory
    if resuming:  # a damaged checkpoint refuses the resume before config.yaml / run.json are rewritten
        from llmctl.models.checkpoint_io import check_readable, resolve_checkpoint

        check_readable(resolve_checkpoint(run.checkpoints, "last")[0])
    if dist is None or dist.is_chief:
        allow_existing = resuming or (want == "auto" and existing and not has_checkpoint)
        if allow_existing and not (exp.run.overwrite or stub) and run.tokenizer.is_dir():
            from llmctl.data.tokenizers.checked import load_checked_tokenizer

            load_checked_tokenizer(run.tokenizer, run.root)  # a damaged tokenizer/ (it would go on into exports)
        run.prepare(exp, kind=kind, resume=allow_existing, overwrite=exp.run.overwrite or stub)
        if resuming:
            ds.check_fingerprint(run.read_info().get("tokenizer_fingerprint") or None, what=f"run {run.root}",
                                 hint="resume with the original dataset or start over with --overwrite")
        else:
            if run.checkpoints.exists():  # a run that never checkpointed: nothing to keep
                shutil.rmtree(run.checkpoints)
            with atomic.directory(run.tokenizer, replace=True) as tmp:
                for item in ds.layout.tokenizer.iterdir():
                    if item.is_file():
                        shutil.copy2(item, tmp / item.name)
        run.write_info(kind=kind, tokenizer_fingerprint=ds.fingerprint, vocab_size=ds.vocab_size,
                       dataset=str(ds.root), **info)
    if dist is not None:
        dist.barrier()
    return run, resuming


def save_keras(run: RunDir, model) -> None:
    """model.keras, atomically (a graph of stock Keras layers: `llmctl.models.keras_file`)."""
    from llmctl.models.keras_file import save_model_file

    save_model_file(model, run.model)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
