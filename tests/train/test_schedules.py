"""Tests for llmctl.train.schedules: the shape of every kind, plateau decisions, resume state, config errors."""

from __future__ import annotations

import json
import math

import pytest

from llmctl.errors import ArtifactError, ConfigError
from llmctl.schema import ScheduleConfig, TrainConfig
from llmctl.train.schedules import build_schedule


def make(kind: str, *, lr: float = 1.0, total_steps: int | None = 100, steps_per_epoch: int | None = 10,
         **schedule):
    cfg = TrainConfig(lr=lr, schedule=ScheduleConfig(kind=kind, **schedule))
    return build_schedule(cfg, total_steps=total_steps, steps_per_epoch=steps_per_epoch)


def test_constant_is_flat():
    s = make("constant", lr=0.3, total_steps=None)
    assert [s.lr(step, step // 10) for step in (0, 1, 50, 10_000)] == [0.3] * 4


def test_constant_warmup_ramps_linearly_then_holds():
    s = make("constant", warmup_steps=4, total_steps=None)
    assert [s.lr(step, 0) for step in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_step_decays_at_epoch_boundaries():
    s = make("step", step_epochs=2, gamma=0.5)
    assert [s.lr(0, e) for e in range(6)] == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])
    assert s.describe()["first_decay_step"] == 20


def test_step_respects_min_lr_and_warmup():
    s = make("step", gamma=0.1, min_lr=0.05, warmup_steps=2)
    assert s.lr(0, 0) == pytest.approx(0.5)
    assert s.lr(5, 1) == pytest.approx(0.1)
    assert s.lr(50, 5) == pytest.approx(0.05)


def test_cosine_warmup_midpoint_and_end_at_min_lr():
    s = make("cosine", warmup_steps=10, min_lr=0.1, total_steps=110)
    assert s.lr(0, 0) == pytest.approx(0.1)
    assert s.lr(9, 0) == pytest.approx(1.0)
    assert s.lr(10, 0) == pytest.approx(1.0)
    assert s.lr(60, 0) == pytest.approx(0.55)  # halfway: (1 + 0.1) / 2
    assert s.lr(110, 0) == pytest.approx(0.1)
    assert s.lr(500, 0) == pytest.approx(0.1)  # past the plan: stays at the floor
    values = [s.lr(step, 0) for step in range(10, 111)]
    assert all(a >= b for a, b in zip(values[:-1], values[1:], strict=True))


def test_onecycle_rises_to_peak_at_cut_frac_then_anneals():
    s = make("onecycle", lr=0.5, cut_frac=0.3, total_steps=100)
    assert s.lr(0, 0) == pytest.approx(0.5 / 25)
    assert s.lr(15, 0) == pytest.approx((0.02 + 0.5) / 2)
    assert s.lr(30, 0) == pytest.approx(0.5)
    assert max(s.lr(step, 0) for step in range(100)) == pytest.approx(0.5)
    assert s.lr(100, 0) == pytest.approx(0.5 / 1e4)
    assert make("onecycle", lr=0.5, min_lr=0.01).lr(100, 0) == pytest.approx(0.01)


def ulmfit(t: int, T: int, cut_frac: float, ratio: float, lr_max: float) -> float:
    """Howard & Ruder (2018), eq. 3, written out independently."""
    cut = math.floor(T * cut_frac)
    p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1))
    return lr_max * (1 + p * (ratio - 1)) / ratio


@pytest.mark.parametrize("step", [0, 1, 5, 10, 11, 50, 99])
def test_slanted_triangular_matches_ulmfit_formula(step):
    s = make("slanted_triangular", lr=0.01, cut_frac=0.1, ratio=32.0, total_steps=100)
    assert s.lr(step, 0) == pytest.approx(ulmfit(step, 100, 0.1, 32.0, 0.01))


def test_slanted_triangular_key_points():
    s = make("slanted_triangular", lr=0.01, cut_frac=0.1, ratio=32.0, total_steps=100)
    assert s.lr(0, 0) == pytest.approx(0.01 / 32)
    assert s.lr(10, 0) == pytest.approx(0.01)
    assert s.lr(100, 0) == pytest.approx(0.01 / 32)


def test_plateau_decays_only_when_valid_loss_does_not_improve():
    s = make("plateau", lr=20.0, total_steps=None)  # word_language_model: lr 20, ÷4 on no improvement
    assert s.on_evaluation(5.0) is False
    assert s.on_evaluation(4.5) is False
    assert s.lr(100, 2) == 20.0
    assert s.on_evaluation(4.6) is True
    assert s.lr(101, 3) == pytest.approx(5.0)
    assert s.on_evaluation(4.4) is False
    assert s.on_evaluation(4.4) is True  # equal is not an improvement
    assert s.lr(102, 4) == pytest.approx(1.25)
    assert s.on_evaluation(float("nan")) is True


def test_plateau_patience_and_floor():
    s = make("plateau", plateau_factor=0.5, plateau_patience=2, min_lr=0.3, total_steps=None)
    s.on_evaluation(1.0)
    assert [s.on_evaluation(1.1) for _ in range(3)] == [False, False, True]
    assert s.lr(0, 0) == pytest.approx(0.5)
    assert [s.on_evaluation(1.1) for _ in range(3)] == [False, False, True]
    assert s.lr(0, 0) == pytest.approx(0.3)  # 0.25 floored
    assert [s.on_evaluation(1.1) for _ in range(3)] == [False, False, False]  # nothing left to decay


@pytest.mark.parametrize("kind", ["constant", "step", "plateau", "cosine", "onecycle", "slanted_triangular"])
def test_state_round_trip_gives_identical_next_values(kind):
    extra = {"plateau_patience": 1} if kind == "plateau" else {}
    a = make(kind, **extra)
    for loss in (3.0, 2.0, 2.5, 2.6, 1.0, 1.2):
        a.on_evaluation(loss)
    saved = json.loads(json.dumps(a.state(), allow_nan=False))
    b = make(kind, **extra)
    b.load_state(saved)
    assert b.state() == a.state()
    for loss in (1.5, 0.9, 1.0, 1.0):
        assert b.on_evaluation(loss) == a.on_evaluation(loss)
        assert [b.lr(step, step // 10) for step in range(37, 45)] == [a.lr(step, step // 10) for step in range(37, 45)]


def test_load_state_of_another_kind_is_refused():
    with pytest.raises(ArtifactError, match="kind=cosine"):
        make("plateau").load_state(make("cosine").state())


@pytest.mark.parametrize("kind", ["cosine", "onecycle", "slanted_triangular"])
def test_missing_total_steps_is_a_config_error(kind):
    with pytest.raises(ConfigError, match=f"kind={kind} needs a known number of steps: set train.epochs or "
                                          "train.max_steps"):
        make(kind, total_steps=None)


@pytest.mark.parametrize("settings, fragment", [
    ({"kind": "onecycle", "warmup_steps": 5}, "warmup_steps=0"),
    ({"kind": "cosine", "warmup_steps": 100}, "leaves no steps"),
    ({"kind": "cosine", "min_lr": 2.0}, "lower train.schedule.min_lr"),
])
def test_inconsistent_settings_are_config_errors(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        make(**settings)
