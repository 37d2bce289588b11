"""Reading sources (`sources`, `source_decoding`, `source_reading`, `source_tables`): expansion, formats, encodings
and error policies, streaming pieces."""

from __future__ import annotations

import hashlib
import json

import pytest

from llmctl.data import source_decoding
from llmctl.data import sources as src
from llmctl.data.source_decoding import inspect_file
from llmctl.data.source_reading import read_records
from llmctl.errors import ConfigError, DataError
from llmctl.schema import DataConfig, SourceConfig


def _data(**kw) -> DataConfig:
    return DataConfig(**kw)


def _records(path, *, task="lm", documents="file", errors="strict", encoding="utf-8", fmt="auto", counter=None,
             **columns):
    data = _data(task=task, documents=documents, encoding=encoding, encoding_errors=errors)
    (spec,) = src.expand(SourceConfig(path=path, format=fmt, **columns), data, "data.train[0]")
    opts = src.ReadOptions.of(data)
    return list(read_records(spec, opts, counter))


# ---------------------------------------------------------------- expansion


def test_expand_file_directory_and_glob(tmp_path):
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.md").write_text("c")
    (tmp_path / ".hidden").write_text("h")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x").write_text("x")
    data = _data()
    names = [f.path.name for f in src.expand(SourceConfig(path=tmp_path), data, "data.train[0]")]
    assert names == ["a.txt", "b.txt", "c.md"]
    names = [f.path.name for f in src.expand(SourceConfig(path=tmp_path / "*.txt"), data, "data.train[0]")]
    assert names == ["a.txt", "b.txt"]
    recursive = src.expand(SourceConfig(path=tmp_path / "**" / "*.md"), data, "data.train[0]")
    assert [f.path.name for f in recursive] == ["c.md"]
    (single,) = src.expand(SourceConfig(path=tmp_path / "a.txt"), data, "data.train[0]")
    assert single.format == "text" and single.columns["text"] == "text"


def test_expand_errors_name_the_config_entry(tmp_path):
    data = _data()
    with pytest.raises(DataError, match=r"data.valid\[1\]: source not found: .*nope.txt"):
        src.expand(SourceConfig(path=tmp_path / "nope.txt"), data, "data.valid[1]")
    with pytest.raises(DataError, match="no files match"):
        src.expand(SourceConfig(path=tmp_path / "*.jsonl"), data, "data.train[0]")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        src.expand(SourceConfig(path=tmp_path / "empty"), data, "data.train[0]")


def test_formats_by_extension_and_override(tmp_path):
    for name, fmt in [("a.jsonl", "jsonl"), ("a.ndjson", "jsonl"), ("a.TSV", "tsv"), ("a.csv", "csv"),
                      ("a.txt", "text"), ("README", "text")]:
        assert src.detect_format(tmp_path / name) == fmt
    assert src.detect_format(tmp_path / "a.txt", "tsv") == "tsv"


def test_plain_text_cannot_feed_classification(tmp_path):
    (tmp_path / "a.txt").write_text("hello\n")
    with pytest.raises(DataError, match="plain-text files hold no labels"):
        src.expand(SourceConfig(path=tmp_path / "a.txt"), _data(task="classify"), "data.train[0]")


def test_unknown_encoding_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown text encoding `utf-9`"):
        src.check_encoding("utf-9")
    assert src.check_encoding("UTF8") == "utf-8" and src.check_encoding("utf-8-sig") == "utf-8"


# ---------------------------------------------------------------- inspection


def test_inspect_hashes_and_finds_bad_bytes(tmp_path):
    path = tmp_path / "a.txt"
    payload = "héllo\n".encode() * 1000 + b"\xff tail"
    path.write_bytes(payload)
    info = inspect_file(path, "utf-8")
    assert info.size == len(payload)
    assert info.sha256 == hashlib.sha256(payload).hexdigest()
    assert info.bad_offset == len(payload) - len(b"\xff tail")


def test_inspect_finds_bad_bytes_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(source_decoding, "BLOCK_BYTES", 5)
    path = tmp_path / "a.txt"
    path.write_bytes("abcdé".encode() + b"xyz\xc3")  # é straddles the first block edge; truncated at the end
    assert inspect_file(path, "utf-8").bad_offset == 9


def test_inspect_refuses_empty_and_binary(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty file: .*empty.txt"):
        inspect_file(empty, "utf-8")
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"text then\x00\x01\x02")
    with pytest.raises(DataError, match=r"model.bin looks binary \(NUL byte at offset 9\)"):
        inspect_file(binary, "utf-8")
    utf16 = tmp_path / "wide.txt"
    utf16.write_text("wide text\n", encoding="utf-16")  # NUL bytes are normal here
    assert inspect_file(utf16, "utf-16").bad_offset is None


# ---------------------------------------------------------------- text files


