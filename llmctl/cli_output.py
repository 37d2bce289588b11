"""What the command line prints when a command succeeds: its `Result` as a table or one JSON object, predictions as
a table or JSONL, and `llmctl serve`'s lifecycle lines on stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def print_result(result, as_json: bool) -> None:
    if result.rendered:  # the command already wrote its output (e.g. generate's streamed text or JSONL)
        return
    if as_json:
        sys.stdout.write(json.dumps(result.as_dict(), default=str, ensure_ascii=False) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title=result.title, show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in result.values.items():
        if isinstance(value, (dict, list)):
            continue
        table.add_row(str(key), _fmt(value))
    console.print(table)
    for line in result.lines:
        console.print(line)


def _fmt(value: Any) -> str:
    from llmctl.progress import _fmt as fmt

    return fmt(value)


def print_predictions(result, as_json: bool) -> None:
    if as_json:
        for line in result.lines:
            sys.stdout.write(line + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=result.title)
    for column in ("text", "label", "probability"):
        table.add_column(column)
    for p in result.values["predictions"]:
        shown = p["text"] if len(p["text"]) <= 70 else p["text"][:67] + "..."
        table.add_row(shown, p["label"], f"{p['probability']:.3f}")
    Console(highlight=False).print(table)


def serve_event(name: str, values: dict) -> None:
    if name == "listening":
        line = (f"llmctl serve: {values['model']} ({values['kind']}) listening on {values['url']} — warming up; "
                "GET /health answers 200 when ready")
    elif name == "ready":
        line = f"llmctl serve: ready after {values['seconds']:.1f} s"
    else:
        line = "llmctl serve: stopped (in-flight requests finished)"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
