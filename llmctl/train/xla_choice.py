"""`train.jit_compile: auto` on CPU: measure whether the XLA step is faster than the plain graph step, once per machine
and model shape, and cache the answer.

Whether XLA pays off on a CPU depends on the shapes: it fuses the softmax/loss well but its LSTM loop can be slower
than TensorFlow's oneDNN kernels. The measurement trains a throw-away copy of the model (same architecture, batch
and window, synthetic tokens) for a few interleaved steps with each implementation — the real model, its optimizer
and every RNG the run uses are untouched — and stores {"xla": tok/s, "graph": tok/s} in
`$LLMCTL_CACHE/xla_choice.json` under a key naming the machine, TF version and shapes. The same machine and shapes
therefore always get the same decision (deterministic runs and resumes stay bit-exact).
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from llmctl import atomic
from llmctl.tfenv import import_tf
from llmctl.train.peak_flops import cache_dir, machine_key

ROUNDS = 3
# Revision of what is measured: bump it when the train step or the LSTM kernels change, so that cached decisions
# measured on an older implementation are measured again (2: fused CPU LSTM kernel).
REVISION = 2


def shape_key(model_cfg, train_cfg, vocab_size: int, width: int, replica_batch: int, lstm_kernel: str = "auto"
              ) -> str:
    return json.dumps({"emb": model_cfg.embedding_dim, "layers": model_cfg.layers, "units": model_cfg.units,
                       "vocab": vocab_size, "output": model_cfg.output, "neg": model_cfg.sampled_negatives,
                       "tie": model_cfg.tie_embeddings, "rdrop": model_cfg.recurrent_dropout > 0,
                       "batch": replica_batch, "bptt": width, "accum": train_cfg.grad_accum,
                       "opt": train_cfg.optimizer, "carry": train_cfg.batching == "stream",
                       "lstm": lstm_kernel, "revision": REVISION}, sort_keys=True)


def _measure(model_cfg, train_cfg, vocab_size: int, width: int, replica_batch: int, sampled, lstm_kernel: str
             ) -> dict[str, Any]:
    tf = import_tf()
    from llmctl.models.lstm_lm import build_language_model
    from llmctl.train.distribution import Distribution
    from llmctl.train.loop import Trainer
    from llmctl.train.optimizers import build_optimizer

    rng = np.random.default_rng(0)
    element = tuple(
        (tf.constant(rng.integers(0, vocab_size, (replica_batch, width)), tf.int32),
         tf.constant(rng.integers(0, vocab_size, (replica_batch, width)), tf.int32),
         tf.ones((replica_batch, width), tf.float32))
        for _ in range(train_cfg.grad_accum))
    dist = Distribution("none", tf.distribute.get_strategy())
    trainers = {}
    failure = None
    for jit in (True, False):
        model = build_language_model(model_cfg, vocab_size)
        model.lstm_kernel = lstm_kernel
        optimizer = build_optimizer(train_cfg, mixed_precision=train_cfg.mixed_precision)
        optimizer.build(model.trainable_variables)
        trainer = Trainer(model, optimizer, dist, clip_norm=train_cfg.clip_norm,
                          carry_state=train_cfg.batching == "stream", jit=jit, sampled=sampled, seed=0,
                          state_reset=train_cfg.state_reset)
        trainer.replica_batch = replica_batch
        states = trainer.zero_states()
        if jit:
            failure = trainer.probe_jit(element, states, 0)
            if failure:
                return {"xla": None, "graph": None, "failure": failure}
        _, _, _, states = trainer.step(element, states, 0)  # trace / compile + warm up
        float(_)
        trainers["xla" if jit else "graph"] = [trainer, states]
    best = {"xla": float("inf"), "graph": float("inf")}
    for _ in range(ROUNDS):
        for name, pair in trainers.items():
            trainer, states = pair
            start = time.perf_counter()
            loss, _, _, pair[1] = trainer.step(element, states, 1)
            float(loss)
            best[name] = min(best[name], time.perf_counter() - start)
    tokens = replica_batch * width * train_cfg.grad_accum
    return {"xla": tokens / best["xla"], "graph": tokens / best["graph"], "failure": failure}


def choose_xla(model_cfg, train_cfg, vocab_size: int, width: int, replica_batch: int, sampled=None,
               lstm_kernel: str = "auto") -> tuple[bool, str]:
    """(use XLA?, reason) for the single-device CPU step, measured once per machine + shape and cached."""
    tf = import_tf()
    key = (machine_key(tf, "/cpu:0") + "|"
           + shape_key(model_cfg, train_cfg, vocab_size, width, replica_batch, lstm_kernel))
    path = cache_dir() / "xla_choice.json"
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    cached = isinstance(entry, dict)
    if not cached:
        entry = _measure(model_cfg, train_cfg, vocab_size, width, replica_batch, sampled, lstm_kernel)
        entry["measured"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        cache[key] = entry
        try:
            atomic.write_json(path, cache)
        except Exception:  # noqa: BLE001 - an unwritable cache only costs a re-measurement
            pass
    note = "cached measurement" if cached else "measured now"
    if entry.get("failure"):
        return False, f"auto: the step does not compile with XLA ({entry['failure']})"
    xla, graph = entry["xla"], entry["graph"]
    verdict = xla >= graph
    return verdict, (f"auto: XLA {xla:,.0f} vs graph {graph:,.0f} tok/s on this machine for this shape "
                     f"({note}) → {'XLA' if verdict else 'graph'}")
