"""The tokenizer kinds: ``char``, ``word``, ``whitespace`` (vocabulary lists) and byte-level ``bpe``."""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any, Final

import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from llmctl.data.specials import DEFAULT_UNK_TOKEN, SPECIAL_TOKENS, UNK_ID
from llmctl.data.tokenizers.base import _SCHEME_VERSION, Tokenizer, _VocabTokenizer
from llmctl.data.tokenizers.words import _detokenize, _onig_word_pattern, split_words


class CharTokenizer(_VocabTokenizer):
    """One token per Unicode code point; ``decode(encode(s)) == s`` for in-vocabulary ``s``."""

    @property
    def kind(self) -> str:
        return "char"

    def _check_token(self, token: str) -> None:
        if len(token) != 1:
            raise ValueError(f"char vocabulary entries must be single code points, got {token!r}")

    def encode(self, text: str) -> list[int]:
        # map() over a bound dict.get is the dict-lookup comprehension without
        # the per-item bytecode.
        return list(map(self._stoi.get, text, repeat(UNK_ID)))

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return "".join(self._tokens(ids, skip_special))

    def _hf_tokenizer(self) -> tokenizers.Tokenizer:
        # "[\s\S]" isolates every code point (newlines included; "\X" would
        # group grapheme clusters such as "e\u0301" and 👍🏽, which we split),
        # and Fuse concatenates on decode.  Like ours, the HF tokenizer maps
        # unknown characters to <unk>.  Divergence: HF matches the literal
        # strings "<pad>", "<unk>", ... in input text as special tokens (the
        # ``encode_special_tokens`` switch is not saved in tokenizer.json).
        return self._word_level_hf(pre_tokenizers.Split(tokenizers.Regex(r"[\s\S]"), "isolated"), decoders.Fuse())


class WordTokenizer(_VocabTokenizer):
    """Words, punctuation and single CJK characters (see :func:`split_words`); decoding is lossy."""

    @property
    def kind(self) -> str:
        return "word"

    def _check_token(self, token: str) -> None:
        if split_words(token) != [token]:
            raise ValueError(f"word vocabulary entry {token!r} is not a single word-level token")

    def _check_tokens(self, tokens: list[str]) -> None:
        # One split of all tokens joined by spaces: no match spans whitespace and every non-space character is in
        # a match, so the result is the tokens themselves exactly when each token alone splits into itself.
        if split_words(" ".join(tokens)) != tokens:
            super()._check_tokens(tokens)  # names the first bad token

    def encode(self, text: str) -> list[int]:
        return list(map(self._stoi.get, split_words(text), repeat(UNK_ID)))

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return _detokenize(self._tokens(ids, skip_special))

    def _hf_tokenizer(self) -> tokenizers.Tokenizer:
        # Split(invert=True, "removed") keeps the pattern's matches as tokens
        # and drops the whitespace between them, like re.findall.  See
        # _onig_word_pattern for the (Unicode-version) divergence.  HF has no
        # decoder for our spacing rules, so HF decoding joins tokens with " ";
        # the special-token caveat of CharTokenizer applies too.
        pattern = pre_tokenizers.Split(tokenizers.Regex(_onig_word_pattern()), "removed", invert=True)
        return self._word_level_hf(pattern, None)


