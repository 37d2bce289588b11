"""A tiny real experiment built through the CLI (preprocess + a 4-step pretrain), for the reliability tests.

    built = build_experiment(tmp_path_factory.mktemp("exp"))   # Built(root, config, data, run)
    result = cli(["generate", str(built.run), "--prompt", "the "])   # in-process, stdout/stderr apart

Everything is generated here (a word soup over a small vocabulary): no test reads ../shared.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml
from typer.testing import CliRunner

from llmctl.cli import app

WORDS = "the quick brown fox jumps over lazy dog a language model predicts next word from ones before it".split()


@dataclass(frozen=True)
class Built:
    root: Path      # folder holding everything
    config: Path    # the experiment YAML
    data: Path      # its dataset directory
    run: Path       # its trained run directory


def corpus(lines: int = 300, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(lines)) + "\n"


def tiny_config(root: Path, name: str = "base", **sections) -> dict:
    cfg = {
        "run": {"name": name, "dir": "runs", "seed": 7, "progress": "none"},
        "data": {"dir": "data/tiny", "train": ["corpus.txt"], "documents": "line", "split": {"valid": 0.1}},
        "tokenizer": {"kind": "char"},
        "model": {"embedding_dim": 8, "layers": 1, "units": 16, "dropout": 0.0, "output_dropout": 0.0},
        "train": {"batch_size": 4, "bptt": 16, "epochs": 1, "max_steps": 4, "checkpoint_every": 2, "log_every": 2,
                  "jit_compile": False},
        "evaluate": {"batch_size": 4},
        "generate": {"max_new_tokens": 8},
        "export": {"formats": ["saved_model"]},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


_runner = CliRunner()


def cli(args: list[str]):
    """Run `llmctl ARGS` in this process (TensorFlow is imported once per test session)."""
    return _runner.invoke(app, [str(a) for a in args], env={"LLMCTL_NO_STDIN": "1"})


def build_experiment(root: Path) -> Built:
    root = Path(root)
    (root / "corpus.txt").write_text(corpus(), encoding="utf-8")
    config = write_config(root / "tiny.yaml", tiny_config(root))
    for command in ("preprocess", "pretrain"):
        result = cli([command, config])
        assert result.exit_code == 0, (command, result.output)
    return Built(root=root, config=config, data=root / "data" / "tiny", run=root / "runs" / "base")
