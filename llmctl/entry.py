"""The `llmctl` console entry point: Ctrl-C while the command line itself is still loading (Typer, Rich) is exit 130
in one line, like Ctrl-C at any later moment — not a KeyboardInterrupt traceback from an import."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from llmctl.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: stopped by Ctrl-C\n")
        raise SystemExit(130) from None
    cli_main()
