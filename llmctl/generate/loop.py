"""The one greedy / sampling decode loop, with pluggable strategies (what picks each row's next token).

    carry = decode_loop(step_fn, strategy, logits, flat_states, generated, finished, lengths, stop, max_len,
                        eos_id=3, process=None)

`decode_loop` owns the loop (a `tf.while_loop`, traceable into an XLA-compiled `tf.function` or a SavedModel
signature): logit processors, the strategy's `next_token`, writing the token into the row's own column, EOS and
length bookkeeping, one model step. Each row is at its own step (`lengths`: tokens it has produced, EOS
included), so rows that join a batch later decode exactly as they would alone. A strategy only answers
`next_token(scores [B, V], step [B]) -> [B] int32`:

* `Greedy` — argmax.
* `RowSampling` — every row with its own greedy flag / temperature / top-p target / random stream (`llmctl generate`
  and `llmctl serve`, through `decode.Decoder`).
* `FilterSampling` — one temperature / top-k / top-p / seed as tensors for the whole batch (the SavedModel `generate`
  signature, `llmctl.export.graphs.decode`); temperature <= 0 means greedy.

Beam search keeps its own loop (`beam.beam_search_loop`): it reorders whole hypotheses every step.
"""

from __future__ import annotations

from typing import Any, Callable

from llmctl.generate.graph_sampling import categorical_draw, row_uniforms, sample_rows
from llmctl.tfenv import import_tf

tf = import_tf()


class Greedy:
    def next_token(self, scores, step):
        return tf.argmax(scores, axis=-1, output_type=tf.int32)


class RowSampling:
    """Per-row settings ([B] tensors): `greedy` rows take the argmax, the others draw from their own filtered
    distribution with the uniform number of (seed, row, step) — `graph_sampling.sample_rows`."""

    def __init__(self, greedy, temperature, targets, seed, rows, *, top_k: int | None, nucleus: bool):
        self.greedy, self.temperature, self.targets, self.seed, self.rows = greedy, temperature, targets, seed, rows
        self.top_k, self.nucleus = top_k, nucleus

    def next_token(self, scores, step):
        token = tf.argmax(scores, axis=-1, output_type=tf.int32)
        drawn = sample_rows(scores, self.temperature, self.targets, self.seed, self.rows, step, top_k=self.top_k,
                            nucleus=self.nucleus)
        return tf.where(self.greedy, token, drawn)


class FilterSampling:
    """One setting for the whole batch, as scalar tensors: temperature → top-k (k > 0) → top-p (p < 1) → inverse-CDF
    draw with the uniform number of (seed, row, step) — the filters and random stream of `llmctl generate`, with the
    nucleus found by sorting (`logit_processors.apply_top_p`); `temperature` <= 0 → argmax."""

    def __init__(self, temperature, top_k, top_p, seed, rows):
        self.temperature, self.top_k, self.top_p, self.seed, self.rows = temperature, top_k, top_p, seed, rows

    def _sample(self, logits, step):
        from llmctl.generate.logit_processors import apply_top_k, apply_top_p

        logits = logits / tf.maximum(self.temperature, 1e-6)
        logits = tf.cond(self.top_k > 0, lambda: apply_top_k(logits, self.top_k), lambda: logits)
        logits = tf.cond(self.top_p < 1.0, lambda: apply_top_p(logits, self.top_p), lambda: logits)
        return categorical_draw(logits, row_uniforms(self.seed, self.rows, step))

    def next_token(self, scores, step):
        return tf.cond(self.temperature <= 0.0, lambda: tf.argmax(scores, axis=-1, output_type=tf.int32),
                       lambda: self._sample(scores, step))


def decode_loop(step_fn: Callable, strategy, logits, flat_states, generated, finished, lengths, stop, max_len, *,
                eos_id: int | None, process: Callable | None = None) -> tuple[Any, ...]:
    """At most `stop` steps; returns the carry `(steps run, logits, flat states, generated, finished, lengths)`.

    `step_fn(tokens [B], flat_states) -> (logits [B, V], flat_states)` advances the model; `generated` [B, W] int32
    holds each row's new tokens (-1 past its end); `finished` [B] bool; `lengths` [B] int32; `max_len` [B] int32 each
    row's length limit. `process(logits, lengths, generated)`: logit processors applied before the strategy.
    """
    width = tf.shape(generated)[1]
    columns = tf.range(width)[None, :]

    def cond(i, logits, states, generated, finished, lengths):
        return tf.logical_and(i < stop, tf.logical_not(tf.reduce_all(finished)))

    def body(i, logits, states, generated, finished, lengths):
        scores = logits if process is None else process(logits, lengths, generated)
        token = strategy.next_token(scores, lengths)
        written = tf.where(finished, tf.constant(-1, tf.int32), token)
        generated = tf.where(tf.equal(columns, lengths[:, None]), written[:, None], generated)
        lengths = lengths + tf.cast(tf.logical_not(finished), tf.int32)
        if eos_id is not None:
            finished = tf.logical_or(finished, tf.equal(written, eos_id))
        finished = tf.logical_or(finished, lengths >= max_len)
        logits, states = step_fn(token, states)
        return i + 1, logits, list(states), generated, finished, lengths

    return tf.while_loop(cond, body, (tf.constant(0), logits, list(flat_states), generated, finished, lengths))
