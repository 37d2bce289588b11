"""`llmctl generate` on real run directories: prompts and their conditioning, streaming, JSON lines, seeds, stop
strings, beam output, unknown characters, and one-line CLI errors."""

from __future__ import annotations

import io
import json
import sys

import pytest
from typer.testing import CliRunner

from llmctl import config as config_mod
from llmctl.cli import app
from llmctl.data.tokenizers import BOS_ID, EOS_ID, UNK_ID
from llmctl.generate import generate
from llmctl.inference_run import open_run
from llmctl.progress import Reporter
from tests.evaluation.lm_runs import corpus, experiment, untrained_run

runner = CliRunner()


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    """One continuous text file (no <eos> in training)."""
    root = tmp_path_factory.mktemp("generate")
    source = root / "play.txt"
    source.write_text(corpus(20_000), encoding="utf-8")
    return untrained_run(experiment(root, "stream_char", [source]))


@pytest.fixture(scope="module")
def doc_run(tmp_path_factory):
    """One document per line (each followed by <eos>), lowercased."""
    root = tmp_path_factory.mktemp("generate_docs")
    source = root / "lines.txt"
    source.write_text("\n".join(line for line in corpus(20_000).splitlines() if line.strip()), encoding="utf-8")
    return untrained_run(experiment(root, "doc_char", [source], data={"documents": "line",
                                                                      "normalize": {"lowercase": True}}))


def load(run, *overrides):
    return config_mod.load(run.root, list(overrides))


def run_json(run, prompts, *overrides, reporter=None):
    out = io.StringIO()
    saved, sys.stdout = sys.stdout, out
    try:
        result = generate.run(load(run, *overrides), reporter=reporter or Reporter("none"), prompts=prompts,
                              as_json=True)
    finally:
        sys.stdout = saved
    return [json.loads(line) for line in out.getvalue().splitlines()], result


class Recorder(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, text):
        self.writes.append(text)
        return super().write(text)


def test_single_prompt_is_streamed_and_matches_the_json_text(char_run, monkeypatch):
    settings = ("generate.seed=4", "generate.max_new_tokens=60")
    records, _ = run_json(char_run, ["ROMEO:"], *settings)
    recorder = Recorder()
    monkeypatch.setattr(sys, "stdout", recorder)
    result = generate.run(load(char_run, *settings), reporter=Reporter("none"), prompts=["ROMEO:"])
    assert result.rendered
    assert recorder.getvalue() == "ROMEO:" + records[0]["text"] + "\n"
    pieces = [w for w in recorder.writes if w not in ("ROMEO:", "\n")]
    assert len(pieces) >= 3  # 60 tokens arrive in chunks of 16: printed as they come
    assert records[0]["tokens"] == 60 and records[0]["finish_reason"] == "length"


def test_json_lines_one_per_prompt(char_run):
    prompts = ["First", "", "Citizen: we"]
    records, result = run_json(char_run, prompts, "generate.max_new_tokens=12", "generate.top_k=5")
    assert [r["prompt"] for r in records] == prompts and [r["index"] for r in records] == [0, 1, 2]
    for record in records:
        assert record["strategy"] == "sample" and record["top_k"] == 5 and record["tokens"] <= 12
        assert isinstance(record["text"], str) and record["finish_reason"] in ("eos", "length")
    assert result.values["outputs"] == 3


def test_same_seed_same_text_and_batching_does_not_matter(char_run):
    prompts = ["ROMEO: ", "JULIET: ", "All:"]
    first, _ = run_json(char_run, prompts, "generate.seed=5", "generate.top_p=0.9", "generate.max_new_tokens=30")
    again, _ = run_json(char_run, prompts, "generate.seed=5", "generate.top_p=0.9", "generate.max_new_tokens=30")
    other, _ = run_json(char_run, prompts, "generate.seed=6", "generate.top_p=0.9", "generate.max_new_tokens=30")
    assert [r["text"] for r in first] == [r["text"] for r in again]
    assert [r["text"] for r in first] != [r["text"] for r in other]
    alone, _ = run_json(char_run, prompts[:1], "generate.seed=5", "generate.top_p=0.9", "generate.max_new_tokens=30")
    assert alone[0]["text"] == first[0]["text"]


