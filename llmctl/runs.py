"""The one owner of on-disk layouts: run directories and dataset directories. Every path is asked of this module.

Run directory (`<run.dir>/<run.name>/`), self-contained — `evaluate`, `generate`, `finetune` and `export` need
only it::

    config.yaml          the resolved experiment config (overrides applied; absolute paths except `run.dir: ..`,
                         so the directory does not depend on where it lives: copy or move it anywhere)
    run.json             kind (lm / classify / pairs), parent run, tokenizer fingerprint, created/updated times
    tokenizer/           copy of the dataset's tokenizer (tokenizer.json + llmctl_tokenizer.json)
    labels.json          classify: label names in id order
    checkpoints/         tf.train.Checkpoint files: last-<step>.* (keep-last-K) and best.*, plus state.json
    metrics.csv          one row per logged step / evaluation
    tb/                  TensorBoard event files
    model.keras          the final model (best weights) for `keras.saving.load_model`
    summary.json         final metrics, budgets used, wall time
    loss.png             loss curves
    eval/<name>.json     evaluation protocol cards
    export/              deployable artifacts (`llmctl export`)

Dataset directory (`data.dir`), written atomically by `preprocess`::

    manifest.json        counts, vocab size, tokenizer fingerprint, sources (size + hash), settings
    stats.json           the preprocess report
    tokenizer/           tokenizer.json + llmctl_tokenizer.json
    <split>.tokens       flat uint16/uint32 token stream (np.memmap)
    <split>.docs.npy     int64 document start offsets into the token stream (+ final end)
    <split>.labels.npy   classify: int32 label id per document
    <split>.response.npy pairs: int64 offset where each document's response starts
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmctl import atomic
from llmctl.errors import ArtifactError

LOCK_FILE = ".llmctl.lock"  # llmctl.locks.LOCK_FILE: the advisory lock of a training command

SPLITS = ("train", "valid", "test")
# config sections that define what a run *is*; the others (evaluate, generate, export, run.progress ...) may change
IDENTITY_SECTIONS = ("data", "tokenizer", "model", "train", "finetune", "distribute")
BUDGET_KEYS = ("epochs", "max_steps", "max_tokens", "max_time", "checkpoint_every", "log_every", "eval_every",
               "keep_last")


@dataclass(frozen=True)
class DatasetDir:
    """Layout of a processed dataset."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    def tokens(self, split: str) -> Path:
        return self.root / f"{split}.tokens"

    def docs(self, split: str) -> Path:
        return self.root / f"{split}.docs.npy"

    def labels(self, split: str) -> Path:
        return self.root / f"{split}.labels.npy"

    def response(self, split: str) -> Path:
        return self.root / f"{split}.response.npy"

    def exists(self) -> bool:
        return self.manifest.is_file()

    def read_manifest(self) -> dict[str, Any]:
        """The manifest, or a one-line error telling the user to run preprocess."""
        if not self.manifest.is_file():
            raise ArtifactError(f"no dataset at {self.root} (manifest.json missing)",
                                hint="run `llmctl preprocess CONFIG` first")
        return read_json_mapping(self.manifest, "dataset manifest", "run `llmctl preprocess CONFIG` again")


