"""The special tokens: their strings and fixed ids, the same in every tokenizer kind and vocabulary size.

This module owns them; everything else imports them from here (or through ``llmctl.data.tokenizers``). It imports
nothing, so light modules (export, serving, decoding) can use the ids without loading a tokenizer.
"""

from __future__ import annotations

from typing import Final

PAD_ID: Final = 0
UNK_ID: Final = 1
BOS_ID: Final = 2
EOS_ID: Final = 3
SEP_ID: Final = 4
#: Special tokens; a token's index in this list is its id in every tokenizer.
SPECIAL_TOKENS: Final[list[str]] = ["<pad>", "<unk>", "<bos>", "<eos>", "<sep>"]
NUM_SPECIAL: Final = len(SPECIAL_TOKENS)
#: The literal token a pre-tokenized corpus writes for an unknown word (PTB, WikiText); the `whitespace` kind maps it
#: to `UNK_ID` (`tokenizer.unk_token`).
DEFAULT_UNK_TOKEN: Final = SPECIAL_TOKENS[UNK_ID]

__all__ = ["BOS_ID", "DEFAULT_UNK_TOKEN", "EOS_ID", "NUM_SPECIAL", "PAD_ID", "SEP_ID", "SPECIAL_TOKENS", "UNK_ID"]
