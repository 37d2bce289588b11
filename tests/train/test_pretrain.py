"""`llmctl pretrain` end to end: artifacts, determinism, divergence, early stopping, resume rules, CLI errors."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llmctl.tfenv import import_tf

tf = import_tf()

from lm_fixtures import corpus, make_char_dataset, tiny_config  # noqa: E402

from llmctl import config  # noqa: E402
from llmctl.errors import ArtifactError, TrainingError  # noqa: E402
from llmctl.runs import RunDir  # noqa: E402
from llmctl.train import pretrain  # noqa: E402
from llmctl.train.checkpoints import read_pointer, restore_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_char_dataset(tmp_path_factory.mktemp("data") / "chars", corpus(24000))


@pytest.fixture(autouse=True)
def _peak_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LLMCTL_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _load(path, *overrides):
    return config.load(path, list(overrides))


def _train_losses(run_root: Path) -> list[tuple[int, str, str]]:
    with open(RunDir(run_root).metrics, encoding="utf-8") as handle:
        return [(int(r["step"]), r["split"], r["loss"]) for r in csv.DictReader(handle)]


def cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "llmctl", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_pretrain_writes_every_artifact(tmp_path, dataset):
    import keras

    path = tiny_config(tmp_path, dataset, train={"epochs": 2, "checkpoint_every": 25, "keep_last": 2})
    result = pretrain.run(_load(path))
    v = result.values
    run = RunDir(Path(v["run_dir"]))
    assert v["status"] == "finished" and v["stop_reason"] == "epochs=2" and v["epochs_completed"] == 2
    assert v["tokens"] == 2 * (int(len(corpus(24000)) * 0.9) - 1)  # every target of both epochs
    assert v["final_valid_loss"] is not None and v["best_valid_loss"] <= v["final_valid_loss"]
    assert v["tokens_per_s"] > 0 and 0 < v["mfu"] < 1 and v["jit"] is False
    for p in (run.config, run.info, run.metrics, run.model, run.summary, run.loss_plot):
        assert p.is_file(), p
    assert list(run.tensorboard.glob("events.out.tfevents.*"))
    assert (run.tokenizer / "tokenizer.json").is_file()
    info = run.read_info()
    assert info["kind"] == "lm" and info["tokenizer_fingerprint"] and info["dataset"] == str(dataset)
    summary = json.loads(run.summary.read_text())
    for key in ("final_valid_loss", "best_valid_loss", "tokens_per_s", "wall_time_s", "steps", "tokens", "devices",
                "precision", "jit"):
        assert key in summary
    rows = _train_losses(run.root)
    assert [s for s, split, _ in rows if split == "valid"] == [v["steps"] // 2, v["steps"]]
    pointer = read_pointer(run.checkpoints)
    assert len(pointer["last"]) == 2 and pointer["last"][-1]["step"] == v["steps"]
    # model.keras holds the best weights: same logits as the restored best checkpoint (the file is a graph of stock
    # Keras layers: token ids → logits; the checkpoint's model runs llmctl's fused LSTM kernel)
    best, details = restore_model(run, "best")
    loaded = keras.saving.load_model(run.model)
    x = tf.constant([[5, 6, 7, 8]])
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(best(x)[0]), atol=1e-5)
    assert details["step"] == v["best_step"]


def test_two_runs_with_the_same_seed_are_identical(tmp_path, dataset):
    first = tiny_config(tmp_path, dataset, name="a", run={"deterministic": True}, train={"max_steps": 30})
    second = tiny_config(tmp_path, dataset, name="b", run={"deterministic": True}, train={"max_steps": 30})
    ra, rb = pretrain.run(_load(first)), pretrain.run(_load(second))
    assert _train_losses(Path(ra.values["run_dir"])) == _train_losses(Path(rb.values["run_dir"]))
    assert ra.values["final_valid_loss"] == rb.values["final_valid_loss"]


def test_non_finite_loss_stops_with_a_training_error_and_keeps_the_last_good_checkpoint(tmp_path, dataset,
                                                                                       monkeypatch):
    from llmctl.train.loop import Trainer

    real = Trainer.step

    def poisoned(self, element, states, step_index, lr=None):
        loss_sum, count, norm, states = real(self, element, states, step_index, lr)
        return (float("nan") if step_index == 14 else loss_sum), count, norm, states

    monkeypatch.setattr(Trainer, "step", poisoned)
    path = tiny_config(tmp_path, dataset, train={"checkpoint_every": 10, "max_steps": 40})
    with pytest.raises(TrainingError) as info:
        pretrain.run(_load(path))
    line = info.value.one_line()
    assert "became nan at step 15" in line and "checkpoint (step 10) is kept" in line
    assert "lower train.lr" in line and "\n" not in line
    run = RunDir(tmp_path / "runs" / "tiny")
    assert read_pointer(run.checkpoints)["last"][-1]["step"] == 10
    assert json.loads(run.summary.read_text())["status"] == "diverged"


def test_early_stopping_counts_evaluations_without_improvement(tmp_path, dataset, monkeypatch):
    from llmctl.models.stream_nll import EvalResult, StreamEvaluator

    monkeypatch.setattr(StreamEvaluator, "__call__",
                        lambda self, tokens, **kw: EvalResult(loss=2.0, tokens=10, nll_sum=20.0, columns=1, bptt=8))
    path = tiny_config(tmp_path, dataset, train={"eval_every": 5, "early_stopping": 2, "epochs": 3})
    result = pretrain.run(_load(path))
    assert result.values["steps"] == 15 and result.values["stop_reason"].startswith("early_stopping")
    assert result.values["best_step"] == 5


def test_resume_rules(tmp_path, dataset):
    path = tiny_config(tmp_path, dataset, train={"max_steps": 12})
    with pytest.raises(ArtifactError, match="cannot resume"):
        pretrain.run(_load(path, "run.resume=always"))
    pretrain.run(_load(path))
    with pytest.raises(ArtifactError, match="already holds a run"):
        pretrain.run(_load(path))
    with pytest.raises(ArtifactError, match="config differs in model.units"):
        pretrain.run(_load(path, "run.resume=always", "model.units=16"))
    more = pretrain.run(_load(path, "run.resume=always", "train.max_steps=20"))  # budgets may change
    assert more.values["resumed_from_step"] == 12 and more.values["steps"] == 20
    again = pretrain.run(_load(path, "run.overwrite=true", "train.max_steps=4"))
    assert again.values["steps"] == 4 and again.values["resumed_from_step"] is None


def test_cli_missing_dataset_is_exit_4_on_one_line(tmp_path):
    path = tiny_config(tmp_path, tmp_path / "nowhere")
    proc = cli("pretrain", path)
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "run `llmctl preprocess CONFIG` first" in lines[0], proc.stderr


def test_cli_bptt_longer_than_the_split_is_exit_3(tmp_path, dataset):
    path = tiny_config(tmp_path, dataset, train={"bptt": 50000})
    proc = cli("pretrain", path)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.bptt=50000 is longer than the train split" in lines[0], proc.stderr


@pytest.mark.parametrize("sections", [
    {"train": {"mixed_precision": "bfloat16"}},
    {"train": {"mixed_precision": "float16"}},
    {"model": {"output": "sampled", "sampled_negatives": 8}},
    {"train": {"batching": "windows", "grad_accum": 2}},
    {"train": {"variable_bptt": True, "schedule": {"kind": "cosine"}}},
    {"train": {"optimizer": "sgd", "lr": 1.0, "clip_norm": 0.25, "schedule": {"kind": "plateau"}}},
], ids=["bfloat16", "float16", "sampled", "windows-accum", "variable-bptt", "sgd-plateau"])
def test_training_variants_run_and_learn(tmp_path, dataset, sections):
    import keras

    train = {"max_steps": 40, "eval_every": 40, **sections.get("train", {})}
    path = tiny_config(tmp_path, dataset, model=sections.get("model", {}), train=train)
    result = pretrain.run(_load(path))
    assert result.values["steps"] == 40 and result.values["status"] == "finished"
    assert result.values["final_valid_loss"] < 3.85  # from ~ln(64) = 4.16 at the start
    assert keras.mixed_precision.global_policy().name == "float32"  # the run restores the global policy


def test_pretrained_embeddings_are_loaded_and_coverage_reported(tmp_path, dataset):
    from llmctl.data.tokenizers import load_tokenizer
    from llmctl.progress import Reporter

    tok = load_tokenizer(Path(dataset) / "tokenizer")
    vectors = tmp_path / "vectors.txt"
    rows = {"e": [0.5] * 16, "t": [-0.25] * 16, "zz-not-in-vocab": [1.0] * 16}
    vectors.write_text("".join(f"{k} {' '.join(map(str, v))}\n" for k, v in rows.items()), encoding="utf-8")
    path = tiny_config(tmp_path, dataset, model={"pretrained_embeddings": str(vectors), "freeze_embeddings": True},
                       train={"max_steps": 3})
    stream = __import__("io").StringIO()
    result = pretrain.run(_load(path), reporter=Reporter("plain", stream=stream))
    assert "4/63 tokens covered (6.3%; 2 exact, 2 lowercase)" in stream.getvalue(), stream.getvalue()
    model, _ = restore_model(RunDir(Path(result.values["run_dir"])), "last")
    emb = np.asarray(model.embedding.embeddings)
    np.testing.assert_allclose(emb[tok.token_to_id("e")], 0.5)  # frozen: still the pretrained row
    np.testing.assert_allclose(emb[tok.token_to_id("t")], -0.25)


def test_a_dataset_made_with_another_tokenizer_is_refused(tmp_path, dataset):
    other = make_char_dataset(tmp_path / "other", "completely different text: xyz 123 " * 50)
    path = tiny_config(tmp_path, dataset, tokenizer={"from": str(other)})
    with pytest.raises(ArtifactError) as info:
        pretrain.run(_load(path))
    assert "was made with tokenizer" in info.value.one_line() and "preprocess" in info.value.one_line()
