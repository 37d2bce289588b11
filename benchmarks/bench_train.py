"""Benchmark the llmctl training step against a plain Keras `model.fit` of the same model on the same data.

    python benchmarks/bench_train.py                      # ~3 minutes on 2 CPU cores
    python benchmarks/bench_train.py --steps 60 --json out.json

Model: the word_language_model "small" configuration — embedding 200, 2×200 LSTM, dropout 0.2, vocabulary 10k,
batch 20, bptt 35, SGD lr 20 with global-norm clipping 0.25 — on a generated Zipfian (s=1.1) token stream of a
10k vocabulary, stored as a uint16 memmap and read through `llmctl.data.batching` exactly as `pretrain` reads it.

Measured side by side in one process, each after warm-up (tracing / XLA compilation excluded):
- llmctl's compiled step (explicit state carried between windows, per-step host sync as in `pretrain`), with and
  without XLA; the `auto` choice is the reported `train_tokens_per_s`;
- Keras `model.fit` of the same architecture (Sequential Embedding → LSTM → Dropout → LSTM → Dropout → Dense,
  sparse categorical cross-entropy from logits, same optimizer) on the same windows, default compile settings;
- sampled softmax (1024 negatives) vs full softmax at a 32k vocabulary, both with llmctl's step.
MFU = tokens/s × 3 × forward FLOPs per token / the measured float32 matmul peak (`llmctl.train.peak_flops`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmctl.tfenv import import_tf  # noqa: E402

tf = import_tf()
import keras  # noqa: E402

from llmctl.data.batching import StreamSteps, step_dataset  # noqa: E402
from llmctl.models.lstm_lm import build_language_model  # noqa: E402
from llmctl.schema import ModelConfig, TrainConfig  # noqa: E402
from llmctl.train.distribution import Distribution  # noqa: E402
from llmctl.train.loop import SampledSoftmax, Trainer, decide_jit  # noqa: E402
from llmctl.train.optimizers import build_optimizer  # noqa: E402
from llmctl.train.peak_flops import matmul_peak  # noqa: E402

BATCH, BPTT, EMB, UNITS, LAYERS = 20, 35, 200, 200, 2
MODEL = dict(embedding_dim=EMB, layers=LAYERS, units=UNITS, dropout=0.2, output_dropout=0.2)


def zipf_stream(path: Path, n_tokens: int, vocab: int, seed: int = 0) -> np.memmap:
    """A Zipf(1.1) token stream over ids 5..vocab-1 (0-4 are the special ids), written as a uint16 memmap."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab - 5 + 1, dtype=np.float64)
    p = ranks ** -1.1
    p /= p.sum()
    ids = rng.choice(np.arange(5, vocab), size=n_tokens, p=p).astype(np.uint16)
    ids.tofile(path)
    return np.memmap(path, dtype=np.uint16, mode="r", shape=(n_tokens,))


def llmctl_steps_per_s(tokens, vocab: int, *, jit: bool, steps: int, warmup: int, output: str = "full",
                       seed: int = 0) -> dict:
    keras.utils.set_random_seed(seed)
    cfg = TrainConfig(optimizer="sgd", lr=20.0, clip_norm=0.25, batch_size=BATCH, bptt=BPTT)
    model = build_language_model(ModelConfig(**MODEL, output=output), vocab)
    optimizer = build_optimizer(cfg)
    optimizer.build(model.trainable_variables)
    sampled = SampledSoftmax(SampledSoftmax.count_tokens(tokens, vocab), 1024) if output == "sampled" else None
    dist = Distribution("none", tf.distribute.get_strategy())
    trainer = Trainer(model, optimizer, dist, clip_norm=cfg.clip_norm, jit=jit, sampled=sampled, seed=seed)
    source = StreamSteps(tokens, batch_size=BATCH, bptt=BPTT)
    trainer.replica_batch = source.replica_batch
    states = trainer.zero_states()
    iterator = iter(step_dataset(source, 0))
    probe = None
    count_total, elapsed = 0.0, 0.0
    losses = []
    for i in range(warmup + steps):
        element = next(iterator)
        if i == 0:
            probe = trainer.probe_jit(element, states, 0)
        if i == warmup:
            start = time.perf_counter()
        optimizer.learning_rate.assign(20.0)
        loss_sum, count, _, states = trainer.step(element, states, i)
        loss_sum, count = float(loss_sum), float(count)  # host sync every step, as pretrain does
        losses.append(loss_sum / count)
        if i >= warmup:
            count_total += count
    elapsed = time.perf_counter() - start
    return {"tokens_per_s": count_total / elapsed, "xla": trainer.jit, "xla_probe_failure": probe,
            "flops_per_token": float(model.flops_per_token()), "first_loss": losses[0], "last_loss": losses[-1],
            "sampled_flops_per_token": _sampled_flops(model, sampled)}


def _sampled_flops(model, sampled) -> float | None:
    if sampled is None:
        return None
    return float(model.flops_per_token() - 2 * UNITS * model.vocab_size + 2 * UNITS * (sampled.num_sampled + 1))


