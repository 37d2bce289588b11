"""Reading corpora: plain text, JSONL, TSV and CSV files, directories and globs, as streams of records.

Nothing here holds a whole file in memory: files are read in 1 MiB blocks and decoded incrementally, so memory stays
flat however large the corpus is. Formats:

* **text** — one document per file (`data.documents: file`, streamed as pieces cut at line boundaries) or one per
  non-empty line (`documents: line`). Line ends are normalised like Python's universal newlines (CRLF/CR → LF).
* **jsonl** — one JSON object per non-empty line; fields named by the source (or the `data.*_field` defaults).
* **tsv** — header row, then one record per line, fields split on tabs with *no* quoting (the GLUE convention).
* **csv** — header row, RFC 4180 quoting (quoted fields may span lines).

Encoding policy (`data.encoding_errors`): `strict` fails naming the file and byte offset, `replace` substitutes
U+FFFD, `skip` drops the record (line, row or whole file) holding the bad bytes. A byte-order mark at the start of a
file is always handled: it names the file's encoding (UTF-8, UTF-16, UTF-32) and is removed. Files with NUL bytes
are refused as binary (for ASCII-compatible encodings).
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from llmctl.errors import ConfigError, DataError

BLOCK_BYTES = 1 << 20
PIECE_CHARS = 1 << 16
FORMATS_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv", ".csv": "csv"}
ROLES_BY_TASK = {"lm": ("text",), "classify": ("text", "label"), "pairs": ("prompt", "response")}

# `skip` policy: undecodable bytes become this noncharacter, and any record holding it is dropped.
_MARK = "\uffff"
_SURROGATE = re.compile("[\ud800-\udfff]")  # in JSON strings: escapes of half a surrogate pair


def _mark_errors(exc: UnicodeError) -> tuple[str, int]:
    return _MARK, exc.end  # type: ignore[attr-defined]


codecs.register_error("llmctl-mark", _mark_errors)
_POLICY = {"strict": "strict", "replace": "replace", "skip": "llmctl-mark"}


# ---------------------------------------------------------------- what to read


@dataclass(frozen=True)
class FileSpec:
    """One concrete input file with its format and the column/field name for each role (text, label, ...)."""

    path: Path
    format: str
    columns: dict[str, str]

    @property
    def name(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class ReadOptions:
    """How to turn bytes into records (from `DataConfig`)."""

    task: str = "lm"
    documents: str = "file"
    encoding: str = "utf-8"
    errors: str = "strict"

    @classmethod
    def of(cls, data) -> "ReadOptions":
        return cls(task=data.task, documents=data.documents, encoding=check_encoding(data.encoding),
                   errors=data.encoding_errors)


@dataclass(slots=True)
class Record:
    """One document (or, for streamed text files, one piece of it: `end` is False until its last piece)."""

    text: str = ""
    label: str | None = None
    prompt: str | None = None
    response: str | None = None
    end: bool = True


@dataclass
class ReadCounter:
    """Running totals a reader updates as it goes: raw bytes consumed, records dropped by `skip`."""

    bytes_read: int = 0
    skipped: int = 0
    skipped_where: list[str] = field(default_factory=list)

    def skip(self, where: str) -> None:
        self.skipped += 1
        if len(self.skipped_where) < 5:
            self.skipped_where.append(where)


@dataclass(frozen=True)
class FileInfo:
    """Size and content hash of one source file, plus the first undecodable byte offset (None if clean)."""

    path: Path
    size: int
    sha256: str
    bad_offset: int | None = None


def check_encoding(name: str) -> str:
    """The canonical codec name for `data.encoding` (BOM-stripping variants map to their base codec)."""
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        raise ConfigError(f"data.encoding: unknown text encoding `{name}`",
                          hint="use a Python codec name such as utf-8, latin-1 or utf-16") from None
    return "utf-8" if canonical == "utf-8-sig" else canonical


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # UTF-32 LE first: it starts like UTF-16 LE


def file_encoding(path: Path, declared: str) -> str:
    """The encoding to read `path` with: a byte-order mark at its start names it (UTF-8, UTF-16 or UTF-32, whatever
    `data.encoding` says — a BOM is always handled), else `declared`."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return declared
    for bom, name in _BOMS:
        if head.startswith(bom):
            return declared if codecs.lookup(declared).name.startswith(name) else name
    return declared


