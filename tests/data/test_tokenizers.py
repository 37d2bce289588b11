"""Tests for llmctl.data.tokenizers (pure Python + HF tokenizers; no TensorFlow, no network)."""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import tokenizers as hf_tokenizers

from llmctl.data import tokenizers as tk
from llmctl.data.tokenizers import (
    BOS_ID,
    EOS_ID,
    HF_TOKENIZER_FILE,
    METADATA_FILE,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    TOKENIZER_KINDS,
    UNK_ID,
    BpeTokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
    split_words,
    tokenizer_from_counts,
    train_tokenizer,
)

MIXED = "Hello, мир! 你好世界 🙂👍🏽 e\u0301 naïve"
ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "Don't stop (now), she said; it's well-known!",
    "A man, a plan, a canal: Panama.",
    "Tabs\tand\nnewlines  and   spaces.",
]
CORPUS = [MIXED, *ENGLISH, "你好，世界。我们在学习。", "Привет, мир! Как дела?"] * 3
# Characters from Unicode <= 14 (Python 3.11's unicodedata) that exercise every word-splitting rule.
FUZZ_ALPHABET = list(
    "ab1_ ,.!'\"-\n\t\x1céж²½\u0301\u0302\u093f你好ー。，\u3000가🙂👍🏽\u200d\ufe0f"
    "\U0001f1fa\U0001f1f8\U000e0100\U00020000\u2028"
)


def stream(texts: list[str]) -> Iterator[str]:
    """A one-shot iterator, like a streamed corpus."""
    yield from texts


@pytest.fixture(scope="module")
def trained() -> dict[str, Tokenizer]:
    return {
        "char": train_tokenizer("char", stream(CORPUS)),
        "word": train_tokenizer("word", stream(CORPUS)),
        "bpe": train_tokenizer("bpe", stream(CORPUS), vocab_size=400),
        "whitespace": train_tokenizer("whitespace", stream(CORPUS)),
    }


def vocab_of(tok: Tokenizer) -> list[str]:
    return [tok.id_to_token(i) for i in range(tok.vocab_size)]


# ---------------------------------------------------------------- special tokens


def test_special_token_constants() -> None:
    assert SPECIAL_TOKENS == ["<pad>", "<unk>", "<bos>", "<eos>", "<sep>"]
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID, SEP_ID) == (0, 1, 2, 3, 4)


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_special_ids_are_fixed_in_every_kind(trained: dict[str, Tokenizer], kind: str) -> None:
    tok = trained[kind]
    assert tok.kind == kind
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.id_to_token(i) == token
        assert tok.token_to_id(token) == i
    assert not set(tok.encode(MIXED)) & {PAD_ID, BOS_ID, EOS_ID, SEP_ID}


# ---------------------------------------------------------------- encode / decode


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_lossless_round_trip(trained: dict[str, Tokenizer], kind: str) -> None:
    tok = trained[kind]
    for text in [MIXED, *ENGLISH, "", "  leading and trailing  \n"]:
        assert tok.decode(tok.encode(text)) == text


def test_bpe_round_trips_unseen_text_and_literal_special_strings(trained: dict[str, Tokenizer]) -> None:
    tok = trained["bpe"]
    text = "Ω≈ç√ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 <eos> <pad>\r\n\x00"
    ids = tok.encode(text)
    assert UNK_ID not in ids and EOS_ID not in ids and PAD_ID not in ids
    assert tok.decode(ids) == text


def test_char_tokens_are_code_points(trained: dict[str, Tokenizer]) -> None:
    tok = trained["char"]
    assert len(tok.encode(MIXED)) == len(MIXED)  # "e\u0301" and 👍🏽 are two code points each
    assert [tok.id_to_token(i) for i in tok.encode("e\u0301👍🏽")] == ["e", "\u0301", "👍", "🏽"]


