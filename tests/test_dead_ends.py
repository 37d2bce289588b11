"""No dead ends after a failure (issue 16, items 2-4): the command the error suggests leads on, a run with no
checkpoint is restartable without --overwrite, a diverged or out-of-memory run does not block its corrected rerun,
and a damaged artifact is named as such."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from llmctl import limits
from tests.cli_runs import Built, build_experiment, cli

DIVERGE = ["--set", "train.optimizer=sgd", "--set", "train.lr=1e30", "--set", "train.clip_norm=null",
           "--set", "train.max_steps=12", "--set", "train.checkpoint_every=50"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    return build_experiment(tmp_path_factory.mktemp("dead_ends"))


def _one_line(result, code: int, *needles: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.stderr, result.stdout)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _stub_of(built: Built, target: Path) -> Path:
    """What a run killed before its first checkpoint leaves: config.yaml, run.json, tokenizer/ (and logs)."""
    shutil.copytree(built.run, target)
    shutil.rmtree(target / "checkpoints")
    for name in ("model.keras", "summary.json", "loss.png"):
        (target / name).unlink()
    return target


def test_a_run_killed_before_its_first_checkpoint_restarts_without_overwrite(built: Built, tmp_path):
    stub = _stub_of(built, tmp_path / "runs" / "stub")
    line = _one_line(cli(["pretrain", stub, "--resume"]), 4, "has no checkpoint")
    assert "without --resume" in line  # ... and that command works, even with another config:
    result = cli(["pretrain", stub, "--set", "model.units=20"])
    assert result.exit_code == 0, result.output
    assert (stub / "model.keras").is_file() and not (stub / ".llmctl.lock").exists()


def test_a_diverged_loss_stops_the_run_and_the_corrected_rerun_is_not_blocked(built: Built, tmp_path):
    run = tmp_path / "runs" / "div"
    shutil.copytree(built.run, run)  # a finished run with checkpoints at steps 2 and 4, resumed with a huge lr
    shutil.rmtree(run / "checkpoints")
    (run / "model.keras").unlink()
    line = _one_line(cli(["pretrain", run, *DIVERGE]), 5, "diverged to", "× ln(vocab")
    assert "lower train.lr" in line
    assert json.loads((run / "summary.json").read_text(encoding="utf-8"))["status"] == "diverged"
    # nothing was checkpointed before the divergence: a plain rerun with a sane lr starts the run again
    result = cli(["pretrain", run, "--set", "train.lr=0.005"])
    assert result.exit_code == 0, result.output


def test_divergence_keeps_the_last_checkpoint(built: Built):
    """Step 1 starts near ln(vocab) and is checkpointed; its lr=1e30 update makes step 2's loss explode."""
    run = built.root / "runs" / "div2"
    line = _one_line(cli(["pretrain", built.config, "--set", "run.name=div2", *DIVERGE,
                          "--set", "train.checkpoint_every=1"]), 5, "diverged", "at step 2")
    assert "the last good checkpoint (step 1) is kept" in line
    pointer = json.loads((run / "checkpoints" / "state.json").read_text(encoding="utf-8"))
    last = pointer["last"][-1]
    assert last["step"] == 1 and (run / "checkpoints" / f"{last['prefix']}.index").is_file()


def test_out_of_memory_model_is_refused_up_front_and_leaves_nothing(built: Built, tmp_path):
    config = built.config
    line = _one_line(cli(["pretrain", config, "--set", "run.name=oom", "--set", "model.units=2000000"]), 6,
                     "memory", "model.units")
    assert "2,000,000 LSTM" in line
    assert not (built.root / "runs" / "oom").exists()


def test_training_memory_estimate_accepts_ordinary_models():
    from llmctl.schema import Experiment

    exp = Experiment.model_validate({"model": {"units": 1150, "layers": 3, "embedding_dim": 400}})
    params, need = limits.training_bytes(exp, 33_000)
    assert 70e6 < params < 90e6 and need < 2 * 2**30  # an AWD-LSTM-sized word model: well below a laptop's RAM


