"""Exact stream scoring of a language model: the mean negative log-likelihood of a whole split.

The split is laid out as stream columns (`llmctl.data.batching.StreamLayout`), the LSTM state is carried across
windows, every token after the first is scored once and padding is masked: mean NLL = Σ token losses / token count.
Training's validation (`llmctl.train`) and `llmctl evaluate` (`llmctl.evaluation.lm.StreamScorer`) both use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmctl.data.batching import StreamLayout
from llmctl.tfenv import import_tf

tf = import_tf()

from llmctl.models.lstm_lm import flatten_states, unflatten_states  # noqa: E402


def token_nll(logits, targets):
    """Per-token negative log-likelihood from float32 logits [.., V] and int targets [..] (never one-hot)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(targets, tf.int32),
                                                          logits=tf.cast(logits, tf.float32))


@dataclass
class EvalResult:
    """Exact mean NLL of a token stream (nats/token) and the counts behind it."""

    loss: float
    tokens: int
    nll_sum: float
    columns: int
    bptt: int

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else float("inf")

    @property
    def bits_per_token(self) -> float:
        return self.loss / math.log(2.0)

    def as_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "perplexity": self.perplexity, "bits_per_token": self.bits_per_token,
                "tokens": self.tokens, "columns": self.columns, "bptt": self.bptt}


class StreamEvaluator:
    """Exact stream evaluation of a model (no dropout), compiled once per (batch, bptt) shape.

    `context="carry"` carries the LSTM state across windows (standard); `"reset"` starts every window from zero.
    Runs on the default device, outside any strategy (model variables are read as they are).

    The one implementation of streamed NLL scoring: `sum_windows` runs the layout and the window loop and totals the
    per-window sums of `_window_sums` (named by `SUMS`); `llmctl.evaluation.lm.StreamScorer` extends those sums with
    accuracy counts.
    """

    SUMS: tuple[str, ...] = ("nll", "weight")  # what `_window_sums` returns, in order
    progress_field = "loss"  # name of the running mean NLL in progress reports
    report_last = False  # also report progress after the last window (not only every 50th)

    def __init__(self, model, *, jit: bool = False):
        self.model = model
        self.jit = bool(jit)
        self._fn = tf.function(self._window, jit_compile=self.jit)

    def _window(self, x, y, w, states):
        logits, new_states = self.model(x, unflatten_states(states), training=False)
        sums = self._window_sums(tf.cast(logits, tf.float32), y, tf.cast(w, tf.float32))
        return sums, flatten_states(new_states)

    def _window_sums(self, logits, y, w):
        """Sums over one window's targets, weighted by `w` (0 = padding): [Σ NLL (nats), Σ weight]."""
        return tf.stack([tf.reduce_sum(token_nll(logits, y) * w), tf.reduce_sum(w)])

    def sum_windows(self, tokens: np.ndarray, *, batch_size: int, bptt: int, context: str = "carry",
                    reporter=None, description: str = "evaluate") -> tuple[np.ndarray, int, int]:
        """(float64 totals of `SUMS` over every target of `tokens` after the first, columns, windows).
        `batch_size` is clamped to the stream."""
        n_targets = len(tokens) - 1
        columns = max(1, min(int(batch_size), n_targets))
        layout = StreamLayout(len(tokens), columns)
        windows = layout.fixed_windows(int(bptt))
        states = flatten_states(self.model.initial_state(columns))
        zero = list(states)
        totals = np.zeros(len(self.SUMS), dtype=np.float64)
        if reporter is not None:
            reporter.start(description, total=len(windows))
        try:
            for i, (start, length) in enumerate(windows):
                x, y, w = layout.gather(tokens, int(start), int(length), pad_to=int(bptt))
                if context == "reset":
                    states = zero
                sums, states = self._fn(tf.constant(x), tf.constant(y), tf.constant(w), states)
                totals += sums.numpy().astype(np.float64)
                if reporter is not None and ((i + 1) % 50 == 0 or (self.report_last and i + 1 == len(windows))):
                    reporter.advance(i + 1, **{self.progress_field: float(totals[0] / max(totals[1], 1.0))})
        finally:
            if reporter is not None:
                reporter.stop()
        return totals, columns, len(windows)

    def __call__(self, tokens: np.ndarray, *, batch_size: int, bptt: int, context: str = "carry",
                 reporter=None, description: str = "evaluate") -> EvalResult:
        """Mean NLL over every token of `tokens` after the first. `batch_size` is clamped to the stream."""
        totals, columns, _ = self.sum_windows(tokens, batch_size=batch_size, bptt=bptt, context=context,
                                              reporter=reporter, description=description)
        nll_sum, count = float(totals[0]), float(totals[1])
        return EvalResult(loss=nll_sum / max(count, 1.0), tokens=int(round(count)), nll_sum=nll_sum,
                          columns=columns, bptt=int(bptt))


def evaluate_stream(model, tokens: np.ndarray, *, batch_size: int = 10, bptt: int = 64, context: str = "carry",
                    jit: bool = False, reporter=None) -> EvalResult:
    """One-off exact evaluation (builds a `StreamEvaluator`; keep one around to avoid recompiling)."""
    return StreamEvaluator(model, jit=jit)(tokens, batch_size=batch_size, bptt=bptt, context=context,
                                           reporter=reporter)
