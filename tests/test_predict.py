"""`llmctl predict`: labels and probabilities for new texts, JSONL output, and refusing non-classifier runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl import config
from llmctl.cli import app
from llmctl.data import preprocess
from llmctl.errors import ArtifactError, DataError

runner = CliRunner()

CONFIG = """
run: {name: clf, dir: runs, progress: none, seed: 2}
data: {dir: data/clf, task: classify, train: [train.tsv], valid: [valid.tsv], normalize: {lowercase: true}}
tokenizer: {kind: word}
model: {embedding_dim: 16, layers: 1, units: 24, dropout: 0.0, output_dropout: 0.0}
train: {epochs: 3, batch_size: 16, lr: 0.01}
finetune: {task: classify, pooling: mean, head_units: 8, head_dropout: 0.0}
"""


def _write(folder: Path) -> None:
    rng = random.Random(1)
    filler = "the a movie plot was is very".split()
    for name, n in (("train", 200), ("valid", 40)):
        rows = ["text\tlabel"]
        for i in range(n):
            label = ("good", "bad")[i % 2]
            words = [rng.choice(filler) for _ in range(rng.randint(2, 6))]
            words.insert(rng.randint(0, len(words)), "great" if label == "good" else "awful")
            rows.append(" ".join(words) + "\t" + label)
        (folder / f"{name}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from llmctl.train import finetune

    folder = tmp_path_factory.mktemp("predict")
    _write(folder)
    path = folder / "clf.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    exp = config.load(path)
    preprocess.run(exp)
    finetune.run(exp)
    return folder, exp


def test_predict_labels_texts_with_probabilities(trained):
    from llmctl import predict

    _, exp = trained
    result = predict.run(exp, texts=["The plot was GREAT", "very awful movie"])
    preds = result.values["predictions"]
    assert [p["label"] for p in preds] == ["good", "bad"]  # "GREAT" is lowercased like the training data
    for p in preds:
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert p["probability"] == max(p["probabilities"].values())


def test_cli_predict_jsonl_from_a_run_directory(trained):
    folder, exp = trained
    run_dir = folder / "runs" / "clf"
    texts = folder / "texts.txt"
    texts.write_text("a great movie\n\nawful plot\n", encoding="utf-8")
    result = runner.invoke(app, ["predict", str(run_dir), "--file", str(texts), "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["text"], x["label"]) for x in lines] == [("a great movie", "good"), ("awful plot", "bad")]


def test_cli_predict_table(trained):
    folder, _ = trained
    result = runner.invoke(app, ["predict", str(folder / "runs" / "clf"), "--text", "great"])
    assert result.exit_code == 0 and "good" in result.output


def test_predict_on_a_language_model_run_suggests_generate(tmp_path):
    from llmctl import predict

    run = tmp_path / "runs" / "lm"
    (run / "checkpoints").mkdir(parents=True)
    (run / "model.keras").write_bytes(b"x")
    (run / "config.yaml").write_text(json.dumps({"run": {"dir": str(tmp_path / "runs"), "name": "lm"}}))
    (run / "run.json").write_text(json.dumps({"kind": "lm"}))
    exp = config.load(run)
    with pytest.raises(ArtifactError) as info:
        predict.run(exp, texts=["hello"])
    assert "not a classifier" in info.value.one_line() and f"llmctl generate {run}" in info.value.one_line()
    result = runner.invoke(app, ["predict", str(run), "--text", "hello"])
    assert result.exit_code == ArtifactError.exit_code
    assert len(result.output.strip().splitlines()) == 1 and "llmctl generate" in result.output


def test_predict_without_texts_is_an_error(trained):
    from llmctl import predict

    _, exp = trained
    with pytest.raises(DataError, match="no texts"):
        predict.run(exp, texts=[])