def test_word_splitting() -> None:
    assert split_words("Hello, 你好世界! ok") == ["Hello", ",", "你", "好", "世", "界", "!", "ok"]
    assert split_words("(a)...b") == ["(", "a", ")", ".", ".", ".", "b"]
    # combining marks stay on their base character; emoji sequences stay whole
    assert split_words("e\u0301 naïve 你\u0301") == ["e\u0301", "naïve", "你\u0301"]
    assert split_words("🙂👍🏽 👨\u200d👩\u200d👧 🇺🇸🇩🇪") == ["🙂", "👍🏽", "👨\u200d👩\u200d👧", "🇺🇸", "🇩🇪"]
    assert split_words("カタカナ한국어 x_1") == ["カ", "タ", "カ", "ナ", "한국어", "x_1"]
    assert split_words(" \t\n\x1c ") == []


def test_word_ascii_fast_path_matches_general_pattern() -> None:
    rng = random.Random(0)
    alphabet = [chr(i) for i in range(128)]
    for _ in range(2000):
        text = "".join(rng.choices(alphabet, k=rng.randint(0, 20)))
        assert tk._ASCII_WORD_RE.findall(text) == tk._word_re().findall(text), repr(text)


def test_word_tokenizer_encode_decode(trained: dict[str, Tokenizer]) -> None:
    tok = trained["word"]
    ids = tok.encode("Hello, 你好世界")
    assert [tok.id_to_token(i) for i in ids] == ["Hello", ",", "你", "好", "世", "界"]
    for text in [
        "The quick brown fox jumps over the lazy dog.",
        "Don't stop (now), she said; it's well-known!",
        "你好，世界。",
        "A man, a plan, a canal: Panama.",
    ]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("Tabs\tand\nnewlines")) == "Tabs and newlines"  # lossy by design


@pytest.mark.parametrize("kind", ["char", "word"])
def test_unknown_input_maps_to_unk(trained: dict[str, Tokenizer], kind: str) -> None:
    tok = trained[kind]
    ids = tok.encode("Hello ★")
    assert ids[-1] == UNK_ID and UNK_ID not in ids[:-1]
    assert tok.token_to_id("★") is None
    assert tok.decode(ids).rstrip() == "Hello"  # <unk> is special: skipped by default
    assert tok.decode(ids, skip_special=False).endswith("<unk>")


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_encode_batch_matches_encode(trained: dict[str, Tokenizer], kind: str) -> None:
    tok = trained[kind]
    texts = [MIXED, "", *ENGLISH]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_decode_special_handling_and_bad_ids(trained: dict[str, Tokenizer], kind: str) -> None:
    tok = trained[kind]
    word = "Hello," if kind == "whitespace" else "Hello"  # a whitespace token of the corpus
    ids = [BOS_ID, *tok.encode(word), EOS_ID, PAD_ID]
    assert tok.decode(ids) == word
    with_specials = tok.decode(ids, skip_special=False)
    assert "<bos>" in with_specials and "<eos>" in with_specials and word in with_specials
    for bad in ([tok.vocab_size], [-1]):
        with pytest.raises(ValueError, match="out of range"):
            tok.decode(bad)
    with pytest.raises(IndexError):
        tok.id_to_token(tok.vocab_size)
    with pytest.raises(IndexError):
        tok.id_to_token(-1)
    assert tok.token_to_id("definitely not a token") is None


def test_decode_accepts_numpy_ids(trained: dict[str, Tokenizer]) -> None:
    np = pytest.importorskip("numpy")
    tok = trained["char"]
    assert tok.decode(np.array(tok.encode(MIXED), dtype=np.int32)) == MIXED


# ---------------------------------------------------------------- training


def test_char_vocab_order_min_freq_and_max_vocab() -> None:
    texts = ["aaab", "bbc", "cd"]  # a:3 b:3 c:2 d:1
    assert vocab_of(train_tokenizer("char", stream(texts)))[5:] == ["a", "b", "c", "d"]
    assert vocab_of(train_tokenizer("char", stream(texts), min_freq=2))[5:] == ["a", "b", "c"]
    assert vocab_of(train_tokenizer("char", stream(texts), max_vocab=7)) == [*SPECIAL_TOKENS, "a", "b"]
    assert train_tokenizer("char", stream(texts), min_freq=3, max_vocab=100).vocab_size == 7


