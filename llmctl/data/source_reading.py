"""Reading corpora: the records of one source file (`read_records`), by its format: plain text here (a whole file
as one document streamed in pieces, or one document per line), JSONL, TSV and CSV in `source_tables`.
"""

from __future__ import annotations

from typing import Iterator

from llmctl.data.source_decoding import SKIP_MARK, FileInfo, decode_error, decoded_blocks, decoded_lines, inspect_file
from llmctl.data.source_tables import jsonl_records, table_records
from llmctl.data.sources import FileSpec, ReadCounter, ReadOptions, Record
from llmctl.errors import ConfigError, DataError

PIECE_CHARS = 1 << 16


def read_records(spec: FileSpec, opts: ReadOptions, counter: ReadCounter | None = None, *,
                 info: FileInfo | None = None, piece_chars: int = PIECE_CHARS) -> Iterator[Record]:
    """Stream the records of one file. `info` (from `inspect_file`) lets `skip` drop a bad file up front."""
    counter = counter if counter is not None else ReadCounter()
    if opts.errors == "strict" and info is not None and info.bad_offset is not None:
        raise decode_error(spec.path, opts.encoding, info.bad_offset)
    if spec.format == "text":
        if opts.documents == "file":
            if opts.errors == "skip":
                info = info if info is not None else inspect_file(spec.path, opts.encoding)
                if info.bad_offset is not None:
                    counter.skip(f"{spec.path} (whole file)")
                    counter.bytes_read += info.size
                    return
            for record in _pieces(spec, opts, counter, piece_chars):
                if opts.errors == "skip" and SKIP_MARK in record.text:
                    raise DataError(f"{spec.path} changed while it was being read",
                                    hint="run again once the file is no longer being written")
                yield record
        else:
            check_mark = opts.errors == "skip"
            for lineno, line in enumerate(decoded_lines(spec, opts, counter), 1):
                if not line or line.isspace():
                    continue
                if check_mark and SKIP_MARK in line:
                    counter.skip(f"{spec.path}:{lineno}")
                    continue
                yield Record(line)
    elif spec.format == "jsonl":
        yield from jsonl_records(spec, opts, counter)
    elif spec.format in ("tsv", "csv"):
        yield from table_records(spec, opts, counter)
    else:  # pragma: no cover - the schema only allows the formats above
        raise ConfigError(f"{spec.path}: unknown format `{spec.format}`", hint="use text, jsonl, tsv or csv")


def _cut(buffer: str, target: int) -> int:
    """Where to cut about `target` characters off the front of a long text so both sides tokenize as they would
    together: before a newline that has a non-space character on each side, searched in the second half of the
    target length. Falls back to any newline, then any space or tab, then a hard cut at `target`."""
    floor = target // 2
    pos = buffer.rfind("\n", floor, target)
    while pos > floor:
        if not buffer[pos - 1].isspace() and not buffer[pos + 1].isspace():
            return pos
        pos = buffer.rfind("\n", floor, pos)
    for sep in ("\n", " ", "\t"):
        pos = buffer.rfind(sep, floor, target)
        if pos > 0:
            return pos
    return target


def _pieces(spec: FileSpec, opts: ReadOptions, counter: ReadCounter, piece_chars: int) -> Iterator[Record]:
    """A whole file as one document, streamed as pieces of about `piece_chars` characters."""
    buffer = ""
    for text in decoded_blocks(spec, opts, counter):
        buffer += text
        start = 0
        while len(buffer) - start > piece_chars:
            at = start + _cut(buffer[start:start + piece_chars + 1], piece_chars)
            yield Record(text=buffer[start:at], end=False)
            start = at
        buffer = buffer[start:]
    yield Record(text=buffer, end=True)
