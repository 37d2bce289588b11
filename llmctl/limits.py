"""Sizes that could exhaust the machine, checked before any work starts (no TensorFlow needed).

    check_training_memory(exp, vocab_size)     # ResourceError (exit 6) when the model cannot fit in memory
    check_prompts(prompts)                     # DataError (exit 3) for a prompt larger than MAX_PROMPT_CHARS
    check_generation(exp.generate, prompts)    # ResourceError when the outputs asked for cannot fit in memory

The estimates are deliberately low (lower bounds of what TensorFlow allocates), so they refuse only what cannot
work: a model whose weights, gradients and optimizer moments alone exceed the memory available, not one that merely
might be tight. Config sizes are capped in `llmctl.config_yaml` (file size, nesting), `llmctl.config_validation`
(problems listed) and `llmctl.schema` (`generate.max_new_tokens`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from llmctl.errors import DataError, ResourceError

MAX_PROMPT_CHARS = 1_000_000        # one prompt; an LSTM conditions on it token by token
MAX_PROMPTS_FILE_BYTES = 64 << 20   # --prompts-file / predict --file
FLOAT_BYTES = 4
OPTIMIZER_COPIES = 4                # weights + gradients + two Adam moments (SGD needs fewer; Adam is the default)
BYTES_PER_GENERATED_TOKEN = 48      # a Python int in the output lists + its slot in the decoder's buffers


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (`MemAvailable`), or None when it cannot be told."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    if n >= 2**70:  # beyond any machine (and, for model.units: 1e400, beyond a float)
        return f"about 10^{len(str(int(n) >> 30)) - 1} GiB"
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def _count(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"about 10^{len(str(n)) - 1}"


def lm_parameters(model, vocab_size: int) -> int:
    """Parameters of the Embedding → LSTM × layers → Dense language model `model` (a `ModelConfig`)."""
    emb, units, layers = model.embedding_dim, model.units, model.layers
    lstm = sum(4 * units * ((emb if i == 0 else units) + units + 1) for i in range(layers))
    embedding = vocab_size * emb
    if model.tie_embeddings:
        output = vocab_size + ((units + 1) * emb if units != emb else 0)  # output bias + a projection
    else:
        output = units * vocab_size + vocab_size
    return embedding + lstm + output


def training_bytes(exp, vocab_size: int) -> tuple[int, int]:
    """(parameters, a lower bound of the bytes training needs): optimizer copies of the weights plus one step's
    logits and LSTM activations."""
    params = lm_parameters(exp.model, vocab_size)
    train = exp.train
    tokens = train.batch_size * train.bptt
    classes = exp.model.sampled_negatives + 1 if exp.model.output == "sampled" else vocab_size
    activations = tokens * (classes + 4 * exp.model.units * exp.model.layers)
    return params, FLOAT_BYTES * (OPTIMIZER_COPIES * params + activations)


def check_training_memory(exp, vocab_size: int) -> None:
    """Refuse a model that cannot be trained in the memory this machine has (before the run directory is made)."""
    available = available_memory()
    if available is None:
        return
    params, need = training_bytes(exp, vocab_size)
    if need > available:
        raise ResourceError(f"the model needs at least {_gib(need)} of memory to train ({_count(params)} parameters: "
                            f"{exp.model.layers}×{_count(exp.model.units)} LSTM, embedding "
                            f"{_count(exp.model.embedding_dim)}, vocab "
                            f"{vocab_size:,}; batch {exp.train.batch_size}×{exp.train.bptt}) but {_gib(available)} "
                            "is available",
                            hint="make it smaller: model.units, model.layers, model.embedding_dim, or "
                                 "train.batch_size / train.bptt")


def check_prompts(prompts: Sequence[str]) -> None:
    for i, prompt in enumerate(prompts):
        if len(prompt) > MAX_PROMPT_CHARS:
            where = f"prompt {i + 1}" if len(prompts) > 1 else "the prompt"
            raise DataError(f"{where} has {len(prompt):,} characters; at most {MAX_PROMPT_CHARS:,} are accepted",
                            hint="shorten it (the model reads it token by token)")


def check_text_file(path: Path, what: str = "prompts file") -> None:
    """A --prompts-file / --file larger than MAX_PROMPTS_FILE_BYTES is refused before it is read."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        return  # the reader reports a missing file
    if size > MAX_PROMPTS_FILE_BYTES:
        raise DataError(f"{what} {path} is {_gib(size)}; at most {_gib(MAX_PROMPTS_FILE_BYTES)} are read",
                        hint="split it into smaller files")


def check_generation(gen, prompts: Sequence[str]) -> None:
    """Refuse outputs (prompts × beams × max_new_tokens) that cannot fit in memory; prompts checked too."""
    check_prompts(prompts)
    available = available_memory()
    if available is None:
        return
    outputs = max(len(prompts), 1) * (gen.beam_width if gen.strategy == "beam" else 1)
    need = outputs * gen.max_new_tokens * BYTES_PER_GENERATED_TOKEN
    if need > available:
        raise ResourceError(f"generating {gen.max_new_tokens:,} tokens for {outputs:,} output(s) needs about "
                            f"{_gib(need)} of memory, {_gib(available)} is available",
                            hint="lower generate.max_new_tokens or pass fewer prompts at a time")
