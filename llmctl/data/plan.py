"""The plan of a preprocess run: which sources form which split, how they are read and normalised, the tokenizer
to reuse, and the *build key* — the hash of everything the dataset depends on (the inspect pass)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.data import sources as src
from llmctl.data.dataset import FORMAT_VERSION
from llmctl.data.meter import Meter
from llmctl.data.normalize import Normalizer
from llmctl.data.source_decoding import FileInfo, decode_error, inspect_file
from llmctl.data.source_reading import read_records
from llmctl.data.splits import carved_fractions
from llmctl.data.tokenizers import METADATA_FILE, load_tokenizer
from llmctl.errors import ArtifactError, ConfigError, DataError
from llmctl.progress import Reporter
from llmctl.runs import SPLITS, DatasetDir, RunDir

# bumped when preprocess's output for the same inputs and settings changes, so old datasets rebuild
PREPROCESS_VERSION = 2  # 2: the manifest records each language-model split's words


@dataclass
class Group:
    """The sources of one config list (`data.train`, `data.valid` or `data.test`)."""

    name: str
    files: list[src.FileSpec]
    infos: list[FileInfo]
    eos: bool = True

    @property
    def bytes(self) -> int:
        return sum(i.size for i in self.infos)


@dataclass
class Plan:
    exp: Any
    opts: src.ReadOptions
    normalizer: Normalizer
    groups: dict[str, Group]
    carve: dict[str, float]          # split name → fraction carved from the train sources
    build_key: str = ""
    reuse: Path | None = None        # tokenizer directory to reuse (`tokenizer.from`)
    reused: Any = None               # ... and the tokenizer loaded from it

    @property
    def kind(self) -> str:
        return self.reused.kind if self.reused is not None else self.exp.tokenizer.kind

    @property
    def task(self) -> str:
        return self.exp.data.task

    @property
    def total_bytes(self) -> int:
        return sum(g.bytes for g in self.groups.values())

    def splits(self) -> list[str]:
        return [s for s in SPLITS if s in self.groups or s in self.carve]


def make_plan(exp, reporter: Reporter) -> Plan:
    """Validate the data settings, expand the sources and inspect every file (size, sha256, first record)."""
    data = exp.data
    opts = src.ReadOptions.of(data)
    normalizer = Normalizer(data.normalize)
    if data.normalize.stopwords and data.task != "classify":
        raise ConfigError(f"data.normalize.stopwords removes words a {data.task} model has to produce",
                          hint="use stop words with data.task=classify only, or set data.normalize.stopwords=null")
    if not data.train:
        raise ConfigError("data.train is empty: no training sources", hint="list files, directories or globs "
                                                                            "under data.train")
    dataset_root = Path(data.dir).resolve()
    found: dict[str, list[src.FileSpec]] = {}
    for name in SPLITS:
        files = [f for i, source in enumerate(getattr(data, name))
                 for f in src.expand(source, data, f"data.{name}[{i}]") if dataset_root not in f.path.resolve().parents]
        if getattr(data, name) and not files:
            raise DataError(f"data.{name}: no input files (only files inside data.dir {data.dir} matched)",
                            hint="point the sources at your corpus, not at the processed dataset")
        if files:
            found[name] = files
    groups: dict[str, Group] = {}
    total = sum(f.path.stat().st_size for files in found.values() for f in files)
    with Meter(reporter, "inspect", total) as meter:
        for name, files in found.items():
            infos = []
            for spec in files:
                counter = src.ReadCounter()
                infos.append(inspect_file(spec.path, opts.encoding, counter))
                meter.done(counter.bytes_read)
                meter.update(0)
                if opts.errors == "strict" and infos[-1].bad_offset is not None:
                    raise decode_error(spec.path, opts.encoding, infos[-1].bad_offset)
                if spec.format != "text":  # columns/fields are checked on the first record, before long passes
                    next(read_records(spec, opts, info=infos[-1]), None)
            single_stream = (data.task == "lm" and data.documents == "file" and len(files) == 1
                             and files[0].format == "text")
            groups[name] = Group(name=name, files=files, infos=infos, eos=not single_stream)
    plan = Plan(exp=exp, opts=opts, normalizer=normalizer, groups=groups, carve=carved_fractions(data))
    if exp.tokenizer.from_ is not None:
        plan.reuse = find_tokenizer(Path(exp.tokenizer.from_))
        plan.reused = load_reused(plan.reuse)
        if exp.tokenizer.extend and plan.reused.kind not in ("char", "word", "whitespace"):
            raise ConfigError(f"tokenizer.extend: the tokenizer in {plan.reuse} is `{plan.reused.kind}`; only char, "
                              "word and whitespace tokenizers can be extended",
                              hint="set tokenizer.extend=false (BPE spells new words with its subwords)")
    plan.build_key = build_key(plan)
    return plan


def find_tokenizer(path: Path) -> Path:
    """The tokenizer folder of a dataset directory, a run directory, or a tokenizer folder itself."""
    for candidate in (DatasetDir(path).tokenizer, RunDir(path).tokenizer, path):
        if (candidate / METADATA_FILE).is_file():
            return candidate
    raise ArtifactError(f"tokenizer.from: no tokenizer found in {path} (looked for {path}/tokenizer/)",
                        hint="point it at a dataset directory made by `llmctl preprocess` or at a run directory")


def load_reused(folder: Path):
    try:
        return load_tokenizer(folder)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"tokenizer.from: cannot load the tokenizer in {folder}: {exc}",
                            hint="re-create it with `llmctl preprocess`") from None


def build_key(plan: Plan) -> str:
    """Hash of everything the dataset depends on: source contents, reading/normalising/splitting settings and the
    tokenizer (its settings, or the fingerprint of the reused one)."""
    exp, data = plan.exp, plan.exp.data
    tok = exp.tokenizer
    if plan.reused is not None:
        tokenizer: dict[str, Any] = {"from": plan.reused.fingerprint()}
        if tok.extend:
            tokenizer.update(extend=True, min_freq=tok.min_freq, max_vocab=tok.max_vocab)
    else:
        tokenizer = {"kind": tok.kind, "vocab_size": tok.vocab_size if tok.kind == "bpe" else None,
                     "min_freq": tok.min_freq, "max_vocab": tok.max_vocab if tok.kind != "bpe" else None}
        if tok.kind == "whitespace":
            tokenizer["unk_token"] = tok.unk_token
    key = {
        "preprocess_version": PREPROCESS_VERSION, "format_version": FORMAT_VERSION,
        "task": data.task, "documents": data.documents, "encoding": plan.opts.encoding, "errors": data.encoding_errors,
        "normalize": plan.normalizer.settings(), "tokenizer": tokenizer,
        "split": {"carve": plan.carve, "mode": data.split.mode,
                  "seed": data.split.seed if data.split.mode == "documents" else None} if plan.carve else None,
        "sources": {name: [{"path": str(f.path), "format": f.format, "size": i.size, "sha256": i.sha256,
                            "columns": {role: f.columns[role] for role in src.ROLES_BY_TASK[data.task]}}
                           for f, i in zip(g.files, g.infos, strict=True)] for name, g in plan.groups.items()},
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
