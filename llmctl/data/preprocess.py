"""`llmctl preprocess`: sources → normalised documents → tokenizer → memory-mapped token files, manifest and report.

Passes over the inputs (each streams; the corpus is never held in memory):

1. **inspect** (`plan`) — size + sha256 of every source file, refusing empty, binary (NUL) and, under `strict`,
   undecodable files, and checking the columns/fields of table and JSONL files on their first record. The hashes
   and the settings form the *build key*: if the dataset on disk has the same key, the run is a no-op that says so
   (`force` rebuilds).
2. **scan** (`records`) — read and normalise every record: validates fields/columns/labels before anything is
   written and counts documents and characters, which the split (`splits`) needs.
3. **train** (`tokenizer_training`) — train the tokenizer on the train split (skipped with `tokenizer.from`).
4. **encode** (`writing`, with the encoders and worker pool of `encoding`) — encode every document into
   `<split>.tokens` through `SplitWriter`, gathering the report's counts.

A word tokenizer trained here merges 3 and 4 into one pass (`writing.encode_counting`): words are counted while
every token is written as a provisional id, and the ids are rewritten once the vocabulary is built — the same
tokenizer and ids as training then encoding, from half the splitting work.

Everything is written into a temporary sibling of `data.dir` that is renamed into place at the very end
(`atomic.directory`), so a killed run never leaves a directory that `Dataset` accepts; the next run removes such
leftovers. Large corpora use both cores: char encodes with numpy, bpe with the Rust batch encoder's threads, word
in threads with native word stores (`fast_words`, which release the GIL; without them in worker processes),
`data.workers` of them.

How splits are carved from the train sources (`data.split`: tail / documents, or explicit files) is described in
`llmctl.data.splits`; document boundaries (`<eos>`, labels, `pair_template`) in `llmctl.data.writing`.

This module keeps the public helpers other modules import from it: `pair_template`, `dataset_fingerprint` and
`encoder`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from llmctl import __version__, atomic, locks
from llmctl.data import stats as stats_mod
from llmctl.data.dataset import FORMAT_VERSION, Dataset, token_dtype
from llmctl.data.encoding import Workers, encoder, workers_for
from llmctl.data.fast_words import scan as word_scan
from llmctl.data.fast_words.counter import HashCollision
from llmctl.data.meter import Meter
from llmctl.data.plan import PREPROCESS_VERSION, Plan, make_plan
from llmctl.data.records import ScanInfo, labels, scan
from llmctl.data.tokenizer_training import extend, train
from llmctl.data.tokenizers import SPECIAL_TOKENS
from llmctl.data.writing import encode_all, encode_counting, pair_template
from llmctl.errors import ArtifactError, DataError, LlmctlError
from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.runs import DatasetDir

__all__ = ["PREPROCESS_VERSION", "dataset_fingerprint", "encoder", "pair_template", "run"]


def dataset_fingerprint(tokenizer_fingerprint: str, normalize_settings: dict[str, Any]) -> str:
    """What data made with this tokenizer *and* this normalisation is identified by (16 hex digits)."""
    blob = json.dumps({"tokenizer": tokenizer_fingerprint, "normalize": normalize_settings}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------- the command


def _up_to_date(layout: DatasetDir, build_key: str) -> dict[str, Any] | None:
    """The existing manifest if the dataset there was built from the same inputs/settings and is intact."""
    if not layout.exists():
        return None
    try:
        dataset = Dataset(layout.root)
        if dataset.manifest.get("build_key") != build_key or not layout.stats.is_file():
            return None
        for split in dataset.splits():
            dataset.tokens(split)
            if len(dataset.doc_offsets(split)) != dataset.manifest["splits"][split]["documents"] + 1:
                return None
        dataset.tokenizer()
    except (LlmctlError, OSError, ValueError, KeyError):
        return None
    return dataset.manifest


def _usual_permissions(layout: DatasetDir) -> None:
    """Temporary directories and atomic files are created private (0700/0600); a dataset gets the modes the
    user's umask gives ordinary files, so others who may read the folder can use it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(layout.root, 0o777 & ~umask)
    for path in (layout.manifest, layout.stats):
        os.chmod(path, 0o666 & ~umask)


def _check_replaceable(final: Path) -> None:
    """`data.dir` is replaced as a whole: refuse a folder that holds anything but an llmctl dataset."""
    if not final.exists():
        return
    if final.is_dir() and (DatasetDir(final).manifest.is_file() or not any(final.iterdir())):
        return
    what = "a file" if not final.is_dir() else "a folder that is not an llmctl dataset (no manifest.json)"
    raise ArtifactError(f"data.dir {final} is {what}; preprocess replaces data.dir as a whole",
                        hint="point data.dir at a new or empty folder")


