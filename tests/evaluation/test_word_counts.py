"""Per-word figures on one scale (issue #17): char, BPE, word and whitespace models of the same text report the same
`words`, `characters` and `<eos>` counts, and their word perplexity divides the total NLL by words + `<eos>`."""

from __future__ import annotations

import json
import math

import pytest

from llmctl import config as config_mod
from llmctl.progress import Reporter
from tests.evaluation.lm_runs import corpus, experiment, untrained_run

KINDS = {"char": {}, "bpe": {"vocab_size": 300}, "word": {}, "whitespace": {}}


def _card(run, *overrides):
    import llmctl.evaluate

    exp = config_mod.load(run.root, list(overrides))
    return llmctl.evaluate.run(exp, reporter=Reporter("none")).values


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    root = tmp_path_factory.mktemp("word_counts")
    train, valid, extra = root / "train.txt", root / "valid.txt", root / "extra.txt"
    train.write_text(corpus(6_000, seed=1), encoding="utf-8")
    valid.write_text(corpus(1_500, seed=2).replace(",", " , "), encoding="utf-8")
    extra.write_text("Speak , speak .\n\nWhat say you ?\nnew words here\n", encoding="utf-8")
    out = {}
    for kind, settings in KINDS.items():
        exp = experiment(root, f"wc_{kind}", [train], data={"valid": [str(valid)], "documents": "line"},
                         tokenizer={"kind": kind, **settings})
        run = untrained_run(exp)
        out[kind] = (_card(run), _card(run, f"evaluate.files=[{extra}]"))
    return out, valid.read_text(encoding="utf-8"), extra.read_text(encoding="utf-8")


def test_every_tokenizer_reports_the_same_words_for_the_same_text(cards):
    by_kind, valid_text, extra_text = cards
    lines = [line for line in valid_text.splitlines() if line.strip()]
    for which, text in ((0, valid_text), (1, extra_text)):
        got = {kind: (c[which]["words"], c[which]["characters"], c[which]["eos"]) for kind, c in by_kind.items()}
        assert len(set(got.values())) == 1, got
        words, _, eos = got["char"]
        assert words == len(text.split())
        assert eos == len([line for line in text.splitlines() if line.strip()])
    assert by_kind["char"][0]["eos"] == len(lines)


def test_word_perplexity_divides_the_total_nll_by_words_plus_eos(cards):
    by_kind, _, _ = cards
    for kind, (card, _) in by_kind.items():
        total = card["nll_nats"] * card["tokens"]
        units = card["words"] + card["eos"]
        assert card["word_perplexity"] == pytest.approx(math.exp(total / units)), kind
        assert card["bits_per_char"] == pytest.approx(total / math.log(2) / (card["characters"] + card["eos"]))
        assert f"{units:,}" in card["word_perplexity_basis"]
    ws = by_kind["whitespace"][0]
    assert ws["tokens"] == ws["words"] + ws["eos"] - 1  # whitespace tokens are the words: every one after the first


def test_an_old_dataset_without_word_counts_says_not_available(cards, tmp_path):
    from llmctl.evaluation.eval_text import split_text

    class Old:  # a dataset made before preprocess recorded words
        manifest = {"splits": {"valid": {"documents": 3, "characters": 40}}}

        def tokens(self, split):
            import numpy as np

            return np.arange(10)

    text = split_text(Old(), "valid")
    assert text.words is None and text.characters == 40
    from llmctl.evaluation.lm import StreamTotals, lm_card

    card = lm_card(StreamTotals(nll_sum=9.0, tokens=9), tokenizer_kind="word", characters=text.characters,
                   words=text.words, eos=text.eos, split="valid", checkpoint={}, dataset_fingerprint="f",
                   data_sha256="s")
    assert card["word_perplexity"] == "not available" and "no word count" in card["word_perplexity_basis"]
    assert json.loads(json.dumps(card))["bits_per_char"] == pytest.approx(9.0 / math.log(2) / (40 + text.eos))