def test_word_vocab_order_min_freq_and_max_vocab() -> None:
    texts = ["b a, a", "c b", "你 b"]  # b:3 a:2 then ","/"c"/"你" once each
    assert vocab_of(train_tokenizer("word", stream(texts)))[5:] == ["b", "a", ",", "c", "你"]
    assert vocab_of(train_tokenizer("word", stream(texts), min_freq=2))[5:] == ["b", "a"]
    assert vocab_of(train_tokenizer("word", stream(texts), max_vocab=6))[5:] == ["b"]


def test_vocab_size_is_ignored_by_char_and_word() -> None:
    # the config always passes vocab_size (a bpe setting); it must not cap char/word vocabularies
    assert train_tokenizer("char", stream(["abcdefg"]), vocab_size=6).vocab_size == 12


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_training_is_deterministic(kind: str) -> None:
    first = train_tokenizer(kind, stream(CORPUS), vocab_size=400)
    second = train_tokenizer(kind, stream(list(reversed(CORPUS))), vocab_size=400)
    if kind != "bpe":  # frequency order does not depend on corpus order
        assert vocab_of(first) == vocab_of(second)
    again = train_tokenizer(kind, stream(CORPUS), vocab_size=400)
    assert vocab_of(first) == vocab_of(again)
    assert first.fingerprint() == again.fingerprint()


def test_bpe_vocab_size_is_the_target() -> None:
    tok = train_tokenizer("bpe", stream(CORPUS * 5), vocab_size=300)
    assert tok.vocab_size == 300
    assert isinstance(tok, BpeTokenizer)


