"""The vectorised word rules (`fast_words`) give exactly `split_words` counts and `WordTokenizer.encode` ids —
with the native scanner (`llmctl/data/_wordscan.c`) and with the numpy path alike."""

from __future__ import annotations

import random
import shutil
from collections import Counter

import numpy as np
import pytest

from llmctl.data.fast_words import scan
from llmctl.data.fast_words.counter import HashCollision, WordCounter, count_words, merge_exports
from llmctl.data.fast_words.encoder import WordEncoder
from llmctl.data.tokenizers import SPECIAL_TOKENS, UNK_ID, WordTokenizer, split_words, tokenizer_from_counts

# every rule of split_words: word runs, CJK, symbols, marks, skin tones, ZWJ sequences, flags, odd whitespace
WORDS = ["the", "a", "Speak", "naïve", "e\u0301te", "你好", "🙂", "👍🏽", "👨\u200d👩\u200d👧", "🇺🇸🇩🇪", "🇺",
         "don't", "x_1", "(a)", "...", "Ωmega", "カタカナ", "・", "ー。", "½", "²", "\x1c", "\u2028", "\u3000",
         "\u200d", "e\u0301\u0302", "\U000e0100", "\U00020000", "한국어", "नमस्ते", "A", "B",
         *(f"w{i}" for i in range(60))]
ALPHABET = list("ab1_ ,.!'\"-\n\t\x1céж²½\u0301\u0302\u093f你好ー。，\u3000가🙂👍🏽\u200d\ufe0f\U0001f1fa\U0001f1f8"
                "\U000e0100\U00020000\u2028・゙")


