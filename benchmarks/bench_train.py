"""Benchmark the llmctl training step against a plain Keras `model.fit` of the same model on the same data.

    python benchmarks/bench_train.py                      # ~4 minutes on 2 CPU cores
    python benchmarks/bench_train.py --rounds 3 --json out.json

Model: the word_language_model "small" configuration — embedding 200, 2×200 LSTM, dropout 0.2, vocabulary 10k,
batch 20, bptt 35, SGD lr 20 with global-norm clipping 0.25 — on a generated Zipfian (s=1.1) token stream of a
10k vocabulary, stored as a uint16 memmap and read through `llmctl.data.batching` exactly as `pretrain` reads it.

Measured side by side in one process, each after warm-up (tracing / XLA compilation excluded), in interleaved
rounds — every case runs once per round, so load from other processes hits all of them — keeping each case's best
round; `train_vs_keras_fit` and the sampled-softmax speed-up are medians of ratios taken within the same round:
- llmctl's compiled step (explicit state carried between windows, per-step host sync as in `pretrain`), with and
  without XLA; `train_tokens_per_s` is the one `jit_compile: auto` picks (`llmctl.train.xla_choice`); both run
  the LSTM kernel `train.lstm_kernel: auto` picks (`llmctl.models.fused_lstm` on CPU), and the graph step also runs
  with the Keras LSTM layer (`fused_lstm_speedup`);
- Keras `model.fit` of the same architecture (Sequential Embedding → Dropout → LSTM → Dropout → LSTM → Dropout → Dense,
  sparse categorical cross-entropy from logits, same optimizer) on the same windows, default compile settings,
  steady-state batches timed with a callback (fit's per-call set-up excluded);
- sampled softmax (1024 negatives) vs full softmax at a 32k vocabulary, both with llmctl's step.
MFU = tokens/s × 3 × forward FLOPs per token / the measured float32 matmul peak (`llmctl.train.peak_flops`).
"""

from __future__ import annotations

import argparse
import json
import os
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

from llmctl.data.batching import StreamSteps, step_arrays  # noqa: E402
from llmctl.models.lstm_lm import build_language_model  # noqa: E402
from llmctl.schema import ModelConfig, TrainConfig  # noqa: E402
from llmctl.train.distribution import Distribution  # noqa: E402
from llmctl.train.loop import SampledSoftmax, Trainer, decide_lstm_kernel  # noqa: E402
from llmctl.train.optimizers import build_optimizer  # noqa: E402
from llmctl.train.peak_flops import matmul_peak  # noqa: E402
from llmctl.train.xla_choice import choose_xla  # noqa: E402

BATCH, BPTT, EMB, UNITS, LAYERS = 20, 35, 200, 200, 2
MODEL = dict(embedding_dim=EMB, layers=LAYERS, units=UNITS, dropout=0.2, output_dropout=0.2)
# the kernel `pretrain` runs for this configuration (train.lstm_kernel: auto)
LSTM_KERNEL, LSTM_KERNEL_REASON = decide_lstm_kernel("auto", gpus=len(tf.config.list_logical_devices("GPU")),
                                                     mixed_precision="none", variable_bptt=False)


def zipf_stream(path: Path, n_tokens: int, vocab: int, seed: int = 0) -> np.memmap:
    """A Zipf(1.1) token stream over ids 5..vocab-1 (0-4 are the special ids), written as a uint16 memmap."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, vocab - 5 + 1, dtype=np.float64)
    p = ranks ** -1.1
    p /= p.sum()
    ids = rng.choice(np.arange(5, vocab), size=n_tokens, p=p).astype(np.uint16)
    ids.tofile(path)
    return np.memmap(path, dtype=np.uint16, mode="r", shape=(n_tokens,))


class LlmctlRunner:
    """llmctl's compiled step on the stream, state carried, host sync every step (as `pretrain` does)."""

    def __init__(self, tokens, vocab: int, *, jit: bool, output: str = "full", seed: int = 0,
                 lstm_kernel: str = LSTM_KERNEL):
        keras.utils.set_random_seed(seed)
        cfg = TrainConfig(optimizer="sgd", lr=20.0, clip_norm=0.25, batch_size=BATCH, bptt=BPTT)
        self.model = build_language_model(ModelConfig(**MODEL, output=output), vocab)
        self.model.lstm_kernel = lstm_kernel
        self.optimizer = build_optimizer(cfg)
        self.optimizer.build(self.model.trainable_variables)
        self.sampled = SampledSoftmax(SampledSoftmax.count_tokens(tokens, vocab), 1024) if output == "sampled" \
            else None
        dist = Distribution("none", tf.distribute.get_strategy())
        self.trainer = Trainer(self.model, self.optimizer, dist, clip_norm=cfg.clip_norm, jit=jit,
                               sampled=self.sampled, seed=seed)
        source = StreamSteps(tokens, batch_size=BATCH, bptt=BPTT)
        self.trainer.replica_batch = source.replica_batch
        self.states = self.trainer.zero_states()
        self.iterator = step_arrays(source, 0)  # as pretrain feeds a single device
        self.step_index = 0
        element = next(self.iterator)
        self.probe_failure = self.trainer.probe_jit(element, self.states, 0)
        self._step(element)  # trace / compile
        self.losses: list[float] = []

    def _step(self, element) -> float:
        loss_sum, count, _, self.states = self.trainer.step(element, self.states, self.step_index, 20.0)
        self.step_index += 1  # one host sync per step, as pretrain
        return loss_sum / count, count

    def run(self, n: int) -> tuple[float, float]:
        """(tokens per wall second, tokens per CPU second of this process) over `n` steps."""
        start, cpu, tokens = time.perf_counter(), time.process_time(), 0.0
        for _ in range(n):
            loss, count = self._step(next(self.iterator))
            self.losses.append(loss)
            tokens += count
        return tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu)

    @property
    def flops_per_token(self) -> float:
        flops = float(self.model.flops_per_token())
        if self.sampled is not None:
            flops += 2 * UNITS * (self.sampled.num_sampled + 1) - 2 * UNITS * self.model.vocab_size
        return flops


