"""Reference computations with the Keras model itself (independent of llmctl.export's graph code)."""

from __future__ import annotations

import numpy as np

EOS_ID = 3


def keras_logits(model, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Keras logits [B, T, V] and flat final states for `ids` [B, T] from the zero state."""
    logits, states = model(np.asarray(ids, np.int32), None, training=False)
    return np.asarray(logits), [np.asarray(t) for pair in states for t in pair]


def keras_greedy(model, prompt: list[int], max_new: int, eos: int = EOS_ID) -> list[int]:
    """Greedy continuation in a Python loop over the Keras layers, carrying the (h, c) states."""
    logits, states = model(np.asarray([prompt], np.int32), None, training=False)
    new: list[int] = []
    while len(new) < max_new:
        token = int(np.argmax(np.asarray(logits)[0, -1]))
        new.append(token)
        if token == eos:
            break
        logits, states = model(np.asarray([[token]], np.int32), states, training=False)
    return new


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
