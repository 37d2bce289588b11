"""Sampling pieces that stay fast inside an XLA-compiled decode loop, exact counterparts of `logit_processors`.

The reference `RandomSampler` (tests/generate/reference_decoders.py) sorts the vocabulary for top-p and draws with
`tf.random.stateless_categorical`. Both cost several greedy steps each inside one XLA-compiled `tf.while_loop` on
CPU (docs/benchmarks.md). The pieces here do the same job without sorting and with ONE random number per row:

* `nucleus_filter(logits, p)` — keeps exactly the tokens `logit_processors.apply_top_p` keeps (the smallest top
  set whose probability mass reaches p, ties at the threshold kept, top-1 always kept), found by a 32-step
  bisection over the float32 logit values viewed as ordered integers: each step is one masked sum over the
  vocabulary. The kept set can differ from the sorting version only when the mass before a token lies within
  float32 rounding of `p - TOP_P_TOLERANCE` (the summation order differs).
* `categorical_draw(logits, uniforms)` — an exact draw from softmax(logits) by inverse-CDF: a two-level cumulative
  sum (blocks of 128 tokens, then inside the chosen block) located with one uniform number per row. Tokens whose
  logit is -inf are never drawn.
* `row_uniforms(seed, rows, step)` — the uniform number of each row, a counter-based hash of (seed, row id, step):
  a prompt's random stream depends on its own row id only, so the same prompt list gives the same text however it
  is split into batches, and a rerun with the same seed gives the same text.

* `top_k_filter(logits, k)` — the set `logit_processors.apply_top_k` keeps, by the same bisection counting tokens
  instead of probability mass (XLA's top-k on CPU is as slow as the sort).

`GraphSampler` chains them like `RandomSampler` does: temperature → top-k → top-p → draw. `sample_rows` does the
same with each row's own temperature, top-p, seed and step (the decode loop's per-row settings: `llmctl serve` decodes
requests with different settings in one batch); a row draws what `GraphSampler` draws for it alone.
"""

from __future__ import annotations

import numpy as np

from llmctl.generate.logit_processors import TOP_P_TOLERANCE, apply_temperature
from llmctl.tfenv import import_tf

tf = import_tf()

BLOCK = 128  # tokens per block of the two-level cumulative sum
TOP_P_OFF = 2.0  # a row's top-p target meaning "no nucleus filter" (any value > 1)
_NEG_INF = float("-inf")
_MIX1 = 0x7FEB352D  # "lowbias32" constants (C. Wellons' hash prospector): a well-mixing bijection on uint32
_MIX2 = 0x846CA68B
_GOLDEN = 0x9E3779B9


def ordered_keys(logits):
    """int32 keys with the same order as the float32 values (-0.0 and +0.0 share a key; -inf is the smallest)."""
    x = tf.where(tf.equal(logits, 0.0), tf.zeros_like(logits), logits)
    bits = tf.bitcast(x, tf.int32)
    return tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, tf.constant(0x7FFFFFFF, tf.int32)), bits)


def _threshold_key(keys, weights, target):
    """Per row, the smallest key t with sum(weights[keys > t]) < target (a key present in the row).

    Bisection over the int64 key range (< 2**33 values, so 33 halvings): each step is one masked sum over the
    vocabulary. The answer is always the top key or below; if even the top key fails, the top key is returned.
    """
    # Invariant: predicate false at lo (everything counts: the total is >= target unless only the top survives),
    # true at hi (nothing is above the top key).
    lo = tf.reduce_min(keys, axis=-1, keepdims=True) - 1
    hi = tf.reduce_max(keys, axis=-1, keepdims=True)
    zero = tf.zeros_like(weights)

    def halve(lo, hi):
        mid = lo + (hi - lo) // 2
        above = tf.reduce_sum(tf.where(keys > mid, weights, zero), axis=-1, keepdims=True)
        ok = above < target
        return tf.where(ok, lo, mid), tf.where(ok, mid, hi)

    # a graph loop (not 33 unrolled copies) keeps XLA compilations small
    _, hi = tf.while_loop(lambda lo, hi: tf.reduce_any(hi - lo > 1), halve, (lo, hi), maximum_iterations=33)
    return hi


