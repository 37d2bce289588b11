"""`manifest.json`: everything a deployment needs to use the artifacts without llmctl (see docs/artifacts.md).

Written last, after every artifact is in the temporary export folder; `files` lists each file with its size.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from llmctl import __version__
from llmctl.data.specials import BOS_ID, EOS_ID, PAD_ID, SEP_ID, UNK_ID
from llmctl.export.graphs import state_names
from llmctl.export.plan import FORMAT
from llmctl.export.source import ExportSource, summary_metrics

FORMAT_VERSION = 1
SPECIAL_TOKENS = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID, "sep": SEP_ID}
STOPWORDS_FILE = "stopwords.txt"


def build(source: ExportSource, *, folder: Path, artifacts: dict[str, Any], checks: dict[str, Any]) -> dict[str, Any]:
    from llmctl.tfenv import import_tf

    tf = import_tf()
    model = source.model
    encoder = model.encoder if source.kind == "classify" else model
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "llmctl_version": __version__,
        "tensorflow_version": tf.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kind": source.kind,
        "source": {"run": str(source.run.root.resolve()), "checkpoint": source.checkpoint},
        "tokenizer": {"dir": "tokenizer", "file": "tokenizer/tokenizer.json", "kind": source.tokenizer.kind,
                      "fingerprint": source.tokenizer.fingerprint(),
                      "run_fingerprint": source.fingerprint,
                      "vocab_size": source.tokenizer.vocab_size},
        "special_tokens": dict(SPECIAL_TOKENS),
        "normalize": normalize_section(source.normalizer),
        "model": _model_config(source),
        "state": {"layers": encoder.num_layers, "units": encoder.units, "dtype": "float32", "initial": "zeros",
                  "order": state_names(encoder.num_layers)},
        "metrics": summary_metrics(source.summary),
        "artifacts": artifacts,
        "checks": checks,
    }
    if source.checkpoint.get("valid_loss") is not None:
        manifest["metrics"].setdefault("checkpoint_valid_loss", source.checkpoint["valid_loss"])
    if source.prompt is not None:
        manifest["prompt"] = dict(source.prompt)
    if source.kind == "classify":
        manifest["labels"] = list(source.labels)
        manifest["max_length"] = source.max_length
    manifest["files"] = file_sizes(folder)
    return manifest


def normalize_section(normalizer) -> dict[str, Any]:
    """The run's text normalisation, applied to any text before tokenizing, in this order: NFKC, lowercase,
    whitespace collapse, stop-word removal (rules in docs/artifacts.md; words listed in `stopwords.txt`)."""
    return {"nfkc": normalizer.nfkc, "lowercase": normalizer.lowercase,
            "collapse_whitespace": normalizer.collapse_whitespace,
            "stopwords": STOPWORDS_FILE if normalizer.stopwords else None,
            "order": ["nfkc", "lowercase", "collapse_whitespace", "stopwords"]}


def stopwords_text(normalizer) -> str | None:
    """One lowercased stop word per line, sorted; None when the run removes none."""
    return "".join(f"{word}\n" for word in sorted(normalizer.stopwords)) if normalizer.stopwords else None


def _model_config(source: ExportSource) -> dict[str, Any]:
    """Read off the loaded model itself (a fine-tuned run may have adopted its parent's architecture)."""
    model = source.model
    encoder = model.encoder if source.kind == "classify" else model
    out: dict[str, Any] = {"architecture": "embedding-lstm-dense", "vocab_size": encoder.vocab_size,
                           "embedding_dim": encoder.embedding_dim, "layers": encoder.num_layers,
                           "units": encoder.units, "tie_embeddings": bool(encoder.tie_embeddings)}
    if source.kind == "classify":
        out.update(architecture="embedding-lstm-pool-dense", num_classes=model.num_classes, pooling=model.pooling,
                   head_units=model.head_units, max_length=source.max_length)
        del out["tie_embeddings"]
    return out


def file_sizes(folder: Path) -> dict[str, int]:
    """{relative path: bytes} of every file below `folder` (manifest.json itself excluded), sorted."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def total_bytes(folder: Path, prefix: str) -> int:
    return sum(size for name, size in file_sizes(folder).items() if name == prefix or name.startswith(prefix + "/"))
