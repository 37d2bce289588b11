"""Reference decoders the tests compare llmctl's decode loops with — not used by llmctl itself.

* `GreedySampler`, `RandomSampler`: ``__call__(logits [batch, vocab], seed [2]) -> ids [batch]`` over the logit
  processors of `llmctl.generate.logit_processors` (stateless random ops; one seed per step from `step_seed`).
* `beam_search`: model-agnostic beam search unrolled as a Python loop over a user-supplied ``step_fn`` (state
  reordered with ``tf.gather``); `llmctl.generate.beam.beam_search_loop` is the graph-loop version.
* `GreedyDecoder`: batched greedy decoding of prompts (prefill + `tf.while_loop` over a language model, explicit
  LSTM state), cut at `<eos>`.
"""

from __future__ import annotations

import abc
import math
from collections import defaultdict
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from llmctl.data.pair_prompts import cut_at_eos
from llmctl.data.tokenizers import EOS_ID
from llmctl.generate.logit_processors import (
    _NEG_INF,
    _as_logits,
    _check_temperature,
    _check_top_k,
    _check_top_p,
    _is_integer,
    _is_real,
    apply_temperature,
    apply_top_k,
    apply_top_p,
)

# --------------------------------------------------------------------------- #
# Samplers
# --------------------------------------------------------------------------- #