def _clean_stale(final: Path) -> None:
    """Remove temporaries a killed earlier run of this dataset left next to it."""
    parent = final.parent
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        if entry.name.startswith(f"{atomic.TMP_PREFIX}{final.name}."):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _summary(manifest: dict[str, Any], final: Path, seconds: float | None, status: str) -> dict[str, Any]:
    tok = manifest["tokenizer"]
    values: dict[str, Any] = {"status": status, "dataset": str(final), "task": manifest["task"],
                              "tokenizer": tok["kind"], "vocab_size": tok["vocab_size"],
                              "fingerprint": tok["fingerprint"]}
    for split, info in manifest["splits"].items():
        values[f"{split} documents"] = info["documents"]
        values[f"{split} tokens"] = info["tokens"]
    if manifest.get("labels"):
        values["labels"] = ", ".join(manifest["labels"])
    if seconds is not None:
        values["seconds"] = f"{seconds:.2f}"
        values["MB/s"] = f"{manifest['source_bytes'] / 1e6 / max(seconds, 1e-9):.1f}"
    values["splits"] = manifest["splits"]
    return values


@locks.scoped  # the run / dataset directory lock is released when the command ends
def run(exp, reporter: Reporter | None = None, force: bool = False) -> Result:
    """Build `exp.data.dir` from the configured sources, or confirm it is up to date (no-op unless `force`)."""
    reporter = reporter or Reporter("none")
    t0 = time.perf_counter()
    final = Path(exp.data.dir)
    _check_replaceable(final)
    plan = make_plan(exp, reporter)
    locks.acquire_replaced(final, "dataset directory")  # one preprocess per data.dir (held until the command ends)
    _clean_stale(final)
    if not force:
        existing = _up_to_date(DatasetDir(final), plan.build_key)
        if existing is not None:
            return Result(title="preprocess: up to date", values=_summary(existing, final, None, "unchanged"),
                          lines=[f"dataset {final} is up to date (inputs and settings unchanged): nothing to do; "
                                 "use --force to rebuild"])
    # word work runs in threads with the native word store; otherwise in one process pool for the word pass (or
    # word encoding with a reused tokenizer), started before the scan so that its start-up overlaps it
    threaded = plan.kind == "word" and word_scan.native is not None
    workers = workers_for(plan.total_bytes, exp.data.workers, threads=threaded)
    threads = workers if threaded else 1
    pool = Workers.start(workers) if workers > 1 and plan.kind == "word" and not threaded else None
    try:
        manifest, report = _build(plan, final, reporter, pool, threads)
    finally:
        if pool is not None:
            pool.stop()
    seconds = time.perf_counter() - t0
    stats_mod.show(reporter, report)
    values = _summary(manifest, final, seconds, "built")
    return Result(title="preprocess", values=values,
                  lines=[f"dataset written to {final} in {values['seconds']} s ({values['MB/s']} MB/s)"])


