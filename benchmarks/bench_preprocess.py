"""Benchmark `llmctl preprocess` against Keras `TextVectorization` on a generated corpus.

    python benchmarks/bench_preprocess.py                 # 20 MB throughput + 20 vs 200 MB memory check
    python benchmarks/bench_preprocess.py --mb 5 --sizes 5,20 --json out.json
    python benchmarks/bench_preprocess.py --kinds word --flat-kinds "" --no-baseline --repeat 3   # noisy machine

Every case runs in a fresh Python subprocess, so its peak RSS (`resource.getrusage`, the process itself and, for
worker pools, the largest child) is its own. Throughput is source megabytes / wall seconds of the whole
`preprocess.run` (inspect + scan + tokenizer training + encoding + writing), from one run; MB per CPU-second
(process + children) is printed too, since on a shared machine it moves much less with other load; `--repeat N`
runs every case N times and keeps the fastest (by wall clock). The memory check runs every corpus size with
`data.workers` set to the number of cores, so that only the size differs. The baseline is
`TextVectorization.adapt` + encoding of the same text in the same chunks (character split for char, whitespace
split for word, no standardisation), so both sides build a vocabulary and produce ids for the whole corpus.

The corpus is deterministic: pseudo-English words (short ones most frequent) drawn from a Zipf distribution over a
50k-word lexicon, with punctuation, in lines of 6-20 words and paragraphs — one text file, read as one document
with a 90/10 tail split.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHUNK_CHARS = 1 << 16


# ---------------------------------------------------------------- corpus


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> Path:
    """Write about `megabytes` MB of pseudo-English text to `path` (streamed, deterministic)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "w", "th", "st", "ch", "br", "pl"]
    vowels = ["a", "e", "i", "o", "u", "ea", "ou", "ai"]
    codas = ["", "", "n", "s", "t", "r", "l", "nd", "st", "ng"]
    syllables = [o + v + c for o in onsets for v in vowels for c in codas]
    lexicon: list[str] = []
    seen: set[str] = set()
    while len(lexicon) < 50_000:
        picks = rng.integers(len(syllables), size=(20_000, 3)).tolist()
        sizes = rng.integers(1, 4, size=20_000).tolist()
        for n, row in zip(sizes, picks, strict=True):
            word = "".join(syllables[i] for i in row[:n])
            if word not in seen and len(lexicon) < 50_000:
                seen.add(word)
                lexicon.append(word)
    lexicon.sort(key=len)  # frequent words are short, as in natural language
    weights = 1.0 / np.arange(1, len(lexicon) + 1) ** 1.07
    weights /= weights.sum()
    target = int(megabytes * 1_000_000)
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < target:
            words = [lexicon[w] for w in rng.choice(len(lexicon), size=20_000, p=weights).tolist()]
            lengths = rng.integers(6, 21, size=2_000).tolist()
            punct = rng.choice([".", ".", ",", "!", "?", ";"], size=2_000).tolist()
            out, pos = [], 0
            for i, n in enumerate(lengths):
                if pos + n > len(words):
                    break
                line = " ".join(words[pos:pos + n])
                pos += n
                out.append(line[:1].upper() + line[1:] + punct[i] + ("\n\n" if i % 9 == 8 else "\n"))
            block = "".join(out)
            handle.write(block)
            written += len(block.encode("utf-8"))
    return path


# ---------------------------------------------------------------- cases (each in its own process)


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _usage(size: int, seconds: float, cpu0: float) -> dict[str, float]:
    """Throughput by wall clock and by CPU time (the latter is steadier on a shared machine), and peak RSS."""
    cpu = _cpu_seconds() - cpu0
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"mb": size / 1e6, "seconds": round(seconds, 3), "mb_per_s": round(size / 1e6 / seconds, 2),
            "cpu_seconds": round(cpu, 3), "mb_per_cpu_s": round(size / 1e6 / max(cpu, 1e-9), 2),
            "peak_rss_mb": round(own, 1), "peak_child_rss_mb": round(children, 1)}


def case_llmctl(kind: str, corpus: Path, out: Path, workers: int = 0) -> dict:
    from llmctl import config
    from llmctl.data import preprocess

    raw = {"data": {"dir": str(out), "train": [str(corpus)], "split": {"valid": 0.1}, "workers": workers},
           "tokenizer": {"kind": kind, "vocab_size": 8000}}
    exp = config.validate(raw)
    size = corpus.stat().st_size
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    result = preprocess.run(exp, force=True)
    seconds = time.perf_counter() - t0
    values = result.values
    return {"kind": kind, **_usage(size, seconds, cpu0), "train_tokens": values["train tokens"],
            "vocab_size": values["vocab_size"]}


def _chunks(corpus: Path):
    with open(corpus, encoding="utf-8") as handle:
        while True:
            text = handle.read(CHUNK_CHARS)
            if not text:
                return
            yield text


def case_textvectorization(kind: str, corpus: Path) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    size = corpus.stat().st_size
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    split = "character" if kind == "char" else "whitespace"
    layer = keras.layers.TextVectorization(standardize=None, split=split, output_mode="int", ragged=True,
                                           max_tokens=None)
    data = tf.data.Dataset.from_generator(lambda: _chunks(corpus),
                                          output_signature=tf.TensorSpec((), tf.string)).batch(16)
    layer.adapt(data)
    tokens = 0
    for batch in data:
        tokens += int(tf.size(layer(batch).flat_values))
    seconds = time.perf_counter() - t0
    return {"kind": kind, **_usage(size, seconds, cpu0), "tokens": tokens, "vocab_size": int(layer.vocabulary_size())}