class Sampler(abc.ABC):
    """Chooses one token id per row from ``[batch, vocab]`` logits."""

    @abc.abstractmethod
    def __call__(self, logits: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Return ``[batch]`` int32 token ids.

        Args:
            logits: ``[batch, vocab]`` float logits.
            seed: shape ``[2]`` int32/int64 seed for stateless random ops.
        """


class GreedySampler(Sampler):
    """Deterministic argmax decoding (``seed`` is ignored).

    Ties resolve to the lowest token id (``tf.argmax`` semantics).
    """

    def __call__(self, logits: tf.Tensor, seed: tf.Tensor | None = None) -> tf.Tensor:
        del seed
        return tf.argmax(_as_logits(logits), axis=-1, output_type=tf.int32)

    def __repr__(self) -> str:
        return "GreedySampler()"


class RandomSampler(Sampler):
    """Ancestral sampling with optional temperature, top-k and top-p.

    Processors are applied in the order temperature -> top-k -> top-p (the
    nucleus is computed on the temperature-scaled distribution), then a token
    is drawn with ``tf.random.stateless_categorical``; the draw is fully
    determined by ``(logits, seed)``.

    Args:
        temperature: finite float > 0.
        top_k: ``None`` (disabled) or int >= 1.
        top_p: ``None`` (disabled) or float in ``(0, 1]``.

    Raises:
        ValueError: on an out-of-range parameter.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> None:
        _check_temperature(temperature, allow_tensor=False)
        if top_k is not None:
            _check_top_k(top_k, allow_tensor=False)
        if top_p is not None:
            _check_top_p(top_p, allow_tensor=False)
        self.temperature = float(temperature)
        self.top_k = None if top_k is None else int(top_k)
        self.top_p = None if top_p is None else float(top_p)

    def process(self, logits: tf.Tensor) -> tf.Tensor:
        """Apply this sampler's logit processors (no sampling)."""
        logits = _as_logits(logits)
        if self.temperature != 1.0:
            logits = apply_temperature(logits, self.temperature)
        if self.top_k is not None:
            logits = apply_top_k(logits, self.top_k)
        if self.top_p is not None and self.top_p < 1.0:
            logits = apply_top_p(logits, self.top_p)
        return logits

    def __call__(self, logits: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        logits = self.process(logits)
        samples = tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)
        return samples[:, 0]

    def __repr__(self) -> str:
        return f"RandomSampler(temperature={self.temperature!r}, top_k={self.top_k!r}, top_p={self.top_p!r})"


# --------------------------------------------------------------------------- #
# Beam search
# --------------------------------------------------------------------------- #

#: ``step_fn(token_ids [batch*beam] int32, state) -> (logits [batch*beam, vocab], new_state)``
StepFn = Callable[[tf.Tensor, Any], "tuple[tf.Tensor, Any]"]


class BeamSearchResult(NamedTuple):
    """Output of :func:`beam_search`, best hypothesis first.

    Attributes:
        sequences: ``[batch, n_best, max_new_tokens]`` int32 generated ids
            (EOS included when present), right-padded with ``pad_id``.
        scores: ``[batch, n_best]`` float32 length-normalised scores;
            ``-inf`` marks an empty slot (fewer valid hypotheses than n_best).
        lengths: ``[batch, n_best]`` int32 number of valid ids per sequence.
    """

    sequences: tf.Tensor
    scores: tf.Tensor
    lengths: tf.Tensor


def _length_norm(length: int, length_penalty: float) -> float:
    return float(length) ** float(length_penalty)


def _merge_pool(
    pool_seq: tf.Tensor,
    pool_scores: tf.Tensor,
    pool_len: tf.Tensor,
    cand_seq: tf.Tensor,
    cand_scores: tf.Tensor,
    cand_len: int,
    size: int,
    max_len: int,
    pad_id: int,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Keep the ``size`` best of pool + candidates (pool wins ties)."""
    pad = max_len - cand_len
    cand_seq = tf.pad(cand_seq, [[0, 0], [0, 0], [0, pad]], constant_values=pad_id)
    all_seq = tf.concat([pool_seq, cand_seq], axis=1)
    all_scores = tf.concat([pool_scores, cand_scores], axis=1)
    all_len = tf.concat([pool_len, tf.fill(tf.shape(cand_scores), tf.constant(cand_len, tf.int32))], axis=1)
    best_scores, best = tf.math.top_k(all_scores, k=size)
    return (
        tf.gather(all_seq, best, batch_dims=1),
        best_scores,
        tf.gather(all_len, best, batch_dims=1),
    )


def beam_search(
    step_fn: StepFn,
    initial_state: Any,
    start_logits: tf.Tensor,
    *,
    beam_width: int,
    max_new_tokens: int,
    eos_id: int | None = None,
    length_penalty: float = 1.0,
    n_best: int = 1,
    pad_id: int = 0,
) -> BeamSearchResult:
    """Model-agnostic beam search over ``step_fn``.

    The search unrolls a Python loop of ``max_new_tokens`` steps (each step is
    plain TF ops, so it also works when traced inside a ``tf.function``; pass a
    ``tf.function``-compiled ``step_fn`` for speed in eager mode).

    Layout: beams are flattened batch-major, row ``b * beam_width + j`` is beam
    ``j`` of batch item ``b``.  ``initial_state`` (leading dim ``batch``) is
    repeated ``beam_width`` times; after each step the state rows are
    reordered with ``tf.gather`` to follow their parent beams, then
    ``step_fn(last_token_ids, state)`` gives the next logits.  ``step_fn`` is
    called ``max_new_tokens - 1`` times (the first token comes from
    ``start_logits``).

    Scoring (GNMT-style simplification): ``sum(log p) / length ** length_penalty``
    where ``length`` counts generated tokens *including* the EOS token.  Beams
    are ranked by raw log-prob while alive; the normalised score is used to
    rank finished hypotheses.  At every step the top ``2 * beam_width``
    candidates are examined, those ending in ``eos_id`` move to a finished
    pool (kept aside, never extended) and the best non-EOS ones stay alive, so
    ``beam_width`` beams remain alive even when some finish.  After the last
    step, still-alive beams (truncated at ``max_new_tokens``) compete with the
    finished ones.  In eager mode the loop stops early once no alive beam can
    beat the current ``n_best`` finished hypotheses of every batch item (an
    exact bound, so results are unchanged).

    Args:
        step_fn: ``(token_ids [batch*beam] int32, state) -> (logits
            [batch*beam, vocab], new_state)``; ``state`` is any nest of tensors
            with leading dim ``batch*beam``.
        initial_state: nest of tensors with leading dim ``batch`` -- the state
            matching ``start_logits``.
        start_logits: ``[batch, vocab]`` logits of the first new token.
        beam_width: number of alive beams per batch item (>= 1).
        max_new_tokens: maximum generated tokens (>= 1).
        eos_id: id that finishes a hypothesis, or ``None``.
        length_penalty: exponent of the length normaliser (0 = raw log-prob).
        n_best: hypotheses returned per batch item (1 <= n_best <= beam_width).
        pad_id: filler for positions past a sequence's length.

    Returns:
        :class:`BeamSearchResult` sorted best-first.

    Raises:
        ValueError: on an out-of-range argument.
    """
    if not (_is_integer(beam_width) and beam_width >= 1):
        raise ValueError(f"beam_width must be an integer in [1, inf), got {beam_width!r}")
    if not (_is_integer(max_new_tokens) and max_new_tokens >= 1):
        raise ValueError(f"max_new_tokens must be an integer in [1, inf), got {max_new_tokens!r}")
    if not (_is_integer(n_best) and 1 <= n_best <= beam_width):
        raise ValueError(f"n_best must be an integer in [1, beam_width={beam_width}], got {n_best!r}")
    if not (_is_real(length_penalty) and math.isfinite(length_penalty)):
        raise ValueError(f"length_penalty must be a finite number in (-inf, inf), got {length_penalty!r}")
    if eos_id is not None and not (_is_integer(eos_id) and eos_id >= 0):
        raise ValueError(f"eos_id must be None or an integer in [0, vocab), got {eos_id!r}")

    width = beam_width
    start_logits = _as_logits(start_logits)
    batch = tf.shape(start_logits)[0]
    vocab: int | tf.Tensor = start_logits.shape[-1]
    if vocab is None:
        vocab = tf.shape(start_logits)[-1]
        num_candidates: int | tf.Tensor = tf.minimum(2 * width, width * vocab)
    else:
        num_candidates = min(2 * width, width * vocab)

    state = tf.nest.map_structure(lambda s: tf.repeat(s, width, axis=0), initial_state)
    logits = tf.repeat(start_logits, width, axis=0)  # [batch*width, vocab]
    # Only beam 0 is live at the start, so the first top-k does not pick
    # the same token ``width`` times.
    alive_logp = tf.tile(tf.constant([[0.0] + [_NEG_INF] * (width - 1)], tf.float32), [batch, 1])
    alive_seq = tf.zeros([batch, width, 0], tf.int32)
    pool_seq = tf.fill([batch, width, max_new_tokens], tf.constant(pad_id, tf.int32))
    pool_scores = tf.fill([batch, width], tf.constant(_NEG_INF, tf.float32))
    pool_len = tf.zeros([batch, width], tf.int32)
    batch_offsets = tf.range(batch)[:, None] * width  # [batch, 1]
    neg_inf = tf.constant(_NEG_INF, tf.float32)

    for step in range(max_new_tokens):
        length = step + 1
        logp = tf.reshape(tf.nn.log_softmax(logits, axis=-1), [batch, width, vocab])
        flat_scores = tf.reshape(alive_logp[:, :, None] + logp, [batch, width * vocab])
        cand_logp, cand_idx = tf.math.top_k(flat_scores, k=num_candidates)
        cand_beam = cand_idx // vocab
        cand_tok = cand_idx % vocab
        cand_seq = tf.concat([tf.gather(alive_seq, cand_beam, batch_dims=1), cand_tok[:, :, None]], axis=2)

        if eos_id is not None:
            is_eos = tf.equal(cand_tok, eos_id)
            finished_scores = tf.where(is_eos, cand_logp / _length_norm(length, length_penalty), neg_inf)
            pool_seq, pool_scores, pool_len = _merge_pool(
                pool_seq,
                pool_scores,
                pool_len,
                cand_seq,
                finished_scores,
                length,
                width,
                max_new_tokens,
                pad_id,
            )
            cand_logp = tf.where(is_eos, neg_inf, cand_logp)

        alive_logp, top = tf.math.top_k(cand_logp, k=width)
        alive_seq = tf.gather(cand_seq, top, batch_dims=1)
        if step == max_new_tokens - 1:
            break

        if eos_id is not None and tf.executing_eagerly():
            if _search_is_done(alive_logp, pool_scores, n_best, length, max_new_tokens, length_penalty):
                break

        parents = tf.reshape(tf.gather(cand_beam, top, batch_dims=1) + batch_offsets, [-1])
        tokens = tf.reshape(tf.gather(cand_tok, top, batch_dims=1), [-1])
        state = tf.nest.map_structure(lambda s, rows=parents: tf.gather(s, rows), state)
        logits, state = step_fn(tokens, state)
        logits = _as_logits(logits)

    # Alive beams compete with finished ones (truncated at their length).
    final_len = int(alive_seq.shape[2])
    pool_seq, pool_scores, pool_len = _merge_pool(
        pool_seq,
        pool_scores,
        pool_len,
        alive_seq,
        alive_logp / _length_norm(final_len, length_penalty),
        final_len,
        width,
        max_new_tokens,
        pad_id,
    )

    scores = pool_scores[:, :n_best]
    valid = scores > neg_inf
    lengths = tf.where(valid, pool_len[:, :n_best], 0)
    sequences = tf.where(
        valid[:, :, None] & (tf.range(max_new_tokens)[None, None, :] < lengths[:, :, None]),
        pool_seq[:, :n_best],
        tf.constant(pad_id, tf.int32),
    )
    return BeamSearchResult(sequences=sequences, scores=scores, lengths=lengths)


def _search_is_done(
    alive_logp: tf.Tensor,
    pool_scores: tf.Tensor,
    n_best: int,
    length: int,
    max_new_tokens: int,
    length_penalty: float,
) -> bool:
    """True when no alive beam can beat the n-th best finished hypothesis.

    An alive beam with log-prob ``L <= 0`` can only reach log-prob ``<= L``,
    so its best normalised score over future lengths ``l`` is
    ``max(L / l**lp)``, attained at ``l = length + 1`` or ``l = max_new_tokens``.
    """
    best_alive = tf.reduce_max(alive_logp, axis=1)  # [batch]
    bound = tf.maximum(
        best_alive / _length_norm(length + 1, length_penalty),
        best_alive / _length_norm(max_new_tokens, length_penalty),
    )
    nth_finished = pool_scores[:, n_best - 1]
    return bool(tf.reduce_all(nth_finished >= bound))


# --------------------------------------------------------------------------- #
# Greedy decoding of prompts
# --------------------------------------------------------------------------- #


class GreedyDecoder:
    def __init__(self, model, *, max_new_tokens: int, batch_size: int = 64):
        self.model = model
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self._fn = tf.function(self._decode, input_signature=[tf.TensorSpec([None, None], tf.int32)])

    def _decode(self, prompts):
        model = self.model
        logits, states = model(prompts, None, training=False)
        token = tf.argmax(logits[:, -1], axis=-1, output_type=tf.int32)
        batch = tf.shape(prompts)[0]
        out = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None])
        done = tf.zeros([batch], tf.bool)
        for i in tf.range(self.max_new_tokens):
            out = out.write(i, tf.where(done, tf.fill([batch], EOS_ID), token))
            done = tf.logical_or(done, tf.equal(token, EOS_ID))
            if tf.reduce_all(done):
                break
            logits, states = model(token[:, None], states, training=False)
            token = tf.argmax(logits[:, -1], axis=-1, output_type=tf.int32)
        return tf.transpose(out.stack())

    def __call__(self, prefixes: Sequence[Sequence[int]]) -> list[list[int]]:
        results: list[list[int]] = [[] for _ in prefixes]
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, prefix in enumerate(prefixes):
            by_length[len(prefix)].append(index)
        for length, indices in sorted(by_length.items()):
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                batch = np.asarray([prefixes[i] for i in chunk], dtype=np.int32).reshape(len(chunk), length)
                generated = self._fn(batch).numpy()
                for row, index in enumerate(chunk):
                    results[index] = cut_at_eos(generated[row])
        return results