def _ascii_compatible(encoding: str) -> bool:
    try:
        return "a\n\0".encode(encoding) == b"a\n\0"
    except (UnicodeError, LookupError):
        return False


def detect_format(path: Path, declared: str = "auto") -> str:
    if declared != "auto":
        return declared
    return FORMATS_BY_SUFFIX.get(path.suffix.lower(), "text")


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def expand(source, data, where: str) -> list[FileSpec]:
    """The files one `SourceConfig` names (a file, every file under a directory, or a glob), in sorted order.

    `where` names the config list (e.g. `data.train`) for error messages. Hidden files and folders are skipped.
    """
    raw = str(source.path)
    if _is_glob(raw) and not Path(raw).exists():
        paths = sorted(Path(p) for p in glob.glob(raw, recursive=True) if Path(p).is_file())
        if not paths:
            raise DataError(f"{where}: no files match `{raw}`", hint="check the glob pattern (relative paths are "
                                                                     "relative to the config file)")
    else:
        path = Path(raw)
        if path.is_dir():
            paths = sorted(p for p in path.rglob("*") if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not paths:
                raise DataError(f"{where}: directory {path} holds no files", hint="put text files in it or fix "
                                                                                  "the path")
        elif path.is_file():
            paths = [path]
        else:
            raise DataError(f"{where}: source not found: {path}",
                            hint="check the path (relative paths are relative to the config file)")
    columns = {"text": source.text or data.text_field, "label": source.label or data.label_field,
               "prompt": source.prompt or data.prompt_field, "response": source.response or data.response_field}
    out = []
    for path in paths:
        fmt = detect_format(path, source.format)
        if fmt == "text" and data.task != "lm":
            raise DataError(f"{path}: plain-text files hold no {'labels' if data.task == 'classify' else 'pairs'} "
                            f"(data.task={data.task})",
                            hint="use a JSONL, TSV or CSV file with named fields, or set `format:` on the source")
        out.append(FileSpec(path=path, format=fmt, columns=columns))
    return out


# ---------------------------------------------------------------- one pass over the bytes: hash + sanity checks


def inspect_file(path: Path, encoding: str, counter: ReadCounter | None = None) -> FileInfo:
    """Hash a file and check it is usable text: not empty, no NUL bytes, and where its first bad byte is.
    `counter.bytes_read` grows as the file is read (for progress)."""
    size = 0
    digest = hashlib.sha256()
    encoding = file_encoding(path, encoding)
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    check_nul = _ascii_compatible(encoding)
    bad: int | None = None
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}", hint="check the file's permissions") from None
    with handle:
        while True:
            block = handle.read(BLOCK_BYTES)
            if not block:
                break
            digest.update(block)
            if check_nul:
                nul = block.find(b"\0")
                if nul >= 0:
                    raise DataError(f"{path} looks binary (NUL byte at offset {size + nul})",
                                    hint="remove it from the sources or point the config at text files")
            if bad is None:
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    bad = size - pending + exc.start
            size += len(block)
            if counter is not None:
                counter.bytes_read += len(block)
        if bad is None:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                bad = size - len(exc.object) + exc.start
    if size == 0:
        raise DataError(f"empty file: {path}", hint="give it content or remove it from the sources")
    return FileInfo(path=path, size=size, sha256=digest.hexdigest(), bad_offset=bad)


def decode_error(path: Path, encoding: str, offset: int) -> DataError:
    return DataError(f"{path}: invalid {encoding} at byte offset {offset}",
                     hint="fix the file, set data.encoding to its real encoding, or set "
                          "data.encoding_errors=replace (U+FFFD) or skip (drop the record)")


