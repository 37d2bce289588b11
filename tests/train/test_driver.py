"""The one training driver: document tasks get accumulation, replicas and budgets through the shared parts."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_finetune import CLASSIFY, experiment, write_sentiment

from llmctl.data import preprocess
from llmctl.runs import RunDir
from llmctl.train import session

ROOT = Path(__file__).resolve().parents[2]


def _rows(run: RunDir) -> list[tuple[str, str, float]]:
    with open(run.metrics, encoding="utf-8") as handle:
        return [(r["step"], r["split"], float(r["loss"])) for r in csv.DictReader(handle)]


@pytest.fixture
def sentiment(tmp_path):
    write_sentiment(tmp_path, n_train=96, n_valid=32)
    exp = experiment(tmp_path, CLASSIFY.format(run="base", data="clf"))
    preprocess.run(exp)
    return tmp_path


def test_budgets_and_stop_reasons_are_one_set_of_rules():
    from llmctl.schema import TrainConfig

    cfg = TrainConfig(epochs=3, max_steps=10)
    assert session.planned_steps(cfg, 4, 400) == 10
    assert session.planned_steps(TrainConfig(epochs=2, max_tokens=150), 4, 400) == 2
    assert session.budget_stop(cfg, session.Progress(step=10)) == "max_steps=10"
    assert session.budget_stop(cfg, session.Progress(step=3, epoch=3)) == "epochs=3"
    assert session.budget_stop(cfg, session.Progress(step=3, epoch=1)) is None
    assert session.early_stop(TrainConfig(early_stopping=2), session.Progress(bad_evals=2)).startswith("early_stop")


def test_classify_grad_accum_2_at_batch_b_equals_batch_2b(sentiment):
    from llmctl.models.classifier import load_classifier
    from llmctl.train import finetune

    results = {}
    for name, overrides in (("big", ["train.batch_size=16"]), ("accum", ["train.batch_size=8", "train.grad_accum=2"])):
        exp = experiment(sentiment, CLASSIFY.format(run=name, data="clf"), f"{name}.yaml",
                         overrides=[*overrides, "train.epochs=1", "train.log_every=1"])
        results[name] = finetune.run(exp).values
    assert results["big"]["steps"] == results["accum"]["steps"] == 6
    a, b = _rows(RunDir(Path(results["big"]["run_dir"]))), _rows(RunDir(Path(results["accum"]["run_dir"])))
    assert [r[:2] for r in a] == [r[:2] for r in b]
    for (_, _, x), (_, _, y) in zip(a, b, strict=True):
        assert abs(x - y) <= 1e-4 * max(1.0, abs(x)), (x, y)
    big, _ = load_classifier(RunDir(Path(results["big"]["run_dir"])), "last")
    accum, _ = load_classifier(RunDir(Path(results["accum"]["run_dir"])), "last")
    for u, v in zip(big.get_weights(), accum.get_weights(), strict=True):
        np.testing.assert_allclose(u, v, atol=1e-4)


MIRRORED = """
import csv, json, sys
from llmctl import config
from llmctl.train import finetune
out = {}
for strategy in ("none", "mirrored"):
    exp = config.load(sys.argv[1], [f"run.name={strategy}", f"distribute.strategy={strategy}",
                                    "distribute.logical_cpus=2", "train.epochs=1", "train.log_every=1"])
    result = finetune.run(exp)
    with open(result.values["run_dir"] + "/metrics.csv") as handle:
        out[strategy] = [(r["step"], r["split"], float(r["loss"])) for r in csv.DictReader(handle)]
    out[strategy + "_replicas"] = result.values["devices"]["replicas"]
    out[strategy + "_accuracy"] = result.values["valid_accuracy"]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_classify_mirrored_on_two_logical_cpus_matches_one_device(sentiment):
    path = sentiment / "base.yaml"
    path.write_text(CLASSIFY.format(run="x", data="clf"), encoding="utf-8")
    env = {**os.environ, "LLMCTL_CACHE": str(sentiment / "cache"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", MIRRORED, str(path)], cwd=sentiment, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["none_replicas"] == 1 and out["mirrored_replicas"] == 2
    assert [r[:2] for r in out["none"]] == [r[:2] for r in out["mirrored"]]
    for (_, _, a), (_, _, b) in zip(out["none"], out["mirrored"], strict=True):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (a, b)
    assert out["none_accuracy"] == out["mirrored_accuracy"]


def test_classify_trains_in_mixed_precision(sentiment):
    from llmctl.train import finetune

    exp = experiment(sentiment, CLASSIFY.format(run="bf16", data="clf"), "bf16.yaml",
                     overrides=["train.mixed_precision=bfloat16", "train.epochs=1"])
    values = finetune.run(exp).values
    assert values["status"] == "finished" and values["precision"] == "bfloat16" and values["steps"] == 6
    assert values["valid_accuracy"] is not None