class WhitespaceTokenizer(_VocabTokenizer):
    """Whitespace-separated tokens, exactly ``text.split()``: for pre-tokenized corpora (Penn Treebank, WikiText),
    where every whitespace token is one word of the published protocol (``@-@``, ``don 't``, ``<unk>`` stay whole).

    ``unk_token`` is the literal the corpus writes for an unknown word (``<unk>`` by default); it encodes to
    :data:`UNK_ID` and never enters the vocabulary. The other special-token strings written as words (``<eos>``)
    encode to their own ids, as in Hugging Face's tokenizer of the same file. Decoding joins tokens with one space.
    Nothing is normalised here (``data.normalize`` is applied before, when set).
    """

    def __init__(self, vocab: Sequence[str], *, check: bool = True, unk_token: str = DEFAULT_UNK_TOKEN) -> None:
        if not isinstance(unk_token, str) or unk_token.split() != [unk_token]:
            raise ValueError(f"unk_token must be one whitespace-free token, got {unk_token!r}")
        if unk_token in SPECIAL_TOKENS and unk_token != SPECIAL_TOKENS[UNK_ID]:
            raise ValueError(f"unk_token {unk_token!r} is another special token")
        super().__init__(vocab, check=check)
        if self._stoi.get(unk_token, UNK_ID) != UNK_ID:
            raise ValueError(f"unk_token {unk_token!r} is also a vocabulary word (id {self._stoi[unk_token]})")
        self.unk_token = unk_token
        self._lookup: dict[str, int] = self._stoi if unk_token in self._stoi else {**self._stoi, unk_token: UNK_ID}

    @property
    def kind(self) -> str:
        return "whitespace"

    def _check_token(self, token: str) -> None:
        if not isinstance(token, str) or token.split() != [token]:
            raise ValueError(f"whitespace vocabulary entry {token!r} is not a single whitespace-free token")

    def _check_tokens(self, tokens: list[str]) -> None:
        if " ".join(tokens).split() != tokens:
            super()._check_tokens(tokens)  # names the first bad token

    def encode(self, text: str) -> list[int]:
        return list(map(self._lookup.get, text.split(), repeat(UNK_ID)))

    def tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return list(map(self._lookup.get, tokens, repeat(UNK_ID)))

    def token_to_id(self, token: str) -> int | None:
        return self._lookup.get(token)

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return " ".join(self._tokens(ids, skip_special))

    def _options(self) -> dict[str, Any]:
        return {"unk_token": self.unk_token}

    def _canonical_content(self) -> dict[str, Any]:
        return {**super()._canonical_content(), "unk_token": self.unk_token}

    def _metadata_content(self) -> dict[str, Any]:
        return {"unk_token": self.unk_token, **super()._metadata_content()}

    def _hf_tokenizer(self) -> tokenizers.Tokenizer:
        # WhitespaceSplit is str.split() except for U+001C..U+001F, which Python splits on and Rust does not. A
        # custom unk_token is rewritten to "<unk>" when it stands alone (the vocabulary keeps one token per id).
        # The special-token caveat of CharTokenizer applies: HF also finds "<eos>" glued to a word ("a<eos>").
        hf = self._word_level_hf(pre_tokenizers.WhitespaceSplit(), None)
        if self.unk_token != SPECIAL_TOKENS[UNK_ID]:
            pattern = tokenizers.Regex(f"(?<!\\S){re.escape(self.unk_token)}(?!\\S)")
            hf.normalizer = normalizers.Replace(pattern, SPECIAL_TOKENS[UNK_ID])
        return hf


class BpeTokenizer(Tokenizer):
    """Byte-level BPE backed by a Hugging Face tokenizer; lossless for any text.

    Literal special-token strings in input text (e.g. ``"<eos>"``) are
    encoded as ordinary text, like the other kinds do.  Token strings are in
    the byte-level alphabet (``"Ġthe"`` is ``" the"``).
    """

    def __init__(self, hf: tokenizers.Tokenizer) -> None:
        """Wrap ``hf``, a BPE model with the special tokens at ids 0-4 (sets its ``encode_special_tokens``)."""
        super().__init__()
        if not isinstance(hf.model, models.BPE):
            raise ValueError(f"expected a BPE model, got {type(hf.model).__name__}")
        for i, token in enumerate(SPECIAL_TOKENS):
            if hf.token_to_id(token) != i:
                raise ValueError(f"special token {token!r} must have id {i}, found {hf.token_to_id(token)}")
        hf.encode_special_tokens = True
        self._hf = hf

    @property
    def kind(self) -> str:
        return "bpe"

    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode several texts with the multi-threaded Rust batch encoder."""
        return [enc.ids for enc in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        return self._hf.decode(self._check_ids(ids), skip_special_tokens=skip_special)

    def id_to_token(self, token_id: int) -> str:
        token = self._hf.id_to_token(token_id) if token_id >= 0 else None
        if token is None:
            raise IndexError(f"token id {token_id} is out of range for a vocabulary of size {self.vocab_size}")
        return token

    def token_to_id(self, token: str) -> int | None:
        return self._hf.token_to_id(token)

    def _canonical_content(self) -> dict[str, Any]:
        model = json.loads(self._hf.to_str())["model"]
        by_id = sorted(self._hf.get_vocab(with_added_tokens=True).items(), key=operator.itemgetter(1))
        # tokenizers < 0.20 stores merges as "a b" strings, newer versions as
        # pairs; byte-level tokens never contain a space, so both normalise.
        merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model["merges"]]
        return {"kind": "bpe", "scheme": _SCHEME_VERSION["bpe"], "vocab": [t for t, _ in by_id], "merges": merges}

    def _hf_tokenizer(self) -> tokenizers.Tokenizer:
        return self._hf

    def _metadata_content(self) -> dict[str, Any]:
        return {}


_TOKENIZER_CLASSES: Final[dict[str, type[_VocabTokenizer]]] = {
    "char": CharTokenizer, "word": WordTokenizer, "whitespace": WhitespaceTokenizer}