# ---------------------------------------------------------------- decoding


def _decoded_blocks(spec: FileSpec, opts: ReadOptions, counter: ReadCounter) -> Iterator[str]:
    """Decoded text of a file block by block: BOM removed, universal newlines, bad bytes handled by policy."""
    encoding = file_encoding(spec.path, opts.encoding)
    decoder = codecs.getincrementaldecoder(encoding)(_POLICY[opts.errors])
    offset = 0
    first = True
    carry_cr = False
    try:
        handle = open(spec.path, "rb")
    except OSError as exc:  # it was there when the sources were inspected
        raise DataError(f"cannot read {spec.path}: {exc.strerror} (it changed while preprocess was running)",
                        hint="keep the sources in place until preprocess has finished, then run it again") from None
    with handle:
        while True:
            block = handle.read(BLOCK_BYTES)
            final = not block
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(block, final=final)
            except UnicodeDecodeError as exc:
                raise decode_error(spec.path, encoding, offset - pending + exc.start) from None
            offset += len(block)
            counter.bytes_read += len(block)
            if first and text:
                first = False
                if text[0] == "\ufeff":
                    text = text[1:]
            if carry_cr:
                text = "\r" + text
                carry_cr = False
            if not final and text.endswith("\r"):
                text, carry_cr = text[:-1], True
            if "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
            if text:
                yield text
            if final:
                return


def _lines(spec: FileSpec, opts: ReadOptions, counter: ReadCounter) -> Iterator[str]:
    """Every line of the file, without its newline (number them with `enumerate(..., 1)`)."""
    rest = ""
    for text in _decoded_blocks(spec, opts, counter):
        parts = (rest + text).split("\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


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
    for text in _decoded_blocks(spec, opts, counter):
        buffer += text
        start = 0
        while len(buffer) - start > piece_chars:
            at = start + _cut(buffer[start:start + piece_chars + 1], piece_chars)
            yield Record(text=buffer[start:at], end=False)
            start = at
        buffer = buffer[start:]
    yield Record(text=buffer, end=True)


# ---------------------------------------------------------------- records per format


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
                if opts.errors == "skip" and _MARK in record.text:
                    raise DataError(f"{spec.path} changed while it was being read",
                                    hint="run again once the file is no longer being written")
                yield record
        else:
            check_mark = opts.errors == "skip"
            for lineno, line in enumerate(_lines(spec, opts, counter), 1):
                if not line or line.isspace():
                    continue
                if check_mark and _MARK in line:
                    counter.skip(f"{spec.path}:{lineno}")
                    continue
                yield Record(line)
    elif spec.format == "jsonl":
        yield from _jsonl(spec, opts, counter)
    elif spec.format in ("tsv", "csv"):
        yield from _table(spec, opts, counter)
    else:  # pragma: no cover - the schema only allows the formats above
        raise ConfigError(f"{spec.path}: unknown format `{spec.format}`", hint="use text, jsonl, tsv or csv")


def _role_hint(role: str) -> str:
    return f"set `{role}: <name>` on this source in the config, or data.{role}_field"


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _jsonl(spec: FileSpec, opts: ReadOptions, counter: ReadCounter) -> Iterator[Record]:
    roles = ROLES_BY_TASK[opts.task]
    for lineno, line in enumerate(_lines(spec, opts, counter), 1):
        if not line or line.isspace():
            continue
        if _MARK in line:
            counter.skip(f"{spec.path}:{lineno}")
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{spec.path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})",
                            hint="each line of a .jsonl file must be one JSON object") from None
        except RecursionError:
            raise DataError(f"{spec.path}:{lineno}: JSON nested too deeply to read",
                            hint="each line of a .jsonl file must be one flat JSON object (text and label fields)"
                            ) from None
        if not isinstance(obj, dict):
            raise DataError(f"{spec.path}:{lineno}: expected a JSON object, got {type(obj).__name__}",
                            hint="each line of a .jsonl file must be one JSON object")
        values = {}
        for role in roles:
            name = spec.columns[role]
            if name not in obj:
                have = ", ".join(map(str, obj)) or "none"
                raise DataError(f"{spec.path}:{lineno}: no field `{name}` for the {role} (fields: {have})",
                                hint=_role_hint(role))
            value = obj[name]
            if value is None or isinstance(value, (dict, list)) or (role != "label" and not isinstance(value, str)):
                raise DataError(f"{spec.path}:{lineno}: field `{name}` is {json.dumps(value)[:40]}, not text",
                                hint=f"give every record a {role} as a JSON string")
            values[role] = _scalar(value)
        if ("\\ud" in line or "\\uD" in line) and any(map(_SURROGATE.search, values.values())):
            # an escape of half a surrogate pair (`"\ud800"`) decodes to a lone surrogate, which is not Unicode text
            if opts.errors == "strict":
                raise DataError(f"{spec.path}:{lineno}: an unpaired surrogate escape (like \\ud800) in a text field "
                                "is not valid Unicode",
                                hint="fix the file, or set data.encoding_errors=replace (U+FFFD) or skip (drop the "
                                     "record)")
            if opts.errors == "skip":
                counter.skip(f"{spec.path}:{lineno}")
                continue
            values = {role: _SURROGATE.sub("\ufffd", value) for role, value in values.items()}
        yield Record(**values)


