"""Reading (and writing) processed datasets: memory-mapped token streams plus side files, through `runs.DatasetDir`.

Writers append token arrays to `<split>.tokens` as they are produced (the corpus is never held whole); readers map
the file with `np.memmap`, so training and evaluation never copy the corpus into memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Sequence

import numpy as np

from llmctl.errors import ArtifactError
from llmctl.runs import DatasetDir

FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


@dataclass
class SplitWriter:
    """Streams one split's documents into `<split>.tokens` and collects its side arrays.

    Documents are appended whole (`add`, or `add_many` for several at once) or streamed in parts
    (`extend_document` ... `end_document`); `offsets` holds the boundaries of the documents written so far.
    """

    layout: DatasetDir
    split: str
    dtype: np.dtype
    _handle: BinaryIO | None = None
    offsets: list[int] = field(default_factory=lambda: [0])
    labels: list[int] = field(default_factory=list)
    response_starts: list[int] = field(default_factory=list)
    _written: int = 0  # tokens written, the open document's included

    def __post_init__(self) -> None:
        self._handle = open(self.layout.tokens(self.split), "wb")

    @property
    def n_tokens(self) -> int:
        return self.offsets[-1]

    @property
    def n_docs(self) -> int:
        return len(self.offsets) - 1

    @property
    def document_open(self) -> bool:
        """Whether `extend_document` has written tokens that `end_document` has not closed yet."""
        return self._written > self.offsets[-1]

    def _write(self, arr: np.ndarray) -> None:
        assert self._handle is not None
        self._handle.write(arr.tobytes())
        self._written += int(arr.size)

    def _check_closed(self, what: str) -> None:
        if self.document_open:
            raise ValueError(f"{what}: a streamed document is open; call end_document() first")

    def add(self, ids: Iterable[int] | np.ndarray, *, label: int | None = None,
            response_start: int | None = None) -> None:
        """Append one document (token ids); `response_start` is relative to the document's first token."""
        self._check_closed("add")
        arr = np.asarray(ids, dtype=self.dtype)
        start = self.offsets[-1]
        self._write(arr)
        self.offsets.append(start + int(arr.size))
        if label is not None:
            self.labels.append(int(label))
        if response_start is not None:
            self.response_starts.append(start + int(response_start))

    def add_many(self, ids: np.ndarray, lengths: Sequence[int] | np.ndarray, *,
                 labels: Sequence[int] | None = None) -> None:
        """Append several whole documents at once: `ids` is their tokens concatenated, `lengths` the token count of
        each (summing to `len(ids)`), `labels` one label per document if given."""
        self._check_closed("add_many")
        arr = np.asarray(ids, dtype=self.dtype)
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != arr.size:
            raise ValueError(f"add_many: lengths sum to {int(lengths.sum())}, but {arr.size} ids were given")
        if labels is not None and len(labels) != len(lengths):
            raise ValueError(f"add_many: {len(labels)} labels for {len(lengths)} documents")
        start = self.offsets[-1]
        self._write(arr)
        self.offsets.extend((start + np.cumsum(lengths)).tolist())
        if labels is not None:
            self.labels.extend(int(label) for label in labels)

    def extend_document(self, ids: Iterable[int] | np.ndarray) -> None:
        """Append tokens to the open document, opening one if none is; `end_document` closes it. For documents
        that arrive in parts (a long text streamed piece by piece)."""
        self._write(np.asarray(ids, dtype=self.dtype))

    def end_document(self) -> None:
        """Close the document `extend_document` opened. One that received no tokens is not recorded."""
        if self.document_open:
            self.offsets.append(self._written)

    def close(self) -> dict[str, Any]:
        """Flush the token file and write the side arrays; returns counts for the manifest. An open document is
        closed first."""
        assert self._handle is not None
        self.end_document()
        self._handle.flush()
        self._handle.close()
        self._handle = None
        np.save(self.layout.docs(self.split), np.asarray(self.offsets, dtype=np.int64))
        if self.labels:
            np.save(self.layout.labels(self.split), np.asarray(self.labels, dtype=np.int32))
        if self.response_starts:
            np.save(self.layout.response(self.split), np.asarray(self.response_starts, dtype=np.int64))
        return {"tokens": self.n_tokens, "documents": self.n_docs}