class _BatchClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times: list[tuple[float, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append((time.perf_counter(), time.process_time()))


class KerasFitRunner:
    """A plain Keras `model.fit` of the same architecture on the same windows (steady-state batches timed)."""

    def __init__(self, tokens, vocab: int, *, max_steps: int, seed: int = 0):
        keras.utils.set_random_seed(seed)
        self.model = keras.Sequential([
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(vocab, EMB),
            keras.layers.Dropout(0.2),  # llmctl's `dropout` also applies to the embeddings (as word_language_model)
            keras.layers.LSTM(UNITS, return_sequences=True),
            keras.layers.Dropout(0.2),
            keras.layers.LSTM(UNITS, return_sequences=True),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(vocab),
        ])
        self.model.compile(optimizer=keras.optimizers.SGD(learning_rate=20.0, global_clipnorm=0.25),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        source = StreamSteps(tokens, batch_size=BATCH, bptt=BPTT)
        batches = [source.step(0, i)[0] for i in range(max_steps)]
        self.x = np.concatenate([b[0] for b in batches])
        self.y = np.concatenate([b[1] for b in batches])
        self.position = 0
        self.run(2)  # trace / compile

    def run(self, n: int) -> tuple[float, float]:
        """(tokens per wall second, per CPU second) over `n` steady-state fit batches (one fit call of n + 1
        batches, the first one not timed)."""
        rows = (n + 1) * BATCH
        if self.position + rows > len(self.x):
            self.position = 0
        x = self.x[self.position:self.position + rows]
        y = self.y[self.position:self.position + rows]
        self.position += rows
        clock = _BatchClock()
        self.model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
        tokens = (len(clock.times) - 1) * BATCH * BPTT
        (w0, c0), (w1, c1) = clock.times[0], clock.times[-1]
        return tokens / (w1 - w0), tokens / (c1 - c0)


def best_of(runners: dict, rounds: int, steps: int, label: str) -> dict[str, list[tuple[float, float]]]:
    """Interleave the runners round by round — load from other processes hits all of them alike — and return
    every round's (tokens per wall second, tokens per CPU second) per runner."""
    history: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for r in range(rounds):
        for name, runner in runners.items():
            history[name].append(runner.run(steps))
        print(f"  {label} round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1][0]:,.0f}" for k, v in history.items())
              + " tok/s  (per CPU-s: " + ", ".join(f"{k} {v[-1][1]:,.0f}" for k, v in history.items()) + ")",
              flush=True)
    return history


def best(history, name: str, which: int = 0) -> float:
    return max(h[which] for h in history[name])


def paired_ratio(history, a: str, b: str, which: int = 0) -> float:
    """Median over rounds of a/b measured in the same round (robust to load that changes between rounds)."""
    return float(np.median([x[which] / y[which] for x, y in zip(history[a], history[b], strict=True)]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (best round counts)")
    parser.add_argument("--steps", type=int, default=25, help="timed steps per case per round (10k vocabulary)")
    parser.add_argument("--sampled-rounds", type=int, default=3)
    parser.add_argument("--sampled-steps", type=int, default=8, help="timed steps per case per round at 32k")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()

    peak = matmul_peak()["flops"]
    train_cfg = TrainConfig(optimizer="sgd", lr=20.0, clip_norm=0.25, batch_size=BATCH, bptt=BPTT)
    auto10, why10 = choose_xla(ModelConfig(**MODEL), train_cfg, 10_000, BPTT, BATCH, lstm_kernel=LSTM_KERNEL)
    print(f"peak float32 matmul: {peak / 1e9:.1f} GFLOP/s", flush=True)
    print(f"jit_compile=auto at 10k: {'XLA' if auto10 else 'graph'} ({why10})", flush=True)
    print(f"lstm_kernel=auto: {LSTM_KERNEL} ({LSTM_KERNEL_REASON})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        n_fit = 2 + args.rounds * (args.steps + 1)
        need = (4 + args.rounds * args.steps + n_fit) * BATCH * BPTT
        small = zipf_stream(Path(tmp) / "v10k.tokens", need, 10_000)
        runners = {"graph": LlmctlRunner(small, 10_000, jit=False), "xla": LlmctlRunner(small, 10_000, jit=True),
                   "graph_keras_lstm": LlmctlRunner(small, 10_000, jit=False, lstm_kernel="keras"),
                   "keras_fit": KerasFitRunner(small, 10_000, max_steps=n_fit)}
        if runners["xla"].probe_failure:
            print(f"XLA probe failed: {runners['xla'].probe_failure}", flush=True)
        history = best_of(runners, args.rounds, args.steps, "10k")
        ours_name = "xla" if auto10 and not runners["xla"].probe_failure else "graph"
        ours, fit = best(history, ours_name), best(history, "keras_fit")
        ratio = paired_ratio(history, ours_name, "keras_fit")
        ratio_cpu = paired_ratio(history, ours_name, "keras_fit", which=1)
        flops = runners[ours_name].flops_per_token
        mfu = ours * 3 * flops / peak
        fused_gain = paired_ratio(history, "graph", "graph_keras_lstm")
        print(f"fused LSTM kernel vs the Keras layer inside llmctl's graph step: {fused_gain:.2f}x", flush=True)
        print(f"llmctl ({ours_name}, the auto choice) best {ours:,.0f} tok/s, keras fit best {fit:,.0f}; "
              f"paired ratio {ratio:.2f}x wall, {ratio_cpu:.2f}x CPU time   MFU {mfu:.1%} "
              f"({3 * flops / 1e6:.1f} MFLOP/token trained)", flush=True)

        samp_cfg = ModelConfig(**MODEL, output="sampled", sampled_negatives=1024)
        auto_full, _ = choose_xla(ModelConfig(**MODEL), train_cfg, 32_000, BPTT, BATCH, lstm_kernel=LSTM_KERNEL)
        large = zipf_stream(Path(tmp) / "v32k.tokens", (6 + args.sampled_rounds * args.sampled_steps) * BATCH * BPTT
                            + BATCH * BPTT * 4, 32_000, seed=1)
        sampled_counts = SampledSoftmax(SampledSoftmax.count_tokens(large, 32_000), 1024)
        auto_samp, _ = choose_xla(samp_cfg, train_cfg, 32_000, BPTT, BATCH, sampled_counts, lstm_kernel=LSTM_KERNEL)
        big = {"full": LlmctlRunner(large, 32_000, jit=auto_full),
               "sampled": LlmctlRunner(large, 32_000, jit=auto_samp, output="sampled")}
        history32 = best_of(big, args.sampled_rounds, args.sampled_steps, "32k")
        speedup = paired_ratio(history32, "sampled", "full")
        print(f"32k sampled softmax (1024 negatives) vs full: {speedup:.2f}x "
              f"(full XLA {big['full'].trainer.jit}, sampled XLA {big['sampled'].trainer.jit})", flush=True)

    result = {
        "train_tokens_per_s": round(ours, 1),
        "train_vs_keras_fit": round(ratio, 3),
        "mfu": round(mfu, 4),
        "sampled_softmax_speedup": round(speedup, 2),
        "train_tokens_per_s_graph": round(best(history, "graph"), 1),
        "train_tokens_per_s_xla": round(best(history, "xla"), 1),
        "train_tokens_per_s_keras_lstm": round(best(history, "graph_keras_lstm"), 1),
        "fused_lstm_speedup": round(fused_gain, 3),
        "lstm_kernel": LSTM_KERNEL,
        "keras_fit_tokens_per_s": round(fit, 1),
        "train_vs_keras_fit_cpu_time": round(ratio_cpu, 3),
        "tokens_per_cpu_s": {k: round(best(history, k, 1), 1) for k in history},
        "load_average_1m": round(os.getloadavg()[0], 2),
        "auto_choice": ours_name,
        "auto_reason": why10,
        "full_softmax_32k_tokens_per_s": round(best(history32, "full"), 1),
        "sampled_softmax_32k_tokens_per_s": round(best(history32, "sampled"), 1),
        "sampled_softmax_xla": big["sampled"].trainer.jit,
        "peak_gflops": round(peak / 1e9, 1),
        "train_flops_per_token": 3 * flops,
        "setup": {"model": "emb 200, 2x200 LSTM, dropout 0.2", "vocab": 10_000, "batch": BATCH, "bptt": BPTT,
                  "optimizer": "SGD lr 20, clip 0.25", "data": "Zipf(1.1) uint16 memmap",
                  "rounds": args.rounds, "steps_per_round": args.steps},
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
