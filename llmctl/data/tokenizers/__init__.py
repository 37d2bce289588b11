"""Tokenizers for llmctl: ``char``, ``word``, ``whitespace`` and byte-level ``bpe``.

All kinds share one interface (:class:`Tokenizer`) and the same five special tokens at fixed ids (``<pad>``=0,
``<unk>``=1, ``<bos>``=2, ``<eos>``=3, ``<sep>``=4; owned by :mod:`llmctl.data.specials`), so ids never shift
between kinds or vocab sizes.

* ``char`` -- one token per Unicode code point (combining marks and emoji modifiers are tokens of their own);
  lossless for in-vocabulary text.
* ``word`` -- Unicode-aware words and punctuation, see :func:`split_words`; each CJK character is its own token;
  decoding re-inserts spaces heuristically and is not lossless.
* ``whitespace`` -- ``text.split()`` and nothing else, for pre-tokenized corpora (PTB, WikiText): every whitespace
  token is a word, the corpus's literal unknown-word token (``<unk>``) is the ``<unk>`` id.
* ``bpe`` -- byte-level BPE trained with the Hugging Face ``tokenizers`` library; lossless for any text.

Training streams its input (:func:`train_tokenizer`); :meth:`Tokenizer.save` writes a ``tokenizer.json`` that
``tokenizers.Tokenizer.from_file`` can load for every kind, plus ``llmctl_tokenizer.json`` metadata that
:func:`load_tokenizer` reads back.

The package must stay importable without TensorFlow: it uses only the standard library (``re`` rather than the
third-party ``regex``) and the HF ``tokenizers`` package. Modules: ``words`` (word splitting), ``base`` (the
interface and files), ``kinds`` (the tokenizer classes), ``training`` (training, counts, extending, loading).
"""

from __future__ import annotations

from llmctl.data.specials import BOS_ID, DEFAULT_UNK_TOKEN, EOS_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID
from llmctl.data.specials import NUM_SPECIAL as _NUM_SPECIAL
from llmctl.data.tokenizers.base import (
    _METADATA_FORMAT,
    _SCHEME_VERSION,
    FORMAT_VERSION,
    HF_TOKENIZER_FILE,
    METADATA_FILE,
    TOKENIZER_KINDS,
    Tokenizer,
    _metadata_json,
    _VocabTokenizer,
)
from llmctl.data.tokenizers.kinds import (
    _TOKENIZER_CLASSES,
    BpeTokenizer,
    CharTokenizer,
    WhitespaceTokenizer,
    WordTokenizer,
)
from llmctl.data.tokenizers.training import (
    _BYTE_ALPHABET_SIZE,
    DEFAULT_BPE_VOCAB_SIZE,
    _check_max_vocab,
    _checked_texts,
    _read_json,
    _train_bpe,
    extend_tokenizer,
    load_tokenizer,
    tokenizer_from_counts,
    tokenizer_from_ranked,
    train_tokenizer,
)
from llmctl.data.tokenizers.words import (
    _ASCII_WORD_RE,
    _CJK_RANGES,
    WORD_CHAR,
    WORD_COMPLEX,
    WORD_SINGLE,
    WORD_SPACE,
    _cached_table,
    _code_point_ranges,
    _compute_word_classes,
    _detokenize,
    _mark_ranges,
    _onig_word_pattern,
    _ranges_from_bytes,
    _ranges_to_bytes,
    _whitespace_ranges,
    _word_classes,
    _word_re,
    split_words,
)

__all__ = [
    "BOS_ID",
    "DEFAULT_BPE_VOCAB_SIZE",
    "DEFAULT_UNK_TOKEN",
    "EOS_ID",
    "FORMAT_VERSION",
    "HF_TOKENIZER_FILE",
    "METADATA_FILE",
    "PAD_ID",
    "SEP_ID",
    "SPECIAL_TOKENS",
    "TOKENIZER_KINDS",
    "UNK_ID",
    "BpeTokenizer",
    "CharTokenizer",
    "Tokenizer",
    "WhitespaceTokenizer",
    "WordTokenizer",
    "extend_tokenizer",
    "load_tokenizer",
    "split_words",
    "tokenizer_from_counts",
    "tokenizer_from_ranked",
    "train_tokenizer",
]

# private names other modules and tests reach for
_PRIVATE = (WORD_CHAR, WORD_COMPLEX, WORD_SINGLE, WORD_SPACE, _METADATA_FORMAT, _SCHEME_VERSION, _NUM_SPECIAL,
            _metadata_json, _VocabTokenizer, _TOKENIZER_CLASSES, _BYTE_ALPHABET_SIZE, _check_max_vocab,
            _checked_texts, _read_json, _train_bpe, _ASCII_WORD_RE, _CJK_RANGES, _cached_table, _code_point_ranges,
            _compute_word_classes, _detokenize, _mark_ranges, _onig_word_pattern, _ranges_from_bytes,
            _ranges_to_bytes, _whitespace_ranges, _word_classes, _word_re)