@dataclass(frozen=True)
class RunDir:
    """Layout of a run directory."""

    root: Path

    @classmethod
    def of(cls, exp) -> "RunDir":
        """The run of `exp`: the run directory the command was given, else `<run.dir>/<run.name>`."""
        bound = getattr(exp, "_run_root", None)
        return cls(Path(bound)) if bound is not None else cls(Path(exp.run.dir) / exp.run.name)

    @staticmethod
    def bind(exp, root: Path) -> None:
        """Make `root` (a run directory given on the command line) the run of `exp`, wherever it was trained."""
        exp._run_root = Path(root).resolve()

    @staticmethod
    def relocatable(saved: dict[str, Any], root: Path) -> dict[str, Any]:
        """The config to save in run directory `root`: its `run.dir` is `..` (relative to config.yaml) and its
        `run.name` the folder's name, so the directory is self-contained — copy or move it anywhere."""
        import re

        out = dict(saved)
        run = {**(saved.get("run") or {}), "dir": ".."}
        if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", Path(root).name):  # run.name's pattern (llmctl.schema)
            run["name"] = Path(root).name
        out["run"] = run
        return out

    # -- files
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def info(self) -> Path:
        return self.root / "run.json"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def labels(self) -> Path:
        return self.root / "labels.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def model(self) -> Path:
        return self.root / "model.keras"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def confusion_plot(self) -> Path:
        return self.root / "confusion.png"

    def eval_card(self, name: str) -> Path:
        return self.root / "eval" / f"{name}.json"

    @property
    def export(self) -> Path:
        return self.root / "export"

    # -- state
    def exists(self) -> bool:
        return self.config.is_file()

    def read_info(self) -> dict[str, Any]:
        if not self.info.is_file():
            raise ArtifactError(f"{self.root} is not an llmctl run directory (run.json missing)",
                                hint="train it first with `llmctl pretrain` or `llmctl finetune`")
        return read_json_mapping(self.info, "run file", "the run directory is damaged: train it again, or pass "
                                                        "--overwrite to replace it")

    def write_info(self, **fields: Any) -> None:
        """Merge `fields` into run.json (`updated`: when a recorded field last changed; no write when none does,
        so a resume that is then refused — a damaged checkpoint — leaves the file as it was)."""
        old = self.read_info() if self.info.is_file() else {}
        info = {**old, **json.loads(json.dumps(fields, default=str))}
        if old and info == old:
            return
        info.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        info["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic.write_json(self.info, info)

    def saved_config(self) -> dict[str, Any]:
        try:
            data = yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            detail = " ".join(str(exc).split())[:160]
            raise ArtifactError(f"run config {self.config} is damaged ({type(exc).__name__}: {detail})",
                                hint="the run directory is damaged: train it again, or pass --overwrite to "
                                     "replace it") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"run config {self.config} is damaged (not a mapping of sections)",
                                hint="the run directory is damaged: train it again, or pass --overwrite to "
                                     "replace it")
        return data

    def require_model(self) -> None:
        """A run that `evaluate`/`generate`/`export` can use has at least one checkpoint."""
        if not self.root.is_dir():
            raise ArtifactError(f"run directory {self.root} does not exist",
                                hint="check run.name/run.dir or train it first")
        if not any(self.checkpoints.glob("*.index")) and not self.model.is_file():
            raise ArtifactError(f"run {self.root} has no trained model (no checkpoint, no model.keras)",
                                hint="train it with `llmctl pretrain` or `llmctl finetune` first")

    def prepare(self, exp, *, kind: str, resume: bool, overwrite: bool) -> bool:
        """Create (or reopen) the run directory and save the resolved config.

        Returns True when an existing run is being resumed. A directory holding a *different* run is refused
        unless `overwrite` (which wipes it) or `resume` (which accepts budget changes only).
        """
        from llmctl import config as config_mod  # local: config imports nothing from here

        new = config_mod.to_dict(exp)
        if self.exists():
            if overwrite:
                _wipe(self.root)
            else:
                old = self.saved_config()
                diff = identity_diff(old, new, ignore_budgets=resume)
                if not resume:
                    what = f" (differs in {', '.join(diff[:4])})" if diff else ""
                    raise ArtifactError(f"run directory {self.root} already holds a run{what}",
                                        hint="pass --resume to continue it, --overwrite to replace it, or "
                                             "choose another run.name")
                if diff:
                    raise ArtifactError(f"cannot resume {self.root}: config differs in {', '.join(diff[:4])}",
                                        hint="resume with the same settings (only budgets may change) or "
                                             "use --overwrite")
                if self.info.is_file():
                    self.read_info()  # a damaged run.json is refused before anything is rewritten
        resuming = self.exists() and resume
        self.root.mkdir(parents=True, exist_ok=True)
        atomic.clean_stale(self.root)
        text = yaml.safe_dump(self.relocatable(new, self.root), sort_keys=False, allow_unicode=True)
        if not (self.config.is_file() and self.config.read_text(encoding="utf-8") == text):  # no-op: not rewritten
            atomic.write_text(self.config, text)
        self.write_info(kind=kind)
        return resuming


def read_json_mapping(path: Path, what: str, hint: str) -> dict[str, Any]:
    """A JSON object written by llmctl (manifest, run.json, ...); unreadable, invalid or not an object is an
    `ArtifactError` naming the file (the artifact is damaged), never a bare JSONDecodeError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise ArtifactError(f"{what} {path} is damaged ({type(exc).__name__}: {detail})", hint=hint) from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{what} {path} is damaged (a JSON {type(data).__name__}, not an object)", hint=hint)
    return data


def identity_diff(old: dict[str, Any], new: dict[str, Any], *, ignore_budgets: bool) -> list[str]:
    """Dotted keys whose values differ in the sections that define a run."""
    out: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if ignore_budgets and prefix == "train." and key in BUDGET_KEYS:
                    continue
                walk(a.get(key), b.get(key), f"{prefix}{key}.")
        elif a != b:
            out.append(prefix.rstrip("."))

    for section in IDENTITY_SECTIONS:
        walk(old.get(section, {}), new.get(section, {}), f"{section}.")
    return out


def _wipe(root: Path) -> None:
    import shutil

    for entry in root.iterdir():
        if entry.name == LOCK_FILE:  # held by this process: the lock stays with the directory
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
