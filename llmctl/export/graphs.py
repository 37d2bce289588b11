"""The exported computations, written once and shared by the SavedModel signatures and the TFLite models.

Everything here is plain TensorFlow over the layers of a trained model (no Python control flow on tensor values), so
it traces into a `tf.function` with any batch size and length, and — at a fixed batch of 1 — into builtin TFLite ops.

State layout: the LSTM state travels as a flat list `[h0, c0, h1, c1, ...]`, one `[B, units]` float32 pair per layer,
bottom layer first (`llmctl.models.lstm_lm.flatten_states`). Its names are `state_names(layers)`.

    logits, flat = one_step(model, token_ids, flat)            # token_ids [B] → logits [B, V]
    logits, flat = prefill(model, token_ids)                   # token_ids [B, T] → logits [B, T, V]
    last_logits, flat = masked_prefill(model, ids, lengths)    # right-padded prompts → logits at each last token
    tokens, lengths = decode(model, ids, lengths, ...)         # in-graph greedy / sampling loop
"""

from __future__ import annotations

from typing import Any

from llmctl.models.lstm_lm import one_step  # noqa: F401 - one decoding step, part of this module's interface
from llmctl.tfenv import import_tf

tf = import_tf()


def state_names(layers: int) -> list[str]:
    """Names of the flat state tensors, bottom layer first: h0, c0, h1, c1, ..."""
    return [f"{kind}{i}" for i in range(layers) for kind in ("h", "c")]


def prefill(model, token_ids) -> tuple[Any, list[Any]]:
    """Run every position of `token_ids` [B, T] from the zero state → logits [B, T, V] and the state after position
    T-1 (all rows are taken as real tokens; use `masked_prefill` for right-padded prompts of different lengths)."""
    logits, states = model(tf.cast(token_ids, tf.int32), None, training=False)
    return logits, [t for pair in states for t in pair]


def masked_prefill(model, token_ids, lengths) -> tuple[Any, list[Any]]:
    """Right-padded prompts `token_ids` [B, T] with `lengths` [B] → logits of the token after each prompt [B, V] and
    the state after each prompt's last real token. A row of length 0 keeps the zero state (its logits come from the
    output layer applied to a zero hidden state)."""
    token_ids = tf.cast(token_ids, tf.int32)
    batch, width = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
    mask = tf.sequence_mask(lengths, width)
    x = model.embedding(token_ids)
    zeros = tf.zeros([batch, model.units], dtype=tf.float32)
    flat = []
    for lstm in model.lstms:
        x, h, c = lstm(x, initial_state=[zeros, zeros], mask=mask, training=False)
        flat += [h, c]
    logits = model.project(flat[-2][:, None, :], training=False)[:, 0, :]
    return logits, flat


def decode(model, prompt_ids, prompt_lengths, max_new_tokens, temperature, top_k, top_p, seed, *, eos_id: int,
           pad_id: int) -> tuple[Any, Any]:
    """Continue right-padded prompts inside one graph: masked prefill, then the decode loop of `llmctl generate`
    (`llmctl.generate.loop.decode_loop`) over `one_step` with the `FilterSampling` strategy.

    `temperature` <= 0 → greedy (argmax); otherwise sample from softmax(logits / temperature), restricted to the
    `top_k` most likely tokens when `top_k` > 0 and to the top-p nucleus when `top_p` < 1. Token i of batch row r is
    drawn with the uniform number of (seed & 0x7FFFFFFF, r, i), as `llmctl generate` does for its row r: the same
    seed gives the same text, here and there. A row stops after producing `eos_id` (which is kept); the loop ends
    when every row stopped or after `max_new_tokens` tokens.

    Returns `tokens` int32 [B, max_new_tokens] (right-padded with `pad_id`) and `lengths` int32 [B].
    """
    from llmctl.generate.loop import FilterSampling, decode_loop

    max_new_tokens = tf.maximum(tf.cast(max_new_tokens, tf.int32), 0)
    seed = tf.cast(tf.bitwise.bitwise_and(tf.cast(seed, tf.int64), tf.constant(0x7FFFFFFF, tf.int64)), tf.int32)
    logits, flat = masked_prefill(model, prompt_ids, prompt_lengths)
    batch = tf.shape(prompt_ids)[0]
    strategy = FilterSampling(tf.cast(temperature, tf.float32), tf.cast(top_k, tf.int32), tf.cast(top_p, tf.float32),
                              seed, tf.range(batch, dtype=tf.int32))
    _, _, _, out, _, lengths = decode_loop(
        lambda token, states: one_step(model, token, states), strategy, logits, flat,
        tf.fill([batch, max_new_tokens], -1), tf.zeros([batch], tf.bool), tf.zeros([batch], tf.int32),
        max_new_tokens, tf.fill([batch], max_new_tokens), eos_id=eos_id)
    return tf.where(out < 0, tf.constant(pad_id, tf.int32), out), lengths


def classify(model, token_ids, max_length: int) -> tuple[Any, Any]:
    """Class probabilities and logits [B, C] for right-padded `token_ids` [B, T], truncated to `max_length` tokens
    (the first ones are kept, as in training)."""
    token_ids = tf.cast(token_ids, tf.int32)[:, :max_length]
    logits = model(token_ids, training=False)
    return tf.nn.softmax(logits, axis=-1), logits
