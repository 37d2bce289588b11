"""The embedded demo data: built from text every Python install ships (no download).

* `pyref.txt` — the Python Language Reference topics from `pydoc_data.topics` (~465 KB of English prose and
  grammar), the corpus the demo language model is pretrained on.
* `pyref_topics_{train,valid}.tsv` — a 3-class text-classification task derived from the same reference:
  each paragraph labelled by the kind of topic it comes from (`statement`, `expression`, `datamodel`), split
  80/20 by a stable hash of the paragraph.

Usage: `python -m llmctl.demo_data OUT_DIR` (what `make demo` runs); files are written atomically, so a second run
with the same Python is a no-op.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

from llmctl import atomic

STATEMENTS = {
    "assert", "assignment", "async", "augassign", "await", "break", "class", "compound", "continue", "del", "else",
    "for", "function", "global", "if", "import", "nonlocal", "pass", "raise", "return", "try", "while", "with",
    "yield", "exceptions", "execmodel", "naming", "dynamic-features", "context-managers",
}
EXPRESSIONS = {
    "atom-identifiers", "atom-literals", "attribute-references", "binary", "bitwise", "booleans", "calls",
    "comparisons", "exprlists", "floating", "formatstrings", "identifiers", "imaginary", "in", "integers", "lambda",
    "operator-summary", "power", "shifting", "slicings", "subscriptions", "unary", "conversions", "strings", "lists",
    "numbers",
}
MIN_PARAGRAPH_CHARS = 60


def topic_label(topic: str) -> str:
    if topic in STATEMENTS:
        return "statement"
    if topic in EXPRESSIONS:
        return "expression"
    return "datamodel"


def _paragraphs(text: str) -> list[str]:
    out = []
    for para in re.split(r"\n\s*\n", text):
        flat = " ".join(para.split())
        if len(flat) >= MIN_PARAGRAPH_CHARS:
            out.append(flat)
    return out


def write_demo_data(out_dir: Path) -> dict[str, Path]:
    """Write the demo corpus and classification files into `out_dir`; returns their paths."""
    from pydoc_data.topics import topics

    out_dir = Path(out_dir)
    corpus = "\n\n".join(topics[name].strip() for name in sorted(topics)) + "\n"
    rows: dict[str, list[str]] = {"train": [], "valid": []}
    for name in sorted(topics):
        label = topic_label(name)
        for para in _paragraphs(topics[name]):
            bucket = int(hashlib.sha1(para.encode("utf-8")).hexdigest(), 16) % 5
            rows["valid" if bucket == 0 else "train"].append(f"{para.replace(chr(9), ' ')}\t{label}")
    paths = {"corpus": out_dir / "pyref.txt"}
    atomic.write_text(paths["corpus"], corpus)
    for split, lines in rows.items():
        paths[split] = out_dir / f"pyref_topics_{split}.tsv"
        atomic.write_text(paths[split], "text\tlabel\n" + "\n".join(lines) + "\n")
    return paths


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path("data/demo")
    paths = write_demo_data(out)
    for name, path in paths.items():
        print(f"{name}: {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
