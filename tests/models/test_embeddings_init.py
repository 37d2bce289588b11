"""Tests for llmctl.models.embeddings_init (small vector files in tmp_path, a fake tokenizer)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from llmctl.errors import DataError
from llmctl.models.embeddings_init import load_pretrained_vectors

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<sep>"]


class FakeTokenizer:
    def __init__(self, words: list[str], *, listable: bool = True):
        self.vocab = {tok: i for i, tok in enumerate(SPECIALS + words)}
        self.tokens = list(self.vocab)
        if listable:
            self.id_to_token = lambda i: self.tokens[i] if 0 <= i < len(self.tokens) else None

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str):
        return self.vocab.get(token)


def write(path, lines: list[str]):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


GLOVE = ["the 0.1 0.2 0.3", "cat 1 2 3", "sat -1 -2 -3", "unrelated 9 9 9", "<unk> 7 7 7"]


def test_glove_format(tmp_path):
    tok = FakeTokenizer(["the", "cat", "dog"])
    matrix, stats = load_pretrained_vectors(write(tmp_path / "glove.txt", GLOVE), tok, 3)
    assert matrix.shape == (8, 3) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix[tok.token_to_id("the")], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(matrix[tok.token_to_id("cat")], [1, 2, 3])
    assert not matrix[:5].any()  # specials stay zero, even "<unk>" that the file holds
    dog = matrix[tok.token_to_id("dog")]
    assert dog.any() and np.abs(dog).max() < 0.2  # small random init
    assert stats == {"covered": 2, "exact": 2, "lowercase": 0, "vocab": 8, "coverage": 2 / 8, "dim": 3,
                     "lines": 5, "path": str(tmp_path / "glove.txt")}


def test_word2vec_header_trailing_spaces_and_gzip(tmp_path):
    path = tmp_path / "w2v.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("3 2\nthe 0.5 0.25 \ncat 1 2 \nmat 3 4 \n")
    matrix, stats = load_pretrained_vectors(path, FakeTokenizer(["the", "mat"]), 2)
    np.testing.assert_allclose(matrix[5:], [[0.5, 0.25], [3, 4]])
    assert (stats["covered"], stats["dim"], stats["lines"]) == (2, 2, 3)


def test_random_rows_are_seeded(tmp_path):
    path = write(tmp_path / "v.txt", GLOVE)
    tok = FakeTokenizer(["the", "dog", "bird"])
    a, _ = load_pretrained_vectors(path, tok, 3, seed=7)
    b, _ = load_pretrained_vectors(path, tok, 3, seed=7)
    c, _ = load_pretrained_vectors(path, tok, 3, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[6:], c[6:])


def test_lowercase_fallback_both_directions_and_exact_wins(tmp_path):
    lines = ["Paris 1 1", "the 2 2", "The 3 3", "LONDON 4 4", "london 5 5"]
    tok = FakeTokenizer(["paris", "The", "london"])
    matrix, stats = load_pretrained_vectors(write(tmp_path / "v.txt", lines), tok, 2)
    np.testing.assert_allclose(matrix[tok.token_to_id("paris")], [1, 1])  # cased vector → lowercased vocab
    np.testing.assert_allclose(matrix[tok.token_to_id("The")], [3, 3])  # exact beats the earlier lowercase match
    np.testing.assert_allclose(matrix[tok.token_to_id("london")], [5, 5])  # exact replaces the LONDON fallback
    assert (stats["exact"], stats["lowercase"], stats["covered"]) == (2, 1, 3)


def test_lowercase_vectors_reach_cased_vocab_when_tokenizer_lists_its_vocab(tmp_path):
    path = write(tmp_path / "v.txt", ["paris 1 1"])
    _, stats = load_pretrained_vectors(path, FakeTokenizer(["Paris"]), 2)
    assert stats["lowercase"] == 1
    with pytest.raises(DataError, match="none of the 1 vectors"):
        load_pretrained_vectors(path, FakeTokenizer(["Paris"], listable=False), 2)


def test_token_with_spaces(tmp_path):
    tok = FakeTokenizer([". . .", "cat"])
    matrix, _ = load_pretrained_vectors(write(tmp_path / "v.txt", ["cat 1 2", ". . . 3 4"]), tok, 2)
    np.testing.assert_allclose(matrix[tok.token_to_id(". . .")], [3, 4])


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found.*model.pretrained_embeddings"):
        load_pretrained_vectors(tmp_path / "nope.txt", FakeTokenizer(["a"]), 3)


@pytest.mark.parametrize("lines", [GLOVE, ["5 3"] + GLOVE], ids=["glove", "word2vec"])
def test_dim_mismatch(tmp_path, lines):
    with pytest.raises(DataError, match="vectors have 3 dims but model.embedding_dim is 128; "
                                        "set model.embedding_dim=3"):
        load_pretrained_vectors(write(tmp_path / "v.txt", lines), FakeTokenizer(["the"]), 128)


@pytest.mark.parametrize("bad, fragment", [
    ("dog 1 2", "v.txt:3: expected a token and 3 numbers, got 2 numbers"),
    (" 1 2 3", "v.txt:3: expected a token and 3 numbers, got an empty token"),
    ("cat 1 x 3", "v.txt:3: vector of 'cat' holds a value that is not a number"),
    ("cat 1 nan 3", "v.txt:3: vector of 'cat' holds inf or nan"),
])
def test_malformed_line_names_its_number(tmp_path, bad, fragment):
    path = write(tmp_path / "v.txt", ["the 1 2 3", "sat 1 2 3", bad])
    with pytest.raises(DataError, match=fragment) as info:
        load_pretrained_vectors(path, FakeTokenizer(["the", "cat", "dog"]), 3)
    assert "\n" not in info.value.one_line()


def test_invalid_utf8_names_its_line(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(b"the 1 2\n\xff\xfe 1 2\n")
    with pytest.raises(DataError, match="v.txt:2: not valid UTF-8"):
        load_pretrained_vectors(path, FakeTokenizer(["the"]), 2)


def test_zero_coverage(tmp_path):
    with pytest.raises(DataError, match="none of the 5 vectors .* 7-token vocabulary"):
        load_pretrained_vectors(write(tmp_path / "v.txt", GLOVE), FakeTokenizer(["zebra", "yak"]), 3)


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="holds no vectors"):
        load_pretrained_vectors(write(tmp_path / "v.txt", ["", "2 3"]), FakeTokenizer(["a"]), 3)