@pytest.mark.parametrize(
    ("kind", "sizes"),
    [("char", {"max_vocab": 5}), ("word", {"max_vocab": 0}), ("bpe", {"vocab_size": 260}), ("bpe", {"vocab_size": 6})],
)
def test_too_small_vocab_raises(kind: str, sizes: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(kind, stream(CORPUS), **sizes)


def test_smallest_allowed_vocab_sizes() -> None:
    assert train_tokenizer("char", stream(["aab"]), max_vocab=6).vocab_size == 6
    assert train_tokenizer("bpe", stream(["aab"]), vocab_size=261).vocab_size == 261


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
@pytest.mark.parametrize("texts", [[], ["", ""]])
def test_empty_training_data_raises(kind: str, texts: list[str]) -> None:
    with pytest.raises(ValueError, match="empty"):
        train_tokenizer(kind, stream(texts), vocab_size=300)


def test_whitespace_only_data_is_empty_for_word() -> None:
    with pytest.raises(ValueError, match="empty"):
        train_tokenizer("word", stream([" \n\t "]))


def test_invalid_training_arguments() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        train_tokenizer("sentencepiece", stream(CORPUS))
    with pytest.raises(ValueError, match="min_freq"):
        train_tokenizer("char", stream(CORPUS), min_freq=0)
    with pytest.raises(TypeError, match="single string"):
        train_tokenizer("char", "abc")
    for kind in TOKENIZER_KINDS:
        with pytest.raises(TypeError, match="strings"):
            train_tokenizer(kind, stream(["ok", 3]), vocab_size=300)  # type: ignore[list-item]


def test_constructors_validate_vocabularies() -> None:
    with pytest.raises(ValueError, match="special tokens"):
        CharTokenizer(["a", *SPECIAL_TOKENS])
    with pytest.raises(ValueError, match="single code point"):
        CharTokenizer([*SPECIAL_TOKENS, "ab"])
    with pytest.raises(ValueError, match="duplicate"):
        CharTokenizer([*SPECIAL_TOKENS, "a", "a"])
    with pytest.raises(ValueError, match="single word-level token"):
        WordTokenizer([*SPECIAL_TOKENS, "a,b"])
    assert WordTokenizer([*SPECIAL_TOKENS, "naïve", "你"]).encode("naïve 你你") == [5, 6, 6]


def test_batched_word_vocabulary_check_rejects_what_the_token_check_does() -> None:
    # one split of the joined vocabulary replaces a split per token: every bad kind of entry is still named
    for bad in ["a b", "", " ", "a.", "..", "e\u0301x,", "\u200d "]:
        with pytest.raises(ValueError, match="single word-level token"):
            WordTokenizer([*SPECIAL_TOKENS, "ok", bad, "fine"])
    good = ["a", "naïve", "e\u0301", "你", "👨\u200d👩\u200d👧", "🇺🇸", "x_1", "²"]
    assert WordTokenizer([*SPECIAL_TOKENS, *good]).vocab_size == len(SPECIAL_TOKENS) + len(good)


@pytest.mark.parametrize("kind", ["char", "word"])
@pytest.mark.parametrize("min_freq,max_vocab", [(1, None), (2, None), (1, 9), (3, 12)])
def test_tokenizer_from_counts_is_train_tokenizers_rule(kind: str, min_freq: int, max_vocab: int | None) -> None:
    counts: Counter = Counter()
    for text in CORPUS:
        counts.update(split_words(text) if kind == "word" else text)
    built = tokenizer_from_counts(kind, counts, min_freq, max_vocab)
    trained = train_tokenizer(kind, stream(CORPUS), min_freq=min_freq, max_vocab=max_vocab)
    assert vocab_of(built) == vocab_of(trained) and built.fingerprint() == trained.fingerprint()
    unchecked = tokenizer_from_counts(kind, counts, min_freq, max_vocab, split=True)  # counted from split text
    assert vocab_of(unchecked) == vocab_of(built) and unchecked.fingerprint() == built.fingerprint()
    # descending count, ties by token string
    kept = vocab_of(built)[len(SPECIAL_TOKENS):]
    assert [(-counts[t], t) for t in kept] == sorted((-counts[t], t) for t in kept)


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_metadata_file_is_indented_json(trained: dict[str, Tokenizer], kind: str, tmp_path: Path) -> None:
    # the vocabulary is rendered by the fast path; the file is exactly what json.dumps(indent=2) writes
    text = (trained[kind].save(tmp_path) / METADATA_FILE).read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"
    tricky = WordTokenizer([*SPECIAL_TOKENS, "é", '"', "\\", "😀", "你"])
    text = (tricky.save(tmp_path / "tricky") / METADATA_FILE).read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_tokens_to_ids_maps_unknown_tokens_to_unk(trained: dict[str, Tokenizer]) -> None:
    tok = trained["word"]
    words = split_words(MIXED) + ["never-seen-token", "zzz"]
    assert tok.tokens_to_ids(words) == [tok.token_to_id(w) if tok.token_to_id(w) is not None else UNK_ID
                                        for w in words]
    assert tok.tokens_to_ids(split_words(MIXED)) == tok.encode(MIXED)


def test_tokenizer_from_counts_errors() -> None:
    with pytest.raises(ValueError, match="training data is empty"):
        tokenizer_from_counts("word", {})
    with pytest.raises(ValueError, match="min_freq must be at least 1"):
        tokenizer_from_counts("char", {"a": 1}, 0)
    with pytest.raises(ValueError, match="max_vocab 5 is too small"):
        tokenizer_from_counts("char", {"a": 1}, 1, 5)
    with pytest.raises(ValueError, match="cannot build a 'bpe' tokenizer from counts"):
        tokenizer_from_counts("bpe", {"a": 1})
    with pytest.raises(ValueError, match="single word-level token"):
        tokenizer_from_counts("word", {"a b": 3})


# ---------------------------------------------------------------- save / load / fingerprint


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_save_load_preserves_behaviour_and_fingerprint(
    trained: dict[str, Tokenizer], kind: str, tmp_path: Path
) -> None:
    tok = trained[kind]
    assert tok.save(tmp_path / "tok") == tmp_path / "tok"
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == sorted([HF_TOKENIZER_FILE, METADATA_FILE])
    loaded = load_tokenizer(tmp_path / "tok")
    assert type(loaded) is type(tok) and loaded.kind == kind
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.fingerprint() == tok.fingerprint()
    samples = [MIXED, *ENGLISH, "unseen ★ text"]
    assert loaded.encode_batch(samples) == tok.encode_batch(samples)
    assert vocab_of(loaded) == vocab_of(tok)

    meta = json.loads((tmp_path / "tok" / METADATA_FILE).read_text(encoding="utf-8"))
    assert meta["kind"] == kind and meta["vocab_size"] == tok.vocab_size
    assert meta["special_tokens"] == {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, "<sep>": 4}
    assert meta["fingerprint"] == tok.fingerprint()
    assert (meta.get("vocab") == vocab_of(tok)) if kind != "bpe" else ("vocab" not in meta)

    tok.save(tmp_path / "tok")  # overwriting in place works
    assert load_tokenizer(tmp_path / "tok").fingerprint() == tok.fingerprint()


def test_fingerprints_differ_between_tokenizers(trained: dict[str, Tokenizer]) -> None:
    prints = {tok.fingerprint() for tok in trained.values()}
    prints.add(train_tokenizer("char", stream(CORPUS), max_vocab=20).fingerprint())
    assert len(prints) == len(trained) + 1
    assert all(len(p) == 16 and set(p) <= set(string.hexdigits) for p in prints)


def test_fingerprint_is_stable_across_processes(trained: dict[str, Tokenizer], tmp_path: Path) -> None:
    for kind, tok in trained.items():
        tok.save(tmp_path / kind)
    code = (
        "import sys; from llmctl.data.tokenizers import load_tokenizer\n"
        "print(' '.join(load_tokenizer(d).fingerprint() for d in sys.argv[1:]))\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *(str(tmp_path / kind) for kind in trained)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout.split()
    assert out == [tok.fingerprint() for tok in trained.values()]


@pytest.mark.parametrize("kind", TOKENIZER_KINDS)
def test_hf_tokenizers_loads_every_kind_with_the_same_ids(
    trained: dict[str, Tokenizer], kind: str, tmp_path: Path
) -> None:
    tok = trained[kind]
    tok.save(tmp_path)
    hf = hf_tokenizers.Tokenizer.from_file(str(tmp_path / HF_TOKENIZER_FILE))
    assert hf.get_vocab_size() == tok.vocab_size
    # the file is HF's own serialisation of the tokenizer (char/word put their vocabulary in with the json module)
    written = json.loads((tmp_path / HF_TOKENIZER_FILE).read_text(encoding="utf-8"))
    assert written == json.loads(tok._hf_tokenizer().to_str()) == json.loads(hf.to_str())
    for i, token in enumerate(SPECIAL_TOKENS):
        assert hf.token_to_id(token) == i
    for text in [MIXED, *ENGLISH, "unseen ★ text", "a\u0301\u0302 👨\u200d👩\u200d👧 🇺🇸"]:
        assert hf.encode(text, add_special_tokens=False).ids == tok.encode(text), (kind, text)
    if kind != "word":  # HF has no decoder for our word spacing; it joins word tokens with " "
        assert hf.decode(tok.encode(MIXED)) == MIXED


def test_hf_word_pre_tokenizer_matches_split_words(trained: dict[str, Tokenizer], tmp_path: Path) -> None:
    trained["word"].save(tmp_path)
    hf = hf_tokenizers.Tokenizer.from_file(str(tmp_path / HF_TOKENIZER_FILE))
    rng = random.Random(1)
    for _ in range(1000):
        text = "".join(rng.choices(FUZZ_ALPHABET, k=rng.randint(0, 14)))
        assert [piece for piece, _ in hf.pre_tokenizer.pre_tokenize_str(text)] == split_words(text), repr(text)


def test_load_missing_files(trained: dict[str, Tokenizer], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=METADATA_FILE):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=METADATA_FILE):
        load_tokenizer(tmp_path / "a_file")
    trained["bpe"].save(tmp_path / "bpe")
    (tmp_path / "bpe" / HF_TOKENIZER_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=HF_TOKENIZER_FILE):
        load_tokenizer(tmp_path / "bpe")
    # char/word do not need tokenizer.json to load
    trained["char"].save(tmp_path / "char")
    (tmp_path / "char" / HF_TOKENIZER_FILE).unlink()
    assert load_tokenizer(tmp_path / "char").fingerprint() == trained["char"].fingerprint()


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda meta: "{not json",
        lambda meta: b"\xff\xfe".decode("latin-1"),
        lambda meta: json.dumps([1, 2]),
        lambda meta: json.dumps({**meta, "format": "other"}),
        lambda meta: json.dumps({**meta, "version": 99}),
        lambda meta: json.dumps({**meta, "kind": "sentencepiece"}),
        lambda meta: json.dumps({**meta, "special_tokens": {"<pad>": 1}}),
        lambda meta: json.dumps({**meta, "vocab": None}),
        lambda meta: json.dumps({**meta, "vocab": [*meta["vocab"], "zz"]}),
        lambda meta: json.dumps({**meta, "vocab": [*meta["vocab"], 7]}),
        lambda meta: json.dumps({**meta, "vocab_size": 3}),
        lambda meta: json.dumps({**meta, "vocab": [*SPECIAL_TOKENS, *reversed(meta["vocab"][5:])]}),
    ],
)
def test_load_corrupt_metadata_names_the_file(trained: dict[str, Tokenizer], tmp_path: Path, corrupt) -> None:
    trained["char"].save(tmp_path)
    meta_path = tmp_path / METADATA_FILE
    meta_path.write_text(corrupt(json.loads(meta_path.read_text(encoding="utf-8"))), encoding="utf-8")
    with pytest.raises(ValueError, match=METADATA_FILE):
        load_tokenizer(tmp_path)