def _build(plan: Plan, final: Path, reporter: Reporter, pool: Workers | None, threads: int = 1
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    from llmctl import config as config_mod

    exp = plan.exp
    # scan: validate every record and count what the split needs
    scans: dict[str, ScanInfo] = {}
    with Meter(reporter, "scan", plan.total_bytes) as meter:
        for name, group in plan.groups.items():
            scans[name] = scan(plan, group, meter)
    skipped = meter.skipped
    if skipped:
        reporter.warn(f"skipped {skipped} record(s) with undecodable bytes (data.encoding_errors=skip), e.g. "
                      + ", ".join(meter.skipped_where[:3]))
    for name, info in scans.items():
        if info.documents == 0:
            raise DataError(f"data.{name}: no text left after reading {len(plan.groups[name].files)} file(s) "
                            f"({info.filtered} empty record(s) after normalisation, {skipped} skipped)",
                            hint="check the sources, the text field/column and data.normalize")
    label_names = labels(plan, scans)
    label_ids = {name: i for i, name in enumerate(label_names)}

    with atomic.directory(final, replace=True) as tmp:
        layout = DatasetDir(tmp)
        tokenizer, sinks, splits = _tokenize(plan, scans, layout, label_ids, reporter, pool, threads)
        lm = exp.data.task == "lm"
        splits = {name: {**counts, "characters": sinks[name].counts.characters,
                         **({"words": sinks[name].counts.words} if lm else {})} for name, counts in splits.items()}
        if splits["train"]["tokens"] == 0:
            raise DataError("data.train: the training split holds no tokens",
                            hint="add data or lower data.split.valid / data.split.test")
        if tokenizer.vocab_size <= len(SPECIAL_TOKENS):  # every token would be <unk>
            raise DataError(f"the {tokenizer.kind} vocabulary holds no token besides the special ones: "
                            f"tokenizer.min_freq={exp.tokenizer.min_freq} drops every token of data.train",
                            hint="lower tokenizer.min_freq")
        report = stats_mod.report({n: s.counts for n, s in sinks.items()}, tokenizer, label_names,
                                  skipped=skipped, filtered=sum(s.filtered for s in scans.values()), words=lm)
        atomic.write_json(layout.stats, report)
        _warn_label_skew(plan, report, reporter)
        normalize = plan.normalizer.settings()
        manifest = {
            "format_version": FORMAT_VERSION,
            "dtype": token_dtype(tokenizer.vocab_size).name,
            "task": exp.data.task,
            "labels": label_names,
            "splits": splits,
            "tokenizer": {"fingerprint": dataset_fingerprint(tokenizer.fingerprint(), normalize),
                          "tokenizer_fingerprint": tokenizer.fingerprint(), "kind": tokenizer.kind,
                          "vocab_size": tokenizer.vocab_size,
                          "from": str(plan.reuse) if plan.reuse is not None else None,
                          "extended": bool(plan.reuse is not None and exp.tokenizer.extend)},
            "normalize": normalize,
            "documents": {"mode": exp.data.documents,
                          "eos_after_document": {n: g.eos for n, g in plan.groups.items()}},
            "split": {"carved": plan.carve, "mode": exp.data.split.mode if plan.carve else None,
                      "seed": exp.data.split.seed if plan.carve else None},
            "sources": {name: [{"path": str(i.path), "format": f.format, "size": i.size, "sha256": i.sha256}
                               for f, i in zip(g.files, g.infos, strict=True)] for name, g in plan.groups.items()},
            "source_bytes": plan.total_bytes,
            "build_key": plan.build_key,
            "llmctl_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config_mod.to_dict(exp),
        }
        atomic.write_json(layout.manifest, manifest)  # last: a directory with a manifest is complete
        _usual_permissions(layout)
    return manifest, report


def _tokenize(plan: Plan, scans: dict[str, ScanInfo], layout: DatasetDir, label_ids: dict[str, int],
              reporter: Reporter, pool: Workers | None, threads: int = 1):
    """Train (or reuse) the tokenizer and encode every split: `(tokenizer, sinks, manifest counts per split)`. A word
    tokenizer trained here takes the single counting pass (`writing.encode_counting`); the others (and word when
    words cannot be told apart by hash, `HashCollision`) train, then encode."""
    if plan.reused is None and plan.kind == "word":
        try:
            # saves the tokenizer too
            return encode_counting(plan, scans, layout, label_ids, reporter, pool, threads)
        except HashCollision:
            pool = None  # the workers' state is spent: two passes in this process (never needed in practice)
    if plan.reused is not None and plan.exp.tokenizer.extend:
        _warn_normalize_mismatch(plan, reporter)
        tokenizer = extend(plan, scans, reporter)
    elif plan.reused is not None:
        tokenizer = plan.reused
        _warn_normalize_mismatch(plan, reporter)
    else:
        tokenizer = train(plan, scans, reporter)
    tokenizer.save(layout.tokenizer)
    sinks = encode_all(plan, scans, tokenizer, layout.tokenizer, layout, label_ids, reporter, pool, threads)
    return tokenizer, sinks, {name: sink.finish() for name, sink in sinks.items()}


SKEW_TOLERANCE = 0.2  # total variation distance between label distributions that earns a warning


def _warn_label_skew(plan: Plan, report: dict[str, Any], reporter: Reporter) -> None:
    """A `tail` split of labelled records takes the *last* rows: if the file is ordered by label, the carved split's
    labels differ from train's. Warn (naming the fix) when their distributions are far apart."""
    exp = plan.exp
    if exp.data.task != "classify" or not plan.carve or exp.data.split.mode != "tail":
        return
    splits = report.get("splits", {})
    train = splits.get("train", {}).get("labels") or {}
    total = sum(train.values())
    for name in plan.carve:
        labels = splits.get(name, {}).get("labels") or {}
        n = sum(labels.values())
        if not total or not n:
            continue
        distance = 0.5 * sum(abs(train.get(k, 0) / total - labels.get(k, 0) / n) for k in set(train) | set(labels))
        if distance > SKEW_TOLERANCE:
            reporter.warn(f"the {name} split (the last rows of data.train) has other labels than train "
                          f"({_shares(labels, n)} vs {_shares(train, total)}): the file looks ordered by label; "
                          "set data.split.mode=documents for a random split")


def _shares(counts: dict[str, int], total: int) -> str:
    return ", ".join(f"{k} {v / total:.0%}" for k, v in counts.items())


def _warn_normalize_mismatch(plan: Plan, reporter: Reporter) -> None:
    """A reused tokenizer from a dataset normalised differently sees differently shaped text: say so."""
    manifest_path = DatasetDir(plan.reuse.parent).manifest
    if not manifest_path.is_file():
        return
    try:
        theirs = json.loads(manifest_path.read_text(encoding="utf-8")).get("normalize")
    except (OSError, json.JSONDecodeError):
        return
    if theirs is not None and theirs != plan.normalizer.settings():
        reporter.warn(f"tokenizer.from: {plan.reuse.parent} was normalised with {theirs}, this dataset with "
                      f"{plan.normalizer.settings()}; the fingerprints will differ")
