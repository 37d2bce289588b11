"""How the command line reports failure: every error is one line on stderr and an exit code (0 ok, 1 unexpected,
2 config, 3 data, 4 artifact, 5 training, 6 resource, 130 interrupted), a traceback only with --debug. `guard` runs
a command's body and maps what it raises; `OneLineUsageErrors` does the same for bad options and arguments.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any, Callable

import typer


class OneLineUsageErrors(typer.core.TyperGroup):
    """Bad options and arguments are one line on stderr (exit 2), like every other llmctl error — not Typer's
    multi-line usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:  # recent Typer vendors its own click
            from typer import _click as click
        except ImportError:  # pragma: no cover - older Typer on plain click
            import click

        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # `llmctl` / `llmctl config` alone: the help
            if exc.format_message().strip():  # (Rich help was printed already while the error was made)
                typer.echo(exc.format_message())
            sys.exit(exc.exit_code)
        except click.exceptions.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            where = f"{ctx.command_path}: " if ctx is not None else ""
            help_hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            sys.stderr.write(f"usage error: {where}{message}{help_hint}\n")
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.stderr.write("interrupted: stopped by Ctrl-C\n")
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def fail(message: str, code: int) -> None:
    sys.stderr.write(message.rstrip() + "\n")
    raise typer.Exit(code)


def guard(debug: bool, body: Callable[[], Any]) -> Any:
    """Run `body`, mapping typed errors to one stderr line and an exit code (traceback only with --debug)."""
    from llmctl.errors import LlmctlError

    if debug:
        os.environ["LLMCTL_DEBUG"] = "1"
    from llmctl import locks

    try:
        with locks.session():  # a run / dataset directory locked by the command is released when it ends
            return body()
    except typer.Exit:
        raise
    except LlmctlError as exc:
        if debug:
            raise
        fail(exc.one_line(), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted: stopped by Ctrl-C; finished artifacts are intact, partial ones were discarded", 130)
    except OSError as exc:
        if debug or exc.errno not in _OS_ERRORS:
            raise
        fail(_os_error_line(exc), _OS_ERRORS[exc.errno][0])
    except Exception as exc:  # noqa: BLE001 - last resort: still one line unless --debug
        if debug:
            raise
        text = str(exc)
        if type(exc).__name__ == "ResourceExhaustedError" and ("No space left" in text or "quota" in text.lower()):
            import re  # TensorFlow reports a full disk as ResourceExhausted: "<file>; No space left on device"

            where = re.search(r"(/\S+?)(?:_temp/|;| )", text.split("}}", 1)[-1])
            fail(f"resource error: disk full while writing{' ' + where.group(1) if where else ''} (free space and "
                  "run again; finished artifacts were not overwritten)", 6)
        if isinstance(exc, MemoryError) or type(exc).__name__ == "ResourceExhaustedError":
            detail = " ".join(str(exc).split("\n")[0].split())[:200]
            fail(f"resource error: out of memory ({type(exc).__name__}{': ' + detail if detail else ''}) (make "
                  "the model or batch smaller: model.units, model.layers, train.batch_size, train.bptt)", 6)
        fail(f"error: unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback and "
              "report it)", 1)


_OS_ERRORS = {  # errno → (exit code, hint): what the file system refused, for paths no check named first
    errno.ENOSPC: (6, "free space and run again; finished artifacts were not overwritten"),
    errno.EDQUOT: (6, "free space (disk quota) and run again; finished artifacts were not overwritten"),
    errno.EFBIG: (6, "the file size limit (ulimit -f) is too small for this artifact"),
    errno.EROFS: (6, "the file system is read-only: point run.dir / data.dir / export.dir at a writable folder"),
    errno.EACCES: (6, "check the permissions, or point run.dir / data.dir / export.dir at a writable folder"),
    errno.EPERM: (6, "check the permissions (and immutable attributes), or point run.dir / data.dir / export.dir at a "
                     "writable folder"),
    errno.ENOTDIR: (4, "a path in the config goes through a file: point it at a folder"),
    errno.EEXIST: (4, "a path in the config goes through a file: point it at a folder"),
    errno.EISDIR: (4, "a path in the config names a folder where a file is expected"),
    errno.ENAMETOOLONG: (2, "shorten the path in the config"),
    errno.ELOOP: (4, "a symbolic link in the path points to itself"),
}


def _os_error_line(exc: OSError) -> str:
    code, hint = _OS_ERRORS[exc.errno]
    kind = {2: "config error", 4: "artifact error", 6: "resource error"}[code]
    what = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{kind}: disk full while writing{what} ({hint})"
    return f"{kind}: cannot use{what}: {exc.strerror or exc} ({hint})"