def test_load_corrupt_bpe_file_names_the_file(trained: dict[str, Tokenizer], tmp_path: Path) -> None:
    trained["bpe"].save(tmp_path)
    hf_path = tmp_path / HF_TOKENIZER_FILE
    hf_path.write_text("{broken", encoding="utf-8")
    with pytest.raises(ValueError, match=HF_TOKENIZER_FILE):
        load_tokenizer(tmp_path)
    # a valid tokenizer.json of another tokenizer is caught by the consistency checks
    for other in (
        train_tokenizer("bpe", stream(ENGLISH), vocab_size=300),  # vocab_size differs
        train_tokenizer("bpe", stream([t.upper() for t in CORPUS]), vocab_size=400),  # same size, other merges
    ):
        assert other.fingerprint() != trained["bpe"].fingerprint()
        other.save(tmp_path / "other")
        hf_path.write_bytes((tmp_path / "other" / HF_TOKENIZER_FILE).read_bytes())
        with pytest.raises(ValueError, match=f"{HF_TOKENIZER_FILE} does not match .*{METADATA_FILE}"):
            load_tokenizer(tmp_path)
    assert other.vocab_size == trained["bpe"].vocab_size  # the last one got past the size check


def test_module_does_not_import_tensorflow() -> None:
    code = "import sys, llmctl.data.tokenizers; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_extend_tokenizer_char_keeps_ids_and_orders_new_tokens_by_count():
    from llmctl.data.tokenizers import extend_tokenizer, tokenizer_from_counts

    base = tokenizer_from_counts("char", {"a": 3, "b": 2})
    ext = extend_tokenizer(base, {"a": 9, "你": 1, "é": 4, "z": 4}, min_freq=1)
    assert [ext.id_to_token(i) for i in range(base.vocab_size)] == [base.id_to_token(i)
                                                                     for i in range(base.vocab_size)]
    assert [ext.id_to_token(i) for i in range(base.vocab_size, ext.vocab_size)] == ["z", "é", "你"]
    assert ext.decode(ext.encode("abz你")) == "abz你"
    assert extend_tokenizer(base, {"é": 1}, min_freq=2).vocab_size == base.vocab_size