def _table(spec: FileSpec, opts: ReadOptions, counter: ReadCounter) -> Iterator[Record]:
    roles = ROLES_BY_TASK[opts.task]
    lines = _lines(spec, opts, counter)
    if spec.format == "tsv":
        rows: Iterator[tuple[int, list[str]]] = ((n, line.split("\t")) for n, line in enumerate(lines, 1)
                                                 if line and not line.isspace())
    else:
        rows = _csv_rows(spec.path, lines)
    first = next(rows, None)
    if first is None:
        raise DataError(f"{spec.path}: no header row", hint="the first line must name the columns")
    header = [col.strip() for col in first[1]]
    picks = []
    for role in roles:
        name = spec.columns[role]
        if name not in header:
            raise DataError(f"{spec.path}: no column `{name}` for the {role} (columns: {', '.join(header)})",
                            hint=_role_hint(role))
        picks.append(header.index(name))
    width = len(header)
    check_mark = opts.errors == "skip"
    a, b = (picks + picks)[:2]
    for lineno, row in rows:
        if len(row) != width:
            sep = "tab-separated, without quoting" if spec.format == "tsv" else "comma-separated"
            raise DataError(f"{spec.path}:{lineno}: {len(row)} columns, the header has {width}",
                            hint=f"fix that row ({spec.format.upper()} fields are {sep})")
        if check_mark and (_MARK in row[a] or _MARK in row[b]):
            counter.skip(f"{spec.path}:{lineno}")
            continue
        if opts.task == "lm":
            yield Record(row[a])
        elif opts.task == "classify":
            yield Record(row[a], row[b])
        else:
            yield Record(prompt=row[a], response=row[b])


CSV_FIELD_LIMIT = 2**31 - 1  # a field is a whole document; the csv module's default limit is 128 KiB


def _csv_rows(path: Path, lines: Iterator[str]) -> Iterator[tuple[int, list[str]]]:
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    numbers: list[int] = []

    def feed() -> Iterator[str]:
        for n, line in enumerate(lines, 1):
            numbers.append(n)
            yield line + "\n"

    try:
        for row in csv.reader(feed(), strict=True):
            if row:
                yield numbers[-1], row
            numbers.clear()
    except csv.Error as exc:
        where = numbers[-1] if numbers else 0
        raise DataError(f"{path}:{where}: CSV parse error ({exc})",
                        hint="check the quoting of that row (RFC 4180: quotes doubled inside quoted fields)") from None
