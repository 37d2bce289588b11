"""The `whitespace` tokenizer (issue #17): `line.split()` tokens of pre-tokenized corpora, the corpus's `<unk>` as
the `<unk>` id, `<eos>` per line through preprocess, HF loading, vocabulary rules and config errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmctl.data.specials import EOS_ID, SPECIAL_TOKENS, UNK_ID
from llmctl.data.tokenizers import (
    HF_TOKENIZER_FILE,
    WhitespaceTokenizer,
    extend_tokenizer,
    load_tokenizer,
    train_tokenizer,
)
from llmctl.data.word_count import words_per_text

LINES = [
    "the <unk> company said it will sell its stake in the <unk> unit",
    "a well @-@ known firm , he said @,@ but do n't worry",
    "",
    "i don 't know what <unk> means @-@ nobody does .",
    "   spaced\tout   line   with tabs\t",
    "the end",
]


def test_encode_is_str_split_and_the_literal_unk_is_the_unk_id():
    tok = train_tokenizer("whitespace", LINES)
    assert tok.kind == "whitespace"
    assert tok.token_to_id("<unk>") == UNK_ID
    vocab = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    assert vocab[:len(SPECIAL_TOKENS)] == SPECIAL_TOKENS and vocab.count("<unk>") == 1  # never a word
    for token in ("@-@", "@,@", "n't", "'t", "don", ","):
        assert tok.token_to_id(token) is not None, token
    for line in LINES:
        ids = tok.encode(line)
        assert len(ids) == len(line.split())
        assert [i == UNK_ID for i in ids] == [w == "<unk>" for w in line.split()]
        assert tok.decode(ids, skip_special=False) == " ".join(line.split())


def test_custom_unk_token_and_save_load_round_trip(tmp_path):
    tok = train_tokenizer("whitespace", ["a <oov> b", "b <unk> c"], unk_token="<oov>")
    assert tok.encode("a <oov> b <unk> zzz") == [tok.token_to_id("a"), UNK_ID, tok.token_to_id("b"), UNK_ID, UNK_ID]
    assert "<oov>" not in [tok.id_to_token(i) for i in range(tok.vocab_size)]
    tok.save(tmp_path)
    back = load_tokenizer(tmp_path)
    assert isinstance(back, WhitespaceTokenizer) and back.unk_token == "<oov>"
    assert back.fingerprint() == tok.fingerprint()
    assert back.fingerprint() != train_tokenizer("whitespace", ["a <oov> b", "b <unk> c"]).fingerprint()
    with pytest.raises(ValueError, match="unk_token"):
        WhitespaceTokenizer(SPECIAL_TOKENS + ["a"], unk_token="two words")


def test_vocabulary_rules_min_freq_and_max_vocab():
    texts = ["a a a b b c", "a b d"]
    assert train_tokenizer("whitespace", texts, min_freq=2).vocab_size == len(SPECIAL_TOKENS) + 2
    capped = train_tokenizer("whitespace", texts, max_vocab=len(SPECIAL_TOKENS) + 1)
    assert capped.id_to_token(len(SPECIAL_TOKENS)) == "a" and capped.encode("b") == [UNK_ID]
    grown = extend_tokenizer(capped, {"b": 3, "<unk>": 9, "z": 1})
    assert isinstance(grown, WhitespaceTokenizer) and grown.token_to_id("b") == len(SPECIAL_TOKENS) + 1
    assert grown.token_to_id("<unk>") == UNK_ID


@pytest.mark.parametrize("unk_token", ["<unk>", "<oov>"])
def test_tokenizer_json_loads_in_hf_tokenizers_with_the_same_ids(tmp_path, unk_token):
    hf_tokenizers = pytest.importorskip("tokenizers")
    texts = [line.replace("<unk>", unk_token) for line in LINES]
    tok = train_tokenizer("whitespace", texts, unk_token=unk_token)
    tok.save(tmp_path)
    hf = hf_tokenizers.Tokenizer.from_file(str(tmp_path / HF_TOKENIZER_FILE))
    assert hf.get_vocab_size() == tok.vocab_size
    for i, token in enumerate(SPECIAL_TOKENS):
        assert hf.token_to_id(token) == i
    for text in [*texts, "unseen words here", f"{unk_token} at start and end {unk_token}"]:
        assert hf.encode(text, add_special_tokens=False).ids == tok.encode(text), text


def test_preprocess_gives_each_line_its_tokens_plus_eos(tmp_path):
    from tests.evaluation.lm_runs import experiment, preprocessed

    train = tmp_path / "train.txt"
    held = tmp_path / "valid.txt"
    train.write_text("\n".join(LINES * 3) + "\n", encoding="utf-8")
    held.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    exp = experiment(tmp_path, "ws", [train], data={"valid": [str(held)], "documents": "line"},
                     tokenizer={"kind": "whitespace"})
    ds = preprocessed(exp)
    tok = ds.tokenizer()
    tokens = np.asarray(ds.tokens("valid"))
    offsets = ds.doc_offsets("valid")
    lines = [line for line in LINES if line.split()]
    assert len(offsets) == len(lines) + 1
    for k, line in enumerate(lines):
        doc = tokens[offsets[k]:offsets[k + 1]]
        assert len(doc) == len(line.split()) + 1 and doc[-1] == EOS_ID
        assert doc[:-1].tolist() == tok.encode(line)
        assert [t == UNK_ID for t in doc[:-1]] == [w == "<unk>" for w in line.split()]
    info = ds.manifest["splits"]["valid"]
    assert info["words"] == sum(len(line.split()) for line in LINES)
    assert info["tokens"] == info["words"] + len(lines)
    stats = json.loads(ds.layout.stats.read_text(encoding="utf-8"))
    assert stats["splits"]["valid"]["words"] == info["words"]


def test_words_per_text_is_len_of_str_split():
    texts = [*LINES, "naïve café\u00a0déjà\u2003vu", "\u3000全角\u3000space", "", " ", "x", "a\x1cb"]
    assert words_per_text(texts).tolist() == [len(t.split()) for t in texts]
    assert words_per_text([]).tolist() == []


@pytest.mark.parametrize("override,needle", [("tokenizer.unk_token='two words'", "tokenizer.unk_token"),
                                             ("tokenizer.kind=spaces", "tokenizer.kind"),
                                             ("model.init=xavier", "model.init"),
                                             ("model.init_range=0", "model.init_range")])
def test_bad_values_are_one_line_config_errors(override, needle):
    from llmctl.config import apply_overrides
    from llmctl.config_validation import validate
    from llmctl.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        validate(apply_overrides({}, [override]), source="test")
    line = err.value.one_line()
    assert needle in line and "\n" not in line
