"""`llmctl evaluate` end to end on a real (tiny) preprocess + pretrain run: the card reproduces the valid loss
pretrain reported, is saved atomically as eval/<name>.json, evaluates new files, and refuses foreign data."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from llmctl import config as config_mod
from llmctl.cli import app
from llmctl.errors import ArtifactError
from llmctl.progress import Reporter
from tests.evaluation.lm_runs import corpus, experiment, preprocessed, trained_run

runner = CliRunner()
CARD_KEYS = ("nll_nats", "bits_per_token", "perplexity", "accuracy", "top5_accuracy", "tokens", "unk_rate",
             "bits_per_char", "word_perplexity", "context", "checkpoint", "dataset_fingerprint", "split")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    source = root / "shakespeare.txt"
    source.write_text(corpus(30_000), encoding="utf-8")
    exp = experiment(root, "tiny_char", [source], train={"max_steps": 40, "eval_every": 20})
    run, result = trained_run(exp)
    return root, exp, run, result


def evaluate(run, *overrides):
    import llmctl.evaluate

    exp = config_mod.load(run.root, list(overrides))
    return llmctl.evaluate.run(exp, reporter=Reporter("none"))


def test_evaluate_reproduces_the_valid_loss_pretrain_reported(trained):
    _, _, run, result = trained
    reported = result.values["final_valid_loss"]
    summary = json.loads(run.summary.read_text(encoding="utf-8"))
    assert summary["final_valid_loss"] == reported
    card = evaluate(run, "evaluate.checkpoint=last").values
    assert card["checkpoint_step"] == result.values["steps"]
    assert abs(card["nll_nats"] - reported) < 1e-4
    assert card["tokens"] == json.loads((run.root / "run.json").read_text())["dataset_tokens"]["valid"] - 1
    if result.values["best_step"] == result.values["steps"]:  # best = last: the default checkpoint agrees too
        assert abs(evaluate(run).values["nll_nats"] - reported) < 1e-4


def test_card_values_are_consistent_and_saved(trained):
    _, _, run, _ = trained
    result = evaluate(run, "evaluate.split=train", "evaluate.batch_size=3")
    card = result.values
    for key in CARD_KEYS:
        assert key in card
    assert card["split"] == "train" and card["context"] == "carry" and card["columns"] == 3
    assert card["perplexity"] == pytest.approx(math.exp(card["nll_nats"]))
    assert card["bits_per_token"] == pytest.approx(card["nll_nats"] / math.log(2))
    # char model: its tokens are the characters and <eos> (N units, N - 1 of them predicted)
    units = card["characters"] + card["eos"]
    assert card["tokens"] == units - 1
    assert card["bits_per_char"] == pytest.approx(card["bits_per_token"] * card["tokens"] / units)
    assert 0 <= card["accuracy"] <= card["top5_accuracy"] <= 1
    saved = json.loads(run.eval_card("train").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(card))
    assert not any(p.name.startswith(".tmp-") for p in run.eval_card("train").parent.iterdir())


def test_reset_context_differs_from_carry(trained):
    _, _, run, _ = trained
    carry = evaluate(run, "evaluate.bptt=8").values
    reset = evaluate(run, "evaluate.bptt=8", "evaluate.context=reset").values
    assert reset["context"] == "reset" and reset["tokens"] == carry["tokens"]
    assert reset["nll_nats"] > carry["nll_nats"]  # less context, worse predictions


def test_cli_json_is_one_object(trained):
    _, _, run, _ = trained
    result = runner.invoke(app, ["evaluate", str(run.root), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card["split"] == "valid" and card["tokens"] > 0


def test_evaluate_new_text_files_with_the_run_tokenizer(trained, tmp_path):
    _, _, run, _ = trained
    text = "First Citizen:\nSpeak, speak. What say you?\n"
    path = tmp_path / "extra.txt"
    path.write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["evaluate", str(run.root), "--file", str(path), "--json", "-q"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card["split"] == "files" and card["tokens"] == len(text) - 1
    assert card["characters"] == len(text) and card["words"] == len(text.split())
    assert card["files"][0]["path"] == str(path)
    assert json.loads(run.eval_card("file-extra.txt").read_text(encoding="utf-8"))["tokens"] == len(text) - 1


def test_data_made_with_another_tokenizer_is_refused(trained):
    root, _, run, _ = trained
    other_text = root / "other.txt"
    other_text.write_text("zzzz qqqq 1234 ####\n" * 200, encoding="utf-8")  # a different character vocabulary
    other = experiment(root, "other", [other_text])
    preprocessed(other)
    with pytest.raises(ArtifactError, match="tokenizer"):
        evaluate(run, f"data.dir={other.data.dir}")
    result = runner.invoke(app, ["evaluate", str(run.root), "--set", f"data.dir={other.data.dir}"])
    assert result.exit_code == 4
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("artifact error:") and "Traceback" not in result.output


def test_missing_split_and_missing_model_are_one_line_errors(trained, tmp_path):
    _, exp, run, _ = trained
    result = runner.invoke(app, ["evaluate", str(run.root), "--split", "test"])
    assert result.exit_code == 4 and "no `test` split" in result.stderr
    empty = experiment(tmp_path, "never_trained", [tmp_path / "unused.txt"])
    from llmctl.runs import RunDir

    run_dir = RunDir.of(empty)
    run_dir.root.mkdir(parents=True)
    run_dir.config.write_text(config_mod.dump_yaml(empty), encoding="utf-8")
    run_dir.write_info(kind="lm")
    for command in ("evaluate", "generate"):
        result = runner.invoke(app, [command, str(run_dir.root), "--prompt", "x"] if command == "generate"
                               else [command, str(run_dir.root)])
        assert result.exit_code == 4, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "no trained model" in lines[0]


def test_runs_of_other_kinds_are_refused_with_a_hint(trained, tmp_path):
    import shutil

    _, _, run, _ = trained
    copy = tmp_path / "runs" / "classifier"
    shutil.copytree(run.root, copy)
    from llmctl.runs import RunDir

    classifier = RunDir(copy)
    classifier.write_info(kind="classify")
    saved = config_mod.load(copy, [f"run.dir={tmp_path / 'runs'}", "run.name=classifier"])
    import llmctl.evaluate
    from llmctl.generate import generate

    with pytest.raises(ArtifactError) as refused:
        generate.run(saved, reporter=Reporter("none"), prompts=["a"])
    assert "classifier" in refused.value.one_line() and "llmctl evaluate" in refused.value.one_line()
    if "classify" not in llmctl.evaluate.PROTOCOLS:
        with pytest.raises(ArtifactError, match="classify"):
            llmctl.evaluate.run(saved, reporter=Reporter("none"))


def test_bpe_card_counts_characters_and_words_of_the_text(tmp_path):
    from tests.evaluation.lm_runs import untrained_run

    source = tmp_path / "text.txt"
    source.write_text(corpus(12_000), encoding="utf-8")
    exp = experiment(tmp_path, "tiny_bpe", [source], tokenizer={"kind": "bpe", "vocab_size": 300})
    run = untrained_run(exp)
    card = evaluate(run).values
    manifest = json.loads((tmp_path / "data" / "tiny_bpe" / "manifest.json").read_text(encoding="utf-8"))
    valid_text = corpus(12_000)[int(12_000 * 0.9):]
    assert card["characters"] == manifest["splits"]["valid"]["characters"] == len(valid_text)
    assert card["words"] == len(valid_text.split())
    total_bits = card["nll_nats"] * card["tokens"] / math.log(2)
    assert card["bits_per_char"] == pytest.approx(total_bits / len(valid_text))
    assert card["word_perplexity"] == pytest.approx(math.exp(card["nll_nats"] * card["tokens"] / card["words"]))
    assert card["bits_per_char"] < card["bits_per_token"]  # tokens are longer than one character
