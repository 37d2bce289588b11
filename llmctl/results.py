"""What a command's `run(...)` returns: a title and plain-data values, rendered by the CLI as a table or JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Result:
    """Outcome of one command. `values` must be JSON-serialisable; `lines` are extra text shown after the table."""

    title: str
    values: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    rendered: bool = False  # True when the command already streamed its output (e.g. generate)

    def as_dict(self) -> dict[str, Any]:
        return self.values
