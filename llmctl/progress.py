"""How core code talks to the person at the terminal: status lines, key/value tables and step progress.

Everything goes to stderr so stdout stays clean for `--json` output and pipelines. Modes: `rich` (live bars and
tables), `plain` (one line per event), `jsonl` (one JSON object per event, for CI logs) and `none`.
`auto` picks `rich` on a terminal and `plain` otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Iterable


class Reporter:
    """The one sink for progress and status; build it in the CLI, pass it to `run(...)`."""

    def __init__(self, mode: str = "auto", stream=None):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "rich" if getattr(self.stream, "isatty", lambda: False)() else "plain"
        self.mode = mode
        self._console = None
        self._progress = None
        self._task = None
        self._fields: dict[str, Any] = {}

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False)
        return self._console

    # -- events
    def info(self, text: str) -> None:
        if self.mode == "none":
            return
        if self.mode == "jsonl":
            self._json({"event": "info", "message": text})
        elif self.mode == "rich":
            self.console.print(text)
        else:
            print(text, file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        if self.mode == "jsonl":
            self._json({"event": "warning", "message": text})
        elif self.mode == "rich":
            self.console.print(f"[yellow]warning:[/yellow] {text}")
        elif self.mode != "none":
            print(f"warning: {text}", file=self.stream, flush=True)
        else:  # warnings are never silent
            print(f"warning: {text}", file=sys.stderr, flush=True)

    def table(self, title: str, rows: Iterable[Iterable[Any]], columns: Iterable[str] = ("", "")) -> None:
        rows = [list(r) for r in rows]
        if self.mode == "none":
            return
        if self.mode == "jsonl":
            self._json({"event": "table", "title": title, "columns": list(columns), "rows": rows})
            return
        if self.mode == "rich":
            from rich.table import Table

            table = Table(title=title, show_header=any(columns))
            for col in columns:
                table.add_column(str(col))
            for row in rows:
                table.add_row(*[_fmt(v) for v in row])
            self.console.print(table)
            return
        print(title, file=self.stream)
        for row in rows:
            print("  " + "  ".join(_fmt(v) for v in row), file=self.stream)
        self.stream.flush()

    def metrics(self, kind: str, values: dict[str, Any]) -> None:
        """A structured event (e.g. an evaluation): a line in plain/rich, an object in jsonl."""
        if self.mode == "none":
            return
        if self.mode == "jsonl":
            self._json({"event": kind, **values})
            return
        text = f"{kind}: " + "  ".join(f"{k}={_fmt(v)}" for k, v in values.items())
        self.info(text)

    # -- step progress
    def start(self, description: str, total: int | None) -> None:
        self._fields = {}
        if self.mode == "rich":
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                                      console=self.console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task(description, total=total, status="")
        self._description = description
        self._total = total
        self._t0 = time.perf_counter()

    def advance(self, completed: int, **fields: Any) -> None:
        """Update progress to `completed` units; `fields` (loss, lr, tok/s ...) are shown beside it."""
        self._fields = fields
        if self.mode == "rich" and self._progress is not None:
            status = "  ".join(f"{k} {_fmt(v)}" for k, v in fields.items())
            self._progress.update(self._task, completed=completed, status=status)
        elif self.mode == "jsonl":
            self._json({"event": "progress", "task": self._description, "completed": completed,
                        "total": self._total, **fields})
        elif self.mode == "plain":
            total = f"/{self._total}" if self._total else ""
            status = "  ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
            print(f"{self._description} {completed}{total}  {status}", file=self.stream, flush=True)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _json(self, obj: dict[str, Any]) -> None:
        print(json.dumps(obj, default=str), file=self.stream, flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
