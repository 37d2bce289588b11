"""llmctl vs the PyTorch `word_language_model` example on the same tokens (issue #17).

    python benchmarks/word_lm_reference.py                                   # llmctl only, 6 epochs
    python benchmarks/word_lm_reference.py --reference ../pytorch-examples/word_language_model --epochs 6
    python benchmarks/word_lm_reference.py --reviews 300 --epochs 1 --max-steps 20 --out /tmp/smoke   # smoke test

1. **Corpus** — the first `--reviews` IMDb reviews of `../shared/data/imdb/unsup.jsonl` (unlabelled; the default
   8,000 is ~10 MB of JSON), HTML-normalised (`<br />` → line break, entities decoded), split into words and
   punctuation by llmctl's word splitter and written one review per line (internal line breaks become spaces), so
   every line is a pre-tokenized sentence stream like WikiText's. Reviews are split 90/5/5 (train/valid/test, in
   file order). Words seen fewer than `--min-count` times in train are written `<unk>` in every split, so both
   programs see exactly the same tokens and vocabulary: the reference's `Dictionary` would otherwise add
   valid/test-only words to its vocabulary, llmctl would map them to `<unk>`. The files have no empty lines (the
   two programs treat those differently, see configs/word_lm_pytorch_examples.yaml).
2. **llmctl** — `configs/word_lm_pytorch_examples.yaml` (whitespace tokens, `<eos>` per line, `model.init:
   uniform`, the script's hyper-parameters) with only the data paths, run folder and `train.epochs` overridden;
   the card's test `perplexity` after training (best-validation checkpoint, as the script scores its saved best).
3. **Reference** (with `--reference DIR`, a checkout of pytorch/examples' `word_language_model` folder, and torch
   importable — `pip install -e ".[bench]"`): `python main.py --data CORPUS --epochs N` at its defaults; its
   printed `test ppl`. Both run on the same CPU cores, one after the other.

Wall times are whole-process times of the training command (llmctl: preprocess + pretrain + evaluate in this
process; reference: its process, which also loads data and scores test). Results go to `--out`
(default benchmarks/results/word_lm_reference.json) and are printed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "imdb" / "unsup.jsonl"
RECIPE = ROOT / "configs" / "word_lm_pytorch_examples.yaml"
UNK = "<unk>"


def make_corpus(source: Path, reviews: int, min_count: int, out: Path) -> dict[str, int]:
    """Write `out/{train,valid,test}.txt` (see the module docstring); returns token counts per split."""
    from llmctl.data.normalize import Normalizer
    from llmctl.data.tokenizers import split_words
    from llmctl.schema import NormalizeConfig

    normalize = Normalizer(NormalizeConfig(html=True))
    lines: list[list[str]] = []
    with source.open(encoding="utf-8") as handle:
        for raw in handle:
            if len(lines) >= reviews:
                break
            words = split_words(normalize(json.loads(raw)["text"]))
            if words:
                lines.append(words)
    n_valid = n_test = max(1, len(lines) // 20)
    splits = {"train": lines[: len(lines) - n_valid - n_test], "valid": lines[len(lines) - n_valid - n_test:
                                                                                len(lines) - n_test],
              "test": lines[len(lines) - n_test:]}
    counts = Counter(w for line in splits["train"] for w in line)
    keep = {w for w, n in counts.items() if n >= min_count and w != UNK}
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, part in splits.items():
        text = "\n".join(" ".join(w if w in keep else UNK for w in line) for line in part) + "\n"
        (out / f"{name}.txt").write_text(text, encoding="utf-8")
        sizes[name] = sum(len(line) + 1 for line in part)  # words + one <eos> per line
    sizes["vocabulary"] = len(keep) + 2  # + <unk>, <eos> (the reference's dictionary)
    return sizes


def run_llmctl(corpus: Path, work: Path, epochs: int, max_steps: int | None) -> dict[str, float]:
    from llmctl import config, evaluate
    from llmctl.data import preprocess
    from llmctl.progress import Reporter
    from llmctl.train import pretrain

    overrides = [f"data.train=[{corpus / 'train.txt'}]", f"data.valid=[{corpus / 'valid.txt'}]",
                 f"data.test=[{corpus / 'test.txt'}]", f"data.dir={work / 'data'}", f"run.dir={work / 'runs'}",
                 f"train.epochs={epochs}", "evaluate.split=test", "run.overwrite=true"]
    if max_steps:
        overrides.append(f"train.max_steps={max_steps}")
    exp = config.load(RECIPE, overrides)
    t0 = time.perf_counter()
    preprocess.run(exp, Reporter("none"), force=True)
    pretrain.run(exp, Reporter("none"))
    card = evaluate.run(exp, Reporter("none")).values
    return {"test_perplexity": card["perplexity"], "word_perplexity": card["word_perplexity"],
            "test_tokens": card["tokens"], "seconds": time.perf_counter() - t0}


def run_reference(reference: Path, corpus: Path, work: Path, epochs: int) -> dict[str, float] | str:
    try:
        import torch  # noqa: F401
    except ImportError:
        return "skipped: torch is not importable (pip install -e '.[bench]')"
    main = reference / "main.py"
    if not main.is_file():
        return f"skipped: {main} not found"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(main), "--data", str(corpus), "--epochs", str(epochs),
                           "--save", str(work / "reference_model.pt")], cwd=reference, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        return f"failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"
    found = re.findall(r"test ppl\s+([0-9.]+)", done.stdout)
    return {"test_perplexity": float(found[-1]) if found else float("nan"), "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--reviews", type=int, default=8000)
    parser.add_argument("--min-count", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--max-steps", type=int, default=None, help="llmctl only (smoke tests)")
    parser.add_argument("--reference", type=Path, default=None, help="pytorch/examples word_language_model folder")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "word_lm_reference")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "word_lm_reference.json")
    args = parser.parse_args(argv)

    corpus = args.work / "corpus"
    sizes = make_corpus(args.source, args.reviews, args.min_count, corpus)
    print(f"corpus {corpus}: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))
    result: dict = {"reviews": args.reviews, "min_count": args.min_count, "epochs": args.epochs,
                    "max_steps": args.max_steps, "tokens": sizes,
                    "llmctl": run_llmctl(corpus, args.work, args.epochs, args.max_steps)}
    if args.reference is not None:
        result["reference"] = run_reference(args.reference.resolve(), corpus.resolve(), args.work.resolve(),
                                            args.epochs)
    for name in ("llmctl", "reference"):
        if name in result:
            value = result[name]
            print(f"{name:9s}: " + (f"test ppl {value['test_perplexity']:.2f}, {value['seconds']:.0f} s"
                                    if isinstance(value, dict) else value))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
