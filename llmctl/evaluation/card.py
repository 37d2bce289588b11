"""The protocol card of a document-level evaluation (classify, pairs): the values `--json` prints, saved with the
dataset they were measured on as `eval/<split>.json`.

    return save_card(run, ds, task="classify", split=split, examples=len(docs), measures={...}, started=t0,
                     settings={"max_length": max_length})
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from llmctl import atomic
from llmctl.results import Result
from llmctl.runs import RunDir


def save_card(run: RunDir, ds, *, task: str, split: str, examples: int, measures: dict[str, Any], started: float,
              settings: dict[str, Any], shown: Sequence[str] = ()) -> Result:
    """Values `run, task, split, examples, *measures, seconds` (seconds since `started`), saved atomically as
    `run.eval_card(split)` together with the dataset (root, fingerprint) and the evaluation `settings`; returns the
    command's Result, whose line names the card after the other `shown` outputs (e.g. a plot)."""
    values: dict[str, Any] = {"run": str(run.root), "task": task, "split": split, "examples": examples, **measures,
                              "seconds": time.perf_counter() - started}
    card = run.eval_card(split)
    atomic.write_json(card, {**values, "dataset": str(ds.root), "dataset_fingerprint": ds.fingerprint, **settings})
    return Result(title=f"evaluate {run.root.name} ({split})", values=values,
                  lines=["; ".join([*shown, f"protocol card: {card}"])])
