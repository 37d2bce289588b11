"""Logit processors for autoregressive decoding, in pure TensorFlow ops (traceable into a decode graph).

Pure functions ``[batch, vocab] -> [batch, vocab]``: :func:`apply_temperature`, :func:`apply_top_k`,
:func:`apply_top_p`, :func:`apply_repetition_penalty`, :func:`mask_tokens`. Forbidden tokens are set to ``-inf`` so
``softmax`` gives them exactly zero probability. :func:`step_seed` derives one stateless-RNG seed per decode step.
The decode loops that use them: `generate.decode` (per-row loop of generate, evaluate and serve), `generate.beam`,
`export.graphs`; the reference samplers the tests compare them with live in tests/generate/reference_decoders.py.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import tensorflow as tf

__all__ = [
    "apply_repetition_penalty",
    "apply_temperature",
    "apply_top_k",
    "apply_top_p",
    "mask_tokens",
    "step_seed",
]

#: Cumulative probability within this distance of ``p`` counts as having
#: reached ``p`` in :func:`apply_top_p` (absorbs float32 rounding in cumsum).
TOP_P_TOLERANCE = 1e-6

_NEG_INF = float("-inf")

# --------------------------------------------------------------------------- #
# Validation helpers (Python-side, only for Python scalars)
# --------------------------------------------------------------------------- #


def _is_tensor(value: Any) -> bool:
    return isinstance(value, (tf.Tensor, tf.Variable))


def _is_real(value: Any) -> bool:
    """Python/numpy real scalar (bools excluded; numpy bools are not Real)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    """Python/numpy integer scalar (bools excluded)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_temperature(temperature: Any, allow_tensor: bool = True) -> None:
    if allow_tensor and _is_tensor(temperature):
        return
    if not (_is_real(temperature) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number in (0, inf), got {temperature!r}")


def _check_top_k(top_k: Any, allow_tensor: bool = True) -> None:
    if allow_tensor and _is_tensor(top_k):
        return
    if not (_is_integer(top_k) and top_k >= 1):
        raise ValueError(f"top_k must be an integer in [1, inf), got {top_k!r}")


def _check_top_p(top_p: Any, allow_tensor: bool = True) -> None:
    if allow_tensor and _is_tensor(top_p):
        return
    if not (_is_real(top_p) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}")


def _check_penalty(penalty: Any, allow_tensor: bool = True) -> None:
    if allow_tensor and _is_tensor(penalty):
        return
    if not (_is_real(penalty) and math.isfinite(penalty) and penalty > 0):
        raise ValueError(f"penalty must be a finite number in (0, inf), got {penalty!r}")


def _as_logits(logits: Any) -> tf.Tensor:
    """Convert to a float32 tensor (casting half/bfloat16 logits)."""
    logits = tf.convert_to_tensor(logits)
    if logits.dtype != tf.float32:
        logits = tf.cast(logits, tf.float32)
    return logits


# --------------------------------------------------------------------------- #
# Seeds
# --------------------------------------------------------------------------- #


def step_seed(seed: tf.Tensor, step: tf.Tensor | int) -> tf.Tensor:
    """Derive the per-step seed ``seed + [0, step]`` for stateless sampling.

    Args:
        seed: shape ``[2]`` int32 or int64 base seed.
        step: scalar step index (Python int or scalar integer tensor).

    Returns:
        A shape ``[2]`` tensor with the dtype of ``seed``.
    """
    seed = tf.convert_to_tensor(seed)
    step = tf.cast(step, seed.dtype)
    return seed + tf.stack([tf.zeros_like(step), step])


# --------------------------------------------------------------------------- #
# Logit processors
# --------------------------------------------------------------------------- #


def apply_temperature(logits: tf.Tensor, temperature: float | tf.Tensor) -> tf.Tensor:
    """Divide logits by ``temperature`` (> 0).

    ``temperature < 1`` sharpens the distribution, ``> 1`` flattens it.

    Args:
        logits: ``[batch, vocab]`` float logits.
        temperature: Python float (validated) or scalar float tensor.

    Raises:
        ValueError: if a Python ``temperature`` is not a finite number > 0.
    """
    _check_temperature(temperature)
    logits = _as_logits(logits)
    return logits / tf.cast(temperature, logits.dtype)


def apply_top_k(logits: tf.Tensor, k: int | tf.Tensor) -> tf.Tensor:
    """Keep the ``k`` largest logits per row, set the rest to ``-inf``.

    Ties: every logit ``>=`` the k-th largest value is kept, so when several
    tokens tie with the k-th value more than ``k`` tokens may survive.
    ``k`` larger than the vocabulary keeps everything.

    Args:
        logits: ``[batch, vocab]`` float logits.
        k: Python int >= 1 (validated) or scalar int32 tensor.

    Raises:
        ValueError: if a Python ``k`` is not an integer >= 1.
    """
    _check_top_k(k)
    logits = _as_logits(logits)
    k = tf.minimum(tf.cast(k, tf.int32), tf.shape(logits)[-1])
    kth_largest = tf.math.top_k(logits, k=k).values[:, -1:]  # [batch, 1]
    return tf.where(logits >= kth_largest, logits, tf.constant(_NEG_INF, logits.dtype))


def apply_top_p(logits: tf.Tensor, p: float | tf.Tensor) -> tf.Tensor:
    """Nucleus filtering: keep the smallest top set with cumulative prob ``>= p``.

    Tokens are ranked by probability; token at rank ``i`` is kept iff the
    cumulative probability of the ranks before it is still below ``p``
    (within :data:`TOP_P_TOLERANCE`).  The top-1 token is always kept.  The
    kept set is applied as a threshold on the logit value, so tokens that tie
    with the last kept token are kept too.  Logits already at ``-inf`` (e.g.
    after :func:`apply_top_k`) simply carry zero probability.

    Example: probabilities ``[0.5, 0.3, 0.15, 0.05]`` keep 2 tokens for
    ``p=0.8`` and 3 tokens for ``p=0.81``.

    Args:
        logits: ``[batch, vocab]`` float logits.
        p: Python float in ``(0, 1]`` (validated) or scalar float tensor.

    Raises:
        ValueError: if a Python ``p`` is not in ``(0, 1]``.
    """
    _check_top_p(p)
    logits = _as_logits(logits)
    if _is_real(p) and p >= 1.0:
        return logits
    sorted_logits = tf.sort(logits, axis=-1, direction="DESCENDING")
    sorted_probs = tf.nn.softmax(sorted_logits, axis=-1)
    mass_before = tf.math.cumsum(sorted_probs, axis=-1, exclusive=True)
    p = tf.cast(p, logits.dtype)
    keep = mass_before < p - TOP_P_TOLERANCE
    num_keep = tf.maximum(tf.reduce_sum(tf.cast(keep, tf.int32), axis=-1), 1)  # [batch]
    threshold = tf.gather(sorted_logits, num_keep - 1, batch_dims=1)[:, None]  # [batch, 1]
    return tf.where(logits >= threshold, logits, tf.constant(_NEG_INF, logits.dtype))


def apply_repetition_penalty(
    logits: tf.Tensor,
    previous_ids: tf.Tensor,
    penalty: float | tf.Tensor,
    mask: tf.Tensor | None = None,
) -> tf.Tensor:
    """CTRL-style repetition penalty on tokens that already occurred.

    For every token present in ``previous_ids`` (per row), a positive logit is
    divided by ``penalty`` and a negative logit multiplied by it; other tokens
    are untouched.  ``penalty > 1`` discourages repetition, ``1`` is a no-op.
    Each token is penalised once however often it occurred.

    Args:
        logits: ``[batch, vocab]`` float logits.
        previous_ids: ``[batch, t]`` integer ids.  Negative ids (e.g. ``-1``
            padding) and ids ``>= vocab`` are ignored.
        penalty: Python float > 0 (validated) or scalar float tensor.
        mask: optional ``[batch, t]`` bool/int mask; positions where it is
            false/0 are ignored (alternative to ``-1`` padding).

    Raises:
        ValueError: if a Python ``penalty`` is not a finite number > 0.
    """
    _check_penalty(penalty)
    logits = _as_logits(logits)
    previous_ids = tf.cast(tf.convert_to_tensor(previous_ids), tf.int32)
    batch = tf.shape(logits)[0]
    vocab = tf.shape(logits)[1]
    t = tf.shape(previous_ids)[1]

    valid = (previous_ids >= 0) & (previous_ids < vocab)
    if mask is not None:
        valid = valid & tf.cast(mask, tf.bool)
    safe_ids = tf.where(valid, previous_ids, tf.zeros_like(previous_ids))
    rows = tf.broadcast_to(tf.range(batch)[:, None], [batch, t])
    indices = tf.stack([rows, safe_ids], axis=-1)  # [batch, t, 2]
    counts = tf.tensor_scatter_nd_add(tf.zeros([batch, vocab], tf.int32), indices, tf.cast(valid, tf.int32))
    seen = counts > 0

    penalty = tf.cast(penalty, logits.dtype)
    penalized = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalized, logits)


def mask_tokens(
    logits: tf.Tensor,
    ids: tf.Tensor | list[int] | int,
    active: tf.Tensor | bool = True,
) -> tf.Tensor:
    """Forbid the token ``ids`` by setting their logits to ``-inf``.

    Typical use: ``mask_tokens(logits, [eos_id], active=step < min_new_tokens)``.

    Args:
        logits: ``[batch, vocab]`` float logits.
        ids: scalar or ``[n]`` integer ids forbidden in every row; ids outside
            ``[0, vocab)`` are ignored.
        active: scalar or ``[batch]`` bool; rows where it is false are
            returned unchanged.
    """
    logits = _as_logits(logits)
    ids = tf.reshape(tf.cast(tf.convert_to_tensor(ids), tf.int32), [-1])
    vocab = tf.shape(logits)[-1]
    forbidden = tf.reduce_max(tf.one_hot(ids, vocab, dtype=tf.int32), axis=0) > 0  # [vocab]
    forbidden = forbidden[None, :]
    active = tf.convert_to_tensor(active, tf.bool)
    if active.shape.rank == 1:
        active = active[:, None]
    forbidden = forbidden & active
    return tf.where(forbidden, tf.constant(_NEG_INF, logits.dtype), logits)
