"""`serve.backend: tflite`: decoding with the exported one-step TFLite model (dynamic-range int8 weights).

    decoder, source = tflite_decoder(exp, opened, model, checkpoint, top_k=..., repetition_penalty=...,
                                     min_new_tokens=...)
    batch = decoder.start(prompts, settings, width)       # the same calls as `llmctl.generate.decode.Decoder`
    batch, ran = decoder.advance(batch, steps)

The model is the `step` signature of `llmctl export` (`step.int8.tflite`: `token_id` [1] int32 and the state
`h0, c0, ...` [1, units] float32 → `logits` [1, V] and the new state; see `llmctl.export.modules`). It is read from
the run's export folder when that export holds `step.int8.tflite` of the checkpoint being served, and otherwise
converted at start-up from the loaded float32 model with the export's own code (`llmctl.export.tflite.convert`,
nothing is written). The interpreter (LiteRT) runs batch 1, so each row of a batch is stepped on its own; the
prompt is prefilled by stepping through its tokens from the zero state (the same math as the graph prefill).

Token choice is the decode loop's (`Decoder._process` + `graph_sampling.sample_rows`) in numpy: repetition penalty
over the tokens generated so far, EOS masked before `min_new_tokens`, argmax for greedy rows; for sampled rows
temperature → top-k → top-p nucleus → inverse-CDF draw with the uniform number of (seed, row id, step) — the same
counter-based random stream, so with the same seed a row draws what the graph backend draws from the same logits
(up to float32 rounding at a threshold). The two backends' texts differ only where the int8 weights change the
logits enough to move the argmax (greedy) or a draw across a cumulative-probability boundary (sampling): the
measured agreement is in docs/serve.md.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmctl.errors import ArtifactError
from llmctl.generate.decode import RowBatch, check_rows
from llmctl.generate.graph_sampling import BLOCK, top_p_target

SIGNATURE = "step"
INT8_FILE = "step.int8.tflite"
_NEG_INF = np.float32(-np.inf)
_MIX1 = np.uint32(0x7FEB352D)
_MIX2 = np.uint32(0x846CA68B)
_GOLDEN = np.uint32(0x9E3779B9)


# ------------------------------------------------------------------ token choice (numpy twins of graph_sampling)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x = x * _MIX1
    x = x ^ (x >> np.uint32(15))
    x = x * _MIX2
    return x ^ (x >> np.uint32(16))


def row_uniforms(seed, rows, step) -> np.ndarray:
    """`graph_sampling.row_uniforms` in numpy: the same uniform float32 per (seed, row id, step), bit for bit."""
    def u32(v):
        return np.asarray(v, np.int64).astype(np.int32).view(np.uint32)

    with np.errstate(over="ignore"):
        h = _mix(u32(seed) ^ _GOLDEN)
        h = _mix(h ^ u32(rows))
        h = _mix(h ^ u32(step))
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float32)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """Every logit >= the k-th largest of its row is kept (ties too), the rest -inf — `graph_sampling.top_k_filter`."""
    vocab = logits.shape[-1]
    if k >= vocab:
        return logits
    kth = np.partition(logits, vocab - k, axis=-1)[:, vocab - k:vocab - k + 1]
    return np.where(logits >= kth, logits, _NEG_INF)


def nucleus_filter_rows(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """`graph_sampling.nucleus_filter_rows`: per row with a target <= 1, keep each value whose strictly larger
    values hold less than `target` of the probability mass (the top value always); other rows unchanged."""
    out = logits.copy()
    for r in np.flatnonzero(targets <= 1.0):
        row = logits[r]
        order = np.argsort(-row, kind="stable")
        values = row[order]
        probs = softmax(row)[order]
        before = np.concatenate([[np.float32(0)], np.cumsum(probs, dtype=np.float32)[:-1]])
        kept = before < targets[r]
        threshold = values[kept].min() if kept.any() else values[0]
        out[r] = np.where(row >= threshold, row, _NEG_INF)
    return out


def _first_or_last(cond: np.ndarray, positive: np.ndarray) -> np.ndarray:
    width = cond.shape[-1]
    first = np.argmax(cond, axis=-1)
    last = width - 1 - np.argmax(positive[:, ::-1], axis=-1)
    return np.where(cond.any(axis=-1), first, last)


def categorical_draw(logits: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """`graph_sampling.categorical_draw`: inverse CDF over blocks of 128 tokens, then inside the chosen block."""
    probs = softmax(logits)
    batch, vocab = probs.shape
    blocks = (vocab + BLOCK - 1) // BLOCK
    grid = np.zeros((batch, blocks * BLOCK), np.float32)
    grid[:, :vocab] = probs
    grid = grid.reshape(batch, blocks, BLOCK)
    block_mass = grid.sum(axis=-1, dtype=np.float32)
    block_cdf = np.cumsum(block_mass, axis=-1, dtype=np.float32)
    target = uniforms.astype(np.float32) * block_cdf[:, -1]
    j = _first_or_last((block_cdf > target[:, None]) & (block_mass > 0), block_mass > 0)
    index = np.arange(batch)
    base = block_cdf[index, j] - block_mass[index, j]
    inner = grid[index, j]
    inner_cdf = base[:, None] + np.cumsum(inner, axis=-1, dtype=np.float32)
    k = _first_or_last((inner_cdf > target[:, None]) & (inner > 0), inner > 0)
    return (j * BLOCK + k).astype(np.int32)


def sample_rows(logits, temperature, targets, seed, rows, steps, *, top_k: int | None = None) -> np.ndarray:
    """`graph_sampling.sample_rows` in numpy: temperature → top-k → top-p → draw, each row its own settings."""
    logits = np.asarray(logits, np.float32) / np.asarray(temperature, np.float32)[:, None]
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    logits = nucleus_filter_rows(logits, np.asarray(targets, np.float32))
    return categorical_draw(logits, row_uniforms(seed, rows, steps))


# ------------------------------------------------------------------ the decoder


class TFLiteDecoder:
    """The `Decoder` calls the batcher makes (`start`, `advance`, `eos_id`), over a LiteRT `step` runner."""

    jit_compile = False   # the batcher pads XLA loops to bucket sizes; nothing to pad here

    def __init__(self, content: bytes, *, top_k: int | None = None, repetition_penalty: float = 1.0,
                 min_new_tokens: int = 0, eos_id: int | None = 3, pad_id: int = 0):
        from llmctl.export import tflite

        self.runner = tflite.signature_runner(content, SIGNATURE)
        inputs, outputs = self.runner.get_input_details(), self.runner.get_output_details()
        self.state_names = sorted((n for n in inputs if n != "token_id"), key=lambda n: (int(n[1:]), n[0] == "c"))
        if "token_id" not in inputs or "logits" not in outputs or not self.state_names or any(
                n not in outputs for n in self.state_names) or int(inputs["token_id"]["shape"][0]) != 1:
            raise ArtifactError(f"the TFLite model has no `{SIGNATURE}` signature of the llmctl export shape (token_id "
                                f"[1] + h0, c0, ... → logits + state): inputs {sorted(inputs)}, outputs "
                                f"{sorted(outputs)}", hint="export the run again with llmctl export")
        self.units = [int(inputs[n]["shape"][-1]) for n in self.state_names]
        self.vocab_size = int(outputs["logits"]["shape"][-1])
        self.top_k = None if top_k is None else int(top_k)
        self.repetition_penalty = float(repetition_penalty)
        self.min_new_tokens = int(min_new_tokens)
        self.eos_id = None if eos_id is None else int(eos_id)
        self.pad_id = int(pad_id)
        self.steps = 0   # interpreter calls so far
        with tflite.native_stderr_captured():   # LiteRT's delegate set-up note goes to fd 2 on the first call
            self.step(0, [np.zeros((1, u), np.float32) for u in self.units])

    def step(self, token: int, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One token of one row: (logits [V] float32, the new state [[1, units], ...])."""
        out = self.runner(token_id=np.array([token], np.int32), **dict(zip(self.state_names, state, strict=True)))
        self.steps += 1
        return out["logits"][0], [out[n] for n in self.state_names]

    def prefill(self, prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Each prompt stepped through from the zero state: next-token logits [B, V] and the flat state."""
        if not prompts or min(len(p) for p in prompts) < 1:
            raise ValueError("every prompt needs at least one token (start empty prompts with <bos>/<eos>)")
        logits = np.zeros((len(prompts), self.vocab_size), np.float32)
        states = [np.zeros((len(prompts), u), np.float32) for u in self.units]
        for r, prompt in enumerate(prompts):
            state = [np.zeros((1, u), np.float32) for u in self.units]
            for token in prompt:
                row_logits, state = self.step(int(token), state)
            logits[r] = row_logits
            for flat, value in zip(states, state, strict=True):
                flat[r] = value[0]
        return logits, states

    def start(self, prompts, settings, width: int) -> RowBatch:
        """Prefill `prompts` into rows ready for `advance` (see `Decoder.start`): a `decode.RowBatch` whose carry
        (logits, states, tokens so far) is numpy, updated in place by `advance`."""
        check_rows(prompts, settings, width)
        logits, states = self.prefill(prompts)
        n = len(settings)
        return RowBatch.of(settings, logits=logits, states=states, generated=np.full((n, int(width)), -1, np.int32),
                           finished=np.zeros(n, bool), lengths=np.zeros(n, np.int32))

    def process(self, logits: np.ndarray, lengths: np.ndarray, generated: np.ndarray) -> np.ndarray:
        """`Decoder._process`: repetition penalty over the generated tokens, EOS masked before min_new_tokens."""
        logits = np.array(logits, np.float32)
        if self.repetition_penalty != 1.0:
            seen = np.zeros(logits.shape, bool)
            for r in range(logits.shape[0]):
                ids = generated[r]
                seen[r, ids[(ids >= 0) & (ids < logits.shape[1])]] = True
            penalty = np.float32(self.repetition_penalty)
            logits = np.where(seen, np.where(logits > 0, logits / penalty, logits * penalty), logits)
        if self.min_new_tokens > 0 and self.eos_id is not None:
            logits[lengths < self.min_new_tokens, self.eos_id] = _NEG_INF
        return logits

    def choose(self, batch: RowBatch, live: np.ndarray) -> np.ndarray:
        """The next token of each row in `live` (the body of the graph decode loop, minus the model step)."""
        scores = self.process(batch.logits[live], batch.lengths[live], batch.generated[live])
        tokens = np.argmax(scores, axis=-1).astype(np.int32)
        sampled = ~batch.greedy[live]
        if sampled.any():
            rows = live[sampled]
            tokens[sampled] = sample_rows(scores[sampled], batch.temperature[rows], batch.targets[rows],
                                          batch.seed[rows], batch.rows[rows], batch.lengths[rows], top_k=self.top_k)
        return tokens

    def advance(self, batch: RowBatch, steps: int, *, pad_to: int | None = None,
                full: bool = False) -> tuple[RowBatch, int]:
        """Up to `steps` tokens for every unfinished row (fewer if all finish): (the rows, updated in place; steps
        run). `pad_to` / `full` are the graph decoder's compile-once options and change nothing here."""
        ran = 0
        while ran < int(steps) and not batch.finished.all():
            live = np.flatnonzero(~batch.finished)
            tokens = self.choose(batch, live)
            batch.generated[live, batch.lengths[live]] = tokens
            batch.lengths[live] += 1
            done = batch.lengths[live] >= batch.max_len[live]
            if self.eos_id is not None:
                done |= tokens == self.eos_id
            batch.finished[live] = done
            for r, token in zip(live[~done], tokens[~done], strict=True):
                logits, state = self.step(int(token), [flat[r:r + 1] for flat in batch.states])
                batch.logits[r] = logits
                for flat, value in zip(batch.states, state, strict=True):
                    flat[r] = value[0]
            ran += 1
        return batch, ran


# ------------------------------------------------------------------ where the model comes from


def _exported(exp, opened, checkpoint: dict[str, Any]) -> Path | None:
    """The run's `step.int8.tflite` when its export was made from the checkpoint being served, else None."""
    folder = Path(exp.export.dir) if exp.export.dir is not None else opened.run.export
    path = folder / INT8_FILE
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not path.is_file() or not isinstance(manifest, dict):
        return None
    made_from = (manifest.get("source") or {}).get("checkpoint") or {}
    same_checkpoint = (made_from.get("step") == checkpoint.get("step")
                       and Path(str(made_from.get("path"))).name == Path(str(checkpoint.get("path"))).name)
    same_tokenizer = (manifest.get("tokenizer") or {}).get("run_fingerprint") == opened.fingerprint
    return path if same_checkpoint and same_tokenizer else None


def int8_step_model(exp, opened, model, checkpoint: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """(flatbuffer, where it came from): the run's export when it matches the served checkpoint, else converted now
    from `model` with dynamic-range int8 weights, as `llmctl export --set export.quantize=dynamic_int8` does."""
    path = _exported(exp, opened, checkpoint)
    if path is not None:
        return path.read_bytes(), {"tflite": str(path), "converted_s": None}
    from llmctl.export import tflite
    from llmctl.export.modules import tflite_functions

    t0 = time.perf_counter()
    kernel = getattr(model, "lstm_kernel", None)
    model.lstm_kernel = "keras"   # the exported graphs run the Keras layers (see llmctl.export.source)
    try:
        (name, fn), = tflite_functions(model, "lm", max_length=0).items()
        with tempfile.TemporaryDirectory(prefix="llmctl-serve-tflite-") as tmp:
            content = tflite.convert(fn, name, quantize="dynamic_int8", workdir=Path(tmp))
    finally:
        if kernel is not None:
            model.lstm_kernel = kernel
    return content, {"tflite": "converted at start-up (int8 dynamic range)",
                     "converted_s": round(time.perf_counter() - t0, 2)}


def tflite_decoder(exp, opened, model, checkpoint: dict[str, Any], **options) -> tuple[TFLiteDecoder, dict]:
    content, source = int8_step_model(exp, opened, model, checkpoint)
    decoder = TFLiteDecoder(content, **options)
    if decoder.vocab_size != opened.tokenizer.vocab_size:
        raise ArtifactError(f"the TFLite step model has a {decoder.vocab_size}-token vocabulary but the run's "
                            f"tokenizer has {opened.tokenizer.vocab_size}",
                            hint="the export does not belong to this run: export it again with --overwrite")
    return decoder, {**source, "bytes": len(content)}


def agreement(model, decoder: TFLiteDecoder, tokens: Sequence[int], *, temperature: float = 0.8,
              top_p: float | None = 0.95, seed: int = 7) -> dict[str, Any]:
    """How often the int8 step model picks what the float32 model picks, reading `tokens` (teacher forcing: both
    see the same text): `top1` — the argmax agrees; `sampled` — the token drawn with the same uniform number (at
    `temperature`, `top_p`) agrees; `max_abs_logit_diff`."""
    from llmctl.export import graphs
    from llmctl.tfenv import import_tf

    tf = import_tf()
    ids = np.asarray(tokens, np.int32)
    reference = graphs.prefill(model, tf.constant(ids[None, :]))[0].numpy()[0].astype(np.float32)  # [T, V]
    state = [np.zeros((1, u), np.float32) for u in decoder.units]
    int8 = np.zeros_like(reference)
    for t, token in enumerate(ids):
        int8[t], state = decoder.step(int(token), state)
    steps = np.arange(len(ids), dtype=np.int32)
    count = len(ids)

    def drawn(logits):
        return sample_rows(logits, np.full(count, temperature, np.float32),
                           np.full(count, top_p_target(top_p), np.float32), np.full(count, seed, np.int32),
                           np.zeros(count, np.int32), steps)

    return {"tokens": count, "top1": float(np.mean(reference.argmax(-1) == int8.argmax(-1))),
            "sampled": float(np.mean(drawn(reference) == drawn(int8))),
            "max_abs_logit_diff": float(np.max(np.abs(reference - int8)))}
