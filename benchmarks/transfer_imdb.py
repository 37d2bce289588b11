"""Does pretraining pay? IMDb sentiment at 100 / 1,000 / all labels: fine-tuned from the IMDb language model vs the
same classifier from scratch vs TF-IDF + logistic regression, on one split.

    pip install -e ".[bench]"                                # scikit-learn, for the baseline only
    llmctl preprocess configs/imdb_lm.yaml && llmctl pretrain configs/imdb_lm.yaml        # the parent (≤ 100 min)
    python benchmarks/transfer_imdb.py                       # every point (the all-label ones take the longest)
    python benchmarks/transfer_imdb.py --labels 100 1000 --sides tfidf pretrained scratch --seeds 0 1 2

Protocol. `configs/imdb_classify.yaml` splits train.jsonl by document (seed 0) into 20,000 train / 2,500 valid /
2,500 test. A point with N labels trains on `data.train_limit=N` (a class-balanced subset drawn with
`data.train_limit_seed` = the seed); `pretrained` runs configs/imdb_classify.yaml, `scratch` configs/imdb_scratch.yaml
— the same classifier, tokenizer, epochs and time budget (table `BUDGETS`), no parent. Both pick their best epoch
on the valid split; every reported number is the untouched test split (`llmctl evaluate --split test`). `tfidf` is
the practitioner's first try on the same documents: word 1-2-gram TF-IDF (sublinear tf) + logistic regression,
its C chosen on the valid split. Results go to benchmarks/results/transfer_imdb.json (merged point by point, so
runs can be split across invocations) and a learning-curve PNG beside it. Finished runs are reused
(`--fresh` retrains). Measured numbers: configs/imdb_classify.yaml and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmctl import config  # noqa: E402
from llmctl.progress import Reporter  # noqa: E402

IMDB = ROOT.parent / "shared" / "data" / "imdb" / "train.jsonl"
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = {"pretrained": "imdb_classify.yaml", "scratch": "imdb_scratch.yaml"}
FULL = 20_000
# labels -> (epochs, evaluate every N steps, max_time seconds, batch size): identical for both sides of a point
BUDGETS = {100: (20, 35, 300, 16), 1000: (8, 64, 600, 32), FULL: (1, 104, 840, 64)}


def budget(labels: int) -> tuple[int, int, int, int]:
    return BUDGETS.get(labels) or BUDGETS[min(BUDGETS, key=lambda k: abs(k - labels))]


def overrides(side: str, labels: int, seed: int, time_scale: float = 1.0) -> list[str]:
    epochs, eval_every, max_time, batch_size = budget(labels)
    max_time = int(round(max_time * time_scale))
    return [f"run.name={side}_{labels}_s{seed}", f"run.dir={ROOT / 'runs' / 'transfer_imdb'}", "run.progress=plain",
            f"run.seed={seed}", f"data.train_limit={labels}", f"data.train_limit_seed={seed}",
            f"train.epochs={epochs}", f"train.eval_every={eval_every}", f"train.max_time={max_time}",
            f"train.batch_size={batch_size}", "train.log_every=1000"]


def train_and_score(side: str, labels: int, seed: int, fresh: bool, time_scale: float = 1.0) -> dict:
    from llmctl import evaluate
    from llmctl.runs import RunDir
    from llmctl.train import finetune

    exp = config.load(ROOT / "configs" / RECIPES[side], overrides(side, labels, seed, time_scale))
    run = RunDir.of(exp)
    if fresh or not run.summary.is_file():
        exp.run.overwrite = True
        finetune.run(exp, Reporter("plain"))
    summary = json.loads(run.summary.read_text(encoding="utf-8"))
    exp.evaluate.split = "test"
    scored = evaluate.run(exp, Reporter("none")).values
    return {"accuracy": scored["accuracy"], "macro_f1": scored["macro_f1"], "best_epoch": summary.get("best_epoch"),
            "valid_accuracy": summary.get("valid_accuracy"), "train_seconds": summary.get("train_time_s"),
            "stopped_by": summary.get("stop_reason"), "train_documents": summary.get("train_documents"),
            "run": str(run.root)}


def imdb_splits(exp) -> dict[str, tuple[list[str], np.ndarray]]:
    """The raw texts and label ids of each split, routed exactly as `preprocess` routes them (data.split, mode
    documents); checked against the labels stored in the dataset."""
    from llmctl.data.dataset import open_dataset
    from llmctl.data.normalize import Normalizer

    rows = [json.loads(line) for line in IMDB.read_text(encoding="utf-8").split("\n") if line.strip()]
    split = exp.data.split
    n = len(rows)
    n_valid, n_test = round(n * split.valid), round(n * split.test)
    order = np.random.default_rng(split.seed).permutation(n)
    assign = np.zeros(n, dtype=np.int8)
    assign[order[:n_valid]], assign[order[n_valid:n_valid + n_test]] = 1, 2
    ds = open_dataset(exp.data.dir)
    names = ds.label_names
    normalize = Normalizer(exp.data.normalize)
    out = {}
    for code, name in enumerate(("train", "valid", "test")):
        picked = [rows[i] for i in np.flatnonzero(assign == code)]
        labels = np.array([names.index(r["label"]) for r in picked], dtype=np.int32)
        if not np.array_equal(labels, np.asarray(ds.labels(name))):
            raise SystemExit(f"the {name} split of {ds.root} is not the one this script rebuilds from {IMDB}")
        out[name] = ([normalize(r["text"]) for r in picked], labels)
    return out


def tfidf_scores(splits, labels: int, seed: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from llmctl.train.finetune_classify import limit_subset

    texts, y = splits["train"]
    pick = limit_subset(y, 2, labels, balanced=True, seed=seed)
    t0 = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = vectorizer.fit_transform([texts[i] for i in pick])
    x_valid, x_test = (vectorizer.transform(splits[s][0]) for s in ("valid", "test"))
    best = None
    for c in (0.1, 1.0, 10.0, 100.0):
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, y[pick])
        valid = float((model.predict(x_valid) == splits["valid"][1]).mean())
        if best is None or valid > best[0]:
            best = (valid, c, model)
    valid, c, model = best
    return {"accuracy": float((model.predict(x_test) == splits["test"][1]).mean()), "valid_accuracy": valid,
            "C": c, "train_seconds": time.perf_counter() - t0, "train_documents": int(pick.size)}


def plot(points: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for side, style in (("pretrained", "o-"), ("scratch", "s--"), ("tfidf", "^:")):
        xs = sorted({p["labels"] for p in points.values() if p["side"] == side})
        if not xs:
            continue
        ys = [100 * statistics.mean(p["accuracy"] for p in points.values()
                                    if p["side"] == side and p["labels"] == x) for x in xs]
        ax.plot(xs, ys, style, label={"pretrained": "fine-tuned from the IMDb LM", "scratch": "same model, scratch",
                                      "tfidf": "TF-IDF 1-2-grams + LR"}[side])
    ax.set_xscale("log")
    ax.set_xlabel("labelled training reviews")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("IMDb: what pretraining buys")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 1000, FULL])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sides", nargs="+", default=["tfidf", "pretrained", "scratch"],
                        choices=["tfidf", "pretrained", "scratch"])
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    parser.add_argument("--json", type=Path, default=RESULTS / "transfer_imdb.json")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiply every max_time cap (both sides alike) on a slower machine, so that runs end "
                             "by their epochs, never by the cap")
    args = parser.parse_args(argv)
    if not (ROOT / "runs" / "imdb_lm" / "run.json").is_file() and "pretrained" in args.sides:
        print("runs/imdb_lm is missing: run `llmctl preprocess configs/imdb_lm.yaml` and `llmctl pretrain "
              "configs/imdb_lm.yaml` first", file=sys.stderr)
        return 2
    from llmctl.data import preprocess

    base = config.load(ROOT / "configs" / "imdb_classify.yaml", [])
    preprocess.run(base)                          # a no-op when the dataset is up to date
    splits = imdb_splits(base) if "tfidf" in args.sides else None
    for labels in args.labels:
        for seed in args.seeds:
            for side in args.sides:
                row = (tfidf_scores(splits, labels, seed) if side == "tfidf"
                       else train_and_score(side, labels, seed, args.fresh, args.time_scale))
                # re-read before every write: several invocations may fill the same file side by side
                existing = json.loads(args.json.read_text(encoding="utf-8")) if args.json.is_file() else {}
                points = existing.get("points", {})
                points[f"{side}/{labels}/{seed}"] = {"side": side, "labels": labels, "seed": seed, **row}
                if side != "tfidf":
                    points[f"{side}/{labels}/{seed}"]["max_time"] = int(round(budget(labels)[2] * args.time_scale))
                print(f"{labels:>6} labels  seed {seed}  {side:<10}  test accuracy {row['accuracy']:.2%}  "
                      f"(valid {row['valid_accuracy']:.2%}, {row['train_seconds']:.0f} s)", flush=True)
                summary = {"protocol": "IMDb train.jsonl split by document (seed 0): 20,000 train / 2,500 valid / "
                                       "2,500 test; selection on valid, accuracy on test",
                           "budgets": {str(k): {"epochs": e, "eval_every": v, "max_time": t, "batch_size": b}
                                       for k, (e, v, t, b) in BUDGETS.items()},
                           "points": points}
                args.json.parent.mkdir(parents=True, exist_ok=True)
                tmp = args.json.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
                tmp.replace(args.json)
                plot(points, args.json.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