class Dataset:
    """A processed dataset opened for reading. Token arrays are read-only memory maps."""

    def __init__(self, root: Path):
        self.layout = DatasetDir(Path(root))
        self.manifest = self.layout.read_manifest()
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"dataset {root} has format version {self.manifest.get('format_version')}, "
                                f"this llmctl reads {FORMAT_VERSION}", hint="run `llmctl preprocess` again")
        self.dtype = np.dtype(self.manifest["dtype"])
        self._check_tokenizer_file()

    def _check_tokenizer_file(self) -> None:
        """The dataset's `tokenizer/tokenizer.json` (copied into every run trained on it, shipped by exports) must
        load and have the manifest's vocabulary size: a damaged one is refused here, not passed on."""
        import json

        from llmctl.data.tokenizers import HF_TOKENIZER_FILE, METADATA_FILE

        hint = "run `llmctl preprocess CONFIG --force` to rebuild the dataset"
        meta = self.layout.tokenizer / METADATA_FILE
        if meta.is_file():
            try:
                data = json.loads(meta.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise ArtifactError(f"{meta} is damaged ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})",
                                    hint=hint) from None
            if not isinstance(data, dict) or "kind" not in data or (
                    data["kind"] in ("char", "word") and not isinstance(data.get("vocab"), list)):
                raise ArtifactError(f"{meta} is damaged (not an llmctl tokenizer)", hint=hint)
        path = self.layout.tokenizer / HF_TOKENIZER_FILE
        if not path.is_file():
            return  # load_tokenizer reports a missing tokenizer when it is needed
        try:
            from tokenizers import Tokenizer as HFTokenizer

            size = HFTokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
        except Exception as exc:  # noqa: BLE001 - the Rust library raises its own exception types
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ArtifactError(f"{path} is not a valid tokenizer file ({problem[:120]})", hint=hint) from None
        expected = (self.manifest.get("tokenizer") or {}).get("vocab_size")
        if expected is not None and size != int(expected):
            raise ArtifactError(f"{path} has {size} tokens but the dataset manifest says {expected}", hint=hint)

    @property
    def root(self) -> Path:
        return self.layout.root

    @property
    def fingerprint(self) -> str:
        return self.manifest["tokenizer"]["fingerprint"]

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    @property
    def task(self) -> str:
        return self.manifest.get("task", "lm")

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest.get("labels", []))

    def splits(self) -> list[str]:
        return [s for s, info in self.manifest["splits"].items() if info.get("tokens", 0) > 0]

    def has(self, split: str) -> bool:
        return split in self.splits()

    def _require(self, split: str) -> None:
        if not self.has(split):
            have = ", ".join(self.splits()) or "none"
            raise ArtifactError(f"dataset {self.root} has no `{split}` split (has: {have})",
                                hint="choose another split or give that split to preprocess")

    def tokens(self, split: str) -> np.ndarray:
        """The split's token stream as a read-only memory map (1-D)."""
        self._require(split)
        path = self.layout.tokens(split)
        expected = int(self.manifest["splits"][split]["tokens"])
        size = path.stat().st_size if path.exists() else -1
        if size != expected * self.dtype.itemsize:
            raise ArtifactError(f"{path} has {size} bytes, manifest says {expected} tokens",
                                hint="the dataset is damaged; run `llmctl preprocess --force`")
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(expected,))

    def doc_offsets(self, split: str) -> np.ndarray:
        """int64 [n_docs + 1]: document i is tokens[off[i]:off[i+1]]."""
        self._require(split)
        return self._side_array(self.layout.docs(split), mmap_mode="r")

    def labels(self, split: str) -> np.ndarray:
        self._require(split)
        path = self.layout.labels(split)
        if not path.exists():
            raise ArtifactError(f"dataset {self.root} has no labels for `{split}` (task={self.task})",
                                hint="preprocess with data.task=classify and a label column")
        return self._side_array(path)

    def response_starts(self, split: str) -> np.ndarray:
        self._require(split)
        path = self.layout.response(split)
        if not path.exists():
            raise ArtifactError(f"dataset {self.root} has no prompt/response boundaries for `{split}`",
                                hint="preprocess with data.task=pairs")
        return self._side_array(path)

    @staticmethod
    def _side_array(path: Path, mmap_mode: str | None = None) -> np.ndarray:
        """A side file (.npy) of the dataset; missing, truncated or not an array is an `ArtifactError`."""
        try:
            array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            detail = " ".join(str(exc).split())[:120]
            raise ArtifactError(f"{path} is damaged ({type(exc).__name__}: {detail})",
                                hint="the dataset is damaged; run `llmctl preprocess --force`") from None
        if not isinstance(array, np.ndarray) or array.ndim != 1:
            raise ArtifactError(f"{path} is damaged (not a 1-D array)",
                                hint="the dataset is damaged; run `llmctl preprocess --force`")
        return array

    def tokenizer(self):
        from llmctl.data.tokenizers import load_tokenizer

        return load_tokenizer(self.layout.tokenizer)

    def matches(self, fingerprint: str | None) -> bool:
        """Whether this dataset was made with `fingerprint` (tokenizer + text normalisation)."""
        return fingerprint is not None and self.fingerprint == fingerprint

    def check_fingerprint(self, expected: str | None, *, what: str, hint: str | None = None) -> None:
        """The one check that this dataset (tokenizer + text normalisation) is the data `what` expects: refuse a
        dataset made with another fingerprint than `expected` (None: nothing recorded, accepted)."""
        if expected is None or self.matches(expected):
            return
        raise ArtifactError(
            f"dataset {self.root} was made with tokenizer {self.fingerprint}, but {what} uses {expected}",
            hint=hint or f"run preprocess with `tokenizer: {{from: <{what} directory>}}`")


def open_dataset(root: Path | str) -> Dataset:
    return Dataset(Path(root))
