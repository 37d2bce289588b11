"""Transfer with few labels: SST-2 with 1,000 labelled examples, from scratch vs fine-tuned from the SST-2 LM.

    python benchmarks/transfer_sst2.py                      # needs runs/sst2_pretrain (configs/sst2_pretrain.yaml)
    python benchmarks/transfer_sst2.py --seeds 0 1 2 --examples 1000 --json benchmarks/results/transfer_sst2.json

For every seed: 1,000 rows are drawn from the SST-2 train file (the labelled budget; 10% of them select the best
epoch), then two classifiers are trained with exactly the recipes of configs/sst2_scratch.yaml and
configs/sst2_finetune.yaml — only the data and the epoch budget change (`--set` overrides) — and both are scored on
the untouched GLUE dev set (`llmctl evaluate --split test`). The language model (runs/sst2_pretrain) saw the train
*sentences* without labels: the semi-supervised setting ULMFiT targets. Prints one line per run and the mean gap.

Measured (2 shared CPU cores, 3 min 49 s for all six runs; parent runs/sst2_pretrain, valid ppl 141), dev accuracy:

    seed 0: scratch 68.00 %  finetune 60.67 %  gap  -7.3 points
    seed 1: scratch 52.64 %  finetune 56.08 %  gap  +3.4 points
    seed 2: scratch 69.50 %  finetune 58.49 %  gap -11.0 points
    mean:   scratch 63.38 %  finetune 58.41 %  gap  -5.0 points      (benchmarks/results/transfer_sst2.json)

The transfer target (+3 points) is NOT met with this language model: its frozen features give a 57 % linear probe
(a bag-of-words logistic regression on the same 1,000 phrases: 70 %), see configs/sst2_finetune.yaml.

Follow-up (session 3, same script logic, seeds 0-2, dev accuracy at the best epoch / at the last epoch):

    scratch (this recipe)                                          63.4 / 67.7 %
    finetune, ULMFiT schedule (this recipe)                        58.4 / -
    finetune, no gradual unfreezing, no discriminative lr          65.0 / 64.8 %
      ... with the LM embedding frozen                             56.6 / 57.8 %
      ... parent = an LM on the 6,886 de-duplicated train
          sentences (held-out-sentence ppl 329)                    63.7 / 64.7 %
      ... parent = an UNTRAINED LM (control: 1 step at lr 1e-12)   66.0 / 66.8 %  (= scratch: the transfer
          machinery itself is neutral; the pretrained weights are what costs accuracy)
    1,000 labelled full sentences instead of phrases:
      scratch                                                      68.9 / 68.4 %
      finetune, no gradual unfreezing / ULMFiT schedule            64.9 / 65.4 %,  56.0 / 60.8 %

Every pretrained start is 3-8 points *below* training from scratch, and freezing the LM's embedding costs another
8 points: what a word-level LSTM LM learns from SST-2's own ~134k distinct-sentence tokens (its held-out perplexity
stays above 300) is syntax and topic, not sentiment, and the classifier has to unlearn it. ULMFiT's gains come from
an LM trained on ~100M general tokens and then ~10M+ in-domain tokens; nothing comparable is available offline here
(the only corpora are SST-2 itself and tiny Shakespeare), so this target is blocked on data, not on the mechanics,
which the tests cover (weights, tokenizer and vocabulary transfer, unfreezing, discriminative rates).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmctl import config  # noqa: E402
from llmctl.progress import Reporter  # noqa: E402

SST2 = ROOT.parent / "shared" / "data" / "sst2"


def sample_rows(source: Path, n: int, seed: int, out: Path) -> Path:
    lines = source.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    picked = random.Random(seed).sample(rows, n)
    out.write_text(header + "\n" + "\n".join(picked) + "\n", encoding="utf-8")
    return out


def train_and_score(recipe: str, name: str, subset: Path, work: Path, epochs: int, batch_size: int,
                    reporter: Reporter) -> dict:
    from llmctl import evaluate
    from llmctl.data import preprocess
    from llmctl.train import finetune

    overrides = [
        f"run.name={name}", f"run.dir={work / 'runs'}", "run.progress=none",
        f"data.dir={work / 'data' / name}", f"data.train=[{{path: {subset}, text: sentence, label: label}}]",
        "data.split.valid=0.1", f"train.epochs={epochs}", f"train.batch_size={batch_size}", "train.log_every=1000",
    ]
    exp = config.load(ROOT / "configs" / recipe, overrides)
    preprocess.run(exp)
    t0 = time.perf_counter()
    trained = finetune.run(exp, reporter)
    seconds = time.perf_counter() - t0
    exp.evaluate.split = "test"
    scored = evaluate.run(exp, Reporter("none")).values
    return {"recipe": recipe, "dev_accuracy": scored["accuracy"], "dev_macro_f1": scored["macro_f1"],
            "best_epoch": trained.values["best_epoch"], "train_seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (ROOT / "runs" / "sst2_pretrain" / "run.json").is_file():
        print("runs/sst2_pretrain is missing: run `llmctl preprocess/pretrain configs/sst2_pretrain.yaml` first",
              file=sys.stderr)
        return 2
    reporter = Reporter("none")
    results = []
    with tempfile.TemporaryDirectory(prefix="transfer_sst2.") as tmp:
        work = Path(tmp)
        for seed in args.seeds:
            subset = sample_rows(SST2 / "train.tsv", args.examples, seed, work / f"train_{seed}.tsv")
            row = {"seed": seed}
            for key, recipe in (("scratch", "sst2_scratch.yaml"), ("finetune", "sst2_finetune.yaml")):
                row[key] = train_and_score(recipe, f"{key}_{seed}", subset, work, args.epochs, args.batch_size,
                                           reporter)
            row["gap"] = row["finetune"]["dev_accuracy"] - row["scratch"]["dev_accuracy"]
            results.append(row)
            print(f"seed {seed}: scratch {row['scratch']['dev_accuracy']:.2%}  finetune "
                  f"{row['finetune']['dev_accuracy']:.2%}  gap {100 * row['gap']:+.1f} points", flush=True)
    gaps = [r["gap"] for r in results]
    summary = {
        "examples": args.examples, "epochs": args.epochs, "seeds": args.seeds,
        "scratch_mean": statistics.mean(r["scratch"]["dev_accuracy"] for r in results),
        "finetune_mean": statistics.mean(r["finetune"]["dev_accuracy"] for r in results),
        "gap_mean_points": 100 * statistics.mean(gaps),
        "gap_min_points": 100 * min(gaps),
        "runs": results,
    }
    print(f"mean over {len(results)} seed(s): scratch {summary['scratch_mean']:.2%}  finetune "
          f"{summary['finetune_mean']:.2%}  gap {summary['gap_mean_points']:+.1f} points "
          f"(min {summary['gap_min_points']:+.1f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
