"""Which split each part of the train sources goes to, when `data.valid` / `data.test` are not given as files.

* explicit — a split given as files (`data.valid`, `data.test`) is its own group, read as it is; with nothing carved
  (`carved_fractions` empty) every train record stays in train.
* `tail` — for `data.task: lm` the train sources form one character stream (the normalised text of every document,
  in order, nothing inserted between documents). With `N` its length, train is `stream[:int(N * (1 - valid -
  test))]`, valid is `stream[that:int(N * (1 - test))]` and test is the rest. For one text file this is exactly
  `text[:int(len(text) * 0.9)]` / the remaining 10 % for `valid: 0.1`; a document cut by the boundary continues as
  a new document in the next split. For `classify` / `pairs` the tail is taken in whole records:
  the first `int(n * (1 - valid - test))` records train, the next up to `int(n * (1 - test))` valid, the rest test.
* `documents` — `round(n * valid)` and `round(n * test)` documents (at least one each when the fraction is > 0) are
  picked at random with `split.seed`; the others stay in train, in their original order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from llmctl.data import sources as src
from llmctl.errors import DataError
from llmctl.runs import SPLITS

if TYPE_CHECKING:
    from llmctl.data.plan import Plan
    from llmctl.data.records import ScanInfo


def carved_fractions(data: Any) -> dict[str, float]:
    """Split name → fraction carved from the train sources: valid/test not given as files but with a fraction."""
    carve = {}
    if not data.valid and data.split.valid > 0:
        carve["valid"] = data.split.valid
    if not data.test and data.split.test > 0:
        carve["test"] = data.split.test
    return carve


class Router:
    """Sends each part of the train sources' records to train, valid or test (see the module docstring)."""

    def __init__(self, plan: Plan, scan: ScanInfo):
        self.lm = plan.task == "lm"
        carve = plan.carve
        fv, ft = carve.get("valid", 0.0), carve.get("test", 0.0)
        self.mode = "all" if not carve else plan.exp.data.split.mode
        self.pos = 0    # characters routed so far (lm tail)
        self.k = 0      # index of the current bound
        self.doc = 0    # documents routed so far
        self.has_text = False
        if self.mode == "tail":
            total = scan.characters if self.lm else scan.documents
            self.bounds = [(int(total * (1.0 - fv - ft)), "train"), (int(total * (1.0 - ft)), "valid"),
                           (float("inf"), "test")]
            if self.bounds[0][0] <= 0:
                unit = "characters" if self.lm else "records"
                raise DataError(f"data.train: the split leaves no training data ({total} {unit} in total)",
                                hint="add data or lower data.split.valid / data.split.test")
        elif self.mode == "documents":
            n = scan.documents
            n_valid = max(1, round(n * fv)) if fv > 0 else 0
            n_test = max(1, round(n * ft)) if ft > 0 else 0
            if n - n_valid - n_test < 1:
                raise DataError(f"data.train: {n} document(s) are too few to hold out {n_valid} for valid and "
                                f"{n_test} for test", hint="add data, lower data.split.valid / data.split.test, or "
                                                           "use data.split.mode=tail for a single-file corpus")
            order = np.random.default_rng(plan.exp.data.split.seed).permutation(n)
            self.assign = np.zeros(n, dtype=np.uint8)
            self.assign[order[:n_valid]] = 1
            self.assign[order[n_valid:n_valid + n_test]] = 2

    def route(self, rec: src.Record) -> list[tuple[str, src.Record]]:
        if self.mode == "all":
            return [("train", rec)]
        if self.mode == "documents":
            index = min(self.doc, len(self.assign) - 1)
            split = SPLITS[int(self.assign[index])]
            self._count_doc(rec)
            return [(split, rec)]
        if not self.lm:  # tail in whole records
            split = next(name for bound, name in self.bounds if self.doc < bound)
            self._count_doc(rec)
            return [(split, rec)]
        # tail over the character stream: cut the text where it crosses a boundary
        text, start, out = rec.text, 0, []
        while True:
            while self.pos >= self.bounds[self.k][0]:
                self.k += 1
            bound, split = self.bounds[self.k]
            if self.pos + len(text) - start <= bound:
                self.pos += len(text) - start
                out.append((split, rec if start == 0 else src.Record(text=text[start:], end=rec.end)))
                return out
            room = int(bound - self.pos)
            out.append((split, src.Record(text=text[start:start + room], end=False)))
            start += room
            self.pos += room

    def _count_doc(self, rec: src.Record) -> None:
        if rec.text or rec.prompt is not None:
            self.has_text = True
        if rec.end:
            if self.has_text:
                self.doc += 1
            self.has_text = False
