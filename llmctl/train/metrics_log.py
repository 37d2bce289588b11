"""Where training metrics go: `metrics.csv` (one row per logged step / evaluation), TensorBoard scalars, the
`loss.png` curves and `summary.json`.

    log = MetricsLog(run, resume_step=None)          # fresh run: starts a new metrics.csv
    log.log("train", step=20, epoch=0, tokens=..., loss=2.1, lr=2e-3, ...)
    log.log("valid", step=200, epoch=0, loss=1.9)
    log.close(); write_loss_plot(log.rows(), run.loss_plot); write_summary(run.summary, {...})

On resume, rows after the resumed step (written by the killed process after its last checkpoint) are dropped so
the log reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable

from llmctl import atomic
from llmctl.runs import RunDir

COLUMNS = ("step", "epoch", "tokens", "elapsed_s", "split", "loss", "ppl", "lr", "grad_norm", "tokens_per_s", "mfu")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


class MetricsLog:
    """Append-only CSV + TensorBoard writer for one run (a no-op on non-chief workers)."""

    def __init__(self, run: RunDir, *, resume_step: int | None = None, enabled: bool = True,
                 tensorboard: bool = True):
        self.run = run
        self.enabled = enabled
        self._rows: list[dict[str, Any]] = []
        self._handle = None
        self._writer = None
        self._metadata = None
        if not enabled:
            return
        kept = []
        if resume_step is not None and run.metrics.is_file():
            kept = [r for r in read_metrics(run.metrics) if int(float(r["step"] or 0)) <= resume_step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in kept:
            writer.writerow({k: row.get(k, "") for k in COLUMNS})
        atomic.write_text(run.metrics, buffer.getvalue())
        self._rows = kept
        self._handle = open(run.metrics, "a", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._handle, fieldnames=COLUMNS, lineterminator="\n")
        if tensorboard:
            from llmctl.tfenv import import_tf

            tf = import_tf()
            self._tf = tf
            self._writer = tf.summary.create_file_writer(str(run.tensorboard))

    def log(self, split: str, *, step: int, **values: Any) -> None:
        """One row: `split` is train or valid; values: epoch, tokens, elapsed_s, loss, lr, grad_norm, ..."""
        if not self.enabled:
            return
        loss = values.get("loss")
        if loss is not None and "ppl" not in values:
            values["ppl"] = math.exp(loss) if math.isfinite(loss) and loss < 700 else float("inf")
        row = {"step": step, "split": split, **values}
        self._rows.append({k: _cell(row.get(k)) for k in COLUMNS})
        self._csv.writerow({k: _cell(row.get(k)) for k in COLUMNS})
        self._handle.flush()
        if self._writer is not None:
            with self._writer.as_default(step=int(step)):
                for key in ("loss", "ppl", "lr", "grad_norm", "tokens_per_s", "mfu"):
                    value = values.get(key)
                    if value is not None and math.isfinite(float(value)):
                        self._scalar(f"{split}/{key}", float(value))

    def _scalar(self, tag: str, value: float) -> None:
        """A TensorBoard scalar. `tf.summary.scalar` lives in the tensorboard package, which is optional: the
        same event record is written with TensorFlow's own `tf.summary.write` and the `scalars` plugin tag."""
        tf = self._tf
        if self._metadata is None:
            from tensorflow.core.framework import summary_pb2

            self._metadata = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        tf.summary.write(tag, tf.constant(value, tf.float32), metadata=self._metadata)

    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def read_metrics(path: Path) -> list[dict[str, str]]:
    """Rows of a metrics.csv as dicts of strings."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def write_loss_plot(rows: Iterable[dict[str, Any]], path: Path, *, title: str = "loss") -> Path | None:
    """Train and valid loss against step (Agg backend, written atomically). None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        try:
            step, loss = float(row["step"]), float(row["loss"])
        except (TypeError, ValueError, KeyError):
            continue
        if not math.isfinite(loss):
            continue
        xs, ys = series.setdefault(str(row["split"]), ([], []))
        xs.append(step)
        ys.append(loss)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    styles = {"train": dict(lw=1.0, alpha=0.8), "valid": dict(lw=1.8, marker="o", ms=3)}
    for split, (xs, ys) in series.items():
        ax.plot(xs, ys, label=split, **styles.get(split, {}))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic.write_bytes(path, buffer.getvalue())


def write_summary(path: Path, summary: dict[str, Any]) -> Path:
    """summary.json, atomically (non-finite floats become null so the file stays valid JSON)."""
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return atomic.write_json(path, clean(summary))
