"""The preprocess report: per-split counts, unknown/out-of-vocabulary rates, labels and the most frequent tokens.

Counts are gathered while the token files are written (`SplitCounts.add`), so the report never re-reads the corpus.
Definitions:

* `unk_rate` — share of a split's tokens that are `<unk>`.
* `oov_rate` (valid/test) — share of a split's tokens that are `<unk>` or never occur in the train split: how much
  of the held-out text the model cannot have learned from training data.
* `top_tokens` — the most frequent train tokens with their share of all train tokens.
* `words` (language-model data) — whitespace-separated words of a split's text (`len(text.split())` summed over
  documents), the denominator of the protocol card's per-word figures with every kind of tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmctl.data.specials import NUM_SPECIAL, UNK_ID

TOP_TOKENS = 20


@dataclass
class SplitCounts:
    """Running totals for one split."""

    vocab_size: int
    documents: int = 0
    characters: int = 0
    words: int = 0  # whitespace-separated words (language-model text only)
    tokens: int = 0
    token_counts: np.ndarray = field(init=False)
    label_counts: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.token_counts = np.zeros(self.vocab_size, dtype=np.int64)

    def add_tokens(self, ids: np.ndarray) -> None:
        if ids.size:
            self.token_counts += np.bincount(ids, minlength=self.vocab_size)[: self.vocab_size]
            self.tokens += int(ids.size)

    def add_label(self, label: int) -> None:
        self.label_counts[label] = self.label_counts.get(label, 0) + 1


def _rate(part: int, whole: int) -> float:
    return float(part) / whole if whole else 0.0


def _token_text(tokenizer, token_id: int) -> str:
    """A readable form of one token: its decoded text, specials by name, whitespace and control characters quoted
    (`' '`, `'\\n'`)."""
    if token_id < NUM_SPECIAL:
        return tokenizer.id_to_token(token_id)
    text = tokenizer.decode([token_id])
    return repr(text) if (not text.strip() or not text.isprintable()) else text


def report(splits: dict[str, SplitCounts], tokenizer, label_names: list[str], *,
           skipped: int = 0, filtered: int = 0, words: bool = False) -> dict[str, Any]:
    """The stats.json content."""
    train = splits.get("train")
    seen_in_train = train.token_counts > 0 if train is not None else None
    out_splits: dict[str, Any] = {}
    for name, counts in splits.items():
        entry: dict[str, Any] = {
            "documents": counts.documents,
            "characters": counts.characters,
            **({"words": counts.words} if words else {}),
            "tokens": counts.tokens,
            "tokens_per_document": _rate(counts.tokens, counts.documents),
            "characters_per_token": _rate(counts.characters, counts.tokens),
            "unk_rate": _rate(int(counts.token_counts[UNK_ID]), counts.tokens),
        }
        if name != "train" and seen_in_train is not None:
            unseen = int(counts.token_counts[~seen_in_train].sum()) + (
                int(counts.token_counts[UNK_ID]) if seen_in_train[UNK_ID] else 0)
            entry["oov_rate"] = _rate(unseen, counts.tokens)
        if label_names:
            entry["labels"] = {label_names[i]: counts.label_counts.get(i, 0) for i in range(len(label_names))}
        out_splits[name] = entry
    top: list[dict[str, Any]] = []
    if train is not None and train.tokens:
        order = np.argsort(-train.token_counts, kind="stable")[:TOP_TOKENS]
        top = [{"id": int(i), "token": _token_text(tokenizer, int(i)), "count": int(train.token_counts[i]),
                "share": _rate(int(train.token_counts[i]), train.tokens)}
               for i in order if train.token_counts[i] > 0]
    return {
        "tokenizer": tokenizer.kind,
        "vocab_size": tokenizer.vocab_size,
        "splits": out_splits,
        "labels": list(label_names),
        "top_tokens": top,
        "skipped_records": skipped,
        "filtered_records": filtered,
    }


def split_rows(stats: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the per-split table."""
    names = list(stats["splits"])
    columns = ["", *names]
    keys = [("documents", "documents"), ("characters", "characters"), ("words", "words"), ("tokens", "tokens"),
            ("tokens/doc", "tokens_per_document"), ("chars/token", "characters_per_token"),
            ("<unk> rate", "unk_rate"), ("OOV rate vs train", "oov_rate")]
    rows: list[list[Any]] = []
    for label, key in keys:
        values = [stats["splits"][n].get(key, "") for n in names]
        if any(v != "" for v in values):
            rows.append([label, *[_pct(v) if key.endswith("rate") else v for v in values]])
    for label in stats.get("labels", []):
        rows.append([f"label {label}", *[stats["splits"][n].get("labels", {}).get(label, 0) for n in names]])
    rows.append(["vocab size", stats["vocab_size"], *[""] * (len(names) - 1)])
    return columns, rows


def top_rows(stats: dict[str, Any]) -> list[list[Any]]:
    return [[t["token"], t["count"], _pct(t["share"])] for t in stats.get("top_tokens", [])]


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, float) else str(value)


def show(reporter, stats: dict[str, Any]) -> None:
    """Render the report through the reporter (tables on the terminal, events in jsonl mode)."""
    columns, rows = split_rows(stats)
    reporter.table("dataset", rows, columns=columns)
    top = top_rows(stats)
    if top:
        reporter.table(f"most frequent train tokens (top {len(top)})", top, columns=("token", "count", "share"))
