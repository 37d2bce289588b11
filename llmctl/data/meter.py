"""Byte progress of one preprocess pass (inspect, scan, train, encode) through the reporter."""

from __future__ import annotations

import math
import time
from typing import Any

from llmctl.progress import Reporter


class Meter:
    """Byte progress in MB with MB/s through the reporter, throttled (rich redraws often, plain/jsonl rarely)."""

    def __init__(self, reporter: Reporter, label: str, total: int):
        self.reporter = reporter
        self.total_mb = max(1, math.ceil(total / 1e6))
        self.base = 0
        self.skipped = 0
        self.skipped_where: list[str] = []
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.every = 0.1 if reporter.mode == "rich" else 2.0
        reporter.start(label, total=self.total_mb)

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._show(self.base + done, now)

    def _show(self, seen: int, now: float) -> None:
        rate = seen / 1e6 / max(now - self.t0, 1e-9)
        self.reporter.advance(min(self.total_mb, math.ceil(seen / 1e6)), **{"MB/s": f"{rate:.1f}"})

    def done(self, done: int) -> None:
        """A group finished: later groups count on top of it."""
        self.base += done

    def stop(self) -> None:
        self._show(self.base, time.perf_counter())
        self.reporter.stop()

    def __enter__(self) -> "Meter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()  # also on errors: a live progress bar must never outlive its pass