@pytest.fixture(params=["native", "numpy"])
def scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the native scanner, then with the numpy path only."""
    if request.param == "native" and scan.native is None:
        pytest.skip("the native scanner is not built (no C compiler at install time)")
    if request.param == "numpy":
        monkeypatch.setattr(scan, "native", None)
    return request.param


def test_the_native_scanner_is_built_where_a_compiler_is() -> None:
    if shutil.which("cc") or shutil.which("gcc"):
        assert scan.native is not None, "pip install -e . should have built llmctl.data._wordscan (setup.py)"


def _texts(seed: int) -> list[str]:
    """Texts dense in complex characters, texts with a few, plain ones, empty ones and long ones (cut into units,
    with and without whitespace)."""
    rng = random.Random(seed)
    dense = ["".join(rng.choices(ALPHABET, k=rng.choice([0, 1, 7, 60, 900]))) for _ in range(60)]
    weights = [1 if any(ord(c) > 0x2000 or not c.isascii() for c in w) else 40 for w in WORDS]
    sparse = [" ".join(rng.choices(WORDS, weights, k=rng.randint(0, 1500))) for _ in range(12)]
    plain = ["Plain ascii text, with punctuation! and_words 123 " * rng.randint(1, 300) for _ in range(6)]
    long = [" ".join(rng.choices(WORDS, weights, k=40_000)), "x" * (scan.MAX_UNIT + 10), "ab " * 50_000,
            " ".join(rng.choices(WORDS, weights, k=scan.NATIVE_MAX_UNIT // 3)),  # cut into native units, some complex
            "你好" * (scan.MAX_UNIT // 2 + 10), "", "   \n\t "]
    texts = dense + sparse + plain + long
    rng.shuffle(texts)
    return texts


def _reference(texts: list[str]) -> Counter:
    counts: Counter = Counter()
    for text in texts:
        counts.update(split_words(text))
    return counts


@pytest.mark.parametrize("seed", [0, 1])
def test_counts_are_split_words_counts(seed: int, scanner: str) -> None:
    texts = _texts(seed)
    assert count_words(texts) == _reference(texts)
    counter = WordCounter()  # added in several calls, like worker tasks
    for start in range(0, len(texts), 7):
        counter.add(texts[start:start + 7])
    assert counter.counts() == _reference(texts)


@pytest.mark.parametrize("seed", [0, 1])
def test_encoder_gives_the_ids_of_encode(seed: int, scanner: str) -> None:
    texts = _texts(seed)
    tokenizer = tokenizer_from_counts("word", _reference(texts[::2]), 2)  # many words unknown
    flat, lengths = WordEncoder(tokenizer)(texts)
    expected = [tokenizer.encode(text) for text in texts]
    assert flat.tolist() == [i for ids in expected for i in ids]
    assert lengths.tolist() == [len(ids) for ids in expected]
    assert flat.dtype == np.int32 and UNK_ID in flat.tolist()


def test_slots_count_the_counted_texts_and_name_every_word(scanner: str) -> None:
    texts = _texts(2)
    counted = [i % 3 != 0 for i in range(len(texts))]
    counters = [WordCounter(), WordCounter()]  # two processes, each with its own slots
    slots, lengths = [], []
    for k, start in enumerate(range(0, len(texts), 5)):
        got = counters[k % 2].slots(texts[start:start + 5], counted[start:start + 5])
        slots.append((k % 2, got[0]))
        lengths.extend(got[1].tolist())
    exports = [c.export() for c in counters]
    words = [exports[which][1][s] for which, part in slots for s in part.tolist()]
    assert words == [w for text in texts for w in split_words(text)]
    assert lengths == [len(split_words(text)) for text in texts]
    counts, distinct, where = merge_exports(exports)
    assert counts == _reference([t for t, c in zip(texts, counted, strict=True) if c])
    assert len(set(distinct)) == len(distinct)
    for (_, part_words, _), part in zip(exports, where, strict=True):
        assert [distinct[i] for i in part.tolist()] == part_words
    # one process: its words as they are (one store holds no word twice)
    first = [t for k, start in enumerate(range(0, len(texts), 5)) if k % 2 == 0
             for t, c in zip(texts[start:start + 5], counted[start:start + 5], strict=True) if c]
    counts, distinct, where = merge_exports(exports[:1])
    assert counts == _reference(first) and distinct == exports[0][1] and len(set(distinct)) == len(distinct)
    assert where[0].tolist() == list(range(len(distinct)))


def _weak_hash(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """A hash under which every two words of one length collide."""
    return (ends - starts).astype(np.uint64)


def test_hash_collisions_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = _texts(3)
    tokenizer = tokenizer_from_counts("word", _reference(texts), 1)
    monkeypatch.setattr(scan, "native", None)  # the weak hash replaces the numpy path's; the native one is below
    monkeypatch.setattr(scan, "_hashes", _weak_hash)
    # counting and encoding check every token against the word it was matched with, and fall back to split_words
    assert count_words(texts) == _reference(texts)
    small = WordTokenizer([*SPECIAL_TOKENS, "a", "bb", "ccc"])  # one word per length: the vocabulary stays usable
    encode = WordEncoder(small)
    assert encode._vectorised
    text = "a b bb cc ccc xyz a"
    assert encode([text])[0].tolist() == small.encode(text) == [5, 1, 6, 1, 7, 1, 5]
    flat, _ = WordEncoder(tokenizer)(texts)
    assert flat.tolist() == [i for t in texts for i in tokenizer.encode(t)]
    # slots cannot tell colliding words apart: the single pass gives up (preprocess then takes two passes)
    with pytest.raises(HashCollision):
        WordCounter().slots(["ab ba"], [True])


def test_units_cut_long_texts_after_whitespace_only() -> None:
    text = ("word " * 40_000) + "x" * (scan.MAX_UNIT + 5) + " tail"
    units = list(scan._units([text]))
    assert "".join(u for u, _, _ in units) == text
    assert all(u.endswith((" ", "\n")) for u, _, _ in units[:-1])
    assert all(first == 0 and offsets is None for _, first, offsets in units)
    joined = list(scan._units(["a", "", "b c"]))
    assert joined == [("a  b c", 0, [0, 2, 3])]


def test_native_hashes_and_bounds_equal_the_numpy_ones() -> None:
    """The native store splits like the numpy path and stores the same hashes (a word hashed both ways, as when a
    unit with a complex character takes the numpy path, must find one slot), reading 1-, 2- and 4-byte strs."""
    if scan.native is None:
        pytest.skip("the native scanner is not built")
    base = " ".join(_texts(4)[:40])
    base = "".join(c for c in base if scan._classes()[ord(c)] != scan.WORD_COMPLEX)  # the vectorised rule's domain
    for text in (base.encode("ascii", "ignore").decode(), base, base + " \U0001F600"):
        tok = scan._scan(text)
        words = scan.native.Words(scan._word_classes())
        slots, starts = np.empty(len(text), np.int64), np.empty(len(text), np.int64)
        n = words.unit(text, slots, starts)
        assert n == tok.starts.size > 1000
        assert starts[:n].tolist() == tok.starts.tolist()
        hashes, _, _, lengths, _ = words.export()
        stored = np.frombuffer(hashes, np.uint64)
        assert stored[slots[:n]].tolist() == tok.hashes.tolist()
        assert np.frombuffer(lengths, np.int64)[slots[:n]].tolist() == (tok.ends - tok.starts).tolist()
        again = np.empty(n, np.int64)  # the numpy path's tokens find the same slots
        assert words.tokens(tok.points, tok.starts, tok.ends, tok.hashes, again) == 0 and again.tolist() == \
            slots[:n].tolist()
        assert len(words) == len(set(tok.strings(np.arange(n))))
    complex_text = "a e\u0301"  # a combining mark: the numpy path takes the unit
    store = scan.native.Words(scan._word_classes())
    assert store.unit(complex_text, np.empty(9, np.int64), np.empty(9, np.int64)) == -1


def test_native_store_checks_every_token_against_its_word() -> None:
    """A hash that stands for another string is a collision (-2), never a silent wrong slot; a store that does not
    insert gives -1 for unknown words; counts and export follow the slots."""
    if scan.native is None:
        pytest.skip("the native scanner is not built")
    words = scan.native.Words(scan._word_classes())
    points = np.frombuffer("ab ba ab".encode("utf-32-le"), np.uint32)
    starts, ends = np.array([0, 3, 6], np.int64), np.array([2, 5, 8], np.int64)
    out = np.empty(3, np.int64)
    assert words.tokens(points, starts, ends, np.array([7, 7, 7], np.uint64), out) == -2  # "ba" is not "ab"
    assert words.tokens(points, starts, ends, np.array([7, 8, 7], np.uint64), out) == 0 and out.tolist() == [0, 1, 0]
    found, at = np.empty(8, np.int64), np.empty(8, np.int64)
    assert words.unit("ab", found, at) == 1 and found[0] == 2  # its real hash is not 7: a word of its own
    assert words.unit("ab zz", found, at, False) == 2 and found[:2].tolist() == [2, -1] and len(words) == 3
    words.count(np.array([0, 0, 2], np.int64))
    with pytest.raises(ValueError):
        words.count(np.array([3], np.int64))
    hashes, stored, _, _, counts = words.export()
    assert np.frombuffer(hashes, np.uint64).tolist()[:2] == [7, 8] and stored.decode("utf-32-le") == "abbaab"
    assert np.frombuffer(counts, np.int64).tolist() == [2, 0, 1]


@pytest.mark.parametrize("wide", [False, True])
def test_native_remap_rewrites_a_token_file_and_counts(tmp_path, wide: bool) -> None:
    """The single word pass's last step: provisional int32 ids → final ids (uint16 or uint32), counted."""
    if scan.native is None:
        pytest.skip("the native scanner is not built")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, size=(1 << 18) + 7).astype(np.int32)  # more than one of the C loop's blocks
    source, target = tmp_path / "train.bin", tmp_path / "train.bin.ids"
    ids.tofile(source)
    table = rng.permutation(1000).astype(np.int64) + (70_000 if wide else 0)
    counts = np.zeros(71_000, dtype=np.int64)
    assert scan.native.remap(source, target, table, counts, wide) == ids.size
    out = np.fromfile(target, dtype=np.uint32 if wide else np.uint16)
    assert out.tolist() == table[ids].tolist()
    assert counts.tolist() == np.bincount(table[ids], minlength=counts.size).tolist()
    np.array([1000], np.int32).tofile(source)  # an id outside the table (a worker's slots lost)
    assert scan.native.remap(source, target, table, counts, wide) == -1
    with pytest.raises(OSError):
        scan.native.remap(tmp_path / "missing.bin", target, table, counts, wide)


