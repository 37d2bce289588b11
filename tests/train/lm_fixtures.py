"""Small language-model datasets and configs for the training tests (no preprocess command needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from llmctl.data.dataset import SplitWriter, token_dtype
from llmctl.runs import DatasetDir

SHAKESPEARE = Path("/work/shared/data/tinyshakespeare/input.txt")
FALLBACK = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
            "First Citizen:\nYou are all resolved rather to die than to famish?\n\n")


def corpus(chars: int) -> str:
    """`chars` characters of real English text (tiny Shakespeare when present)."""
    text = SHAKESPEARE.read_text(encoding="utf-8") if SHAKESPEARE.exists() else FALLBACK
    while len(text) < chars:
        text += text
    return text[:chars]


def make_char_dataset(root: Path, text: str, *, valid_fraction: float = 0.1) -> Path:
    """A char-level dataset directory (tokenizer + train/valid token files + manifest), tail split."""
    from llmctl.data.tokenizers import train_tokenizer

    root = Path(root)
    layout = DatasetDir(root)
    root.mkdir(parents=True, exist_ok=True)
    cut = int(len(text) * (1 - valid_fraction))
    parts = {"train": text[:cut], "valid": text[cut:]}
    tokenizer = train_tokenizer("char", iter([parts["train"]]), vocab_size=None, min_freq=1, max_vocab=None)
    tokenizer.save(layout.tokenizer)
    dtype = token_dtype(tokenizer.vocab_size)
    splits: dict[str, Any] = {}
    for name, part in parts.items():
        writer = SplitWriter(layout, name, dtype)
        if part:
            writer.add(tokenizer.encode(part))
        splits[name] = writer.close()
    manifest = {"format_version": 1, "dtype": dtype.name, "task": "lm", "labels": [], "splits": splits,
                "tokenizer": {"fingerprint": tokenizer.fingerprint(), "tokenizer_fingerprint": tokenizer.fingerprint(),
                              "kind": "char", "vocab_size": tokenizer.vocab_size}}
    layout.manifest.write_text(json.dumps(manifest), encoding="utf-8")
    return root


def make_token_dataset(root: Path, train: np.ndarray, valid: np.ndarray | None, vocab_size: int) -> Path:
    """A dataset from raw token arrays (for layout/eval tests); the tokenizer is a char one over `vocab_size`
    placeholder symbols so the directory is complete."""
    from llmctl.data.tokenizers import train_tokenizer

    root = Path(root)
    layout = DatasetDir(root)
    root.mkdir(parents=True, exist_ok=True)
    symbols = "".join(chr(0x4E00 + i) for i in range(vocab_size - 5))
    tokenizer = train_tokenizer("char", iter([symbols]), vocab_size=None, min_freq=1, max_vocab=None)
    tokenizer.save(layout.tokenizer)
    dtype = token_dtype(vocab_size)
    splits = {}
    for name, arr in (("train", train), ("valid", valid)):
        writer = SplitWriter(layout, name, dtype)
        if arr is not None and len(arr):
            writer.add(np.asarray(arr))
        splits[name] = writer.close()
    manifest = {"format_version": 1, "dtype": dtype.name, "task": "lm", "labels": [], "splits": splits,
                "tokenizer": {"fingerprint": tokenizer.fingerprint(), "kind": "char",
                              "vocab_size": tokenizer.vocab_size}}
    layout.manifest.write_text(json.dumps(manifest), encoding="utf-8")
    return root


def deep_update(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def tiny_config(folder: Path, data_dir: Path, *, name: str = "tiny", **sections: Any) -> Path:
    """Write a small, fast pretrain config into `folder` and return its path."""
    cfg = {
        "run": {"name": name, "dir": str(folder / "runs"), "seed": 7, "progress": "none"},
        "data": {"dir": str(data_dir)},
        "model": {"embedding_dim": 16, "layers": 2, "units": 32, "dropout": 0.1, "output_dropout": 0.1},
        "train": {"batch_size": 8, "bptt": 16, "epochs": 1, "lr": 0.005, "checkpoint_every": 10, "log_every": 5,
                  "jit_compile": False},
        "evaluate": {"batch_size": 4},
    }
    cfg = deep_update(cfg, sections)
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path