def test_stop_strings_cut_the_text_before_the_first_one(char_run, monkeypatch):
    base = ("generate.seed=3", "generate.max_new_tokens=40")  # sampled: varied text from the untrained model
    full = run_json(char_run, ["Before we"], *base)[0][0]["text"]
    stop = full[10:12]
    expected = full[:full.find(stop)]
    assert len(expected) >= 5
    cut = run_json(char_run, ["Before we"], *base, f"generate.stop={json.dumps(['@@never@@', stop])}")[0][0]
    assert cut["text"] == expected and cut["finish_reason"] == "stop"
    recorder = Recorder()
    monkeypatch.setattr(sys, "stdout", recorder)
    generate.run(load(char_run, *base, f"generate.stop={json.dumps([stop])}"), reporter=Reporter("none"),
                 prompts=["Before we"])
    assert recorder.getvalue() == "Before we" + expected + "\n"  # streaming never printed past the stop string


def test_beam_returns_n_best_ranked_hypotheses(char_run):
    records, _ = run_json(char_run, ["To be", "or"], "generate.strategy=beam", "generate.beam_width=3",
                          "generate.n_best=2", "generate.max_new_tokens=10")
    assert [(r["index"], r["rank"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert records[0]["score"] >= records[1]["score"] and records[2]["score"] >= records[3]["score"]


def test_prompts_are_conditioned_like_the_training_data(char_run, doc_run):
    reporter = Reporter("none")
    stream = open_run(load(char_run))
    tok = stream.tokenizer
    assert generate.encode_prompts(stream, ["", "All"], reporter) == [[BOS_ID], tok.encode("All")]
    docs = open_run(load(doc_run))
    tok = docs.tokenizer
    assert generate.encode_prompts(docs, ["", "ALL:"], reporter) == [[EOS_ID], [EOS_ID, *tok.encode("all:")]]


def test_pairs_runs_are_prompted_with_the_pair_template(doc_run, tmp_path):
    import shutil

    from llmctl.data.tokenizers import SEP_ID
    from llmctl.runs import RunDir

    copy = tmp_path / "runs" / "pairs"
    shutil.copytree(doc_run.root, copy)
    RunDir(copy).write_info(kind="pairs")
    opened = open_run(config_mod.load(copy, [f"run.dir={tmp_path / 'runs'}", "run.name=pairs"]))
    ids = generate.encode_prompts(opened, ["Hi"], Reporter("none"))
    assert ids == [[BOS_ID, *opened.tokenizer.encode("hi"), SEP_ID]]


def test_unknown_prompt_characters_become_unk_with_a_warning(char_run):
    stream = io.StringIO()
    reporter = Reporter("plain", stream=stream)
    opened = open_run(load(char_run))
    ids = generate.encode_prompts(opened, ["Speak ☃ now ∑"], reporter)[0]
    assert ids.count(UNK_ID) == 2
    warning = stream.getvalue()
    assert "warning:" in warning and "'☃'" in warning and "'∑'" in warning and "<unk>" in warning
    records, _ = run_json(char_run, ["Speak ☃"], "generate.max_new_tokens=5", reporter=Reporter("none"))
    assert records[0]["tokens"] == 5


@pytest.mark.parametrize("override,words", [("generate.temperature=0", "temperature"),
                                            ("generate.top_p=1.5", "top_p"), ("generate.top_p=0", "top_p"),
                                            ("generate.top_k=0", "top_k")])
def test_bad_sampling_settings_are_one_line_config_errors(char_run, override, words):
    result = runner.invoke(app, ["generate", str(char_run.root), "--set", override, "--prompt", "x"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("config error:") and words in lines[0]


def test_cli_json_output_parses(char_run):
    result = runner.invoke(app, ["generate", str(char_run.root), "-p", "a", "-p", "b", "--json", "-q",
                                 "--set", "generate.max_new_tokens=5"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    outputs = [line for line in lines if "text" in line]
    assert [o["prompt"] for o in outputs] == ["a", "b"]
