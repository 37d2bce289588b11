"""Advisory locks: a run directory or a dataset directory is written by one llmctl process at a time.

    locks.acquire_run(run.root)          # pretrain / finetune (also --resume): <run>/.llmctl.lock
    locks.acquire_replaced(data_dir)     # preprocess, export: a sibling `.<name>.llmctl.lock` (see below)

A lock is `fcntl.flock(LOCK_EX | LOCK_NB)` on a lock file; the holder writes its pid into it and removes the file
when it is done (after taking the lock, a process checks the file is still the one it locked). A second writer
gets an `ArtifactError` (exit 4) naming that pid. The kernel drops a flock when its holder dies (kill -9
included), so the file a killed process leaves is simply taken over by the next command: its stale pid means
nothing.
Directories that are replaced as a whole by a rename (datasets, exports) are locked through a file next to them:
a lock file inside would be renamed away with the old directory.

Locks taken during a command are released when it ends: the commands' entry points (`preprocess.run`,
`pretrain.run`, `finetune.run`, `export.run`) are `@scoped`, and the command line runs every command in
`session()` (`llmctl.cli_errors.guard`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from llmctl.errors import ArtifactError
from llmctl.runs import LOCK_FILE  # the run-directory layout owns the name

_held: dict[Path, int] = {}  # lock file → open descriptor holding the flock
_made: dict[Path, list[Path]] = {}  # lock file → folders created to hold it


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text.split()[0] if text else "unknown"


def acquire(lock_file: Path, what: str) -> Path:
    """Take the lock `lock_file` for `what` (e.g. "run directory runs/base"); re-entrant within one process."""
    lock_file = Path(lock_file).resolve()
    if lock_file in _held:
        return lock_file
    created = [p for p in (lock_file.parent, *lock_file.parent.parents) if not p.exists()]
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    _made[lock_file] = created  # removed again on release if still empty: a refused command adds no folder
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            _made.pop(lock_file, None)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise ArtifactError(f"{what} is in use by another llmctl process (pid {_holder(lock_file)})",
                                hint="wait for it to finish or stop it; one process writes a run or dataset at "
                                     "a time") from None
        try:  # the holder we waited for may have removed the file: then our lock is on a dead inode, try again
            same = os.fstat(fd).st_ino == os.stat(lock_file).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[lock_file] = fd
    return lock_file


def acquire_run(root: Path) -> Path:
    """Lock the run directory `root` (created if needed) for a training command."""
    root = Path(root)
    return acquire(root / LOCK_FILE, f"run directory {root}")


def acquire_replaced(final: Path, what: str = "directory") -> Path:
    """Lock a directory that is replaced as a whole (dataset, export) through `.<name>.llmctl.lock` beside it."""
    final = Path(final)
    return acquire(final.parent / f".{final.name}{LOCK_FILE}", f"{what} {final}")


def release(lock_file: Path) -> None:
    """Remove the lock file (while still holding it: a waiter that opened it re-checks the inode) and unlock."""
    lock_file = Path(lock_file).resolve()
    fd = _held.pop(lock_file, None)
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(lock_file)
    os.close(fd)  # closing the last descriptor releases the flock
    for folder in _made.pop(lock_file, []):  # innermost first; stops at the first folder that holds something
        try:
            folder.rmdir()
        except OSError:
            break


def release_all() -> None:
    for path in list(_held):
        release(path)


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Release every lock taken inside the block when it ends (normally, on an error or on Ctrl-C)."""
    before = set(_held)
    try:
        yield
    finally:
        for path in [p for p in _held if p not in before]:
            release(path)


def is_lock_file(path: Path) -> bool:
    return Path(path).name.endswith(LOCK_FILE)


F = TypeVar("F", bound=Callable[..., Any])


def scoped(fn: F) -> F:
    """Run `fn` in a `session()`: the locks it takes are released when it returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with session():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
