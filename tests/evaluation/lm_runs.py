"""Real, tiny language-model run directories for the evaluate / generate tests, made by llmctl itself.

`preprocessed(...)` runs `llmctl.data.preprocess.run` on text files written into a temporary folder;
`trained_run(exp)` runs `llmctl.train.pretrain.run` (a few real optimizer steps); `untrained_run(exp)` lays a run
directory out the way pretrain does (config.yaml, run.json with the dataset fingerprint, tokenizer/) and saves the
freshly initialised weights as the `best` checkpoint with `llmctl.train.checkpoints.CheckpointStore` — enough for
tests that check decoding mechanics rather than model quality.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from llmctl.config_validation import validate
from llmctl.progress import Reporter
from llmctl.runs import RunDir

SPEAKERS = ("First Citizen", "Second Citizen", "MENENIUS", "MARCIUS", "All", "VOLUMNIA", "COMINIUS")
WORDS = ("the and to of a my in you that is not with it for be his your this but he have as me so will what "
         "him her by our do all are no shall if on now good lord more from they thou thy we would well come "
         "then than how say there let know love one man which upon make may like yet sir speak hear must great "
         "king heart night death life time day fair first give go see here away never where old why world before "
         "home hand true blood sweet honour noble peace war city people power gods heaven earth grace friends").split()


def corpus(chars: int, seed: int = 0) -> str:
    """`chars` characters of play-like English text (speaker lines, sentences, punctuation), made from a seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    parts: list[str] = []
    size = 0
    while size < chars:
        lines = []
        for _ in range(int(rng.integers(1, 4))):
            words = [WORDS[i] for i in rng.integers(0, len(WORDS), size=int(rng.integers(4, 12)))]
            words[0] = words[0].capitalize()
            lines.append(" ".join(words) + str(rng.choice([".", ",", "!", "?", ";"])))
        block = f"{SPEAKERS[int(rng.integers(0, len(SPEAKERS)))]}:\n" + "\n".join(lines) + "\n\n"
        parts.append(block)
        size += len(block)
    return "".join(parts)[:chars]


def experiment(root: Path, name: str, sources: list[Path], **sections):
    """A validated Experiment whose run and dataset live under `root` (tiny model, small budgets)."""
    raw = {
        "run": {"name": name, "dir": str(root / "runs"), "seed": 11, "progress": "none"},
        "data": {"dir": str(root / "data" / name), "train": [str(s) for s in sources], "split": {"valid": 0.1}},
        "tokenizer": {"kind": "char"},
        "model": {"embedding_dim": 16, "layers": 2, "units": 24, "dropout": 0.0, "output_dropout": 0.0},
        "train": {"batch_size": 8, "bptt": 16, "max_steps": 30, "lr": 0.01, "checkpoint_every": 1000,
                  "log_every": 1000},
        "evaluate": {"batch_size": 6, "bptt": 20},
    }
    for key, value in sections.items():
        raw.setdefault(key, {}).update(value)
    return validate(raw, source="test")


def preprocessed(exp):
    from llmctl.data.dataset import open_dataset
    from llmctl.data.preprocess import run

    run(exp, reporter=Reporter("none"))
    return open_dataset(exp.data.dir)


def trained_run(exp):
    """preprocess + pretrain; returns (RunDir, pretrain Result)."""
    from llmctl.train.pretrain import run

    preprocessed(exp)
    result = run(exp, reporter=Reporter("none"))
    return RunDir.of(exp), result


def untrained_run(exp) -> RunDir:
    """preprocess + a pretrain-shaped run directory holding the initial weights as the `best` checkpoint."""
    import keras

    from llmctl.models.lstm_lm import build_language_model
    from llmctl.train.checkpoints import CheckpointStore

    ds = preprocessed(exp)
    run = RunDir.of(exp)
    run.prepare(exp, kind="lm", resume=False, overwrite=True)
    if run.tokenizer.exists():
        shutil.rmtree(run.tokenizer)
    shutil.copytree(ds.layout.tokenizer, run.tokenizer)
    run.write_info(kind="lm", tokenizer_fingerprint=ds.fingerprint, vocab_size=ds.vocab_size, dataset=str(ds.root))
    keras.utils.set_random_seed(exp.run.seed)
    model = build_language_model(exp.model, ds.vocab_size)
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    optimizer.build(model.trainable_variables)
    store = CheckpointStore(run.checkpoints, model=model, optimizer=optimizer, carry_shapes=[], keep_last=1)
    store.save("best", step=0, progress={"epoch": 0, "step": 0}, states=None, metrics={"valid_loss": None})
    return run