def keras_fit_tokens_per_s(tokens, vocab: int, *, steps: int, warmup: int, seed: int = 0) -> dict:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((None,), dtype="int32"),
        keras.layers.Embedding(vocab, EMB),
        keras.layers.LSTM(UNITS, return_sequences=True),
        keras.layers.Dropout(0.2),
        keras.layers.LSTM(UNITS, return_sequences=True),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(vocab),
    ])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=20.0, global_clipnorm=0.25),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    source = StreamSteps(tokens, batch_size=BATCH, bptt=BPTT)
    batches = [source.step(0, i)[0] for i in range(warmup + steps)]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    n_warm = warmup * BATCH
    model.fit(x[:n_warm], y[:n_warm], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    start = time.perf_counter()
    model.fit(x[n_warm:], y[n_warm:], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    elapsed = time.perf_counter() - start
    return {"tokens_per_s": steps * BATCH * BPTT / elapsed, "jit_compile": str(model.jit_compile)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="timed steps per case (10k vocabulary)")
    parser.add_argument("--sampled-steps", type=int, default=40, help="timed steps per case at 32k")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()

    peak = matmul_peak()["flops"]
    auto_jit, why = decide_jit("auto", gpus=len(tf.config.list_physical_devices("GPU")), mixed_precision="none",
                               variable_bptt=False, distributed=False)
    with tempfile.TemporaryDirectory() as tmp:
        need = (args.warmup + max(args.steps, args.sampled_steps)) * BATCH * BPTT + BATCH * BPTT * 4
        small = zipf_stream(Path(tmp) / "v10k.tokens", need, 10_000)
        large = zipf_stream(Path(tmp) / "v32k.tokens", need, 32_000, seed=1)

        print(f"peak float32 matmul: {peak / 1e9:.1f} GFLOP/s; auto XLA: {auto_jit} ({why})", flush=True)
        graph = llmctl_steps_per_s(small, 10_000, jit=False, steps=args.steps, warmup=args.warmup)
        print(f"llmctl step, graph:      {graph['tokens_per_s']:8.0f} tok/s", flush=True)
        xla = llmctl_steps_per_s(small, 10_000, jit=True, steps=args.steps, warmup=args.warmup)
        print(f"llmctl step, XLA:        {xla['tokens_per_s']:8.0f} tok/s"
              + (f" (XLA probe failed: {xla['xla_probe_failure']})" if xla["xla_probe_failure"] else ""), flush=True)
        fit = keras_fit_tokens_per_s(small, 10_000, steps=args.steps, warmup=args.warmup)
        print(f"keras model.fit:         {fit['tokens_per_s']:8.0f} tok/s (jit_compile={fit['jit_compile']})",
              flush=True)
        ours = xla if auto_jit and xla["xla"] else graph
        ratio = ours["tokens_per_s"] / fit["tokens_per_s"]
        mfu = ours["tokens_per_s"] * 3 * ours["flops_per_token"] / peak
        print(f"llmctl (auto) / fit:     {ratio:8.2f}×   MFU {mfu:.1%} "
              f"({ours['flops_per_token'] / 1e6:.1f} MFLOP/token forward)", flush=True)

        full32 = llmctl_steps_per_s(large, 32_000, jit=auto_jit, steps=args.sampled_steps, warmup=args.warmup)
        print(f"32k full softmax:        {full32['tokens_per_s']:8.0f} tok/s (XLA {full32['xla']})", flush=True)
        samp32 = llmctl_steps_per_s(large, 32_000, jit=auto_jit, steps=args.sampled_steps, warmup=args.warmup,
                                    output="sampled")
        print(f"32k sampled (1024 neg.): {samp32['tokens_per_s']:8.0f} tok/s (XLA {samp32['xla']})", flush=True)
        speedup = samp32["tokens_per_s"] / full32["tokens_per_s"]
        print(f"sampled / full softmax:  {speedup:8.2f}×", flush=True)

    result = {
        "train_tokens_per_s": round(ours["tokens_per_s"], 1),
        "train_vs_keras_fit": round(ratio, 3),
        "mfu": round(mfu, 4),
        "sampled_softmax_speedup": round(speedup, 2),
        "train_tokens_per_s_graph": round(graph["tokens_per_s"], 1),
        "train_tokens_per_s_xla": round(xla["tokens_per_s"], 1),
        "keras_fit_tokens_per_s": round(fit["tokens_per_s"], 1),
        "keras_fit_jit_compile": fit["jit_compile"],
        "auto_xla": bool(auto_jit and xla["xla"]),
        "full_softmax_32k_tokens_per_s": round(full32["tokens_per_s"], 1),
        "sampled_softmax_32k_tokens_per_s": round(samp32["tokens_per_s"], 1),
        "sampled_softmax_xla": samp32["xla"],
        "peak_gflops": round(peak / 1e9, 1),
        "flops_per_token_forward": ours["flops_per_token"],
        "setup": {"model": "emb 200, 2x200 LSTM, dropout 0.2", "vocab": 10_000, "batch": BATCH, "bptt": BPTT,
                  "optimizer": "SGD lr 20, clip 0.25", "data": "Zipf(1.1) uint16 memmap", "timed_steps": args.steps},
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
