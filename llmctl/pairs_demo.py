"""A small prompt→response task generated from a seed: reverse a short sequence of letters.

    prompt: "k q d"      response: "d q k"

`write_reverse_data(out_dir)` writes `reverse_train.tsv` / `reverse_valid.tsv` (columns `prompt`, `response`), the
data of `configs/pairs_reverse.yaml`; the committed copies under `data/examples/` were made with the defaults
(`python -m llmctl.pairs_demo data/examples`). Valid pairs never occur in train, so exact match measures the rule,
not memorisation. Files are written atomically.
"""

from __future__ import annotations

import random
import string
import sys
from pathlib import Path

from llmctl import atomic


def reverse_pairs(n: int, *, seed: int = 0, alphabet: str = string.ascii_lowercase, min_len: int = 3,
                  max_len: int = 3, exclude: set[str] | None = None) -> list[tuple[str, str]]:
    """`n` distinct (prompt, response) pairs: space-separated letters and the same letters reversed."""
    rng = random.Random(seed)
    exclude = set(exclude or ())
    space = sum(len(alphabet) ** k for k in range(min_len, max_len + 1))
    if n > space - len(exclude):
        raise ValueError(f"only {space - len(exclude)} distinct sequences exist, asked for {n}")
    seen: set[str] = set()
    out = []
    while len(out) < n:
        letters = [rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len))]
        prompt = " ".join(letters)
        if prompt in seen or prompt in exclude:
            continue
        seen.add(prompt)
        out.append((prompt, " ".join(reversed(letters))))
    return out


def write_reverse_data(out_dir: Path, *, n_train: int = 4000, n_valid: int = 300, seed: int = 0,
                       alphabet: str = string.ascii_lowercase, min_len: int = 3, max_len: int = 5
                       ) -> dict[str, Path]:
    """Write reverse_{train,valid}.tsv (disjoint prompts) into `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    train = reverse_pairs(n_train, seed=seed, alphabet=alphabet, min_len=min_len, max_len=max_len)
    valid = reverse_pairs(n_valid, seed=seed + 1, alphabet=alphabet, min_len=min_len, max_len=max_len,
                          exclude={p for p, _ in train})
    paths = {}
    for split, rows in (("train", train), ("valid", valid)):
        paths[split] = out_dir / f"reverse_{split}.tsv"
        atomic.write_text(paths[split], "prompt\tresponse\n" + "".join(f"{p}\t{r}\n" for p, r in rows))
    return paths


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    paths = write_reverse_data(Path(argv[0]) if argv else Path("data/examples"))
    for name, path in paths.items():
        print(f"{name}: {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
