"""The prompt side of the prompt→response format, shared by pairs training, evaluation, `generate` and `predict`.

Training documents are `<bos> prompt <sep> response <eos>` (`preprocess.pair_template`). At inference the model is
fed the same prefix, `<bos> prompt <sep>`, and its continuation up to `<eos>` is the response.
"""

from __future__ import annotations

from typing import Iterable

from llmctl.data.tokenizers import BOS_ID, EOS_ID, SEP_ID


def prompt_prefix_ids(tokenizer, text: str, normalizer=None) -> list[int]:
    """`[<bos>, *encode(text), <sep>]` — what a pairs model continues with a response. `normalizer` (a
    `data.normalize.Normalizer`) is applied first when given."""
    if normalizer is not None:
        text = normalizer(text)
    return [BOS_ID, *tokenizer.encode(text), SEP_ID]


def cut_at_eos(ids: Iterable[int]) -> list[int]:
    """Generated ids up to (not including) the first `<eos>`."""
    out = []
    for token in ids:
        if int(token) == EOS_ID:
            break
        out.append(int(token))
    return out
