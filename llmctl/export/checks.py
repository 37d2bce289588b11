"""Export-time self-checks: the written artifacts, loaded back, must compute what the Keras model computes.

Probe inputs are token ids drawn (seeded) from the non-special part of the vocabulary. Each check returns plain
numbers for the manifest; `export.run` refuses artifacts whose float32 logits drift more than `TOLERANCE`.

- SavedModel, language model: `prefill` logits and states against Keras on a [2, T] batch; `step` from those states
  against Keras on the next token.
- TFLite step (batch 1): the prompt fed token by token from the zero state; every position's logits against the
  Keras logits of the whole prompt (so errors would accumulate through the state, not hide).
- Classifier: probabilities of a right-padded batch, against Keras.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmctl.export import graphs
from llmctl.export.tflite import native_stderr_captured, signature_runner
from llmctl.tfenv import import_tf

tf = import_tf()

TOLERANCE = 1e-4
NUM_SPECIAL = 5
PROBE_LENGTH = 12


def probe_ids(vocab_size: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    low = NUM_SPECIAL if vocab_size > NUM_SPECIAL else 0
    return np.random.default_rng(seed).integers(low, vocab_size, size=shape).astype(np.int32)


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def saved_model_lm(path: Path, model) -> dict[str, float]:
    ids = probe_ids(model.vocab_size, (2, PROBE_LENGTH))
    ref_logits, ref_flat = graphs.prefill(model, ids)
    next_ids = probe_ids(model.vocab_size, (2,), seed=1)
    ref_step, _ = graphs.one_step(model, next_ids, ref_flat)
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["prefill"](token_ids=tf.constant(ids))
    names = graphs.state_names(model.num_layers)
    diffs = [_max_diff(out["logits"], ref_logits)]
    diffs += [_max_diff(out[n], ref) for n, ref in zip(names, ref_flat, strict=True)]
    prefill_diff = max(diffs)
    step = loaded.signatures["step"](token_id=tf.constant(next_ids), **{n: out[n] for n in names})
    return {"prefill_max_abs_diff": prefill_diff, "step_max_abs_diff": _max_diff(step["logits"], ref_step)}


def saved_model_classifier(path: Path, model, max_length: int) -> dict[str, float]:
    ids = _padded_probe(model.encoder.vocab_size, max_length)
    probabilities, _ = graphs.classify(model, ids, max_length)
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["classify"](token_ids=tf.constant(ids))
    return {"classify_max_abs_diff": _max_diff(out["probabilities"], probabilities)}


def tflite_step(content: bytes, model) -> dict[str, float]:
    ids = probe_ids(model.vocab_size, (1, PROBE_LENGTH))
    ref_logits, _ = graphs.prefill(model, ids)
    ref_logits = np.asarray(ref_logits)[0]
    runner = signature_runner(content, "step")
    state = {n: np.zeros((1, model.units), np.float32) for n in graphs.state_names(model.num_layers)}
    diff, agree = 0.0, 0
    with native_stderr_captured():
        for t in range(ids.shape[1]):
            out = runner(token_id=ids[:, t], **state)
            state = {n: out[n] for n in state}
            diff = max(diff, _max_diff(out["logits"][0], ref_logits[t]))
            agree += int(np.argmax(out["logits"][0]) == np.argmax(ref_logits[t]))
    return {"max_abs_diff": diff, "top1_agreement": agree / ids.shape[1]}


def tflite_classifier(content: bytes, model, max_length: int) -> dict[str, float]:
    ids = _padded_probe(model.encoder.vocab_size, max_length)
    probabilities, _ = graphs.classify(model, ids, max_length)
    probabilities = np.asarray(probabilities)
    runner = signature_runner(content, "classify")
    diff, agree = 0.0, 0
    with native_stderr_captured():
        for row in range(ids.shape[0]):
            got = runner(token_ids=ids[row:row + 1])["probabilities"][0]
            diff = max(diff, _max_diff(got, probabilities[row]))
            agree += int(np.argmax(got) == np.argmax(probabilities[row]))
    return {"max_abs_diff": diff, "top1_agreement": agree / ids.shape[0]}


def _padded_probe(vocab_size: int, max_length: int) -> np.ndarray:
    """Two right-padded rows of width `max_length`: one full, one with real tokens in the first half only."""
    ids = probe_ids(vocab_size, (2, max_length), seed=2)
    ids[1, max(1, max_length // 2):] = 0
    return ids


def failures(checks: dict[str, Any]) -> list[str]:
    """Float32 checks whose difference exceeds `TOLERANCE` (int8 results are reported, never refused)."""
    bad = []
    for artifact, values in checks.items():
        if artifact.endswith("int8"):
            continue
        for key, value in values.items():
            if key.endswith("max_abs_diff") and value > TOLERANCE:
                bad.append(f"{artifact}.{key}={value:.2e}")
    return bad
