"""Reading corpora: the records of structured source files. JSONL (one JSON object per non-empty line), TSV (header
row, fields split on tabs with no quoting: the GLUE convention) and CSV (header row, RFC 4180 quoting), each field
named by the source's columns for its role (text, label, prompt, response).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Iterator

from llmctl.data.source_decoding import SKIP_MARK, decoded_lines
from llmctl.data.sources import ROLES_BY_TASK, FileSpec, ReadCounter, ReadOptions, Record
from llmctl.errors import DataError

_SURROGATE = re.compile("[\ud800-\udfff]")  # in JSON strings: escapes of half a surrogate pair


def _role_hint(role: str) -> str:
    return f"set `{role}: <name>` on this source in the config, or data.{role}_field"


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def jsonl_records(spec: FileSpec, opts: ReadOptions, counter: ReadCounter) -> Iterator[Record]:
    roles = ROLES_BY_TASK[opts.task]
    for lineno, line in enumerate(decoded_lines(spec, opts, counter), 1):
        if not line or line.isspace():
            continue
        if SKIP_MARK in line:
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


def table_records(spec: FileSpec, opts: ReadOptions, counter: ReadCounter) -> Iterator[Record]:
    roles = ROLES_BY_TASK[opts.task]
    lines = decoded_lines(spec, opts, counter)
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
        if check_mark and (SKIP_MARK in row[a] or SKIP_MARK in row[b]):
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
