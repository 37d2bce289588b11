"""The parent run of `llmctl finetune`: checks that it is a language model, that the dataset speaks its tokenizer,
and loads its weights.

    parent = open_parent(exp)                       # None when finetune.parent is null (training from scratch)
    old_vocab = check_dataset_tokenizer(parent, ds, allow_extension=...)   # None, or the parent's vocab size
    lm, info = load_parent_model(parent, exp.finetune.checkpoint)

Tokenizer identity: a run records the fingerprint of the dataset it was trained on (tokenizer + normalisation) in
run.json. Fine-tuning data must carry the same fingerprint, i.e. be preprocessed with `tokenizer: {from: <parent>}`
and the same `data.normalize`. With `finetune.extend_vocab` (task `lm`) the dataset's tokenizer may instead *extend*
the parent's: same kind, and every parent id maps to the same token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.errors import ArtifactError
from llmctl.runs import RunDir


@dataclass
class ParentRun:
    run: RunDir
    info: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.run.root)

    @property
    def fingerprint(self) -> str | None:
        return self.info.get("tokenizer_fingerprint")

    def tokenizer(self):
        from llmctl.data.tokenizers import load_tokenizer

        if not self.run.tokenizer.is_dir():
            raise ArtifactError(f"parent run {self.name} has no tokenizer/ folder",
                                hint="point finetune.parent at a complete run made by `llmctl pretrain`")
        try:
            return load_tokenizer(self.run.tokenizer)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot load the tokenizer of parent run {self.name} ({exc})",
                                hint="the parent run directory is damaged; pretrain it again") from None


def open_parent(exp) -> ParentRun | None:
    """The parent run named by `finetune.parent` (None for from-scratch training), checked to be a language model."""
    path = exp.finetune.parent
    if path is None:
        return None
    run = RunDir(Path(path))
    if not run.root.is_dir():
        raise ArtifactError(f"finetune.parent {run.root} does not exist",
                            hint="pretrain it first (`llmctl pretrain`) or fix finetune.parent")
    if not run.info.is_file():
        raise ArtifactError(f"finetune.parent {run.root} is not an llmctl run (run.json missing)",
                            hint="point finetune.parent at a run directory made by `llmctl pretrain`")
    info = run.read_info()
    kind = info.get("kind")
    if kind != "lm":
        raise ArtifactError(f"finetune.parent {run.root} is a `{kind}` run, not a language model",
                            hint="point finetune.parent at a run made by `llmctl pretrain` (or by finetune.task=lm)")
    run.require_model()
    return ParentRun(run=run, info=info)


def check_dataset_tokenizer(parent: ParentRun, ds, *, allow_extension: bool = False) -> int | None:
    """Refuse data made with another tokenizer than the parent's. Returns None when it is the parent's own, or the
    parent's vocabulary size when (`allow_extension`) the dataset's tokenizer extends it."""
    if ds.matches(parent.fingerprint):
        return None
    parent_tok = parent.tokenizer()
    data_tok_fp = ds.manifest.get("tokenizer", {}).get("tokenizer_fingerprint")
    if data_tok_fp == parent_tok.fingerprint():
        ours, theirs = ds.manifest.get("normalize"), _parent_normalize(parent)
        raise ArtifactError(f"dataset {ds.root} uses the tokenizer of parent run {parent.name} but another text "
                            f"normalisation ({ours} vs {theirs})",
                            hint="set data.normalize to the parent's settings and run preprocess again")
    if allow_extension:
        old = extension_of(parent_tok, ds.tokenizer())
        if old is not None:
            return old
        raise ArtifactError(f"finetune.extend_vocab: the tokenizer of dataset {ds.root} does not extend the "
                            f"vocabulary of parent run {parent.name} (ids of the parent's tokens must not change)",
                            hint=f"run preprocess with `tokenizer: {{from: {parent.name}}}`")
    raise ArtifactError(f"dataset {ds.root} was made with another tokenizer than parent run {parent.name}",
                        hint=f"run preprocess with `tokenizer: {{from: {parent.name}}}`")


def _parent_normalize(parent: ParentRun) -> Any:
    try:
        return (parent.run.saved_config().get("data") or {}).get("normalize")
    except OSError:
        return None


def extension_of(parent_tok, data_tok) -> int | None:
    """The parent's vocabulary size if `data_tok` extends `parent_tok` (same kind, same token at every parent id,
    more ids), else None."""
    if parent_tok.kind != data_tok.kind or data_tok.vocab_size <= parent_tok.vocab_size:
        return None
    for token_id in range(parent_tok.vocab_size):
        if parent_tok.id_to_token(token_id) != data_tok.id_to_token(token_id):
            return None
    return parent_tok.vocab_size


def load_parent_model(parent: ParentRun, which: str):
    """(LSTMLanguageModel with the parent's `which` weights, info) — via the pretrain checkpoint loader."""
    from llmctl.train.checkpoints import restore_model

    return restore_model(parent.run, which)


def extend_rows(matrix: np.ndarray, new_rows: int) -> np.ndarray:
    """ULMFiT vocabulary extension: append `new_rows` rows equal to the mean of the existing (non-special) rows."""
    from llmctl.data.tokenizers import SPECIAL_TOKENS

    if new_rows <= 0:
        return matrix
    body = matrix[len(SPECIAL_TOKENS):] if matrix.shape[0] > len(SPECIAL_TOKENS) else matrix
    mean = body.mean(axis=0, keepdims=True)
    return np.concatenate([matrix, np.repeat(mean, new_rows, axis=0)], axis=0).astype(matrix.dtype)


def unk_rates(ds) -> dict[str, float]:
    """Share of `<unk>` tokens per split (from stats.json when present, else counted in the token stream)."""
    import json

    from llmctl.data.tokenizers import UNK_ID

    rates: dict[str, float] = {}
    stats = {}
    if ds.layout.stats.is_file():
        try:
            stats = json.loads(ds.layout.stats.read_text(encoding="utf-8")).get("splits", {})
        except (OSError, ValueError):
            stats = {}
    for split in ds.splits():
        recorded = (stats.get(split) or {}).get("unk_rate")
        if isinstance(recorded, (int, float)):
            rates[split] = float(recorded)
            continue
        tokens = ds.tokens(split)
        rates[split] = float(np.count_nonzero(tokens == UNK_ID) / max(tokens.size, 1))
    return rates


ARCHITECTURE_FIELDS = ("embedding_dim", "layers", "units", "tie_embeddings")


def adopt_architecture(exp, parent: ParentRun, reporter):
    """A copy of `exp` whose `model` has the parent's architecture (sizes, tying), so the run's saved config — from
    then on the one owner of these values — rebuilds the model that holds the parent's weights; dropouts and other
    training-time settings stay as configured. Called once, before the run directory is created."""
    exp = exp.model_copy(deep=True)
    saved = parent.run.saved_config().get("model") or {}
    changes = {}
    for key in ARCHITECTURE_FIELDS:
        if key in saved and getattr(exp.model, key) != saved[key]:
            changes[key] = saved[key]
    explicit = [k for k in changes if k in exp.model.model_fields_set]  # only settings the user wrote down
    if explicit:
        reporter.warn("the parent's architecture replaces " + ", ".join(
            f"model.{k}={getattr(exp.model, k)}→{changes[k]}" for k in explicit))
    for key, value in changes.items():
        setattr(exp.model, key, value)
    if exp.model.pretrained_embeddings is not None:
        reporter.warn("model.pretrained_embeddings ignored: the embedding comes from the parent run")
        exp.model.pretrained_embeddings = None
    return exp