@pytest.mark.parametrize("pad", ["", " " * 12])  # a token at the end of the str, or with 8 bytes readable after it
def test_native_store_tells_words_with_one_hash_apart_in_every_str_width(pad: str) -> None:
    """Short words of 1-byte strs are checked against a packed copy of their code points in the table entry; every
    other token against the stored code points. A stored word with a token's hash but other code points (of the
    same length; with a code point above 255; longer than 8) is a collision, never a match."""
    if scan.native is None:
        pytest.skip("the native scanner is not built")

    def store_as(word: str, like: str):  # a store holding `word` under the hash of `like`
        words = scan.native.Words(scan._word_classes())
        points = np.frombuffer(word.encode("utf-32-le"), np.uint32)
        like_points = np.frombuffer(like.encode("utf-32-le"), np.uint32)
        bounds = np.array([0], np.int64), np.array([len(like)], np.int64)
        hashes = scan._hashes(like_points, *bounds)
        assert words.tokens(points, np.array([0], np.int64), np.array([len(word)], np.int64), hashes,
                            np.empty(1, np.int64)) == 0
        return words

    def unit(words, text: str) -> tuple[int, list[int]]:
        slots, starts = np.empty(len(text) + 1, np.int64), np.empty(len(text) + 1, np.int64)
        n = words.unit(text, slots, starts)
        return n, slots[:max(n, 0)].tolist()

    for word, other in [("ab", "ba"), ("ab", "a\u0100"), ("abcdefgh", "abcdefgi"), ("abcdefghij", "abcdefghik")]:
        assert unit(store_as(other, word), word + pad) == (-2, [])  # one hash, other strings
        assert unit(store_as(word, word), "zz " + word + pad) == (2, [1, 0])  # "zz" new, the word found
        assert unit(store_as(word, word), "\u0100 " + word + pad) == (2, [1, 0])  # a 2-byte str
        assert unit(store_as(word, word), "\U0001F600 " + word + pad) == (2, [1, 0])  # a 4-byte str
    wide = store_as("a\u0100", "a\u0100")  # a word above 255 is found by 2-byte strs only
    assert unit(wide, "a\u0100" + pad) == (1, [0])


