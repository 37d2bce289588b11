"""`SplitWriter`: whole documents (`add`, `add_many`) and streamed ones (`extend_document` / `end_document`)."""

from __future__ import annotations

import numpy as np
import pytest

from llmctl.data.dataset import SplitWriter
from llmctl.runs import DatasetDir


def _written(tmp_path, writer: SplitWriter) -> tuple[list[int], list[int]]:
    writer.close()
    layout = DatasetDir(tmp_path)
    tokens = np.fromfile(layout.tokens(writer.split), dtype=writer.dtype).tolist()
    return tokens, np.load(layout.docs(writer.split)).tolist()


def test_add_many_and_streamed_documents(tmp_path):
    writer = SplitWriter(DatasetDir(tmp_path), "train", np.dtype(np.uint16))
    writer.add([7, 8])
    writer.add_many(np.array([1, 2, 3, 4, 5]), [2, 0, 3])  # three documents, one of them empty
    writer.extend_document([9])
    writer.extend_document(np.array([], dtype=np.int64))
    writer.extend_document(np.array([10, 11]))
    assert writer.document_open and writer.n_docs == 4 and writer.n_tokens == 7
    writer.end_document()
    writer.end_document()  # nothing open: no-op
    writer.extend_document([])  # a streamed document without tokens is not recorded
    writer.end_document()
    writer.extend_document([12])  # left open: close() ends it
    tokens, offsets = _written(tmp_path, writer)
    assert tokens == [7, 8, 1, 2, 3, 4, 5, 9, 10, 11, 12]
    assert offsets == [0, 2, 4, 4, 7, 10, 11]


def test_add_many_labels_and_checks(tmp_path):
    writer = SplitWriter(DatasetDir(tmp_path), "train", np.dtype(np.uint16))
    writer.add_many(np.array([1, 2, 3]), np.array([1, 2]), labels=[1, 0])
    writer.add([4], label=1)
    with pytest.raises(ValueError, match="lengths sum to 2, but 3 ids"):
        writer.add_many(np.array([1, 2, 3]), [1, 1])
    with pytest.raises(ValueError, match="1 labels for 2 documents"):
        writer.add_many(np.array([1, 2]), [1, 1], labels=[0])
    writer.extend_document([5])
    with pytest.raises(ValueError, match="a streamed document is open"):
        writer.add([6])
    with pytest.raises(ValueError, match="a streamed document is open"):
        writer.add_many(np.array([6]), [1])
    writer.end_document()
    assert writer.labels == [1, 0, 1]
    tokens, offsets = _written(tmp_path, writer)
    assert tokens == [1, 2, 3, 4, 5] and offsets == [0, 1, 3, 4, 5]
    assert np.load(DatasetDir(tmp_path).labels("train")).tolist() == [1, 0, 1]
