"""The interface every llmctl tokenizer shares (:class:`Tokenizer`), the files it saves, and the shared
implementation of the vocabulary-list kinds (``char``, ``word``, ``whitespace``)."""

from __future__ import annotations

import hashlib
import json
import operator
import os
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any, Final

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from llmctl import atomic
from llmctl.data.specials import NUM_SPECIAL as _NUM_SPECIAL
from llmctl.data.specials import SPECIAL_TOKENS, UNK_ID

TOKENIZER_KINDS: Final = ("char", "word", "whitespace", "bpe")
#: Hugging Face ``tokenizers`` file written by :meth:`Tokenizer.save`.
HF_TOKENIZER_FILE: Final = "tokenizer.json"
#: llmctl metadata file written by :meth:`Tokenizer.save`.
METADATA_FILE: Final = "llmctl_tokenizer.json"
#: Version of the ``llmctl_tokenizer.json`` layout.
FORMAT_VERSION: Final = 1
_METADATA_FORMAT: Final = "llmctl-tokenizer"
#: Bumped whenever a kind's text -> token rules change, so that fingerprints
#: (used as cache keys) change with them.
_SCHEME_VERSION: Final = {"char": 1, "word": 1, "whitespace": 1, "bpe": 1}


class Tokenizer(ABC):
    """Common interface of all llmctl tokenizers.

    Instances are immutable.  Special tokens always occupy ids 0-4 (see
    :data:`SPECIAL_TOKENS`); ``encode`` never emits them except
    :data:`UNK_ID` for out-of-vocabulary input, so callers add
    ``BOS_ID``/``EOS_ID``/``SEP_ID``/``PAD_ID`` themselves.
    """

    def __init__(self) -> None:
        self._fingerprint: str | None = None

    @property
    @abstractmethod
    def kind(self) -> str:
        """One of :data:`TOKENIZER_KINDS`."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Encode ``text``; characters/words not in the vocabulary become :data:`UNK_ID`."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode several texts; equivalent to ``[encode(t) for t in texts]``."""
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Turn ids back into text.

        With ``skip_special`` (the default) all special ids, ``<unk>``
        included, are dropped; otherwise they are rendered as their token
        strings.  Raises ``ValueError`` for ids outside ``[0, vocab_size)``.
        """

    @abstractmethod
    def id_to_token(self, token_id: int) -> str:
        """Return the token string of ``token_id``; ``IndexError`` if out of range."""

    @abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """Return the id of ``token``, or ``None`` if it is not in the vocabulary."""

    @abstractmethod
    def _canonical_content(self) -> dict[str, Any]:
        """JSON-serialisable content that fully determines the tokenizer's behaviour."""

    @abstractmethod
    def _hf_tokenizer(self) -> tokenizers.Tokenizer:
        """An equivalent Hugging Face tokenizer, for ``tokenizer.json``."""

    @abstractmethod
    def _metadata_content(self) -> dict[str, Any]:
        """Kind-specific entries of ``llmctl_tokenizer.json``."""

    def fingerprint(self) -> str:
        """Return a 16-hex-digit SHA-256 digest of the kind and vocabulary (and merges).

        Stable across save/load, processes and machines; suitable as a cache key.
        """
        if self._fingerprint is None:
            content = self._canonical_content()
            canonical = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
            self._fingerprint = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]
        return self._fingerprint

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``tokenizer.json`` and ``llmctl_tokenizer.json`` into ``directory``.

        The directory is created if needed.  Each file is written to a
        temporary file in the same directory and atomically renamed into
        place (metadata last); if an overwrite is interrupted between the
        two files, :func:`load_tokenizer`'s consistency checks catch the
        mismatch.  Returns the directory as a :class:`~pathlib.Path`.
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path / HF_TOKENIZER_FILE, self._hf_json())
        metadata = {
            "format": _METADATA_FORMAT,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "special_tokens": {token: i for i, token in enumerate(SPECIAL_TOKENS)},
            "fingerprint": self.fingerprint(),
            **self._metadata_content(),
        }
        atomic.write_text(path / METADATA_FILE, _metadata_json(metadata))
        return path

    def _hf_json(self) -> str:
        """The text of ``tokenizer.json``."""
        return self._hf_tokenizer().to_str(pretty=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, fingerprint={self.fingerprint()!r})"

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        """Return ``ids`` as a list of Python ints, rejecting out-of-range values."""
        checked = list(map(operator.index, ids))
        if checked and (min(checked) < 0 or max(checked) >= self.vocab_size):
            bad = next(i for i in checked if not 0 <= i < self.vocab_size)
            raise ValueError(f"token id {bad} is out of range for a vocabulary of size {self.vocab_size}")
        return checked