@pytest.mark.parametrize("model", [{"units": 16, "layers": 2, "embedding_dim": 8},
                                   {"units": 12, "layers": 1, "embedding_dim": 12, "tie_embeddings": True},
                                   {"units": 10, "layers": 1, "embedding_dim": 6, "tie_embeddings": True}])
def test_parameter_count_estimate_matches_the_built_model(model):
    from llmctl.models.lstm_lm import build_language_model
    from llmctl.schema import ModelConfig

    cfg = ModelConfig.model_validate(model)
    built = build_language_model(cfg, 40)
    built(np.zeros((1, 3), np.int32))
    assert limits.lm_parameters(cfg, 40) == built.count_params()


def test_generation_that_cannot_fit_in_memory_is_refused_before_loading(built: Built, tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "available_memory", lambda: 1 << 30)
    prompts = tmp_path / "p.txt"
    prompts.write_text("the\n" * 30, encoding="utf-8")
    _one_line(cli(["generate", built.run, "--prompts-file", prompts, "--set", "generate.max_new_tokens=1000000"]),
              6, "generate.max_new_tokens")


def test_interrupted_export_leftovers_are_cleaned_by_the_next_export(built: Built, tmp_path):
    run = tmp_path / "runs" / "ex"
    shutil.copytree(built.run, run)
    leftover = run / ".tmp-export.k1ll3d"
    leftover.mkdir()
    (leftover / "saved_model.pb").write_bytes(b"partial")
    (run / "tokenizer" / "tokenizer.json").write_text("{", encoding="utf-8")  # this export stops early too
    _one_line(cli(["export", run]), 4, "tokenizer.json")
    assert not leftover.exists()


def test_keras_lambda_refusal_is_reported_whole(built: Built, tmp_path):
    import keras

    run = tmp_path / "runs" / "lam"
    shutil.copytree(built.run, run)
    shutil.rmtree(run / "checkpoints")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda x: x * 2)])
    model.save(run / "model.keras")
    line = _one_line(cli(["generate", run, "--prompt", "a"]), 4, "Lambda")
    assert "`keras.config.enable_unsafe_deserialization()" in line  # the sentence is whole, not cut at 160 chars


@pytest.mark.parametrize("error", [MemoryError(), type("ResourceExhaustedError", (RuntimeError,), {})(
    "OOM when allocating tensor with shape[2000000,8000000]\nmore detail")])
def test_out_of_memory_during_a_command_is_a_resource_error(monkeypatch, tmp_path, error):
    """What the up-front estimate cannot foresee (TensorFlow's ResourceExhaustedError, MemoryError) is exit 6 with a
    hint, not exit 1 "unexpected"."""
    from llmctl import config as config_mod

    def boom(*args, **kwargs):
        raise error

    monkeypatch.setattr(config_mod, "load", boom)
    line = _one_line(cli(["config", "validate", tmp_path / "x.yaml"]), 6, "out of memory", "model.units")
    assert "more detail" not in line


def test_memory_refusal_of_an_absurd_model_is_one_readable_line():
    """`model.units: 1e400` written as an integer overflowed the float in the message (exit 1): now exit 6's line."""
    from llmctl.errors import ResourceError
    from llmctl.schema import Experiment

    exp = Experiment.model_validate({"model": {"units": 10**400}})
    with pytest.raises(ResourceError) as exc:
        limits.check_training_memory(exp, vocab_size=100)
    line = exc.value.one_line()
    assert "about 10^" in line and len(line) < 600, line


def test_a_refused_resume_of_a_damaged_checkpoint_rewrites_nothing(built: Built, tmp_path):
    run = tmp_path / "runs" / "damaged"
    shutil.copytree(built.run, run)
    pointer = json.loads((run / "checkpoints" / "state.json").read_text(encoding="utf-8"))
    data = next((run / "checkpoints").glob(f"{pointer['last'][-1]['prefix']}.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    before = {name: (run / name).read_bytes() for name in ("config.yaml", "run.json")}
    _one_line(cli(["pretrain", run, "--resume", "--set", "train.max_steps=6"]), 4, "damaged")
    assert {name: (run / name).read_bytes() for name in before} == before
