"""Normalised records of a source group, the scan pass over them, and the label set of a classification corpus.

The scan pass reads and normalises every record before anything is written: it validates fields, columns and
labels, and counts the documents and characters the split needs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from llmctl.data import sources as src
from llmctl.data.source_reading import read_records
from llmctl.errors import DataError

if TYPE_CHECKING:
    from llmctl.data.meter import Meter
    from llmctl.data.plan import Group, Plan


@dataclass
class ScanInfo:
    """What the scan pass learns about one group."""

    documents: int = 0
    characters: int = 0
    filtered: int = 0
    labels: Counter = field(default_factory=Counter)


def records(plan: Plan, group: Group, counter: src.ReadCounter, scan: ScanInfo | None = None
            ) -> Iterator[src.Record]:
    """Normalised records of a group. Empty documents are dropped (counted in `scan.filtered`); a streamed text
    document yields its non-empty pieces and always a final record with `end=True`."""
    norm = None if plan.normalizer.identity else plan.normalizer
    task = plan.task
    for spec, info in zip(group.files, group.infos, strict=True):
        whole = spec.format != "text" or plan.opts.documents == "line"  # records are whole documents
        for rec in read_records(spec, plan.opts, counter, info=info):
            if task == "pairs":
                if norm:
                    rec = src.Record(prompt=norm(rec.prompt), response=norm(rec.response))
                if not rec.response or rec.response.isspace():
                    if scan is not None:
                        scan.filtered += 1
                    continue
                yield rec
                continue
            if norm:
                rec = src.Record(norm(rec.text), rec.label, end=rec.end)
            if not rec.end:  # a piece of a streamed document
                if rec.text:
                    yield rec
                continue
            if whole and (not rec.text or rec.text.isspace()):
                if scan is not None:
                    scan.filtered += 1
                continue
            if task == "classify":
                label = rec.label.strip()
                if not label:
                    raise DataError(f"{spec.path}: a record has an empty label (text: {rec.text[:40]!r})",
                                    hint="give every record a label or remove it")
                if label != rec.label:
                    rec = src.Record(rec.text, label)
            yield rec


def scan(plan: Plan, group: Group, meter: Meter) -> ScanInfo:
    """The scan pass over one group."""
    info = ScanInfo()
    counter = src.ReadCounter()
    open_doc = False
    pairs = plan.task == "pairs"
    for rec in records(plan, group, counter, info):
        meter.update(counter.bytes_read)
        if pairs:
            info.characters += len(rec.prompt) + len(rec.response)
            info.documents += 1
            continue
        info.characters += len(rec.text)
        if rec.text:
            open_doc = True
        if rec.end:
            if open_doc:
                info.documents += 1
            open_doc = False
            if rec.label is not None:
                info.labels[rec.label] += 1
    meter.done(counter.bytes_read)
    meter.skipped += counter.skipped
    meter.skipped_where.extend(counter.skipped_where)
    return info


def label_order(names) -> list[str]:
    """Labels sorted, numerically when they all are numbers."""
    names = list(names)
    try:
        return sorted(names, key=lambda n: (float(n), n))
    except ValueError:
        return sorted(names)


def labels(plan: Plan, scans: dict[str, ScanInfo]) -> list[str]:
    """The label names of a classification corpus (empty for other tasks), checked: at least two classes in train,
    no label in valid/test that train lacks."""
    if plan.task != "classify":
        return []
    train = scans["train"].labels
    column = plan.groups["train"].files[0].columns["label"]
    if len(train) < 2:
        only = next(iter(train), "?")
        raise DataError(f"data.train: the label column `{column}` has a single class ({only!r}) in "
                        f"{scans['train'].documents} records",
                        hint="classification needs at least two classes: check the label column and the data")
    names = label_order(train)
    for split in ("valid", "test"):
        if split in scans:
            unseen = sorted(set(scans[split].labels) - set(train))
            if unseen:
                files = ", ".join(str(f.path) for f in plan.groups[split].files[:3])
                raise DataError(f"data.{split} ({files}): label {unseen[0]!r} does not occur in the training data "
                                f"(train labels: {', '.join(names)})",
                                hint="fix the label, or add training examples with it")
    return names