def nucleus_filter(logits, p: float):
    """Top-p filtering without sorting: the kept set of `logit_processors.apply_top_p` (see the module docstring).

    `logits` [batch, vocab] float32 (may hold -inf); `p` a Python float in (0, 1]. Returns logits with the tokens
    outside the nucleus set to -inf.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be a number in (0, 1], got {p!r}")
    logits = tf.cast(logits, tf.float32)
    if p >= 1.0:
        return logits
    keys = tf.cast(ordered_keys(logits), tf.int64)
    # the last kept value is the smallest one whose tokens above it still hold less than p of the mass
    threshold = _threshold_key(keys, tf.nn.softmax(logits, axis=-1), tf.constant(p - TOP_P_TOLERANCE, tf.float32))
    return tf.where(keys >= threshold, logits, tf.constant(_NEG_INF, tf.float32))


def top_p_target(p: float | None) -> np.float32:
    """A row's nucleus bound for `nucleus_filter_rows`: the float32 `p - TOP_P_TOLERANCE` that `nucleus_filter`
    uses (rounded from float64 the same way), or `TOP_P_OFF` for no filter (p None or >= 1)."""
    return np.float32(TOP_P_OFF if p is None or p >= 1.0 else p - TOP_P_TOLERANCE)


def nucleus_filter_rows(logits, targets):
    """`nucleus_filter` with one bound per row: `targets` [batch] float32 from `top_p_target`; rows whose target is
    `TOP_P_OFF` come back unchanged. A row gets exactly the tokens `nucleus_filter(row, p)` keeps."""
    logits = tf.cast(logits, tf.float32)
    keys = tf.cast(ordered_keys(logits), tf.int64)
    threshold = _threshold_key(keys, tf.nn.softmax(logits, axis=-1), targets[:, None])
    filtered = tf.where(keys >= threshold, logits, tf.constant(_NEG_INF, tf.float32))
    return tf.where((targets <= 1.0)[:, None], filtered, logits)


def sample_rows(logits, temperature, targets, seed, rows, steps, *, top_k: int | None = None, nucleus: bool = True):
    """One sampled token per row, each row with its own settings: `temperature` [batch] (> 0), `targets` [batch]
    (`top_p_target`), `seed`/`rows`/`steps` [batch] for `row_uniforms`; `top_k` is shared. A row draws the token
    `GraphSampler(temperature, top_k, top_p)` draws for it alone (`nucleus=False` skips the top-p filter when no
    row uses one)."""
    logits = tf.cast(logits, tf.float32) / temperature[:, None]
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if nucleus:
        logits = nucleus_filter_rows(logits, targets)
    return categorical_draw(logits, row_uniforms(seed, rows, steps))


def top_k_filter(logits, k: int):
    """Top-k filtering without `tf.math.top_k` (slow in XLA on CPU): exactly the set `logit_processors.apply_top_k`
    keeps (every logit >= the k-th largest, so ties at the boundary are all kept; k >= vocab keeps everything)."""
    if int(k) != k or k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {k!r}")
    logits = tf.cast(logits, tf.float32)
    keys = tf.cast(ordered_keys(logits), tf.int64)
    # the k-th largest value is the smallest one with fewer than k logits above it
    threshold = _threshold_key(keys, tf.ones_like(logits), tf.constant(float(k), tf.float32))
    return tf.where(keys >= threshold, logits, tf.constant(_NEG_INF, tf.float32))


def _mix(x):
    """lowbias32: a bijective avalanche mix of uint32 values."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(_MIX1, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(_MIX2, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def row_uniforms(seed, rows, step):
    """One uniform float32 in [0, 1) per row from (seed, row id, step): `rows` [batch] int, `seed`/`step` scalars or
    [batch] (each row its own seed and step: the same number as computing the row alone).

    Each input is folded in through its own mixing round, so distinct (row, step) pairs never collide for a given
    seed except by chance (a 2**-32 hash collision).
    """
    def u32(v):
        return tf.bitcast(tf.cast(v, tf.int32), tf.uint32)

    xor = tf.bitwise.bitwise_xor
    h = _mix(xor(u32(seed), tf.constant(_GOLDEN, tf.uint32)))
    h = _mix(xor(h, u32(rows)))
    h = _mix(xor(h, u32(step)))
    top24 = tf.bitwise.right_shift(h, tf.constant(8, tf.uint32))
    return tf.cast(top24, tf.float32) * tf.constant(1.0 / (1 << 24), tf.float32)


