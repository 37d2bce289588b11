"""Learning-rate schedules as a Python-side controller that the training loop asks once per optimizer step.

    schedule = build_schedule(cfg.train, total_steps=..., steps_per_epoch=...)
    optimizer.learning_rate.assign(schedule.lr(step, epoch))   # before each optimizer step
    if schedule.on_evaluation(valid_loss): ...                  # after each evaluation (only `plateau` reacts)
    checkpoint_extra["schedule"] = schedule.state()             # JSON-serialisable; `load_state` on resume

`step` is the number of optimizer steps already taken (0-based: the first update uses `lr(0, 0)`) and `epoch` the
0-based epoch. Every schedule except `plateau` is a pure function of (step, epoch); `plateau` keeps its decay in
`state()`, so a resumed run continues with exactly the values it would have produced.

Shapes (lr = `train.lr`, T = total_steps, W = `warmup_steps`):
- warm-up (constant, step, plateau, cosine): lr·(step+1)/W for the first W steps.
- constant: lr.
- step: lr·gamma^(epoch // step_epochs).
- plateau: lr·factor^k after k decays; a decay happens when `plateau_patience`+1 evaluations in a row fail to improve
  on the best valid loss (patience 0 = the word_language_model recipe: ÷4 as soon as valid loss stops improving).
- cosine: lr → min_lr along half a cosine over steps W..T (`lr(T) = min_lr`).
- onecycle: linear lr/25 → lr over the first cut_frac·T steps, then cosine to min_lr (or lr/1e4 when min_lr = 0).
- slanted_triangular: ULMFiT (Howard & Ruder 2018, eq. 3) with cut_frac and ratio.
No value falls below `min_lr`, except during the explicit warm-up ramp.
"""

from __future__ import annotations

import math
from typing import Any

from llmctl.errors import ArtifactError, ConfigError
from llmctl.schema import ScheduleConfig, TrainConfig

NEEDS_TOTAL_STEPS = ("cosine", "onecycle", "slanted_triangular")
OWN_WARMUP = ("onecycle", "slanted_triangular")
STATE_VERSION = 1


