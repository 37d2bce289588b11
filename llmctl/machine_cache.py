"""Per-machine cache of things llmctl measures or derives once: `$LLMCTL_CACHE` (default `~/.cache/llmctl`).

Holds the matmul peak (`train.peak_flops`), the XLA-or-graph choice (`train.xla_choice`) and derived Unicode tables
(`cached_bytes`, used by the word tokenizer). Every entry is optional: a missing, unreadable or corrupt entry is
recomputed, and a cache directory that cannot be written only costs the recomputation next time.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path
from typing import Callable


def cache_dir() -> Path:
    return Path(os.environ.get("LLMCTL_CACHE") or Path.home() / ".cache" / "llmctl")


def cached_bytes(name: str, key: str, compute: Callable[[], bytes]) -> bytes:
    """`compute()`, stored zlib-compressed under `name` + a hash of `key` (name everything the value depends on in
    `key`, e.g. the Unicode version): later calls read it back (zlib's checksum catches a damaged file)."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    path = cache_dir() / f"{name}-{digest}.bin.z"
    try:
        return zlib.decompress(path.read_bytes())
    except (OSError, zlib.error):
        pass
    data = compute()
    try:
        from llmctl import atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(path, zlib.compress(data, 6))
    except Exception:  # noqa: BLE001 - a cache that cannot be written is not an error
        pass
    return data
