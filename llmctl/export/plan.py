"""Checking the `export` section against the run before any work starts (no TensorFlow needed).

    plan = make_plan(exp)   # ConfigError / ArtifactError with one line naming the problem and the fix
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmctl.errors import ArtifactError, ConfigError
from llmctl.runs import RunDir

MANIFEST = "manifest.json"
FORMAT = "llmctl-export"


@dataclass(frozen=True)
class ExportPlan:
    run: RunDir
    out: Path
    formats: tuple[str, ...]    # in the order they are written
    quantize: str               # none | dynamic_int8 (TFLite only)
    overwrite: bool

    @property
    def tflite_variants(self) -> tuple[str, ...]:
        """Weight formats of the TFLite files: float32 always, plus int8 when asked."""
        if "tflite" not in self.formats:
            return ()
        return ("none", "dynamic_int8") if self.quantize == "dynamic_int8" else ("none",)


def make_plan(exp) -> ExportPlan:
    cfg = exp.export
    run = RunDir.of(exp)
    formats = tuple(f for f in ("saved_model", "tflite") if f in cfg.formats)
    if not formats:
        raise ConfigError("export.formats is empty: nothing to export",
                          hint="set export.formats to [saved_model], [tflite] or both")
    if cfg.quantize != "none" and "tflite" not in formats:
        raise ConfigError(f"export.quantize={cfg.quantize} applies to TFLite files but export.formats has no tflite",
                          hint="add tflite to export.formats or set export.quantize=none")
    out = Path(cfg.dir) if cfg.dir is not None else run.export
    _check_destination(run, out, overwrite=cfg.overwrite)
    return ExportPlan(run=run, out=out, formats=formats, quantize=cfg.quantize, overwrite=cfg.overwrite)


def _check_destination(run: RunDir, out: Path, *, overwrite: bool) -> None:
    resolved, root = out.resolve(), run.root.resolve()
    if resolved == root or resolved in root.parents:
        raise ConfigError(f"export.dir {out} is the run directory or contains it; replacing it would destroy the run",
                          hint=f"use the default ({run.export}) or another folder")
    own = {p.resolve() for p in (run.checkpoints, run.tokenizer, run.tensorboard, run.eval_card("x").parent,
                                 run.config, run.info, run.labels, run.model, run.summary, run.metrics)}
    if resolved in own:
        raise ConfigError(f"export.dir {out} is one of the run's own files or folders",
                          hint=f"use the default ({run.export}) or another folder")
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"export.dir {out} exists and is a file", hint="remove it or choose another export.dir")
    if out.is_dir():
        if not overwrite:
            raise ArtifactError(f"export directory {out} already exists",
                                hint="pass --overwrite to replace it or set export.dir to a new folder")
        if any(out.iterdir()) and not is_export(out):
            raise ArtifactError(f"{out} is not an llmctl export (no {MANIFEST}) and is not empty; --overwrite only "
                                "replaces earlier exports", hint="choose an empty or new export.dir")


def is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False
