"""Writing the SavedModel and describing its signatures.

The SavedModel is a plain `tf.Module` (see `llmctl.export.modules`) saved with explicit `signatures=`, so it loads
with `tf.saved_model.load(path)` alone — no llmctl, no Keras import — and every signature accepts any batch size
and sequence length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmctl.tfenv import import_tf

tf = import_tf()


def write(module, path: Path) -> dict[str, Any]:
    """Save `module` with its named signatures at `path`; returns the signature descriptions."""
    signatures = module.signatures()
    tf.saved_model.save(module, str(path), signatures=signatures)
    return {name: describe(fn) for name, fn in signatures.items()}


def describe(concrete) -> dict[str, dict[str, dict[str, Any]]]:
    """{"inputs": {name: {shape, dtype}}, "outputs": {...}} of a concrete function (None = any size)."""

    def spec(s) -> dict[str, Any]:
        return {"shape": [None if d is None else int(d) for d in s.shape.as_list()], "dtype": s.dtype.name}

    args, kwargs = concrete.structured_input_signature
    inputs = {s.name: spec(s) for s in list(args) + list(kwargs.values())}
    outputs = {name: spec(s) for name, s in concrete.structured_outputs.items()}
    return {"inputs": inputs, "outputs": outputs}