class Schedule:
    """Base class: warm-up handling, the min_lr floor and (trivial) state. Subclasses implement `_base`."""

    kind = "constant"

    def __init__(self, peak_lr: float, cfg: ScheduleConfig, *, total_steps: int | None = None,
                 steps_per_epoch: int | None = None):
        self.peak_lr = float(peak_lr)
        self.cfg = cfg
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.warmup_steps = int(cfg.warmup_steps)
        self.min_lr = float(cfg.min_lr)

    # -- queried by the loop
    def lr(self, step: int, epoch: int) -> float:
        """Learning rate for the optimizer update that follows `step` updates, during 0-based `epoch`."""
        if step < 0 or epoch < 0:
            raise ValueError(f"step and epoch must be >= 0 (got step={step}, epoch={epoch})")
        value = max(self._base(int(step), int(epoch)), self.min_lr)
        if step < self.warmup_steps:
            value *= (step + 1) / self.warmup_steps
        return float(value)

    def on_evaluation(self, valid_loss: float) -> bool:
        """Report a validation loss; returns True when the schedule decayed because of it."""
        return False

    # -- resume
    def state(self) -> dict[str, Any]:
        """JSON-serialisable state for exact resume."""
        return {"version": STATE_VERSION, "kind": self.kind}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what `state()` returned (from a checkpoint of a run with the same schedule kind)."""
        kind = state.get("kind")
        if kind != self.kind:
            raise ArtifactError(
                f"checkpoint holds a learning-rate schedule of kind={kind} but train.schedule.kind={self.kind}; "
                f"set train.schedule.kind={kind} to resume, or start a new run")
        if state.get("version") != STATE_VERSION:
            raise ArtifactError(f"checkpoint schedule state has version {state.get('version')}, expected "
                                f"{STATE_VERSION}; start a new run")

    def describe(self) -> dict[str, Any]:
        """Summary for the start-of-run report."""
        return {"kind": self.kind, "peak_lr": self.peak_lr, "min_lr": self.min_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch}

    # -- shape
    def _base(self, step: int, epoch: int) -> float:
        return self.peak_lr


class ConstantSchedule(Schedule):
    kind = "constant"


class StepSchedule(Schedule):
    """×gamma every `step_epochs` epochs."""

    kind = "step"

    def _base(self, step: int, epoch: int) -> float:
        return self.peak_lr * self.cfg.gamma ** (epoch // self.cfg.step_epochs)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(gamma=self.cfg.gamma, step_epochs=self.cfg.step_epochs)
        if self.steps_per_epoch:
            info["first_decay_step"] = self.cfg.step_epochs * self.steps_per_epoch
        return info


class PlateauSchedule(Schedule):
    """×plateau_factor when valid loss has not improved for more than `plateau_patience` evaluations."""

    kind = "plateau"

    def __init__(self, peak_lr: float, cfg: ScheduleConfig, **kwargs: Any):
        super().__init__(peak_lr, cfg, **kwargs)
        self.decays = 0
        self.best: float | None = None
        self.bad_evaluations = 0

    def _base(self, step: int, epoch: int) -> float:
        return self.peak_lr * self.cfg.plateau_factor ** self.decays

    def on_evaluation(self, valid_loss: float) -> bool:
        loss = float(valid_loss)
        if math.isfinite(loss) and (self.best is None or loss < self.best):
            self.best = loss
            self.bad_evaluations = 0
            return False
        self.bad_evaluations += 1
        if self.bad_evaluations <= self.cfg.plateau_patience:
            return False
        self.bad_evaluations = 0
        if self._base(0, 0) <= self.min_lr:
            return False  # already at the floor: nothing left to decay
        self.decays += 1
        return True

    def state(self) -> dict[str, Any]:
        return {**super().state(), "decays": self.decays, "best": self.best, "bad_evaluations": self.bad_evaluations}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.decays = int(state["decays"])
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_evaluations = int(state["bad_evaluations"])

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(factor=self.cfg.plateau_factor, patience=self.cfg.plateau_patience, decays=self.decays)
        return info


def _cosine(start: float, end: float, progress: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


class CosineSchedule(Schedule):
    """Warm-up, then half a cosine from lr to min_lr over the remaining steps."""

    kind = "cosine"

    def _base(self, step: int, epoch: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr
        span = self.total_steps - self.warmup_steps
        return _cosine(self.peak_lr, self.min_lr, (step - self.warmup_steps) / span)


class OneCycleSchedule(Schedule):
    """Linear lr/25 → lr for cut_frac of the steps, then cosine down to min_lr (or lr/1e4)."""

    kind = "onecycle"
    START_DIVISOR = 25.0
    END_DIVISOR = 1e4

    def __init__(self, peak_lr: float, cfg: ScheduleConfig, **kwargs: Any):
        super().__init__(peak_lr, cfg, **kwargs)
        self.cut = max(1, int(self.total_steps * cfg.cut_frac))
        self.start_lr = self.peak_lr / self.START_DIVISOR
        self.end_lr = self.min_lr if self.min_lr > 0 else self.peak_lr / self.END_DIVISOR

    def _base(self, step: int, epoch: int) -> float:
        if step < self.cut:
            return self.start_lr + (self.peak_lr - self.start_lr) * step / self.cut
        return _cosine(self.peak_lr, self.end_lr, (step - self.cut) / max(1, self.total_steps - self.cut))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "peak_step": self.cut, "start_lr": self.start_lr, "end_lr": self.end_lr}


class SlantedTriangularSchedule(Schedule):
    """ULMFiT: cut = ⌊T·cut_frac⌋; p = t/cut before the cut, else 1 − (t−cut)/(cut·(1/cut_frac − 1));
    lr_t = lr·(1 + p·(ratio − 1))/ratio."""

    kind = "slanted_triangular"

    def __init__(self, peak_lr: float, cfg: ScheduleConfig, **kwargs: Any):
        super().__init__(peak_lr, cfg, **kwargs)
        self.cut = max(1, math.floor(self.total_steps * cfg.cut_frac))

    def _base(self, step: int, epoch: int) -> float:
        cut_frac, ratio = self.cfg.cut_frac, self.cfg.ratio
        if step < self.cut:
            p = step / self.cut
        else:
            p = 1.0 - (step - self.cut) / (self.cut * (1.0 / cut_frac - 1.0))
        p = min(max(p, 0.0), 1.0)
        return self.peak_lr * (1.0 + p * (ratio - 1.0)) / ratio

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "peak_step": self.cut, "ratio": self.cfg.ratio}


SCHEDULES: dict[str, type[Schedule]] = {cls.kind: cls for cls in (
    ConstantSchedule, StepSchedule, PlateauSchedule, CosineSchedule, OneCycleSchedule, SlantedTriangularSchedule)}


def build_schedule(train_cfg: TrainConfig, *, total_steps: int | None, steps_per_epoch: int | None) -> Schedule:
    """The schedule `train.schedule` describes, peaking at `train.lr`.

    `total_steps` is the planned number of optimizer steps (None when unknown, e.g. only `max_time` is set);
    `steps_per_epoch` is optimizer steps per epoch when known (reporting only).
    """
    cfg = train_cfg.schedule
    kind = cfg.kind
    if total_steps is not None and total_steps < 1:
        raise ValueError(f"total_steps must be >= 1 (got {total_steps})")
    if steps_per_epoch is not None and steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1 (got {steps_per_epoch})")
    if kind in NEEDS_TOTAL_STEPS and total_steps is None:
        raise ConfigError(f"train.schedule.kind={kind} needs a known number of steps: "
                          "set train.epochs or train.max_steps")
    if kind in OWN_WARMUP and cfg.warmup_steps:
        raise ConfigError(f"train.schedule.warmup_steps has no effect with kind={kind} (it warms up over cut_frac); "
                          "set train.schedule.warmup_steps=0")
    if kind == "cosine" and cfg.warmup_steps >= total_steps:
        raise ConfigError(f"train.schedule.warmup_steps={cfg.warmup_steps} leaves no steps for the cosine decay "
                          f"({total_steps} steps planned); lower train.schedule.warmup_steps")
    if kind != "constant" and cfg.min_lr >= train_cfg.lr:
        raise ConfigError(f"train.schedule.min_lr={cfg.min_lr} is not below train.lr={train_cfg.lr}; "
                          "lower train.schedule.min_lr")
    return SCHEDULES[kind](train_cfg.lr, cfg, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
