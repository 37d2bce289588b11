"""The language-model protocol card: exact NLL, bits, perplexities and accuracies over every token of a stream.

    scorer = StreamScorer(model)
    totals = scorer.score(tokens, batch_size=10, bptt=64, context="carry")
    card = lm_card(totals, text=..., tokenizer_kind="char", ...)

Exactness — `StreamScorer` *is* training's validation (`llmctl.models.stream_nll.StreamEvaluator`: the same layout,
window loop and NLL definition, with accuracy counts added), so `evaluate` on the valid split reproduces the valid loss
`pretrain` reports:

* the N tokens become B = `batch_size` contiguous stream columns (`llmctl.data.batching.StreamLayout`): inputs
  `tokens[:-1]`, targets `tokens[1:]`; when B does not divide N-1, the first (N-1) mod B columns are one step longer
  (this is how the remainder is covered: no separate pass, nothing dropped);
* columns are read in windows of `bptt` steps, every window padded to `bptt` (one compiled shape); padding has
  weight 0 and is never counted;
* `carry`: the LSTM state is carried from window to window (each column is scored as one long sequence that starts
  from the zero state); `reset`: every window starts from the zero state;
* NLL per target = sparse softmax cross-entropy of the float32 logits (nats); the card's NLL is Σ NLL / number of
  targets = N-1 — every token after the first is scored exactly once.

Accuracy counts a target as correct when no other token has a strictly higher logit (top-5: fewer than five do).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmctl.tfenv import import_tf

tf = import_tf()

from llmctl.data.specials import UNK_ID  # noqa: E402
from llmctl.models.stream_nll import StreamEvaluator  # noqa: E402 - training's validation: one implementation of NLL
from llmctl.schema import eval_bptt  # noqa: E402

LN2 = math.log(2.0)
CONTEXTS = ("carry", "reset")


@dataclass
class StreamTotals:
    """Sums over every scored target of a stream."""

    nll_sum: float = 0.0       # nats
    tokens: int = 0
    correct: int = 0
    top5: int = 0
    unk: int = 0
    columns: int = 0
    bptt: int = 0
    windows: int = 0
    context: str = "carry"
    seconds: float = 0.0

    @property
    def nll(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else float("nan")


class StreamScorer(StreamEvaluator):
    """Compiled exact scoring of token streams (one compilation per (columns, bptt) shape): training's
    `StreamEvaluator` — the same layout, window loop and NLL — with accuracy and <unk> counts added to the sums."""

    SUMS = StreamEvaluator.SUMS + ("correct", "top5", "unk")
    progress_field = "nll"
    report_last = True

    def __init__(self, model, *, jit: bool = True):
        super().__init__(model, jit=jit)

    def _window_sums(self, logits, y, w):
        """[Σ NLL, Σ weight] of the evaluator, then the weighted counts of top-1 / top-5 hits and <unk> targets."""
        target_logit = tf.gather(logits, y[..., None], batch_dims=2)  # [B, T, 1]
        higher = tf.reduce_sum(tf.cast(logits > target_logit, tf.int32), axis=-1)  # [B, T]
        counts = tf.stack([
            tf.reduce_sum(tf.cast(tf.equal(higher, 0), tf.float32) * w),
            tf.reduce_sum(tf.cast(higher < 5, tf.float32) * w),
            tf.reduce_sum(tf.cast(tf.equal(y, UNK_ID), tf.float32) * w),
        ])
        return tf.concat([super()._window_sums(logits, y, w), counts], axis=0)

    def score(self, tokens: np.ndarray, *, batch_size: int, bptt: int, context: str = "carry",
              reporter=None, description: str = "evaluate") -> StreamTotals:
        """Exact totals over every token of `tokens` after the first (see the module docstring)."""
        if context not in CONTEXTS:
            raise ValueError(f"context must be carry or reset, got {context!r}")
        n_targets = len(tokens) - 1
        t0 = time.perf_counter()
        sums, columns, windows = self.sum_windows(tokens, batch_size=batch_size, bptt=bptt, context=context,
                                                  reporter=reporter, description=description)
        counted = int(round(sums[1]))
        if counted != n_targets:  # the layout guarantees it; a mismatch would be a bug, never a silent one
            raise AssertionError(f"scored {counted} targets, expected {n_targets}")
        return StreamTotals(nll_sum=float(sums[0]), tokens=counted, correct=int(round(sums[2])),
                            top5=int(round(sums[3])), unk=int(round(sums[4])), columns=columns, bptt=int(bptt),
                            windows=windows, context=context, seconds=time.perf_counter() - t0)


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else float("inf")


NOT_AVAILABLE = "not available"


def lm_card(totals: StreamTotals, *, tokenizer_kind: str, characters: int | None, words: int | None,
            split: str, checkpoint: dict[str, Any], dataset_fingerprint: str, data_sha256: str, eos: int = 0,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The protocol card (plain data) from stream totals and the size of the evaluated text.

    Per-word and per-character figures have one definition for every tokenizer, so models of the same text with
    different tokenizers compare on one scale: `word_perplexity` = exp(total NLL / (`words` + `eos`)), where
    `words` are the whitespace-separated words of the evaluated text and `eos` the `<eos>` tokens of its stream (one
    per document: the model predicts them, as the PTB/WikiText protocol counts one per line); `bits_per_char` =
    total NLL bits / (`characters` + `eos`). Without a count (a dataset made before preprocess recorded words, or
    characters) the figure is `"not available"`, never the per-token one under another name.
    """
    nll = totals.nll
    bits_token = nll / LN2
    total_bits = totals.nll_sum / LN2
    word_units = words + eos if words is not None else None
    char_units = characters + eos if characters is not None else None
    word_ppl: float | str = _exp(totals.nll_sum / word_units) if word_units else NOT_AVAILABLE
    bpc: float | str = total_bits / char_units if char_units else NOT_AVAILABLE
    eos_note = f" + {eos:,} <eos>" if eos else ""
    card: dict[str, Any] = {
        "split": split,
        "nll_nats": nll,
        "bits_per_token": bits_token,
        "perplexity": _exp(nll),
        "perplexity_base": "e (perplexity = exp(nll_nats) = 2 ** bits_per_token)",
        "bits_per_char": bpc,
        "word_perplexity": word_ppl,
        "word_perplexity_basis": (f"exp(total NLL / {word_units:,} = {words:,} whitespace-separated words"
                                  f"{eos_note})" if word_units else
                                  "the dataset records no word count (made by an older llmctl: run preprocess "
                                  "--force)"),
        "bits_per_char_basis": (f"total NLL bits / {char_units:,} = {characters:,} characters{eos_note}"
                                if char_units else "the dataset records no character count"),
        "accuracy": totals.correct / totals.tokens,
        "top5_accuracy": totals.top5 / totals.tokens,
        "tokens": totals.tokens,
        "unk_rate": totals.unk / totals.tokens,
        "unk_tokens": totals.unk,
        "characters": characters,
        "words": words,
        "eos": eos,
        "tokenizer": tokenizer_kind,
        "context": totals.context,
        "columns": totals.columns,
        "bptt": totals.bptt,
        "checkpoint": checkpoint.get("which"),
        "checkpoint_path": checkpoint.get("path"),
        "checkpoint_step": checkpoint.get("step"),
        "dataset_fingerprint": dataset_fingerprint,
        "data_sha256": data_sha256,
        "eval_seconds": totals.seconds,
        "tokens_per_s": totals.tokens / totals.seconds if totals.seconds > 0 else None,
    }
    card.update(extra or {})
    return card