def _spawn(args: list[str], repeat: int = 1) -> dict:
    """Run a case in a fresh process (`repeat` times: the fastest by wall clock)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = []
    for _ in range(max(1, repeat)):
        proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"case {args} failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return min(runs, key=lambda r: r["seconds"])


# ---------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=20.0, help="corpus size for the throughput cases (MB)")
    parser.add_argument("--sizes", default="20,200", help="corpus sizes (MB) compared for peak memory")
    parser.add_argument("--kinds", default="char,word,bpe", help="tokenizer kinds to time")
    parser.add_argument("--flat-kinds", default="char,word", help="kinds run at every --sizes size")
    parser.add_argument("--no-baseline", action="store_true", help="skip the TextVectorization baseline")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    parser.add_argument("--workdir", type=Path, help="where to put corpora and datasets (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest is kept")
    parser.add_argument("--case", nargs=3, metavar=("ENGINE", "KIND", "CORPUS"), help=argparse.SUPPRESS)
    parser.add_argument("--case-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.case:  # child process: one measurement, one JSON line on stdout
        engine, kind, corpus = args.case
        corpus_path = Path(corpus)
        if engine == "llmctl":
            result = case_llmctl(kind, corpus_path, corpus_path.parent / f"ds-{kind}-{corpus_path.stem}",
                                 args.case_workers)
        else:
            result = case_textvectorization(kind, corpus_path)
        print(json.dumps(result))
        return 0

    kinds = [k for k in args.kinds.split(",") if k]
    sizes = [float(s) for s in args.sizes.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-", dir=args.workdir) as tmp:
        work = Path(tmp)
        corpora: dict[float, Path] = {}

        def corpus(mb: float) -> Path:
            if mb not in corpora:
                corpora[mb] = write_corpus(work / f"corpus-{mb:g}mb.txt", mb)
            return corpora[mb]

        report: dict = {"corpus_mb": args.mb, "cpus": os.cpu_count(), "repeat": args.repeat,
                        "load_average_start": os.getloadavg()[0], "kinds": {}, "memory": {}}
        print(f"corpus: {args.mb:g} MB generated text, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}" + (f", best of {args.repeat} runs" if args.repeat > 1 else ""))
        print(f"{'case':<28}{'MB/s':>9}{'MB/cpu-s':>10}{'seconds':>9}{'peak RSS MB':>13}{'child RSS MB':>14}")
        for kind in kinds:
            ours = _spawn(["--case", "llmctl", kind, str(corpus(args.mb))], args.repeat)
            entry = {"llmctl": ours}
            _row(f"llmctl {kind}", ours)
            if not args.no_baseline and kind in ("char", "word"):
                base = _spawn(["--case", "textvectorization", kind, str(corpus(args.mb))], args.repeat)
                entry["textvectorization"] = base
                entry["ratio"] = round(ours["mb_per_s"] / base["mb_per_s"], 2)
                entry["ratio_cpu"] = round(ours["mb_per_cpu_s"] / base["mb_per_cpu_s"], 2)
                _row(f"TextVectorization {kind}", base)
                print(f"{'':<4}ratio llmctl / TextVectorization ({kind}): {entry['ratio']}x by wall clock, "
                      f"{entry['ratio_cpu']}x by CPU time")
            report["kinds"][kind] = entry
        # memory: every size with the same number of workers (one per core; `data.workers` auto would use one for
        # the small corpus and two for the large), so that only the corpus size differs
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        for kind in [k for k in args.flat_kinds.split(",") if k]:
            rows = {}
            for mb in sizes:
                res = _spawn(["--case", "llmctl", kind, str(corpus(mb)), "--case-workers", str(cores)], args.repeat)
                rows[f"{mb:g}"] = res
                _row(f"llmctl {kind} @ {mb:g} MB", res)
            peaks = [max(r["peak_rss_mb"], r["peak_child_rss_mb"]) for r in rows.values()]
            report["memory"][kind] = {"sizes_mb": sizes, "workers": cores, "peak_rss_mb": peaks,
                                      "mb_per_s": [r["mb_per_s"] for r in rows.values()],
                                      "growth": round(peaks[-1] / peaks[0], 2) if peaks and peaks[0] else None}
            print(f"{'':<4}peak RSS {kind}: " + " → ".join(f"{p:.0f} MB" for p in peaks)
                  + f" for {' → '.join(f'{s:g}' for s in sizes)} MB of text (data.workers={cores} at every size)")

    char = report["kinds"].get("char", {})
    report["preprocess_mb_per_s"] = char.get("llmctl", {}).get("mb_per_s")
    report["preprocess_vs_textvectorization"] = char.get("ratio")
    report["preprocess_word_vs_textvectorization"] = report["kinds"].get("word", {}).get("ratio")
    report["load_average"] = os.getloadavg()[0]
    for kind, entry in report["kinds"].items():
        report[f"preprocess_{kind}_mb_per_s"] = entry["llmctl"]["mb_per_s"]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def _row(name: str, res: dict) -> None:
    print(f"{name:<28}{res['mb_per_s']:>9.1f}{res['mb_per_cpu_s']:>10.1f}{res['seconds']:>9.2f}"
          f"{res['peak_rss_mb']:>13.0f}{res['peak_child_rss_mb']:>14.0f}")


if __name__ == "__main__":
    sys.exit(main())
