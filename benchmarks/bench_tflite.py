"""Benchmark the exported one-step models: TFLite (float32, dynamic-range int8) against the SavedModel `step`.

    python benchmarks/bench_tflite.py                      # ~1 minute on 2 CPU cores
    python benchmarks/bench_tflite.py --tokens 400 --json out.json

Model: the word_language_model "small" configuration — embedding 200, 2×200 LSTM, vocabulary 10k — with random
weights (sizes and latencies do not depend on the values), exported through `llmctl.export`'s own code paths:
the SavedModel of `LanguageModelModule` and the TFLite files of `tflite.convert`.

Measured in one process, each after warm-up, batch 1, feeding every output state back in (real decoding):
- per-token latency of the LiteRT signature runner `step` (float32 and int8) vs the SavedModel `step` signature
  called from Python, and vs the SavedModel `generate` signature (the whole greedy loop in one graph);
- file sizes (float32 vs int8 TFLite, SavedModel folder) and conversion time;
- int8 accuracy: max |Δlogit| and top-1 agreement with float32 over the timed tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmctl.tfenv import import_tf  # noqa: E402

tf = import_tf()

from llmctl.export import graphs, saved_model, tflite  # noqa: E402
from llmctl.export.modules import LanguageModelModule, tflite_functions  # noqa: E402
from llmctl.models.lstm_lm import build_language_model  # noqa: E402
from llmctl.schema import ModelConfig  # noqa: E402


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def token_stream(vocab: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(5, vocab, size=n).astype(np.int32)


def time_tflite(content: bytes, tokens: np.ndarray, names: list[str], units: int, repeats: int):
    """(median ms per token, logits of the last repeat) for the LiteRT `step` runner."""
    runner = tflite.signature_runner(content, "step")
    zero = {n: np.zeros((1, units), np.float32) for n in names}
    runs, logits = [], []
    with tflite.native_stderr_captured():
        runner(token_id=tokens[:1], **zero)  # warm-up (allocation, XNNPACK delegate set-up)
        for _ in range(repeats):
            state, logits = dict(zero), []
            start = time.perf_counter()
            for token in tokens:
                out = runner(token_id=np.array([token], np.int32), **state)
                state = {n: out[n] for n in names}
                logits.append(out["logits"][0])
            runs.append((time.perf_counter() - start) / len(tokens) * 1e3)
    return statistics.median(runs), np.stack(logits)


def time_saved_model_step(step, tokens: np.ndarray, names: list[str], units: int, repeats: int):
    zero = {n: tf.zeros((1, units), tf.float32) for n in names}
    step(token_id=tf.constant(tokens[:1]), **zero)  # warm-up
    runs, logits = [], []
    for _ in range(repeats):
        state, logits = dict(zero), []
        start = time.perf_counter()
        for token in tokens:
            out = step(token_id=tf.constant([token], tf.int32), **state)
            state = {n: out[n] for n in names}
            logits.append(out["logits"])
        runs.append((time.perf_counter() - start) / len(tokens) * 1e3)
    return statistics.median(runs), np.concatenate([np.asarray(x) for x in logits])


def time_saved_model_generate(generate, prompt: np.ndarray, new_tokens: int, repeats: int) -> float:
    inputs = dict(prompt_ids=tf.constant(prompt[None, :]), prompt_lengths=tf.constant([len(prompt)], tf.int32),
                  max_new_tokens=tf.constant(new_tokens, tf.int32), temperature=tf.constant(0.0),
                  top_k=tf.constant(0, tf.int32), top_p=tf.constant(1.0), seed=tf.constant(0, tf.int64))
    generate(**inputs)  # warm-up
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = generate(**inputs)
        produced = int(out["lengths"][0])
        runs.append((time.perf_counter() - start) / max(produced, 1) * 1e3)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--units", type=int, default=200)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embedding", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=200, help="tokens decoded per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median reported)")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    args = parser.parse_args()

    cfg = ModelConfig(embedding_dim=args.embedding, layers=args.layers, units=args.units, dropout=0.0,
                      output_dropout=0.0)
    model = build_language_model(cfg, args.vocab)
    names = graphs.state_names(args.layers)
    tokens = token_stream(args.vocab, args.tokens)
    print(f"model: emb {args.embedding}, {args.layers}x{args.units} LSTM, vocab {args.vocab:,} "
          f"({model.count_params():,} params, random weights)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        saved_model.write(LanguageModelModule(model, eos_id=3, pad_id=0), work / "saved_model")
        sm_seconds = time.perf_counter() - start
        (_, fn), = tflite_functions(model, "lm", max_length=0).items()
        files, convert_seconds = {}, {}
        for quantize in ("none", "dynamic_int8"):
            start = time.perf_counter()
            files[quantize] = tflite.convert(fn, "step", quantize=quantize, workdir=work)
            convert_seconds[quantize] = time.perf_counter() - start
        sm_bytes = folder_bytes(work / "saved_model")
        loaded = tf.saved_model.load(str(work / "saved_model"))
        step, generate = loaded.signatures["step"], loaded.signatures["generate"]

        f32_ms, f32_logits = time_tflite(files["none"], tokens, names, args.units, args.repeats)
        print(f"TFLite step float32:     {f32_ms:7.3f} ms/token  ({len(files['none']) / 1e6:6.2f} MB, "
              f"converted in {convert_seconds['none']:.1f} s)", flush=True)
        i8_ms, i8_logits = time_tflite(files["dynamic_int8"], tokens, names, args.units, args.repeats)
        print(f"TFLite step int8:        {i8_ms:7.3f} ms/token  ({len(files['dynamic_int8']) / 1e6:6.2f} MB, "
              f"converted in {convert_seconds['dynamic_int8']:.1f} s)", flush=True)
        sm_ms, sm_logits = time_saved_model_step(step, tokens, names, args.units, args.repeats)
        print(f"SavedModel step:         {sm_ms:7.3f} ms/token  ({sm_bytes / 1e6:6.2f} MB folder, "
              f"written in {sm_seconds:.1f} s)", flush=True)
        gen_ms = time_saved_model_generate(generate, tokens[:20], args.tokens, args.repeats)
        print(f"SavedModel generate:     {gen_ms:7.3f} ms/token  (greedy loop inside one graph)", flush=True)

    f32_diff = float(np.max(np.abs(f32_logits - sm_logits)))
    i8_diff = float(np.max(np.abs(i8_logits - f32_logits)))
    agreement = float(np.mean(np.argmax(i8_logits, -1) == np.argmax(f32_logits, -1)))
    size_ratio = len(files["dynamic_int8"]) / len(files["none"])
    print(f"int8 / float32 size:     {size_ratio:7.3f}   max |Δlogit| int8 {i8_diff:.2e} (top-1 agreement "
          f"{agreement:.1%}); float32 TFLite vs SavedModel {f32_diff:.2e}", flush=True)
    print(f"TFLite float32 vs SavedModel step: {sm_ms / f32_ms:5.2f}× faster per token", flush=True)

    result = {
        "tflite_step_ms_float32": round(f32_ms, 4),
        "tflite_step_ms_int8": round(i8_ms, 4),
        "saved_model_step_ms": round(sm_ms, 4),
        "saved_model_generate_ms_per_token": round(gen_ms, 4),
        "tflite_vs_saved_model_step": round(sm_ms / f32_ms, 2),
        "tflite_bytes_float32": len(files["none"]),
        "tflite_bytes_int8": len(files["dynamic_int8"]),
        "tflite_int8_size_ratio": round(size_ratio, 3),
        "saved_model_bytes": sm_bytes,
        "tflite_int8_max_abs_diff": i8_diff,
        "tflite_int8_top1_agreement": agreement,
        "tflite_float32_max_abs_diff": f32_diff,
        "tflite_convert_seconds": {k: round(v, 2) for k, v in convert_seconds.items()},
        "setup": {"model": f"emb {args.embedding}, {args.layers}x{args.units} LSTM, random weights",
                  "vocab": args.vocab, "batch": 1, "tokens": args.tokens, "repeats": args.repeats,
                  "params": int(model.count_params())},
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
