"""The epoch loop for whole-document fine-tuning (classification, prompt→response): padded batches, layer groups,
gradual unfreezing, discriminative learning rates, the `train.schedule`, evaluation, best-weights selection.

    task = DocTask(...)                      # what to train: loss, batches, evaluation, layer groups
    stepper = build_stepper(task, train_cfg, finetune_cfg)      # per-group optimizers (checkpoint them)
    outcome = fit(task, stepper, train_cfg, finetune_cfg, reporter=..., log=..., save=..., start=...)

Per epoch e: the groups `ulmfit.trainable_groups(e, ...)` train, each at `schedule.lr(step, e) × multiplier`
(`ulmfit.lr_multipliers`). After every epoch (or every `train.eval_every` steps) the task is evaluated; the weights
with the best monitored metric are kept in memory and handed to `save("best", ...)`; `train.early_stopping` counts
evaluations without improvement. Budgets: `train.epochs`, `max_steps`, `max_tokens` (non-pad input tokens) and
`max_time` (seconds of training). A non-finite loss stops with `TrainingError`; the best weights so far are kept.
Resume is per epoch: the `last` state is written at the end of each epoch (also when a budget stops one early, which
then counts as done), and a resumed run starts with the next epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from llmctl.errors import ConfigError, TrainingError
from llmctl.train import ulmfit
from llmctl.train.group_step import GroupStepper
from llmctl.train.schedules import build_schedule


@dataclass
class DocTask:
    """Everything task-specific the loop needs."""

    name: str
    model: Any
    groups: list[tuple[str, list[Any]]]
    loss_fn: Callable[..., Any]                   # (*batch, training) -> scalar loss
    input_signature: Sequence[Any]
    batches: Callable[[int], Iterator[tuple]]     # epoch -> batches (tuples of numpy arrays; [0] = tokens)
    steps_per_epoch: int
    evaluate: Callable[[], dict[str, float]]      # -> metrics incl. `loss` and `monitor`
    monitor: str = "loss"
    mode: str = "min"                              # "min" or "max"


@dataclass
class FitOutcome:
    steps: int = 0
    epochs_done: int = 0
    tokens: int = 0
    seconds: float = 0.0
    stopped_by: str = "epochs"
    best: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def check_supported(train_cfg, distribute_cfg, task: str) -> None:
    """Refuse training options the document trainer does not implement (one line each)."""
    if train_cfg.grad_accum != 1:
        raise ConfigError(f"train.grad_accum={train_cfg.grad_accum} is not supported by finetune.task={task}",
                          hint="set train.grad_accum=1 and raise train.batch_size instead")
    if train_cfg.mixed_precision != "none":
        raise ConfigError(f"train.mixed_precision={train_cfg.mixed_precision} is not supported by "
                          f"finetune.task={task}", hint="set train.mixed_precision=none")
    if distribute_cfg.strategy != "none":
        raise ConfigError(f"distribute.strategy={distribute_cfg.strategy} is not supported by finetune.task={task}",
                          hint="set distribute.strategy=none (these runs are small)")
    if train_cfg.schedule.kind == "plateau":
        raise ConfigError(f"train.schedule.kind=plateau is not supported by finetune.task={task}",
                          hint="use slanted_triangular, onecycle, cosine, step or constant")


def _better(value: float, best: float | None, mode: str, loss: float, best_loss: float | None) -> bool:
    """Improvement on the monitored metric; equal values are broken by the lower validation loss."""
    if best is None:
        return math.isfinite(value)
    if value == best and best_loss is not None:
        return loss < best_loss
    return value > best if mode == "max" else value < best


def build_stepper(task: DocTask, train_cfg, finetune_cfg, *, jit_compile: bool = False) -> GroupStepper:
    """The per-group optimizers and compiled steps for `task` (discriminative lr multipliers applied)."""
    language_model = getattr(task.model, "encoder", task.model)
    if train_cfg.lstm_kernel == "keras" and hasattr(language_model, "lstm_kernel"):
        language_model.lstm_kernel = "keras"  # else `auto`: the fused CPU kernel (graph recurrence: lengths vary)
    multipliers = ulmfit.lr_multipliers(len(task.groups), finetune_cfg.discriminative_lr)
    return GroupStepper(task.groups, train_cfg, task.loss_fn, multipliers=multipliers,
                        input_signature=task.input_signature, jit_compile=jit_compile,
                        average_decay=finetune_cfg.average_decay)


def fit(task: DocTask, stepper: GroupStepper, train_cfg, finetune_cfg, *, reporter,
        log: Callable[[dict[str, Any]], None] = lambda row: None,
        save: Callable[[str, dict[str, Any]], None] = lambda which, state: None,
        start: dict[str, Any] | None = None) -> FitOutcome:
    """Train `task.model` in place; on return it holds the best weights seen (by `task.monitor`).

    `save(which, state)` is called with `best` after an improving evaluation and `last` after every epoch; `start`
    is the `last` state of an interrupted run (plus `best_weights`), training resumes at the following epoch."""
    names = [name for name, _ in task.groups]
    epochs = train_cfg.epochs
    total = epochs * task.steps_per_epoch
    if train_cfg.max_steps:
        total = min(total, train_cfg.max_steps)
    schedule = build_schedule(train_cfg, total_steps=max(total, 1), steps_per_epoch=task.steps_per_epoch)
    if finetune_cfg.gradual_unfreeze and epochs < len(names):
        reporter.warn(f"gradual unfreezing needs {len(names)} epochs to reach the embedding, train.epochs={epochs}: "
                      f"the lowest {len(names) - epochs} group(s) stay frozen")
    reporter.table("layer groups", ulmfit.describe(names, epochs, finetune_cfg.discriminative_lr,
                                                   finetune_cfg.gradual_unfreeze),
                   columns=("group", "lr ×", "trains from epoch"))

    out = FitOutcome()
    state = start or {}
    out.steps = int(state.get("step", 0))
    first_epoch = int(state.get("epoch", 0))
    best_value = state.get("best_value")
    bad_evals = int(state.get("bad_evaluations", 0))
    best_weights = state.get("best_weights")  # on resume the caller restores them from the `best` checkpoint
    out.best, out.best_epoch = dict(state.get("best") or {}), state.get("best_epoch")
    t0 = time.perf_counter()
    elapsed0 = float(state.get("seconds", 0.0))

    def averaged():
        """Evaluation, selection and checkpoints see the averaged weights (`finetune.average_decay`)."""
        return stepper.average.swapped() if stepper.average is not None else contextlib.nullcontext()

    def evaluate(epoch: int, where: str) -> bool:
        """Evaluate, keep the best weights; True when early stopping says stop."""
        with averaged():
            return _evaluate(epoch, where)

    def _evaluate(epoch: int, where: str) -> bool:
        nonlocal best_value, best_weights, bad_evals
        metrics = task.evaluate()
        value = float(metrics[task.monitor])
        improved = _better(value, best_value, task.mode, float(metrics["loss"]), out.best.get("loss"))
        row = {"step": out.steps, "epoch": epoch + 1, "split": "valid", **metrics}
        out.history.append(row)
        log(row)
        reporter.metrics(f"valid ({where})", {**metrics, "best": "yes" if improved else "no"})
        if improved:
            best_value, best_weights, bad_evals = value, task.model.get_weights(), 0
            out.best, out.best_epoch = dict(metrics), epoch + 1
            save("best", _state(out, epoch, best_value, bad_evals, elapsed0 + time.perf_counter() - t0))
        else:
            bad_evals += 1
        return bool(train_cfg.early_stopping and bad_evals >= train_cfg.early_stopping)

    stop = None
    reporter.start(f"finetune {task.name}", total)
    try:
        for epoch in range(first_epoch, epochs):
            trainable = ulmfit.trainable_groups(epoch, len(names), finetune_cfg.gradual_unfreeze)
            running, seen = 0.0, 0
            for batch in task.batches(epoch):
                lr = schedule.lr(out.steps, epoch)
                stepper.set_lr(lr)
                loss, norm = stepper.step(trainable, *batch)
                loss = float(loss)
                if not math.isfinite(loss):
                    raise TrainingError(f"loss became {loss} at step {out.steps + 1} (epoch {epoch + 1})",
                                        hint="lower train.lr or set train.clip_norm; the best weights so far "
                                             "were kept")
                out.steps += 1
                out.tokens += int(np.count_nonzero(batch[0]))
                running, seen = running + loss, seen + 1
                if out.steps % train_cfg.log_every == 0 or seen == task.steps_per_epoch:
                    row = {"step": out.steps, "epoch": epoch + 1, "split": "train", "loss": running / seen,
                           "lr": lr, "grad_norm": float(norm)}
                    log(row)
                    reporter.advance(out.steps, loss=running / seen, lr=lr, epoch=epoch + 1)
                if train_cfg.eval_every and out.steps % train_cfg.eval_every == 0:
                    if evaluate(epoch, f"step {out.steps}"):
                        stop = "early_stopping"
                stop = stop or _budget(train_cfg, out, elapsed0 + time.perf_counter() - t0)
                if stop:
                    break
            out.epochs_done = epoch + 1
            # with eval_every, epoch ends are evaluated only when training ends there (few-label runs have short
            # epochs: evaluating each one would spend the budget on the valid split)
            last_epoch = stop is not None or epoch + 1 == epochs
            if not train_cfg.eval_every or (last_epoch and out.steps % train_cfg.eval_every != 0):
                if evaluate(epoch, f"epoch {epoch + 1}"):
                    stop = stop or "early_stopping"
            with averaged():
                save("last", _state(out, epoch + 1, best_value, bad_evals, elapsed0 + time.perf_counter() - t0))
            if stop:
                break
    finally:
        reporter.stop()
        out.seconds = elapsed0 + time.perf_counter() - t0
        if best_weights is not None:
            task.model.set_weights(best_weights)
    out.stopped_by = stop or "epochs"
    return out


def _state(out: FitOutcome, epoch: int, best_value, bad_evals: int, seconds: float) -> dict[str, Any]:
    return {"step": out.steps, "epoch": epoch, "best_value": best_value, "bad_evaluations": bad_evals,
            "seconds": seconds, "best_epoch": out.best_epoch, "best": out.best}


def _budget(train_cfg, out: FitOutcome, seconds: float) -> str | None:
    if train_cfg.max_steps and out.steps >= train_cfg.max_steps:
        return "max_steps"
    if train_cfg.max_tokens and out.tokens >= train_cfg.max_tokens:
        return "max_tokens"
    if train_cfg.max_time and seconds >= train_cfg.max_time:
        return "max_time"
    return None
