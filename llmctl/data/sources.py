"""Reading corpora, part one: what to read. The files one `SourceConfig` names (a file, every file under a directory,
or a glob) with their formats, and the types the readers share (`FileSpec`, `ReadOptions`, `Record`, `ReadCounter`).

Reading itself: `source_decoding` (bytes → text: encodings, byte-order marks, the `data.encoding_errors` policy, the
inspection pass that hashes a file), `source_reading` (`read_records`: the records of one file, by format; plain
text) and `source_tables` (JSONL, TSV and CSV). Nothing holds a whole file in memory: files are read in 1 MiB blocks
and decoded incrementally, so memory stays flat however large the corpus is. Formats:

* **text** — one document per file (`data.documents: file`, streamed as pieces cut at line boundaries) or one per
  non-empty line (`documents: line`). Line ends are normalised like Python's universal newlines (CRLF/CR → LF).
* **jsonl** — one JSON object per non-empty line; fields named by the source (or the `data.*_field` defaults).
* **tsv** — header row, then one record per line, fields split on tabs with *no* quoting (the GLUE convention).
* **csv** — header row, RFC 4180 quoting (quoted fields may span lines).
"""

from __future__ import annotations

import codecs
import glob
from dataclasses import dataclass, field
from pathlib import Path

from llmctl.errors import ConfigError, DataError

FORMATS_BY_SUFFIX = {".jsonl": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv", ".csv": "csv"}
ROLES_BY_TASK = {"lm": ("text",), "classify": ("text", "label"), "pairs": ("prompt", "response")}


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


def check_encoding(name: str) -> str:
    """The canonical codec name for `data.encoding` (BOM-stripping variants map to their base codec)."""
    try:
        canonical = codecs.lookup(name).name
    except LookupError:
        raise ConfigError(f"data.encoding: unknown text encoding `{name}`",
                          hint="use a Python codec name such as utf-8, latin-1 or utf-16") from None
    return "utf-8" if canonical == "utf-8-sig" else canonical


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
