"""The LM protocol card: exact totals against a brute-force per-token computation, card arithmetic, word counts,
and evaluation text files tokenised exactly as preprocess tokenises a split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmctl.tfenv import import_tf

tf = import_tf()

from llmctl.data.batching import StreamLayout  # noqa: E402
from llmctl.evaluation.eval_text import files_text  # noqa: E402
from llmctl.evaluation.lm import StreamScorer, StreamTotals, lm_card  # noqa: E402
from llmctl.models.lstm_lm import build_language_model  # noqa: E402
from llmctl.schema import ModelConfig  # noqa: E402
from tests.evaluation.lm_runs import experiment, preprocessed  # noqa: E402

VOCAB = 30


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(4)
    model = build_language_model(ModelConfig(embedding_dim=8, layers=2, units=12, dropout=0.0, output_dropout=0.0),
                                 VOCAB)
    model.head.kernel.assign(model.head.kernel * 5.0)
    return model


@pytest.fixture(scope="module")
def tokens():
    ids = np.random.default_rng(2).integers(1, VOCAB, size=503)  # includes <unk> (1)
    return ids.astype(np.uint16)


_CACHE: dict = {}


def brute_force(model, tokens, columns, *, context="carry", bptt=None):
    """Per-token sums over the stream-column layout, each column run as whole sequences (float64 softmax)."""
    key = (id(model), columns, context, bptt)
    if key not in _CACHE:
        _CACHE[key] = _brute_force(model, tokens, columns, context, bptt)
    return _CACHE[key]


def _brute_force(model, tokens, columns, context, bptt):
    forward = tf.function(lambda x: model(x, model.initial_state(1))[0], reduce_retracing=True)
    layout = StreamLayout(len(tokens), columns)
    totals = np.zeros(5)
    for c in range(columns):
        start, length = int(layout.starts[c]), int(layout.lengths[c])
        x = np.asarray(tokens[start:start + length], np.int32)
        y = np.asarray(tokens[start + 1:start + length + 1], np.int64)
        pieces = [(0, length)] if context == "carry" else [(s, min(bptt, length - s)) for s in range(0, length, bptt)]
        for s, n in pieces:
            z = forward(tf.constant(x[None, s:s + n])).numpy()[0].astype(np.float64)
            logp = z - z.max(axis=-1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(axis=-1, keepdims=True))
            target = y[s:s + n]
            picked = z[np.arange(n), target]
            higher = (z > picked[:, None]).sum(axis=-1)
            totals += [-logp[np.arange(n), target].sum(), n, (higher == 0).sum(), (higher < 5).sum(),
                       (target == 1).sum()]
    return totals


@pytest.mark.parametrize("columns,bptt", [(1, 50), (4, 13), (7, 8), (10, 64)])
@pytest.mark.parametrize("jit", [False, True])
def test_carry_totals_equal_brute_force_over_every_token(model, tokens, columns, bptt, jit):
    totals = StreamScorer(model, jit=jit).score(tokens, batch_size=columns, bptt=bptt, context="carry")
    ref = brute_force(model, tokens, columns)
    assert totals.tokens == len(tokens) - 1 == int(ref[1])  # every target once: remainder columns included
    assert totals.nll_sum == pytest.approx(ref[0], rel=1e-5)
    assert (totals.correct, totals.top5, totals.unk) == (int(ref[2]), int(ref[3]), int(ref[4]))


def test_reset_totals_equal_brute_force_per_window_and_differ_from_carry(model, tokens):
    scorer = StreamScorer(model)
    reset = scorer.score(tokens, batch_size=4, bptt=9, context="reset")
    carry = scorer.score(tokens, batch_size=4, bptt=9, context="carry")
    ref = brute_force(model, tokens, 4, context="reset", bptt=9)
    assert reset.tokens == carry.tokens == len(tokens) - 1
    assert reset.nll_sum == pytest.approx(ref[0], rel=1e-5)
    assert abs(reset.nll - carry.nll) > 1e-4


def test_window_length_does_not_change_carry_totals(model, tokens):
    scorer = StreamScorer(model)
    a = scorer.score(tokens, batch_size=5, bptt=7)
    b = scorer.score(tokens, batch_size=5, bptt=31)
    assert a.nll_sum == pytest.approx(b.nll_sum, rel=1e-5) and a.correct == b.correct


def _totals(nll_sum=693.0, tokens=1000, correct=400, top5=800, unk=10):
    return StreamTotals(nll_sum=nll_sum, tokens=tokens, correct=correct, top5=top5, unk=unk, columns=4, bptt=16,
                        windows=3, context="carry", seconds=0.5)


def test_card_arithmetic_for_each_tokenizer_kind():
    common = dict(split="valid", checkpoint={"which": "best", "path": "/x", "step": 3}, dataset_fingerprint="fp",
                  data_sha256="sha")
    char = lm_card(_totals(), tokenizer_kind="char", characters=1001, words=200, **common)
    assert char["nll_nats"] == pytest.approx(0.693)
    assert char["bits_per_token"] == pytest.approx(0.693 / math.log(2))
    assert char["perplexity"] == pytest.approx(math.exp(0.693))
    assert char["bits_per_char"] == pytest.approx(693.0 / math.log(2) / 1001)  # 1000 targets of 1001 characters
    assert char["word_perplexity"] == pytest.approx(math.exp(693.0 / 200))
    assert (char["accuracy"], char["top5_accuracy"], char["unk_rate"]) == (0.4, 0.8, 0.01)
    bpe = lm_card(_totals(), tokenizer_kind="bpe", characters=3000, words=500, **common)
    assert bpe["bits_per_char"] == pytest.approx(693.0 / math.log(2) / 3000)
    assert bpe["word_perplexity"] == pytest.approx(math.exp(693.0 / 500))
    # one <eos> per document: predicted, so counted with the words and characters
    lines = lm_card(_totals(), tokenizer_kind="word", characters=3000, words=450, eos=50, **common)
    assert lines["word_perplexity"] == pytest.approx(math.exp(693.0 / 500))
    assert lines["bits_per_char"] == pytest.approx(693.0 / math.log(2) / 3050)
    assert "450 whitespace-separated words + 50 <eos>" in lines["word_perplexity_basis"]
    # a whitespace model's tokens are the words and <eos>: N - 1 targets of N units
    ws = lm_card(_totals(tokens=1000), tokenizer_kind="whitespace", characters=None, words=950, eos=51, **common)
    assert ws["word_perplexity"] == pytest.approx(math.exp(693.0 / 1001))
    assert ws["bits_per_char"] == "not available"
    old = lm_card(_totals(), tokenizer_kind="word", characters=None, words=None, **common)
    assert old["word_perplexity"] == old["bits_per_char"] == "not available"  # never the per-token figure
    for key in ("nll_nats", "bits_per_token", "perplexity", "accuracy", "top5_accuracy", "tokens", "unk_rate",
                "bits_per_char", "word_perplexity", "words", "eos", "characters", "context", "checkpoint",
                "dataset_fingerprint", "split"):
        assert key in char


@pytest.mark.parametrize("documents,normalize", [("file", {}), ("line", {"lowercase": True})])
def test_files_are_tokenised_exactly_like_a_preprocessed_split(tmp_path, documents, normalize):
    from llmctl.data.normalize import Normalizer

    train = tmp_path / "train.txt"
    held = tmp_path / "held.txt"
    train.write_text("the cat sat on the mat.\nthe dog sat too.\n" * 20, encoding="utf-8")
    held.write_text("The Cat sat.\n\nA dog sat on the mat!\nzebra\n", encoding="utf-8")
    exp = experiment(tmp_path, "files", [train], data={"valid": [str(held)], "documents": documents,
                                                       "normalize": normalize})
    ds = preprocessed(exp)
    got = files_text([held], exp.data, Normalizer(exp.data.normalize), ds.tokenizer())
    np.testing.assert_array_equal(got.tokens, np.asarray(ds.tokens("valid"), np.int64))
    assert got.characters == ds.manifest["splits"]["valid"]["characters"]
    text = Normalizer(exp.data.normalize)(held.read_text(encoding="utf-8"))
    assert got.words == len(text.split())
    assert got.sources[0]["path"] == str(held)
