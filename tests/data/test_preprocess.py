"""`llmctl preprocess` end to end on small generated corpora: splits, tasks, reuse, no-op, errors, crash safety."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from llmctl import config
from llmctl.cli import app
from llmctl.data import encoding, preprocess
from llmctl.data.dataset import Dataset
from llmctl.data.fast_words import scan as word_scan
from llmctl.data.fast_words.counter import WordCounter
from llmctl.data.tokenizers import BOS_ID, EOS_ID, SEP_ID, UNK_ID, tokenizer_from_counts, train_tokenizer
from llmctl.errors import ArtifactError, ConfigError, DataError
from llmctl.progress import Reporter
from llmctl.runs import DatasetDir

ROOT = Path(__file__).resolve().parents[2]

VERSE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
         "First Citizen:\nYou are all resolved rather to die than to famish?\n\n")


def _exp(tmp_path: Path, data: dict, tokenizer: dict | None = None, overrides: tuple[str, ...] = ()):
    raw = {"data": {"dir": "ds", **data}, "tokenizer": tokenizer or {"kind": "char"}}
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return config.load(cfg, list(overrides))


def _run(tmp_path, data, tokenizer=None, overrides=(), force=False, reporter=None):
    exp = _exp(tmp_path, data, tokenizer, overrides)
    return exp, preprocess.run(exp, reporter=reporter, force=force)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- language-model corpora


def test_char_tail_split_matches_a_plain_python_count(tmp_path):
    text = VERSE * 40 + "Ünïcödé ✓ 😀\n"
    _write(tmp_path / "input.txt", text)
    exp, result = _run(tmp_path, {"train": ["input.txt"], "split": {"valid": 0.1}})
    ds = Dataset(exp.data.dir)
    cut = int(len(text) * 0.9)
    assert ds.manifest["splits"]["train"]["tokens"] == cut == len(ds.tokens("train"))
    assert ds.manifest["splits"]["valid"]["tokens"] == len(text) - cut
    tok = ds.tokenizer()
    assert tok.vocab_size == len(set(text[:cut])) + 5
    assert tok.decode(ds.tokens("train").tolist()) == text[:cut]
    valid = ds.tokens("valid").tolist()
    assert EOS_ID not in valid and valid.count(UNK_ID) == sum(ch not in set(text[:cut]) for ch in text[cut:])
    assert list(ds.doc_offsets("train")) == [0, cut]
    assert result.values["status"] == "built" and result.values["train tokens"] == cut
    assert ds.dtype == np.uint16 and ds.manifest["documents"]["eos_after_document"] == {"train": False}


def test_char_encoding_matches_the_tokenizer(tmp_path):
    text = "abc Ω😀\nabc\n" * 50
    tok = train_tokenizer("char", [text[:200]])
    flat, lengths = preprocess.encoder(tok)([text, "zz😀", ""])
    assert flat.tolist() == tok.encode(text) + tok.encode("zz😀") and lengths.tolist() == [len(text), 3, 0]


@pytest.mark.parametrize("kind,min_freq,max_vocab", [("char", 1, None), ("char", 3, 8), ("word", 1, None),
                                                     ("word", 2, 12)])
def test_vocab_rule_matches_train_tokenizer(kind, min_freq, max_vocab):
    texts = [VERSE, "Zebra zebra ZEBRA ünï 😀 " * 3, VERSE.upper()]
    counts = Counter()
    for text in texts:
        counts.update(text if kind == "char" else encoding.count_words([text]))
    ours = tokenizer_from_counts(kind, counts, min_freq, max_vocab)
    ref = train_tokenizer(kind, texts, min_freq=min_freq, max_vocab=max_vocab)
    assert ours.fingerprint() == ref.fingerprint()


def test_lines_mode_appends_eos_after_every_document(tmp_path):
    _write(tmp_path / "a.txt", "one two\n\n  \nthree\n")
    exp, _ = _run(tmp_path, {"train": ["a.txt"], "documents": "line", "split": {"valid": 0}},
                  {"kind": "word"})
    ds = Dataset(exp.data.dir)
    tok = ds.tokenizer()
    ids = ds.tokens("train").tolist()
    assert ids == tok.encode("one two") + [EOS_ID] + tok.encode("three") + [EOS_ID]
    assert list(ds.doc_offsets("train")) == [0, 3, 5] and ds.splits() == ["train"]


def test_directory_of_files_is_one_document_per_file(tmp_path):
    for i in range(5):
        _write(tmp_path / "corpus" / f"{i}.txt", f"document number {i}\nsecond line\n")
    exp, _ = _run(tmp_path, {"train": ["corpus"], "split": {"valid": 0}})
    ds = Dataset(exp.data.dir)
    offsets = ds.doc_offsets("train")
    assert len(offsets) == 6
    ids = ds.tokens("train")
    for i in range(5):
        doc = ids[offsets[i]:offsets[i + 1]].tolist()
        assert doc[-1] == EOS_ID and ds.tokenizer().decode(doc[:-1]) == f"document number {i}\nsecond line\n"


def test_tail_boundary_splits_a_document_across_splits(tmp_path):
    for i in range(4):
        _write(tmp_path / "c" / f"{i}.txt", "x" * 100)  # 400 characters, cut at 300 and 350
    exp, _ = _run(tmp_path, {"train": ["c"], "split": {"valid": 0.125, "test": 0.125}})
    ds = Dataset(exp.data.dir)
    # train: docs 0-2 with <eos>; valid: the first half of doc 3 (no <eos>); test: its second half + <eos>
    # words: each split's own text (the cut word of doc 3 is a word of valid and of test)
    assert ds.manifest["splits"]["train"] == {"tokens": 303, "documents": 3, "characters": 300, "words": 3}
    assert ds.manifest["splits"]["valid"] == {"tokens": 50, "documents": 1, "characters": 50, "words": 1}
    assert ds.manifest["splits"]["test"] == {"tokens": 51, "documents": 1, "characters": 50, "words": 1}
    assert ds.tokens("test")[-1] == EOS_ID and EOS_ID not in ds.tokens("valid").tolist()


def test_documents_split_is_seeded_and_complete(tmp_path):
    lines = [f"line {i} {'abcdefghij'[i % 10]}" for i in range(200)]
    _write(tmp_path / "a.txt", "\n".join(lines) + "\n")

    def split_docs(seed, name):
        exp, _ = _run(tmp_path / name, {"train": [str(tmp_path / "a.txt")], "documents": "line",
                                        "split": {"mode": "documents", "valid": 0.1, "test": 0.05, "seed": seed}})
        ds = Dataset(exp.data.dir)
        tok = ds.tokenizer()
        out = {}
        for split in ("train", "valid", "test"):
            ids, off = ds.tokens(split), ds.doc_offsets(split)
            out[split] = [tok.decode(ids[off[i]:off[i + 1] - 1].tolist()) for i in range(len(off) - 1)]
        return out

    (tmp_path / "s1").mkdir()
    (tmp_path / "s1b").mkdir()
    (tmp_path / "s2").mkdir()
    a, again, other = split_docs(1, "s1"), split_docs(1, "s1b"), split_docs(2, "s2")
    assert a == again and a != other
    assert [len(a[s]) for s in ("train", "valid", "test")] == [170, 20, 10]
    assert sorted(a["train"] + a["valid"] + a["test"]) == sorted(lines)
    assert a["train"] == [line for line in lines if line in set(a["train"])]  # original order kept


def test_explicit_valid_file_and_jsonl(tmp_path):
    _write(tmp_path / "train.jsonl", "\n".join(json.dumps({"body": f"text {i}"}) for i in range(20)))
    _write(tmp_path / "valid.jsonl", json.dumps({"body": "text ?"}) + "\n" + json.dumps({"body": "   "}) + "\n")
    exp, _ = _run(tmp_path, {"train": [{"path": "train.jsonl", "text": "body"}],
                             "valid": [{"path": "valid.jsonl", "text": "body"}]})
    ds = Dataset(exp.data.dir)
    assert ds.manifest["splits"]["valid"]["documents"] == 1 and ds.manifest["splits"]["train"]["documents"] == 20
    stats = json.loads(DatasetDir(exp.data.dir).stats.read_text())
    assert stats["splits"]["valid"]["unk_rate"] == pytest.approx(1 / 7)  # "?" is unseen; 6 chars + <eos>
    assert stats["splits"]["valid"]["oov_rate"] == pytest.approx(1 / 7)
    assert stats["filtered_records"] == 1


def test_normalisation_is_applied_and_fingerprinted(tmp_path):
    _write(tmp_path / "a.txt", "ＨＥＬＬＯ   World\n")
    exp, _ = _run(tmp_path, {"train": ["a.txt"], "split": {"valid": 0},
                             "normalize": {"nfkc": True, "lowercase": True, "collapse_whitespace": True}})
    ds = Dataset(exp.data.dir)
    assert ds.tokenizer().decode(ds.tokens("train").tolist()) == "hello world\n"
    plain_exp, _ = _run(tmp_path, {"dir": "plain", "train": ["a.txt"], "split": {"valid": 0}})
    assert Dataset(plain_exp.data.dir).fingerprint != ds.fingerprint
    assert ds.manifest["tokenizer"]["tokenizer_fingerprint"] == ds.tokenizer().fingerprint()


def test_stopwords_are_refused_for_language_models(tmp_path):
    _write(tmp_path / "a.txt", "the text\n")
    with pytest.raises(ConfigError, match="stopwords removes words a lm model has to produce"):
        _run(tmp_path, {"train": ["a.txt"], "normalize": {"stopwords": "english"}})


# ---------------------------------------------------------------- classification and pairs


def test_classify_tsv_with_differing_headers(tmp_path):
    _write(tmp_path / "train.tsv", "label\tsentence\n0\tbad film\n1\tgood film\n1\tgreat fun\n0\tdull\n")
    _write(tmp_path / "dev.tsv", "label\tcontent\n1\tgood fun\n0\tawful\n")
    exp, result = _run(tmp_path, {"task": "classify", "train": [{"path": "train.tsv", "text": "sentence"}],
                                  "valid": [{"path": "dev.tsv", "text": "content"}]}, {"kind": "word"})
    ds = Dataset(exp.data.dir)
    assert ds.label_names == ["0", "1"] and result.values["labels"] == "0, 1"
    assert ds.labels("train").tolist() == [0, 1, 1, 0] and ds.labels("valid").tolist() == [1, 0]
    tok = ds.tokenizer()
    off = ds.doc_offsets("valid")
    assert ds.tokens("valid")[off[0]:off[1]].tolist() == tok.encode("good fun")
    assert ds.tokens("valid")[off[1]:off[2]].tolist() == [UNK_ID]
    stats = json.loads(DatasetDir(exp.data.dir).stats.read_text())
    assert stats["splits"]["train"]["labels"] == {"0": 2, "1": 2}
    assert stats["splits"]["valid"]["oov_rate"] == pytest.approx(1 / 3)


def test_classify_labels_sort_numerically_and_stopwords(tmp_path):
    rows = [("the film is good", "10"), ("it is not bad", "2"), ("a film", "2"), ("the plot", "10")]
    _write(tmp_path / "t.jsonl", "\n".join(json.dumps({"text": t, "label": int(y)}) for t, y in rows))
    exp, _ = _run(tmp_path, {"task": "classify", "train": ["t.jsonl"], "split": {"valid": 0},
                             "normalize": {"stopwords": "english"}}, {"kind": "word"})
    ds = Dataset(exp.data.dir)
    assert ds.label_names == ["2", "10"] and ds.labels("train").tolist() == [1, 0, 0, 1]
    tok = ds.tokenizer()
    assert tok.token_to_id("the") is None and tok.token_to_id("not") is not None


def test_unseen_label_in_valid_is_named(tmp_path):
    _write(tmp_path / "train.tsv", "text\tlabel\na\tpos\nb\tneg\n")
    _write(tmp_path / "dev.tsv", "text\tlabel\nc\tneutral\n")
    with pytest.raises(DataError, match=r"label 'neutral' does not occur in the training data \(train labels: "
                                        r"neg, pos\)"):
        _run(tmp_path, {"task": "classify", "train": ["train.tsv"], "valid": ["dev.tsv"]})
    assert not (tmp_path / "ds").exists()


def test_single_class_is_refused(tmp_path):
    _write(tmp_path / "train.csv", "text,label\na,1\nb,1\n")
    with pytest.raises(DataError, match="label column `label` has a single class \\('1'\\)"):
        _run(tmp_path, {"task": "classify", "train": ["train.csv"]})


def test_a_tail_split_of_a_file_sorted_by_label_is_warned_about(tmp_path):
    rows = [f"good text {i},pos" for i in range(30)] + [f"bad text {i},neg" for i in range(30)]
    _write(tmp_path / "sorted.csv", "text,label\n" + "\n".join(rows) + "\n")
    data = {"task": "classify", "train": ["sorted.csv"], "split": {"valid": 0.2}}
    stream = io.StringIO()
    _run(tmp_path, data, {"kind": "word"}, reporter=Reporter("jsonl", stream=stream))
    warnings = [json.loads(line)["message"] for line in stream.getvalue().splitlines()
                if json.loads(line).get("event") == "warning"]
    assert any("looks ordered by label" in w and "data.split.mode=documents" in w for w in warnings), warnings
    stream = io.StringIO()
    _run(tmp_path, {**data, "dir": "random", "split": {"valid": 0.2, "mode": "documents"}}, {"kind": "word"},
         reporter=Reporter("jsonl", stream=stream))
    assert "ordered by label" not in stream.getvalue()


def test_pairs_template_and_response_starts(tmp_path):
    assert preprocess.pair_template([7, 8], [9]) == ([BOS_ID, 7, 8, SEP_ID, 9, EOS_ID], 4)
    rows = [{"q": "hi", "a": "hello there"}, {"q": "", "a": "unprompted"}, {"q": "x", "a": " "}]
    _write(tmp_path / "p.jsonl", "\n".join(json.dumps(r) for r in rows))
    exp, _ = _run(tmp_path, {"task": "pairs", "train": [{"path": "p.jsonl", "prompt": "q", "response": "a"}],
                             "split": {"valid": 0}})
    ds = Dataset(exp.data.dir)
    tok = ds.tokenizer()
    ids, off, starts = ds.tokens("train").tolist(), ds.doc_offsets("train"), ds.response_starts("train")
    assert len(off) == 3  # the empty response was dropped
    first = ids[off[0]:off[1]]
    assert first == [BOS_ID, *tok.encode("hi"), SEP_ID, *tok.encode("hello there"), EOS_ID]
    assert starts.tolist() == [off[0] + 4, off[1] + 2]
    assert ids[starts[0]:off[1] - 1] == tok.encode("hello there")


# ---------------------------------------------------------------- tokenizers: bpe, reuse, workers


def test_bpe_tokenizer_json_loads_in_tokenizers(tmp_path):
    import tokenizers

    _write(tmp_path / "a.txt", VERSE * 30)
    exp, _ = _run(tmp_path, {"train": ["a.txt"]}, {"kind": "bpe", "vocab_size": 300})
    ds = Dataset(exp.data.dir)
    hf = tokenizers.Tokenizer.from_file(str(DatasetDir(exp.data.dir).tokenizer / "tokenizer.json"))
    assert hf.get_vocab_size() == ds.vocab_size <= 300
    train = ds.tokens("train").tolist()
    assert hf.decode(train) + hf.decode(ds.tokens("valid").tolist()) == VERSE * 30


def test_vocab_too_small_for_the_special_tokens(tmp_path):
    _write(tmp_path / "a.txt", VERSE)
    with pytest.raises(ConfigError, match="tokenizer.vocab_size`: Input should be greater than or equal to 261"):
        _run(tmp_path, {"train": ["a.txt"]}, {"kind": "bpe", "vocab_size": 100})
    with pytest.raises(ConfigError, match="tokenizer.max_vocab`: Input should be greater than or equal to 6"):
        _run(tmp_path, {"train": ["a.txt"]}, {"kind": "char", "max_vocab": 5})


def test_tokenizer_reused_from_a_dataset_or_run_directory(tmp_path):
    _write(tmp_path / "a.txt", VERSE * 5)
    _write(tmp_path / "b.txt", "Speak, citizen! 123\n")
    base, _ = _run(tmp_path, {"train": ["a.txt"]}, {"kind": "word"})
    base_ds = Dataset(base.data.dir)
    run_dir = tmp_path / "runs" / "r1"
    base_ds.tokenizer().save(run_dir / "tokenizer")
    for source in (str(base.data.dir), str(run_dir)):
        exp, _ = _run(tmp_path, {"dir": "reuse", "train": ["b.txt"], "split": {"valid": 0}},
                      {"kind": "char", "from": source})
        ds = Dataset(exp.data.dir)
        assert ds.fingerprint == base_ds.fingerprint and ds.tokenizer().kind == "word"
        assert ds.manifest["tokenizer"]["from"].endswith("tokenizer")
        assert UNK_ID in ds.tokens("train").tolist()
    with pytest.raises(ArtifactError, match="tokenizer.from: no tokenizer found in"):
        _run(tmp_path, {"dir": "reuse", "train": ["b.txt"]}, {"from": str(tmp_path / "runs")})


def test_tokenizer_extend_appends_new_tokens_and_keeps_every_old_id(tmp_path):
    from llmctl.train.parent import extension_of

    _write(tmp_path / "a.txt", VERSE * 5)
    _write(tmp_path / "b.txt", "Speak, citizen! zebra zebra quokka\n" * 3)
    base, _ = _run(tmp_path, {"train": ["a.txt"]}, {"kind": "word"})
    old = Dataset(base.data.dir).tokenizer()
    exp, _ = _run(tmp_path, {"dir": "ext", "train": ["b.txt"], "split": {"valid": 0}},
                  {"kind": "word", "from": str(base.data.dir), "extend": True, "min_freq": 2})
    ds = Dataset(exp.data.dir)
    new = ds.tokenizer()
    assert extension_of(old, new) == old.vocab_size  # every old id keeps its token
    added = [new.id_to_token(i) for i in range(old.vocab_size, new.vocab_size)]
    assert added[0] == "zebra" and "quokka" in added  # most frequent first
    assert UNK_ID not in ds.tokens("train").tolist()
    assert ds.manifest["tokenizer"]["extended"] is True and ds.fingerprint != Dataset(base.data.dir).fingerprint
    # max_vocab caps the extension; the settings are part of the build key (a rebuild, not "up to date")
    capped, _ = _run(tmp_path, {"dir": "ext", "train": ["b.txt"], "split": {"valid": 0}},
                     {"kind": "word", "from": str(base.data.dir), "extend": True, "max_vocab": old.vocab_size + 1})
    assert Dataset(capped.data.dir).tokenizer().vocab_size == old.vocab_size + 1
    with pytest.raises(DataError, match="max_vocab=6 is below the vocabulary size"):
        _run(tmp_path, {"dir": "ext2", "train": ["b.txt"], "split": {"valid": 0}},
             {"from": str(base.data.dir), "extend": True, "max_vocab": 6})


def test_tokenizer_extend_needs_from_and_a_char_or_word_tokenizer(tmp_path):
    _write(tmp_path / "a.txt", VERSE * 30)
    with pytest.raises(ConfigError, match="tokenizer.extend needs tokenizer.from"):
        _run(tmp_path, {"train": ["a.txt"]}, {"kind": "word", "extend": True})
    bpe, _ = _run(tmp_path, {"dir": "bpe", "train": ["a.txt"]}, {"kind": "bpe", "vocab_size": 300})
    with pytest.raises(ConfigError, match="only char, word and whitespace tokenizers can be extended"):
        _run(tmp_path, {"dir": "x", "train": ["a.txt"]}, {"from": str(bpe.data.dir), "extend": True})


@pytest.mark.parametrize("store", ["native", "numpy"])
def test_parallel_word_passes_give_identical_output(tmp_path, monkeypatch, store):
    """The single word pass in threads with native word stores (merged at the end), or without them in worker
    processes, writes the dataset one process writes."""
    if store == "native" and word_scan.native is None:
        pytest.skip("the native scanner is not built")
    if store == "numpy":
        monkeypatch.setattr(word_scan, "native", None)
    _write(tmp_path / "a.txt", "".join(f"{VERSE}line {i} {' '.join(_mixed_lines(2, i))}\n" for i in range(400)))
    one, _ = _run(tmp_path, {"dir": "one", "train": ["a.txt"], "workers": 1}, {"kind": "word"})
    for n in (2, 3):
        many, _ = _run(tmp_path, {"dir": f"w{n}", "train": ["a.txt"], "workers": n}, {"kind": "word"})
        _assert_same_dataset(Dataset(one.data.dir), Dataset(many.data.dir))
    for n in (1, 2):  # encoding with a known tokenizer: threads (native) or processes
        reused, _ = _run(tmp_path, {"dir": f"r{n}", "train": ["a.txt"], "workers": n},
                         {"kind": "word", "from": str(one.data.dir)})
        _assert_same_dataset(Dataset(one.data.dir), Dataset(reused.data.dir))


def _assert_same_dataset(a: Dataset, b: Dataset) -> None:
    assert a.fingerprint == b.fingerprint
    for split in ("train", "valid"):
        assert np.array_equal(a.tokens(split), b.tokens(split))
        assert np.array_equal(a.doc_offsets(split), b.doc_offsets(split))


def test_a_hash_collision_between_counting_threads_takes_two_passes(tmp_path, monkeypatch):
    if word_scan.native is None:
        pytest.skip("the native scanner is not built")
    _write(tmp_path / "a.txt", "".join(f"{VERSE}line {i}\n" for i in range(200)))
    one, _ = _run(tmp_path, {"dir": "one", "train": ["a.txt"], "workers": 1}, {"kind": "word"})
    monkeypatch.setattr(WordCounter, "absorb", lambda self, other: None)  # "a word has another's hash"
    two, _ = _run(tmp_path, {"dir": "two", "train": ["a.txt"], "workers": 2}, {"kind": "word"})
    _assert_same_dataset(Dataset(one.data.dir), Dataset(two.data.dir))


MIXED_WORDS = ["Speak", "naïve", "e\u0301te", "你好", "🙂", "👍🏽", "👨\u200d👩\u200d👧", "🇺🇸", "don't", "(a)", "x_1",
               "Ωmega", "カタカナ", "・", "½", "\u2028", "\x1c", "नमस्ते"] + [f"w{i}" for i in range(40)]


def _mixed_lines(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(MIXED_WORDS, size=int(rng.integers(0, 30)))) + rng.choice([".", ",", ""])
            for _ in range(n)]


@pytest.mark.parametrize("workers", [1, 2])
def test_word_ids_are_the_tokenizers_and_the_vocabulary_train_tokenizers(tmp_path, workers):
    """The single word pass (count while encoding, then ids) gives exactly `train_tokenizer` on the train text and
    `encode` of every document."""
    lines = _mixed_lines(3000)
    _write(tmp_path / "a.txt", "\n".join(lines) + "\n")
    exp, _ = _run(tmp_path, {"train": ["a.txt"], "documents": "line", "workers": workers,
                             "split": {"mode": "documents", "valid": 0.1, "test": 0.1, "seed": 3}},
                  {"kind": "word", "min_freq": 2})
    ds = Dataset(exp.data.dir)
    tok = ds.tokenizer()
    docs = {}
    for split in ("train", "valid", "test"):
        ids, off = ds.tokens(split).tolist(), ds.doc_offsets(split)
        docs[split] = [ids[off[i]:off[i + 1]] for i in range(len(off) - 1)]
    texts = [line for line in lines if line.strip()]
    train_texts = [tok.decode(d) for d in docs["train"]]  # decoding is lossy: find the texts by their ids instead
    by_ids = {tuple(tok.encode(t) + [EOS_ID]): t for t in texts}
    assert all(tuple(d) in by_ids for split in docs for d in docs[split])
    assert len(train_texts) == len(docs["train"])
    reference = train_tokenizer("word", [by_ids[tuple(d)] for d in docs["train"]], min_freq=2)
    assert tok.fingerprint() == reference.fingerprint()
    assert sum(len(d) for d in docs.values()) == len(texts)


@pytest.mark.parametrize("task", ["lm", "classify", "pairs"])
def test_word_single_pass_falls_back_to_two_passes_on_a_hash_collision(tmp_path, monkeypatch, task):
    """The fallback is the classic train-then-encode path: both give the same dataset."""
    lines = _mixed_lines(800, seed=1)
    if task == "lm":
        _write(tmp_path / "a.txt", "\n".join(lines) + "\n")
        data: dict = {"train": ["a.txt"], "split": {"valid": 0.2}, "workers": 1}
    elif task == "classify":
        rows = [{"text": t, "label": str(i % 3)} for i, t in enumerate(lines) if t.strip()]
        _write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in rows))
        data = {"task": "classify", "train": ["a.jsonl"], "split": {"valid": 0.2}, "workers": 1}
    else:
        rows = [{"prompt": a, "response": b} for a, b in zip(lines[::2], lines[1::2], strict=True) if b.strip()]
        _write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in rows))
        data = {"task": "pairs", "train": [{"path": "a.jsonl", "prompt": "prompt", "response": "response"}],
                "split": {"valid": 0.2}, "workers": 1}
    normal, _ = _run(tmp_path, {"dir": "normal", **data}, {"kind": "word"})
    # every two words of one length collide: the single pass cannot tell words apart and gives up
    monkeypatch.setattr(word_scan, "_hashes", lambda points, starts, ends: (ends - starts).astype(np.uint64))
    stream = io.StringIO()
    weak, _ = _run(tmp_path, {"dir": "weak", **data}, {"kind": "word"}, reporter=Reporter("jsonl", stream=stream))
    tasks = {json.loads(line).get("task") for line in stream.getvalue().splitlines()}
    assert "train word tokenizer" in tasks  # the two-pass path ran
    a, b = Dataset(normal.data.dir), Dataset(weak.data.dir)
    assert a.fingerprint == b.fingerprint
    for name in os.listdir(a.root):
        if name.endswith((".tokens", ".npy")) or name == "stats.json":
            assert (a.root / name).read_bytes() == (b.root / name).read_bytes(), name


def test_workers_default_to_one_per_core_for_large_corpora(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    assert encoding.workers_for(1 << 40, 3) == encoding.workers_for(1, 3, threads=True) == 3  # data.workers
    assert encoding.workers_for(encoding.PARALLEL_MIN_BYTES_THREADS - 1, 0, threads=True) == 1
    assert encoding.workers_for(encoding.PARALLEL_MIN_BYTES_THREADS, 0, threads=True) == cores
    monkeypatch.setattr(word_scan, "native", None)  # worker processes: a larger corpus repays starting them
    assert encoding.workers_for(encoding.PARALLEL_MIN_BYTES - 1, 0) == 1
    assert encoding.workers_for(encoding.PARALLEL_MIN_BYTES, 0) == cores


def test_workers_fork_only_when_safe(monkeypatch):
    import threading

    for name in encoding._FORK_UNSAFE_MODULES:  # earlier tests in this process may have imported TensorFlow
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(encoding, "_IMPORT_TASKS", encoding._tasks())  # as if numpy's threads were these
    assert encoding.fork_is_safe()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not encoding.fork_is_safe()  # a thread of ours (or a library's) might hold a lock
    finally:
        stop.set()
        thread.join()
    assert encoding.fork_is_safe()
    monkeypatch.setattr(encoding, "_IMPORT_TASKS", set())  # a native thread started after numpy loaded
    assert not encoding.fork_is_safe()
    monkeypatch.setattr(encoding, "_IMPORT_TASKS", encoding._tasks())
    monkeypatch.setitem(sys.modules, "tensorflow", object())
    assert not encoding.fork_is_safe()


# ---------------------------------------------------------------- no-op, rebuilds, progress


def test_unchanged_is_a_noop_and_changes_rebuild(tmp_path):
    src_file = _write(tmp_path / "a.txt", VERSE * 3)
    exp, first = _run(tmp_path, {"train": ["a.txt"]})
    manifest = DatasetDir(exp.data.dir).manifest
    stamp = manifest.stat().st_mtime_ns
    _, again = _run(tmp_path, {"train": ["a.txt"]})
    assert again.values["status"] == "unchanged" and "up to date" in again.lines[0]
    assert manifest.stat().st_mtime_ns == stamp
    _, forced = _run(tmp_path, {"train": ["a.txt"]}, force=True)
    assert forced.values["status"] == "built"
    _, changed = _run(tmp_path, {"train": ["a.txt"]}, overrides=("data.split.valid=0.2",))
    assert changed.values["status"] == "built"
    src_file.write_text(VERSE * 4, encoding="utf-8")
    _, edited = _run(tmp_path, {"train": ["a.txt"]}, overrides=("data.split.valid=0.2",))
    assert edited.values["status"] == "built"
    assert Dataset(exp.data.dir).manifest["sources"]["train"][0]["size"] == len((VERSE * 4).encode())
    # a damaged dataset is rebuilt rather than trusted
    DatasetDir(exp.data.dir).tokens("train").write_bytes(b"\0\0")
    _, repaired = _run(tmp_path, {"train": ["a.txt"]}, overrides=("data.split.valid=0.2",))
    assert repaired.values["status"] == "built"


def test_a_folder_that_is_not_a_dataset_is_never_replaced(tmp_path):
    _write(tmp_path / "corpus" / "a.txt", VERSE)
    with pytest.raises(ArtifactError, match="is a folder that is not an llmctl dataset"):
        _run(tmp_path, {"dir": "corpus", "train": ["corpus/a.txt"]})
    assert (tmp_path / "corpus" / "a.txt").read_text() == VERSE


def test_manifest_contents(tmp_path):
    _write(tmp_path / "a.txt", VERSE)
    exp, _ = _run(tmp_path, {"train": ["a.txt"]})
    manifest = Dataset(exp.data.dir).manifest
    assert manifest["format_version"] == 1 and manifest["task"] == "lm" and manifest["labels"] == []
    source = manifest["sources"]["train"][0]
    assert source["size"] == len(VERSE.encode()) and len(source["sha256"]) == 64
    assert manifest["config"]["data"]["dir"] == str(exp.data.dir)
    assert manifest["tokenizer"]["vocab_size"] == Dataset(exp.data.dir).tokenizer().vocab_size
    assert set(os.listdir(exp.data.dir)) == {"manifest.json", "stats.json", "tokenizer", "train.tokens",
                                             "train.docs.npy", "valid.tokens", "valid.docs.npy"}


def test_progress_and_report_go_through_the_reporter(tmp_path):
    _write(tmp_path / "a.txt", VERSE * 20)
    stream = io.StringIO()
    _run(tmp_path, {"train": ["a.txt"]}, reporter=Reporter("jsonl", stream=stream))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {"scan", "train char tokenizer", "encode"} <= {e.get("task") for e in events}
    assert all("MB/s" in e for e in events if e["event"] == "progress")
    assert any(e["event"] == "table" and e["title"] == "dataset" for e in events)
    quiet = io.StringIO()
    _run(tmp_path, {"train": ["a.txt"]}, force=True, reporter=Reporter("none", stream=quiet))
    assert quiet.getvalue() == ""


def test_preprocess_never_imports_tensorflow(tmp_path):
    _write(tmp_path / "a.txt", VERSE)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"dir": "ds", "train": ["a.txt"]}}), encoding="utf-8")
    code = ("import sys; from llmctl import config; from llmctl.data import preprocess; "
            f"preprocess.run(config.load({str(cfg)!r})); sys.exit(1 if 'tensorflow' in sys.modules else 0)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


# ---------------------------------------------------------------- bad input: one line, nothing written


@pytest.mark.parametrize("setup,data,pattern", [
    (lambda p: None, {"train": ["missing.txt"]}, r"data.train\[0\]: source not found"),
    (lambda p: _write(p / "a.txt", ""), {"train": ["a.txt"]}, "empty file"),
    (lambda p: (p / "a.txt").write_bytes(b"PK\x03\x04\x00\x00"), {"train": ["a.txt"]}, "looks binary"),
    (lambda p: (p / "a.txt").write_bytes(b"ok\n\xc3\x28 bad\n"), {"train": ["a.txt"]},
     r"a.txt: invalid utf-8 at byte offset 3"),
    (lambda p: _write(p / "a.tsv", "label\tcontent\n1\tx\n"), {"task": "classify", "train": ["a.tsv"]},
     r"a.tsv: no column `text` for the text \(columns: label, content\)"),
    (lambda p: _write(p / "a.jsonl", '{"text": "  "}\n{"text": ""}\n'), {"train": ["a.jsonl"]},
     r"data.train: no text left after reading 1 file\(s\) \(2 empty record\(s\)"),
])
def test_bad_input_is_one_typed_error_and_nothing_is_written(tmp_path, setup, data, pattern):
    setup(tmp_path)
    with pytest.raises(DataError, match=pattern) as exc:
        _run(tmp_path, data)
    assert "\n" not in exc.value.one_line()
    assert not (tmp_path / "ds").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("kind", ["char", "word"])
def test_a_min_freq_that_keeps_no_token_is_an_error(tmp_path, kind):
    _write(tmp_path / "a.txt", VERSE * 3)
    with pytest.raises(DataError, match=f"the {kind} vocabulary holds no token besides the special ones: "
                                        "tokenizer.min_freq=1000 drops every token") as exc:
        _run(tmp_path, {"train": ["a.txt"]}, {"kind": kind, "min_freq": 1000})
    assert "lower tokenizer.min_freq" in exc.value.one_line()
    assert not (tmp_path / "ds").exists()


def test_cli_bad_input_exits_3_with_one_line(tmp_path):
    _write(tmp_path / "dev.tsv", "label\tcontent\n0\tbad\n")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"dir": "ds", "task": "classify",
                                            "train": [{"path": "dev.tsv", "text": "sentence"}]}}), encoding="utf-8")
    result = CliRunner().invoke(app, ["preprocess", str(cfg), "-q"])
    assert result.exit_code == 3
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("data error:") and "no column `sentence`" in lines[0]
    assert "columns: label, content" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()


def test_cli_preprocess_then_noop(tmp_path):
    _write(tmp_path / "a.txt", VERSE)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"dir": "ds", "train": ["a.txt"]}}), encoding="utf-8")
    runner = CliRunner()
    first = runner.invoke(app, ["preprocess", str(cfg), "-q"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["preprocess", str(cfg), "-q"])
    assert second.exit_code == 0 and "up to date" in second.output


# ---------------------------------------------------------------- crash safety


def _start_and_kill(cfg: Path, tmp_path: Path, *extra: str) -> None:
    """Run preprocess in a subprocess and kill -9 it once it is writing token files."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "llmctl", "preprocess", str(cfg), "-q", *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any((tmp / "train.tokens").exists() for tmp in tmp_path.glob(".tmp-ds.*")):
                break
            time.sleep(0.005)
        assert proc.poll() is None, "preprocess finished before it could be killed; use a bigger corpus"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def test_kill_9_leaves_no_dataset_and_the_next_run_succeeds(tmp_path):
    words = [f"w{i}" for i in range(3000)]
    rng = np.random.default_rng(0)
    with open(tmp_path / "big.txt", "w", encoding="utf-8") as handle:
        for _ in range(40):
            handle.write(" ".join(rng.choice(words, size=60_000)) + "\n")  # ~12 MB of word text
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"dir": "ds", "train": ["big.txt"], "workers": 1},
                                   "tokenizer": {"kind": "word"}}), encoding="utf-8")
    _start_and_kill(cfg, tmp_path)
    assert [p.name for p in tmp_path.glob(".tmp-ds.*")]  # the killed run's leftovers ...
    with pytest.raises(ArtifactError, match="manifest.json missing"):
        Dataset(tmp_path / "ds")  # ... are never taken for a dataset
    exp = config.load(cfg)
    result = preprocess.run(exp)
    assert result.values["status"] == "built" and Dataset(tmp_path / "ds").has("train")
    assert not list(tmp_path.glob(".tmp-ds.*"))  # and the next run cleaned them up
    before = Dataset(tmp_path / "ds").manifest["build_key"]
    _start_and_kill(cfg, tmp_path, "--force")  # killed while rebuilding: the old dataset stays usable
    ds = Dataset(tmp_path / "ds")
    assert ds.manifest["build_key"] == before and len(ds.tokens("train")) == ds.manifest["splits"]["train"]["tokens"]
