"""A run's or dataset's tokenizer/ loaded with both of its files checked against each other."""

from __future__ import annotations

from pathlib import Path

from llmctl.data.tokenizers.base import HF_TOKENIZER_FILE
from llmctl.data.tokenizers.training import load_tokenizer
from llmctl.errors import ArtifactError

TOKENIZER_SAMPLE_IDS = 256  # ids compared between tokenizer.json and llmctl_tokenizer.json


def load_checked_tokenizer(directory: Path, owner: Path | str):
    """The tokenizer in `directory` (the tokenizer/ of `owner`, a run directory), with both of its files checked:
    `tokenizer.json` (what exports ship and HF `tokenizers` loads) must load and agree with `llmctl_tokenizer.json`
    on the vocabulary size and on a sample of ids — a damaged file is an `ArtifactError`, never passed on."""
    directory = Path(directory)
    hint = "the run's tokenizer/ is damaged; copy it back from the dataset's tokenizer/ or train the run again"
    try:
        tokenizer = load_tokenizer(directory)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot load the tokenizer of {owner}: {str(exc).splitlines()[0]}",
                            hint=hint) from None
    hf_path = directory / HF_TOKENIZER_FILE
    try:
        from tokenizers import Tokenizer as HFTokenizer

        hf = HFTokenizer.from_file(str(hf_path))
    except Exception as exc:  # noqa: BLE001 - the Rust library raises its own exception types
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArtifactError(f"{hf_path} is not a valid tokenizer file ({problem[:120]})", hint=hint) from None
    size = hf.get_vocab_size(with_added_tokens=True)
    if size != tokenizer.vocab_size:
        raise ArtifactError(f"{hf_path} has {size} tokens but the run's tokenizer has {tokenizer.vocab_size}",
                            hint=hint)
    step = max(1, size // TOKENIZER_SAMPLE_IDS)
    for token_id in range(0, size, step):
        if hf.id_to_token(token_id) != tokenizer.id_to_token(token_id):
            raise ArtifactError(f"{hf_path} maps id {token_id} to {hf.id_to_token(token_id)!r}, the run's tokenizer "
                                f"to {tokenizer.id_to_token(token_id)!r}", hint=hint)
    return tokenizer
