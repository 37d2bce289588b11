import zlib

from llmctl import machine_cache
from llmctl.data import tokenizers


def test_cached_bytes_computes_once_then_reads(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCTL_CACHE", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return b"table" * 100

    assert machine_cache.cached_bytes("t", "key-1", compute) == b"table" * 100
    assert machine_cache.cached_bytes("t", "key-1", compute) == b"table" * 100
    assert len(calls) == 1
    (entry,) = tmp_path.glob("t-*.bin.z")
    assert zlib.decompress(entry.read_bytes()) == b"table" * 100
    machine_cache.cached_bytes("t", "key-2", compute)  # another key (e.g. Unicode version) → computed again
    assert len(calls) == 2


def test_cached_bytes_recomputes_a_damaged_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCTL_CACHE", str(tmp_path))
    machine_cache.cached_bytes("t", "k", lambda: b"good")
    (entry,) = tmp_path.glob("t-*.bin.z")
    entry.write_bytes(b"garbage")
    assert machine_cache.cached_bytes("t", "k", lambda: b"fresh") == b"fresh"
    assert machine_cache.cached_bytes("t", "k", lambda: b"other") == b"fresh"


def test_cached_bytes_survives_an_unwritable_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("LLMCTL_CACHE", str(blocker))
    assert machine_cache.cached_bytes("t", "k", lambda: b"value") == b"value"


def test_word_tables_from_cache_equal_fresh_derivation(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMCTL_CACHE", str(tmp_path))
    fresh = tokenizers._compute_word_classes()
    assert len(fresh) == 0x110000
    assert tokenizers._cached_table("word-classes", tokenizers._compute_word_classes) == fresh  # written
    assert tokenizers._cached_table("word-classes", lambda: b"") == fresh  # read back, not recomputed
    marks = tokenizers._mark_ranges()
    assert (0x300, 0x36F) in marks  # combining diacritical marks
    assert tokenizers._ranges_from_bytes(tokenizers._ranges_to_bytes(marks)) == marks
