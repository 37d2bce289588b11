"""Decoding speed of `llmctl.generate.decode.Decoder` against the naive "re-run the whole prefix per token" loop.

Model: Embedding 200 → LSTM 200 × 2 → Dense 10k (random weights, seeded: speed does not depend on the values),
batch 1, a 16-token prompt, 256 new tokens with EOS disabled so every run produces all 256.

* in-graph greedy: `Decoder.generate`; the headline rate is the decode loop (the XLA-compiled while-loop and
  reading its result back, `Generation.decode_s`), the end-to-end rate adds the 16-token prefill;
* naive greedy: a `tf.function` over the growing prefix (input signature [1, None], traced once), one call per
  token, argmax in Python — the 14 ms/token baseline of design.md;
* top-p (0.9, temperature 1) sampling and beam search (width 4) with the same decoder machinery; greedy on a batch
  of 8 prompts (tokens of all rows per second).

Every timing is the median of `--repeats` runs after one warm-up (compilation) run; compile times are reported
separately. The machine is shared, so numbers vary between runs: ratios come from the same run of this script.

    .venv/bin/python benchmarks/bench_generate.py [--json OUT] [--repeats 5] [--tokens 256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmctl.tfenv import import_tf  # noqa: E402

tf = import_tf()

from llmctl.generate.decode import Decoder  # noqa: E402
from llmctl.models.lstm_lm import build_language_model  # noqa: E402
from llmctl.schema import ModelConfig  # noqa: E402

VOCAB = 10_000
PROMPT_TOKENS = 16


def build_model():
    import keras

    keras.utils.set_random_seed(0)
    cfg = ModelConfig(embedding_dim=200, layers=2, units=200, dropout=0.0, output_dropout=0.0)
    return build_language_model(cfg, VOCAB)


def timed(fn, repeats: int) -> tuple[float, list[float], float]:
    """(first-call seconds incl. compilation, steady-state run times, median)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return first, runs, statistics.median(runs)


def bench_decoder(model, prompt, tokens: int, repeats: int, batch: int = 1, **settings) -> dict:
    """Decode-loop rate (after the prefill; the headline), end-to-end rate, compile time. Rates count every row."""
    decoder = Decoder(model, eos_id=None, **settings)
    decode_s: list[float] = []

    def run():
        out = decoder.generate([prompt] * batch, tokens, seed=1)
        assert all(len(seqs[0]) == tokens for seqs in out.sequences), out.finish
        decode_s.append(out.decode_s)
        return out

    first, runs, median = timed(run, repeats)
    decode = statistics.median(decode_s[1:])
    return {"tokens_per_s": batch * tokens / decode, "best_tokens_per_s": batch * tokens / min(decode_s[1:]),
            "end_to_end_tokens_per_s": batch * tokens / median, "ms_per_step": 1e3 * decode / tokens,
            "first_call_s": first, "batch": batch}


def bench_naive(model, prompt, tokens: int) -> dict:
    @tf.function(input_signature=[tf.TensorSpec([1, None], tf.int32)])
    def last_logits(prefix):
        logits, _ = model(prefix, model.initial_state(1))
        return logits[:, -1]

    def run(n):
        ids = list(prompt)
        for _ in range(n):
            ids.append(int(tf.argmax(last_logits(tf.constant([ids], tf.int32)), axis=-1)[0]))
        return ids[len(prompt):]

    t0 = time.perf_counter()
    run(2)  # traces the function once (the input signature keeps it from retracing)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    output = run(tokens)
    seconds = time.perf_counter() - t0
    return {"tokens_per_s": tokens / seconds, "seconds": seconds, "first_call_s": first,
            "ms_per_token": 1e3 * seconds / tokens, "output": output}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args(argv)

    model = build_model()
    prompt = [int(t) for t in tf.random.stateless_uniform([PROMPT_TOKENS], [1, 2], 5, VOCAB, tf.int32).numpy()]
    n = args.tokens

    greedy = bench_decoder(model, prompt, n, args.repeats, strategy="greedy")
    greedy_graph = bench_decoder(model, prompt, n, args.repeats, strategy="greedy", jit_compile=False)
    top_p = bench_decoder(model, prompt, n, args.repeats, strategy="sample", top_p=0.9)
    beam4 = bench_decoder(model, prompt, n, max(1, args.repeats // 2), strategy="beam", beam_width=4)
    batch8 = bench_decoder(model, prompt, n, args.repeats, batch=8, strategy="greedy")
    naive = bench_naive(model, prompt, n)
    same = Decoder(model, eos_id=None).generate([prompt], n).sequences[0][0] == naive.pop("output")

    results = {
        "generate_tokens_per_s": greedy["tokens_per_s"],
        "generate_vs_naive": greedy["tokens_per_s"] / naive["tokens_per_s"],
        "generate_top_p_vs_greedy_cost": greedy["tokens_per_s"] / top_p["tokens_per_s"],
        "generate_beam4_tokens_per_s": beam4["tokens_per_s"],
        "generate_top_p_tokens_per_s": top_p["tokens_per_s"],
        "generate_naive_tokens_per_s": naive["tokens_per_s"],
        "generate_no_xla_tokens_per_s": greedy_graph["tokens_per_s"],
        "generate_end_to_end_tokens_per_s": greedy["end_to_end_tokens_per_s"],
        "generate_batch8_tokens_per_s": batch8["tokens_per_s"],
        "greedy_matches_naive": same,
        "details": {"greedy_xla": greedy, "greedy_graph": greedy_graph, "top_p_0.9": top_p, "beam4": beam4,
                    "greedy_batch8": batch8, "naive": naive},
        "setup": {"model": "emb 200, LSTM 200 x 2, vocab 10k, random weights", "batch": 1,
                  "prompt_tokens": PROMPT_TOKENS, "new_tokens": n, "repeats": args.repeats,
                  "tensorflow": tf.__version__},
    }
    print(f"greedy (XLA loop)   {greedy['tokens_per_s']:8.0f} tok/s  ({greedy['ms_per_step']:.3f} ms/token, "
          f"best {greedy['best_tokens_per_s']:.0f}; end to end {greedy['end_to_end_tokens_per_s']:.0f}; "
          f"first call {greedy['first_call_s']:.2f} s)")
    print(f"greedy (graph loop) {greedy_graph['tokens_per_s']:8.0f} tok/s  (first call "
          f"{greedy_graph['first_call_s']:.2f} s)")
    print(f"naive (prefix)      {naive['tokens_per_s']:8.0f} tok/s  ({naive['ms_per_token']:.2f} ms/token)")
    print(f"in-graph vs naive   {results['generate_vs_naive']:8.1f} x   (same greedy tokens: {same})")
    print(f"top-p 0.9           {top_p['tokens_per_s']:8.0f} tok/s  (cost vs greedy "
          f"{results['generate_top_p_vs_greedy_cost']:.2f} x)")
    print(f"beam 4              {beam4['tokens_per_s']:8.0f} tok/s  (first call {beam4['first_call_s']:.2f} s)")
    print(f"greedy batch 8      {batch8['tokens_per_s']:8.0f} tok/s  (all rows)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