# ---------------------------------------------------------------- the `evaluate` command for language models


def card_name(split: str, files: list) -> str:
    """File stem of the card in `<run>/eval/`: the split, `file-<stem>` for one file, `files-<hash>` for several."""
    import hashlib
    import re

    if not files:
        return split
    if len(files) == 1:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(files[0]).rstrip("/").split("/")[-1]) or "file"
        return f"file-{stem}"
    digest = hashlib.sha256("\n".join(sorted(str(f) for f in files)).encode("utf-8")).hexdigest()[:8]
    return f"files-{digest}"


def evaluate_run(exp, opened, reporter):
    """`llmctl evaluate` for an `lm` run: score the configured split or files, save and return the card."""
    from llmctl import atomic
    from llmctl.data.dataset import open_dataset
    from llmctl.evaluation.eval_text import files_text, split_text
    from llmctl.inference_run import load_language_model
    from llmctl.results import Result

    cfg = exp.evaluate
    run = opened.run
    tokenizer = opened.tokenizer
    files = [str(f) for f in cfg.files]
    if files:
        text = files_text(list(cfg.files), opened.exp.data, opened.normalizer, tokenizer)
        split, fingerprint = "files", opened.fingerprint
    else:
        dataset = open_dataset(exp.data.dir)
        dataset.check_fingerprint(opened.fingerprint, what=f"run {run.root}")
        text = split_text(dataset, cfg.split, tokenizer)
        split, fingerprint = cfg.split, dataset.fingerprint
    model, checkpoint = load_language_model(opened, cfg.checkpoint)
    if int(np.max(text.tokens)) >= model.vocab_size:
        from llmctl.errors import ArtifactError

        raise ArtifactError(f"the evaluated tokens use ids up to {int(np.max(text.tokens))}, the model of {run.root} "
                            f"has a {model.vocab_size}-token vocabulary",
                            hint="evaluate data made with the run's own tokenizer")
    gpus = tf.config.list_physical_devices("GPU")
    jit = not gpus and exp.train.jit_compile is not False
    bptt = eval_bptt(exp)
    totals = StreamScorer(model, jit=jit).score(text.tokens, batch_size=cfg.batch_size, bptt=bptt,
                                                context=cfg.context, reporter=reporter,
                                                description=f"evaluate {split}")
    extra: dict[str, Any] = {"run": str(run.root), "documents": text.documents}
    if files:
        extra["files"] = text.sources
    card = lm_card(totals, tokenizer_kind=tokenizer.kind, characters=text.characters, words=text.words,
                   eos=text.eos, split=split, checkpoint=checkpoint, dataset_fingerprint=fingerprint,
                   data_sha256=text.sha256,
                   extra=extra)
    path = run.eval_card(card_name(split, files))
    atomic.write_json(path, card)
    return Result(title=f"evaluate: {run.root.name} ({split if not files else ', '.join(files)})", values=card,
                  lines=[f"protocol card saved to {path}"])