@pytest.mark.parametrize("min_count,limit", [(1, None), (2, None), (1, 7), (3, 2)])
def test_ranked_words_follow_the_vocabulary_rule(min_count: int, limit: int | None) -> None:
    """The native store's ranking is `tokenizer_from_counts`' order: descending count, ties by str order (code
    points, a prefix first, astral characters after the BMP), words of texts not counted left out."""
    if scan.native is None:
        pytest.skip("the native scanner is not built")
    texts = _texts(5) + ["ab abc ab abc b \u00e9 \uffee \U0001F600 \u00e9 \U0001F600 zz"]
    counted = [i % 4 != 1 for i in range(len(texts))]
    counter = WordCounter()
    counter.slots(texts, counted)
    counts = _reference([t for t, c in zip(texts, counted, strict=True) if c])
    expected = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))[:limit]
    words, slots = counter.ranked(min_count, limit)
    assert words == expected and len(set(slots.tolist())) == len(words)
    assert [counter.export()[1][s] for s in slots.tolist()] == words
    vocab = tokenizer_from_counts("word", counts, min_count, None if limit is None else limit + 5)
    assert [vocab.id_to_token(i) for i in range(5, vocab.vocab_size)] == words


def test_absorb_merges_counts_and_maps_every_slot() -> None:
    """Counting threads' stores are merged into the first: counts add up, every slot of the other maps to the slot
    of its word, and the merged ranking is the ranking of all the text."""
    if scan.native is None:
        pytest.skip("the native scanner is not built")
    texts = _texts(6)
    counters = [WordCounter(), WordCounter()]
    for k, start in enumerate(range(0, len(texts), 7)):
        counters[k % 2].slots(texts[start:start + 7], [True] * len(texts[start:start + 7]))
    other_words = counters[1].export()[1]
    size = len(counters[0])
    mapping = counters[0].absorb(counters[1])
    merged = counters[0].export()[1]
    assert [merged[s] for s in mapping.tolist()] == other_words and merged[:size] == counters[0].export()[1][:size]
    reference = _reference(texts)
    assert counters[0].counts() == reference
    words, _ = counters[0].ranked()
    assert words == sorted(reference, key=lambda w: (-reference[w], w))
    with pytest.raises(TypeError):
        counters[0]._native.absorb(counters[0]._native)


def test_one_encoder_serves_several_threads_at_once(scanner: str) -> None:
    """Encoding threads share one `WordEncoder` (its native store is only looked up, without a lock)."""
    from concurrent.futures import ThreadPoolExecutor

    texts = _texts(8)
    tokenizer = tokenizer_from_counts("word", _reference(texts[::2]), 1)  # odd texts hold unknown words
    encode = WordEncoder(tokenizer)
    batches = [texts[i:i + 3] * 4 for i in range(0, len(texts), 3)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(encode, batches))
    for batch, (flat, lengths) in zip(batches, results, strict=True):
        assert flat.tolist() == [i for t in batch for i in tokenizer.encode(t)]
        assert lengths.tolist() == [len(tokenizer.encode(t)) for t in batch]