def _first_or_last(cond, positive):
    """Per row: index of the first True in `cond`, or (none — float rounding at the very end) of the last
    position where `positive` holds."""
    width = tf.shape(cond)[-1]
    first = tf.argmax(tf.cast(cond, tf.int32), axis=-1, output_type=tf.int32)
    last = width - 1 - tf.argmax(tf.cast(tf.reverse(positive, axis=[-1]), tf.int32), axis=-1, output_type=tf.int32)
    return tf.where(tf.reduce_any(cond, axis=-1), first, last)


def categorical_draw(logits, uniforms):
    """Draw one token per row from softmax(`logits`) by inverse CDF with `uniforms` [batch] in [0, 1).

    Exact up to float32 rounding of the probabilities; a token with zero probability (logit -inf) is never drawn.
    """
    logits = tf.cast(logits, tf.float32)
    probs = tf.nn.softmax(logits, axis=-1)
    batch = tf.shape(probs)[0]
    vocab = tf.shape(probs)[1]
    blocks = (vocab + BLOCK - 1) // BLOCK
    padded = tf.pad(probs, [[0, 0], [0, blocks * BLOCK - vocab]])
    grid = tf.reshape(padded, [batch, blocks, BLOCK])
    block_mass = tf.reduce_sum(grid, axis=-1)  # [batch, blocks]
    block_cdf = tf.math.cumsum(block_mass, axis=-1)
    target = uniforms * block_cdf[:, -1]  # [batch]
    j = _first_or_last((block_cdf > target[:, None]) & (block_mass > 0), block_mass > 0)
    base = tf.gather(block_cdf, j, batch_dims=1) - tf.gather(block_mass, j, batch_dims=1)
    inner = tf.gather(grid, j, batch_dims=1)  # [batch, BLOCK]
    inner_cdf = base[:, None] + tf.math.cumsum(inner, axis=-1)
    k = _first_or_last((inner_cdf > target[:, None]) & (inner > 0), inner > 0)
    return j * BLOCK + k


class GraphSampler:
    """Temperature → top-k → top-p → inverse-CDF draw, for use inside a compiled decode loop.

    Same distribution as the reference `RandomSampler(temperature, top_k, top_p)`; the random numbers come from
    `row_uniforms` instead of `tf.random.stateless_categorical` (see the module docstring for why).
    """

    def __init__(self, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if top_k is not None and (int(top_k) != top_k or top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be a number in (0, 1], got {top_p!r}")
        self.temperature = float(temperature)
        self.top_k = None if top_k is None else int(top_k)
        self.top_p = None if top_p is None else float(top_p)

    def process(self, logits):
        """The filtered, temperature-scaled logits the draw uses."""
        logits = tf.cast(logits, tf.float32)
        if self.temperature != 1.0:
            logits = apply_temperature(logits, self.temperature)
        if self.top_k is not None:
            logits = top_k_filter(logits, self.top_k)
        if self.top_p is not None and self.top_p < 1.0:
            logits = nucleus_filter(logits, self.top_p)
        return logits

    def __call__(self, logits, seed, rows, step):
        """[batch] int32 token ids; `seed` scalar, `rows` [batch] row ids, `step` scalar step index."""
        return categorical_draw(self.process(logits), row_uniforms(seed, rows, step))

    def __repr__(self) -> str:
        return f"GraphSampler(temperature={self.temperature!r}, top_k={self.top_k!r}, top_p={self.top_p!r})"
