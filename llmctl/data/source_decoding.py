"""Reading corpora: the bytes of a source file as text. Encodings and byte-order marks, the `data.encoding_errors`
policy, the inspection pass (size, hash, binary check, first bad byte) and incremental decoding into lines.

Encoding policy (`data.encoding_errors`): `strict` fails naming the file and byte offset, `replace` substitutes
U+FFFD, `skip` drops the record (line, row or whole file) holding the bad bytes: undecodable bytes become
`SKIP_MARK`, and the readers drop any record holding it. A byte-order mark at the start of a file is always handled:
it names the file's encoding (UTF-8, UTF-16, UTF-32) and is removed. Files with NUL bytes are refused as binary (for
ASCII-compatible encodings).
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from llmctl.data.sources import FileSpec, ReadCounter, ReadOptions
from llmctl.errors import DataError

BLOCK_BYTES = 1 << 20

# `skip` policy: undecodable bytes become this noncharacter, and any record holding it is dropped.
SKIP_MARK = "\uffff"


def _mark_errors(exc: UnicodeError) -> tuple[str, int]:
    return SKIP_MARK, exc.end  # type: ignore[attr-defined]


codecs.register_error("llmctl-mark", _mark_errors)
_POLICY = {"strict": "strict", "replace": "replace", "skip": "llmctl-mark"}


@dataclass(frozen=True)
class FileInfo:
    """Size and content hash of one source file, plus the first undecodable byte offset (None if clean)."""

    path: Path
    size: int
    sha256: str
    bad_offset: int | None = None


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


def decoded_blocks(spec: FileSpec, opts: ReadOptions, counter: ReadCounter) -> Iterator[str]:
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


def decoded_lines(spec: FileSpec, opts: ReadOptions, counter: ReadCounter) -> Iterator[str]:
    """Every line of the file, without its newline (number them with `enumerate(..., 1)`)."""
    rest = ""
    for text in decoded_blocks(spec, opts, counter):
        parts = (rest + text).split("\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest
