"""Do a language model's features carry sentiment? A linear probe of the IMDb LM against a random encoder.

    pip install -e ".[bench]"                               # scikit-learn
    python benchmarks/probe_lm_features.py                  # runs/imdb_lm's best checkpoint, imdb_classify's data
    python benchmarks/probe_lm_features.py --checkpoint last --labels 1000

A diagnostic, not a benchmark of record: logistic regression (C 0.01 / 0.1 / 1) on frozen, standardised features of
`--labels` class-balanced train reviews (seed 0, first `--tokens` tokens, read after the start token the LM saw
before every document), scored on the first `--valid` valid reviews — C is not selected on held-out data, so none of
these is a test number. Features: the LSTM outputs' last / mean / max (and all three), the final cell state, and the
mean input embedding; the same for an encoder of the same shape with fresh random weights. Results: docs/finetune.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEATURES = ("last", "mean", "max", "last+mean+max", "cell", "embedding mean")


def features(model, docs, start_id: int, batch: int = 100) -> dict[str, np.ndarray]:
    from llmctl.tfenv import import_tf

    tf = import_tf()
    lstms = model.lstms

    @tf.function(reduce_retracing=True)
    def encode(tokens, mask):
        emb = model.embedding(tokens)
        x, cells = emb, []
        for (h0, c0), lstm in zip(model.initial_state(tf.shape(tokens)[0]), lstms, strict=True):
            x, _, c = lstm(x, mask=mask, initial_state=[h0, c0])   # masked steps keep the state: c at the last token
            cells.append(c)
        return emb, x, tf.concat(cells, axis=-1)

    out: dict[str, list[np.ndarray]] = {name: [] for name in FEATURES}
    for first in range(0, len(docs), batch):
        index = np.arange(first, min(first + batch, len(docs)))
        tokens = np.zeros((index.size, int(docs.lengths[index].max()) + 1), np.int32)
        tokens[:, 0] = start_id
        for row, i in enumerate(index):
            tokens[row, 1:1 + docs.lengths[i]] = docs.tokens[docs.starts[i]:docs.starts[i] + docs.lengths[i]]
        emb, hidden, cell = (t.numpy() for t in encode(tf.constant(tokens), tf.constant(tokens != 0)))
        emb, hidden, mask = emb[:, 1:], hidden[:, 1:], (tokens != 0)[:, 1:, None]
        count = mask.sum(1)
        last = hidden[np.arange(index.size), count[:, 0] - 1]
        mean = (hidden * mask).sum(1) / count
        high = np.where(mask, hidden, -np.inf).max(1)
        for name, value in (("last", last), ("mean", mean), ("max", high),
                            ("last+mean+max", np.concatenate([last, mean, high], 1)), ("cell", cell),
                            ("embedding mean", (emb * mask).sum(1) / count)):
            out[name].append(value)
    return {name: np.concatenate(parts) for name, parts in out.items()}


def probe(train: np.ndarray, valid: np.ndarray, y_train: np.ndarray, y_valid: np.ndarray) -> list[float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    return [round(100 * LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(train), y_train)
                  .score(scaler.transform(valid), y_valid), 1) for c in (0.01, 0.1, 1.0)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "imdb_lm")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "processed" / "imdb_classify")
    parser.add_argument("--checkpoint", default="best")
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--valid", type=int, default=800)
    parser.add_argument("--tokens", type=int, default=300)
    args = parser.parse_args(argv)

    from llmctl.data.dataset import open_dataset
    from llmctl.data.doc_batches import Documents
    from llmctl.data.specials import EOS_ID
    from llmctl.models.checkpoint_io import restore_model, run_language_model
    from llmctl.runs import RunDir
    from llmctl.train.finetune_classify import limit_subset

    ds = open_dataset(args.data)
    train = Documents.from_dataset(ds, "train", max_length=args.tokens, labels=True)
    train = train.subset(limit_subset(train.labels, len(ds.label_names), args.labels, balanced=True, seed=0))
    valid = Documents.from_dataset(ds, "valid", max_length=args.tokens, labels=True)
    valid = valid.subset(np.arange(min(args.valid, len(valid))))
    run = RunDir(args.run)
    for label, model in ((f"LM ({args.checkpoint})", restore_model(run, args.checkpoint)[0]),
                         ("random encoder", run_language_model(run)[0])):
        t0 = time.perf_counter()
        a, b = features(model, train, EOS_ID), features(model, valid, EOS_ID)
        print(f"{label}: features in {time.perf_counter() - t0:.0f} s; valid accuracy % at C 0.01 / 0.1 / 1")
        for name in FEATURES:
            print(f"  {name:<15} {probe(a[name], b[name], train.labels, valid.labels)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