def _metadata_json(metadata: dict[str, Any]) -> str:
    """``json.dumps(metadata, indent=2, ensure_ascii=False) + "\\n"`` (what ``atomic.write_json`` writes), with a
    ``vocab`` list rendered by the C string encoder: the indenting encoder is pure Python, slow for large
    vocabularies."""
    vocab = metadata.get("vocab")
    if not isinstance(vocab, list) or not vocab or set(map(type, vocab)) != {str}:
        return json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"
    placeholder = "\x00vocab\x00"
    text = json.dumps({**metadata, "vocab": placeholder}, indent=2, ensure_ascii=False)
    items = ",\n    ".join(map(json.encoder.encode_basestring, vocab))  # list items of a top-level key
    return text.replace(json.dumps(placeholder), "[\n    " + items + "\n  ]", 1) + "\n"


class _VocabTokenizer(Tokenizer):
    """Shared implementation of the vocabulary-list kinds (``char`` and ``word``)."""

    def __init__(self, vocab: Sequence[str], *, check: bool = True) -> None:
        """Build from ``vocab``, the token of every id; it must start with :data:`SPECIAL_TOKENS`. ``check=False``
        skips checking that every token is a string this kind's splitting produces (for tokens counted from split
        text); duplicates are always rejected."""
        super().__init__()
        vocab = list(vocab)
        if vocab[:_NUM_SPECIAL] != SPECIAL_TOKENS:
            raise ValueError(f"vocabulary must start with the special tokens {SPECIAL_TOKENS}")
        if check:
            tokens = vocab[_NUM_SPECIAL:]
            for token in tokens:
                if not isinstance(token, str):
                    raise ValueError(f"vocabulary entries must be strings, got {token!r}")
            self._check_tokens(tokens)
        self._itos: list[str] = vocab
        self._stoi: dict[str, int] = {token: i for i, token in enumerate(vocab)}
        if len(self._stoi) != len(vocab):
            duplicate = next(token for token, n in Counter(vocab).items() if n > 1)
            raise ValueError(f"duplicate token {duplicate!r} in vocabulary")

    @abstractmethod
    def _check_token(self, token: str) -> None:
        """Raise ``ValueError`` if ``token`` cannot be produced by this kind's splitting."""

    def _check_tokens(self, tokens: list[str]) -> None:
        """:meth:`_check_token` for every token."""
        for token in tokens:
            self._check_token(token)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def id_to_token(self, token_id: int) -> str:
        if not 0 <= token_id < len(self._itos):
            raise IndexError(f"token id {token_id} is out of range for a vocabulary of size {len(self._itos)}")
        return self._itos[token_id]

    def token_to_id(self, token: str) -> int | None:
        return self._stoi.get(token)

    def tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        """The id of each token (already split), :data:`UNK_ID` for those not in the vocabulary."""
        return list(map(self._stoi.get, tokens, repeat(UNK_ID)))

    def _tokens(self, ids: Iterable[int], skip_special: bool) -> list[str]:
        itos = self._itos
        checked = self._check_ids(ids)
        if skip_special:
            return [itos[i] for i in checked if i >= _NUM_SPECIAL]
        return [itos[i] for i in checked]

    def _canonical_content(self) -> dict[str, Any]:
        return {"kind": self.kind, "scheme": _SCHEME_VERSION[self.kind], "vocab": self._itos}

    def _options(self) -> dict[str, Any]:
        """Settings besides the vocabulary that the constructor takes (kept by :meth:`with_vocab`)."""
        return {}

    def with_vocab(self, vocab: Sequence[str]) -> "_VocabTokenizer":
        """A tokenizer of this kind and settings with another vocabulary."""
        return type(self)(vocab, **self._options())

    def _metadata_content(self) -> dict[str, Any]:
        return {"vocab": self._itos}

    def _hf_json(self) -> str:
        """HF's own serialisation of this kind with the special tokens only, this vocabulary put in by json's C
        encoder: building the HF model of a large vocabulary and serialising it costs several times more
        (docs/benchmarks.md). The same JSON document as ``_hf_tokenizer().to_str()``."""
        document = json.loads(type(self)(SPECIAL_TOKENS, check=False, **self._options())._hf_tokenizer().to_str())
        placeholder = "\x00vocab\x00"
        document["model"]["vocab"] = placeholder
        text = json.dumps(document, indent=2, ensure_ascii=False)
        return text.replace(json.dumps(placeholder), json.dumps(self._stoi, ensure_ascii=False), 1)

    def _word_level_hf(
        self, pre_tokenizer: pre_tokenizers.PreTokenizer, decoder: decoders.Decoder | None
    ) -> tokenizers.Tokenizer:
        hf = tokenizers.Tokenizer(models.WordLevel(vocab=self._stoi, unk_token=SPECIAL_TOKENS[UNK_ID]))
        hf.pre_tokenizer = pre_tokenizer
        if decoder is not None:
            hf.decoder = decoder
        # Already in the vocabulary, so this keeps ids 0-4 and only marks them special.
        hf.add_special_tokens(SPECIAL_TOKENS)
        return hf

