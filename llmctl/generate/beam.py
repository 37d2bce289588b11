"""Beam search as ONE `tf.while_loop` (fixed-size tensors), for the compiled decoder.

Same search and scoring as the reference `beam_search` (tests/generate/reference_decoders.py) — which unrolls a
Python loop of `max_new_tokens` steps, so its trace grows with the length and every new length retraces
(docs/benchmarks.md); here the loop is a graph loop, traced once:

* beams are flattened batch-major (row `b * width + j` is beam j of prompt b); only beam 0 is live at the start;
* each step takes the top `2 * width` candidates over all live beams; candidates ending in `eos_id` move to a pool of
  finished hypotheses scored `sum(log p) / length ** length_penalty` (length counts the EOS), the best `width`
  others stay alive, ranked by raw log-probability; the pool keeps the `width` best (pool wins ties);
* after the last step the alive beams (truncated) compete with the pool; the loop also stops early once no alive
  beam can beat the n-th best finished hypothesis of every prompt (an exact bound: results are unchanged).

`processor(logits, step, history)` adjusts each step's logits before the log-softmax (minimum length, repetition
penalty); `history` is [batch * width, max_new_tokens] int32 of the beam's tokens so far, -1 where unset.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from llmctl.tfenv import import_tf

tf = import_tf()

_NEG_INF = float("-inf")


class BeamOutput(NamedTuple):
    """Best hypothesis first. `sequences` [batch, n_best, max_new] (EOS included, `pad_id` after `lengths`),
    `scores` [batch, n_best] (-inf marks an empty slot), `lengths` [batch, n_best], `steps` scalar."""

    sequences: Any
    scores: Any
    lengths: Any
    steps: Any


def _norm(length, length_penalty: float):
    return tf.pow(tf.cast(length, tf.float32), tf.constant(float(length_penalty), tf.float32))


def _merge(pool_seq, pool_scores, pool_len, cand_seq, cand_scores, cand_len, size: int):
    """Keep the `size` best of pool + candidates (pool first, so the pool wins ties)."""
    all_seq = tf.concat([pool_seq, cand_seq], axis=1)
    all_scores = tf.concat([pool_scores, cand_scores], axis=1)
    all_len = tf.concat([pool_len, tf.broadcast_to(tf.cast(cand_len, tf.int32), tf.shape(cand_scores))], axis=1)
    best_scores, best = tf.math.top_k(all_scores, k=size)
    return tf.gather(all_seq, best, batch_dims=1), best_scores, tf.gather(all_len, best, batch_dims=1)


def beam_search_loop(step_fn: Callable, initial_state: Any, start_logits, *, beam_width: int, max_new_tokens: int,
                     eos_id: int | None, length_penalty: float = 1.0, n_best: int = 1, pad_id: int = 0,
                     processor: Callable | None = None) -> BeamOutput:
    """Beam search over `step_fn(tokens [batch*width], state) -> (logits [batch*width, vocab], state)`.

    `initial_state` (leading dim batch) and `start_logits` [batch, vocab] describe the position after the prompt.
    Call inside a `tf.function`. Arguments as in the reference `beam_search`.
    """
    width = int(beam_width)
    n_steps = int(max_new_tokens)
    if width < 1 or n_steps < 1 or not 1 <= n_best <= width:
        raise ValueError(f"need beam_width >= 1, max_new_tokens >= 1 and 1 <= n_best <= beam_width, got "
                         f"{beam_width}, {max_new_tokens}, {n_best}")
    start_logits = tf.cast(start_logits, tf.float32)
    batch = tf.shape(start_logits)[0]
    vocab = tf.shape(start_logits)[1]
    n_cand = tf.minimum(2 * width, width * vocab)
    neg_inf = tf.constant(_NEG_INF, tf.float32)
    columns = tf.range(n_steps)[None, None, :]
    offsets = tf.range(batch)[:, None] * width

    state = tf.nest.map_structure(lambda s: tf.repeat(s, width, axis=0), initial_state)
    logits = tf.repeat(start_logits, width, axis=0)
    alive_logp = tf.tile(tf.constant([[0.0] + [_NEG_INF] * (width - 1)], tf.float32), [batch, 1])
    alive_seq = tf.fill([batch, width, n_steps], -1)
    pool_seq = tf.fill([batch, width, n_steps], -1)
    pool_scores = tf.fill([batch, width], neg_inf)
    pool_len = tf.zeros([batch, width], tf.int32)

    def body(i, done, logits, state, alive_seq, alive_logp, pool_seq, pool_scores, pool_len):
        del done
        length = i + 1
        if processor is not None:
            logits = processor(logits, i, tf.reshape(alive_seq, [batch * width, n_steps]))
        logp = tf.reshape(tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1), [batch, width, vocab])
        flat = tf.reshape(alive_logp[:, :, None] + logp, [batch, width * vocab])
        cand_logp, cand_idx = tf.math.top_k(flat, k=n_cand)
        cand_beam = cand_idx // vocab
        cand_tok = cand_idx % vocab
        cand_seq = tf.gather(alive_seq, cand_beam, batch_dims=1)
        cand_seq = tf.where(tf.equal(columns, i), cand_tok[:, :, None], cand_seq)
        if eos_id is not None:
            is_eos = tf.equal(cand_tok, eos_id)
            finished = tf.where(is_eos, cand_logp / _norm(length, length_penalty), neg_inf)
            pool_seq, pool_scores, pool_len = _merge(pool_seq, pool_scores, pool_len, cand_seq, finished, length,
                                                     width)
            cand_logp = tf.where(is_eos, neg_inf, cand_logp)
        alive_logp, top = tf.math.top_k(cand_logp, k=width)
        alive_seq = tf.gather(cand_seq, top, batch_dims=1)
        if eos_id is not None:
            best_alive = tf.reduce_max(alive_logp, axis=1)
            bound = tf.maximum(best_alive / _norm(length + 1, length_penalty),
                               best_alive / _norm(n_steps, length_penalty))
            done = tf.reduce_all(pool_scores[:, n_best - 1] >= bound)
        else:
            done = tf.constant(False)
        parents = tf.reshape(tf.gather(cand_beam, top, batch_dims=1) + offsets, [-1])
        tokens = tf.reshape(tf.gather(cand_tok, top, batch_dims=1), [-1])
        state = tf.nest.map_structure(lambda s: tf.gather(s, parents), state)
        logits, state = step_fn(tokens, state)
        out = (i + 1, done, tf.cast(logits, tf.float32), state, alive_seq, alive_logp, pool_seq, pool_scores,
               pool_len)
        # gathers and top-k lose static dimensions the loop variables had on entry: restore them
        return tf.nest.map_structure(lambda new, old: tf.ensure_shape(new, old.shape), out, loop_vars)

    def cond(i, done, *_):
        return tf.logical_and(i < n_steps, tf.logical_not(done))

    loop_vars = (tf.constant(0), tf.constant(False), logits, state, alive_seq, alive_logp, pool_seq, pool_scores,
                 pool_len)
    steps, _, _, _, alive_seq, alive_logp, pool_seq, pool_scores, pool_len = tf.while_loop(
        cond, body, loop_vars, maximum_iterations=n_steps)

    pool_seq, pool_scores, pool_len = _merge(pool_seq, pool_scores, pool_len, alive_seq,
                                             alive_logp / _norm(steps, length_penalty), steps, width)
    scores = pool_scores[:, :n_best]
    valid = scores > neg_inf
    lengths = tf.where(valid, pool_len[:, :n_best], 0)
    keep = valid[:, :, None] & (columns < lengths[:, :, None]) & (pool_seq[:, :n_best] >= 0)
    sequences = tf.where(keep, pool_seq[:, :n_best], tf.constant(pad_id, tf.int32))
    return BeamOutput(sequences=sequences, scores=scores, lengths=lengths, steps=steps)
