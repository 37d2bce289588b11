"""Atomic file and directory writes: write to a temporary sibling, fsync, then rename into place.

A run killed at any point leaves either the old artifact or the new one, never a file that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from llmctl.errors import ResourceError

TMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _disk_full(exc: OSError, path: Path) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise ResourceError(f"disk full while writing {path}", hint="free space and run again; nothing was "
                                                                    "overwritten") from None


def write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (same-directory temp file + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get normal permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _disk_full(exc, path)
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


@contextlib.contextmanager
def directory(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success rename it to `final` (replacing it if `replace`).

    On any exception (Ctrl-C included) the temporary directory is removed and `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX + final.name + ".", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield tmp
        if final.exists():
            if not replace:
                raise FileExistsError(final)
            old = final.with_name(TMP_PREFIX + final.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _disk_full(exc, final)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_stale(folder: Path) -> None:
    """Remove temporaries left by a killed process (they are never mistaken for artifacts)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith(TMP_PREFIX):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()


def clean_stale_siblings(final: Path) -> None:
    """Remove the temporaries `directory(final)` left beside `final` when a process was killed mid-way."""
    final = Path(final)
    if not final.parent.is_dir():
        return
    for entry in final.parent.iterdir():
        if entry.name.startswith(f"{TMP_PREFIX}{final.name}."):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
