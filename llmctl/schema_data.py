"""The sections `llmctl preprocess` reads to build a dataset directory: `data` (its sources, split and text
normalisation) and `tokenizer`.

Re-exported by `llmctl.schema`, which assembles every section into `Experiment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import Field, model_validator

from llmctl.schema_base import MAX_SEED, IsPath, PathField, Section


class SourceConfig(Section):
    """One input file, directory or glob, with optional per-file column names."""

    path: PathField = Field(description="File, directory (all files inside) or glob pattern.")
    format: Literal["auto", "text", "jsonl", "tsv", "csv"] = Field(
        "auto", description="File format; `auto` decides by extension (.jsonl .tsv .csv, else text).")
    text: Optional[str] = Field(None, description="Text field/column for this file (default `data.text_field`).")
    label: Optional[str] = Field(None, description="Label field/column for this file (default `data.label_field`).")
    prompt: Optional[str] = Field(None, description="Prompt field/column for this file (default `data.prompt_field`).")
    response: Optional[str] = Field(
        None, description="Response field/column for this file (default `data.response_field`).")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value):
        if isinstance(value, (str, Path)):
            return {"path": value}
        return value


class SplitConfig(Section):
    """How valid/test splits are carved out of `data.train` when they are not given as files."""

    valid: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of the training data held out for validation.")
    test: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction held out for test.")
    mode: Literal["tail", "documents"] = Field(
        "tail", description="`tail`: contiguous tail of the token stream (single-file corpora); "
                            "`documents`: random documents chosen with `seed`.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for the `documents` split.")

    @model_validator(mode="after")
    def _fractions(self):
        if self.valid + self.test >= 1.0:
            raise ValueError(f"valid + test fractions must be < 1 (got {self.valid} + {self.test})")
        return self


class NormalizeConfig(Section):
    """Text normalisation applied before tokenization (and again to prompts and evaluation text)."""

    html: bool = Field(False, description="Raw HTML text (e.g. IMDb reviews): `<br />` becomes a line break, other "
                                          "tags are dropped, entities such as `&amp;` are decoded.")
    nfkc: bool = Field(False, description="Apply Unicode NFKC normalisation.")
    lowercase: bool = Field(False, description="Lowercase all text.")
    collapse_whitespace: bool = Field(
        False, description="Collapse runs of spaces/tabs into one space and strip line ends (keeps newlines).")
    stopwords: Optional[Annotated[str, IsPath(names=("english",))]] = Field(
        None, description="Remove stop words: `english` (built-in list) or a path to a one-word-per-line file "
                          "(relative to the config file). For classification features only, never for language "
                          "models.")


class DataConfig(Section):
    """Input corpora and the processed dataset directory shared by every command."""

    dir: PathField = Field(Path("data/processed"),
                           description="Dataset directory written by `preprocess` and read by the other commands.")
    task: Literal["lm", "classify", "pairs"] = Field(
        "lm", description="What the records hold: plain text (`lm`), text + label, or prompt + response.")
    train: list[SourceConfig] = Field(default_factory=list, description="Training sources (files, dirs, globs).")
    valid: list[SourceConfig] = Field(
        default_factory=list, description="Validation sources; empty → carved from train by `data.split`.")
    test: list[SourceConfig] = Field(
        default_factory=list, description="Test sources; empty → carved from train by `data.split` (if test > 0).")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Ratio split used when valid/test are empty.")
    documents: Literal["file", "line"] = Field(
        "file", description="For text files: one document per file, or one per non-empty line.")
    text_field: str = Field("text", description="Default JSONL field / TSV-CSV column holding the text.")
    label_field: str = Field("label", description="Default field/column holding the class label.")
    prompt_field: str = Field("prompt", description="Default field/column holding the prompt (pairs).")
    response_field: str = Field("response", description="Default field/column holding the response (pairs).")
    encoding: str = Field("utf-8", description="Text encoding of the sources (a BOM is always handled).")
    encoding_errors: Literal["strict", "replace", "skip"] = Field(
        "strict", description="Undecodable bytes: fail naming file and offset, replace with U+FFFD, or skip the "
                              "record.")
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig, description="Text normalisation.")
    train_limit: Optional[int] = Field(
        None, ge=1, description="`classify`: train on a seeded subset of this many labelled training documents "
                                "(learning curves: `--set data.train_limit=1000`); valid/test stay whole.")
    train_limit_balanced: bool = Field(
        True, description="With `train_limit`: the same number of documents per class (else proportional to the "
                          "class sizes).")
    train_limit_seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the `train_limit` subset.")
    workers: int = Field(0, ge=0, description="Encoding workers: threads for the single word pass (with the native "
                         "word store), else processes; 0 = one per core for large corpora.")


class TokenizerConfig(Section):
    """Which tokenizer to train on the train split, or where to reuse one from."""

    kind: Literal["char", "word", "whitespace", "bpe"] = Field(
        "char", description="Character, word (punctuation split off), whitespace (`text.split()` only: pre-tokenized "
                            "corpora such as PTB / WikiText) or byte-level BPE tokens.")
    unk_token: str = Field(
        "<unk>", min_length=1, pattern=r"^\S+$",
        description="`whitespace`: the literal token the corpus writes for an unknown word; it encodes to the "
                    "`<unk>` id and is never a vocabulary word.")
    vocab_size: int = Field(8000, ge=261,
                            description="Target vocabulary size for `bpe` (256 bytes + 5 specials at least).")
    min_freq: int = Field(1, ge=1, description="Drop tokens seen fewer times than this in train (char/word/bpe).")
    max_vocab: Optional[int] = Field(None, ge=6,
                                     description="Cap the char/word/whitespace vocabulary (specials included).")
    from_: Optional[PathField] = Field(
        None, alias="from",
        description="Reuse the tokenizer of this dataset or run directory instead of training one.")
    extend: bool = Field(
        False, description="With `from` (char/word): append the train split's tokens it lacks (seen >= min_freq "
                           "times, most frequent first, max_vocab in total) after its ids, which all keep their "
                           "token — the dataset for `finetune.extend_vocab`.")

    @model_validator(mode="after")
    def _extend_needs_from(self):
        if self.extend and self.from_ is None:
            raise ValueError("tokenizer.extend needs tokenizer.from (the tokenizer to extend); set tokenizer.from "
                             "or tokenizer.extend=false")
        return self