def test_lines_mode_handles_bom_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"\xef\xbb\xbffirst line\r\n\r\n   \nsecond\rthird\n")
    texts = [r.text for r in _records(path, documents="line")]
    assert texts == ["first line", "second", "third"]


def test_file_mode_streams_pieces_that_rebuild_the_text(tmp_path):
    path = tmp_path / "a.txt"
    text = "".join(f"Line {i} with some words.\n" + ("\n" if i % 7 == 0 else "") for i in range(3000))
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    data = _data()
    (spec,) = src.expand(SourceConfig(path=path), data, "data.train[0]")
    records = list(read_records(spec, src.ReadOptions.of(data), piece_chars=4096))
    assert len(records) > 10 and all(not r.end for r in records[:-1]) and records[-1].end
    assert "".join(r.text for r in records) == text
    for left, right in zip(records[:-2], records[1:-1], strict=True):  # cut before "\n" with text both sides
        assert right.text[0] == "\n" and not left.text[-1].isspace() and not right.text[1].isspace()


def test_file_mode_without_newlines_still_cuts(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x" * 50_000)
    data = _data()
    (spec,) = src.expand(SourceConfig(path=path), data, "data.train[0]")
    records = list(read_records(spec, src.ReadOptions.of(data), piece_chars=1000))
    assert "".join(r.text for r in records) == "x" * 50_000 and max(len(r.text) for r in records) <= 4000


def test_multibyte_characters_across_block_edges(tmp_path, monkeypatch):
    monkeypatch.setattr(source_decoding, "BLOCK_BYTES", 3)
    path = tmp_path / "a.txt"
    text = "日本語のテキスト\nüñí 😀 done\n"
    path.write_text(text, encoding="utf-8")
    assert "".join(r.text for r in _records(path)) == text


def test_utf16_with_bom(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("één\ntwee\n", encoding="utf-16")
    assert [r.text for r in _records(path, documents="line", encoding="utf-16")] == ["één", "twee"]


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
def test_a_bom_is_handled_under_the_default_utf8(tmp_path, codec):
    """The README promises BOM handling: a UTF-16/32 file with a BOM is read under data.encoding=utf-8 (it was
    refused as "binary (NUL byte)")."""
    import codecs

    boms = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}
    path = tmp_path / "a.txt"
    path.write_bytes(boms.get(codec, b"") + "één\ntwee\n".encode(codec))
    info = inspect_file(path, "utf-8")
    assert info.bad_offset is None
    assert [r.text for r in _records(path, documents="line")] == ["één", "twee"]
    assert "".join(r.text for r in _records(path)) == "één\ntwee\n"


def test_utf16_without_bom_under_utf8_is_still_refused(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("abc\n".encode("utf-16-le"))
    with pytest.raises(DataError, match="binary"):
        inspect_file(path, "utf-8")


def test_a_source_deleted_during_preprocess_is_a_data_error(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("hello\n", encoding="utf-8")
    data = _data(documents="line")
    (spec,) = src.expand(SourceConfig(path=path), data, "data.train[0]")
    inspect_file(path, "utf-8")
    path.unlink()  # between the inspection and the reading passes
    with pytest.raises(DataError, match="cannot read .*a.txt: No such file.*changed while preprocess was running"):
        list(read_records(spec, src.ReadOptions.of(data)))


@pytest.mark.parametrize("value", ["12345", "true", "1.5"])
def test_jsonl_text_must_be_a_string(tmp_path, value):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "fine"}\n{"text": ' + value + '}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"a.jsonl:2: field `text` is .*not text"):
        _records(path)


# ---------------------------------------------------------------- encoding policies


def _bad_lines(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good one\nbad \xff byte\ngood two\n")
    return path


def test_strict_names_file_and_byte_offset(tmp_path):
    path = _bad_lines(tmp_path)
    with pytest.raises(DataError, match=r"bad.txt: invalid utf-8 at byte offset 13") as exc:
        _records(path, documents="line")
    assert "encoding_errors=replace" in exc.value.one_line() and "\n" not in exc.value.one_line()
    with pytest.raises(DataError, match="byte offset 13"):
        _records(path, documents="file")


def test_strict_offset_beyond_the_first_block(tmp_path, monkeypatch):
    monkeypatch.setattr(source_decoding, "BLOCK_BYTES", 4)
    path = tmp_path / "bad.txt"
    path.write_bytes("ééééé".encode() + b"\xfe")
    with pytest.raises(DataError, match="byte offset 10"):
        _records(path)


def test_replace_substitutes(tmp_path):
    texts = [r.text for r in _records(_bad_lines(tmp_path), documents="line", errors="replace")]
    assert texts == ["good one", "bad \ufffd byte", "good two"]


def test_skip_drops_the_record(tmp_path):
    counter = src.ReadCounter()
    texts = [r.text for r in _records(_bad_lines(tmp_path), documents="line", errors="skip", counter=counter)]
    assert texts == ["good one", "good two"] and counter.skipped == 1
    assert counter.skipped_where == [f"{tmp_path / 'bad.txt'}:2"]
    counter = src.ReadCounter()
    assert _records(_bad_lines(tmp_path), documents="file", errors="skip", counter=counter) == []
    assert counter.skipped == 1


def test_skip_in_tables_and_jsonl(tmp_path):
    tsv = tmp_path / "a.tsv"
    tsv.write_bytes(b"text\tlabel\nfine\t0\nbro\xffken\t1\nalso fine\t1\n")
    counter = src.ReadCounter()
    recs = _records(tsv, task="classify", errors="skip", counter=counter)
    assert [(r.text, r.label) for r in recs] == [("fine", "0"), ("also fine", "1")] and counter.skipped == 1
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b'{"text": "ok"}\n{"text": "b\xffd"}\n')
    assert [r.text for r in _records(jsonl, errors="skip")] == ["ok"]


# ---------------------------------------------------------------- JSONL / TSV / CSV


def test_jsonl_fields_and_overrides(tmp_path):
    path = tmp_path / "a.jsonl"
    rows = [{"body": "first", "y": 1}, {"body": "second", "y": True}, {"body": "third", "y": "neg"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    recs = _records(path, task="classify", text="body", label="y")
    assert [(r.text, r.label) for r in recs] == [("first", "1"), ("second", "true"), ("third", "neg")]


def test_jsonl_missing_field_names_file_line_and_fields(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a"}\n{"txt": "b", "id": 3}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"a.jsonl:2: no field `text` for the text \(fields: txt, id\)") as exc:
        _records(path)
    assert "text: <name>" in exc.value.one_line()


def test_jsonl_unpaired_surrogate_escapes_follow_the_error_policy(tmp_path):
    """`"\\ud800"` is valid JSON but decodes to half a surrogate pair, not text: strict names the line, replace
    gives U+FFFD, skip drops the record; a whole pair (an emoji) is fine."""
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "ok \\ud83d\\ude00"}\n{"text": "bad \\ud800 x"}\n{"text": "B\\uDC00"}\n',
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"a.jsonl:2: an unpaired surrogate escape") as exc:
        _records(path)
    assert "encoding_errors=replace" in exc.value.one_line()
    assert [r.text for r in _records(path, errors="replace")] == ["ok \U0001F600", "bad \ufffd x", "B\ufffd"]
    counter = src.ReadCounter()
    assert [r.text for r in _records(path, errors="skip", counter=counter)] == ["ok \U0001F600"]
    assert counter.skipped == 2


def test_jsonl_invalid_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"text": "a"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"a.jsonl:2: invalid JSON"):
        _records(path)
    path.write_text('["text"]\n', encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON object, got list"):
        _records(path)
    path.write_text('{"text": null}\n', encoding="utf-8")
    with pytest.raises(DataError, match="field `text` is null, not text"):
        _records(path)


def test_tsv_columns_per_file(tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text('label\tsentence\n0\tit \'s "quoted" , raw\n1\tgood\n', encoding="utf-8")
    recs = _records(train, task="classify", text="sentence")
    assert [(r.text, r.label) for r in recs] == [('it \'s "quoted" , raw', "0"), ("good", "1")]


def test_tsv_missing_column_lists_the_columns(tmp_path):
    dev = tmp_path / "dev.tsv"
    dev.write_text("label\tcontent\n0\tbad\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dev.tsv: no column `sentence` for the text \(columns: label, content\)"):
        _records(dev, task="classify", text="sentence")


def test_tsv_ragged_row_is_named(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("text\tlabel\nfine\t0\nno label here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"a.tsv:3: 1 columns, the header has 2"):
        _records(path, task="classify")


def test_csv_quoting_and_pairs(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('prompt,response\n"Hi, there","Line one\nline two"\nq,"say ""hi"""\n', encoding="utf-8")
    recs = _records(path, task="pairs")
    assert [(r.prompt, r.response) for r in recs] == [("Hi, there", "Line one\nline two"), ("q", 'say "hi"')]


def test_csv_fields_may_be_longer_than_the_csv_modules_default_limit(tmp_path):
    path = tmp_path / "a.csv"
    long = "word " * 60_000  # 300 KB, over the csv module's default 128 KiB field limit
    path.write_text(f'text,label\n"{long}",1\nshort,0\n', encoding="utf-8")
    assert [(r.text, r.label) for r in _records(path, task="classify")] == [(long, "1"), ("short", "0")]


def test_csv_header_only_and_bad_quote(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("text\n", encoding="utf-8")
    assert _records(path) == []
    path.write_text('text\n"open quote\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"a.csv:\d+: CSV parse error"):
        _records(path)
