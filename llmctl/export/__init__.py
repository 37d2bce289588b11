"""`llmctl export`: deployable artifacts of a trained run — SavedModel, TFLite, tokenizer and manifest.

    result = run(exp, reporter=reporter)

Layout of the export folder (default `<run>/export`, see docs/artifacts.md)::

    manifest.json             tokenizer fingerprint, special ids, model config, state layout, labels, metrics,
                              signatures, self-check results, file sizes
    tokenizer/                tokenizer.json (loads with the HF `tokenizers` library) + llmctl_tokenizer.json
    labels.json               classifiers: label names in class-id order
    stopwords.txt             only when the run removes stop words (data.normalize.stopwords)
    saved_model/              signatures prefill / step / generate (language models) or classify (classifiers)
    step.float32.tflite       language models: one step at batch 1, signature `step`
    step.int8.tflite          ... with dynamic-range int8 weights (export.quantize=dynamic_int8)
    classify.float32.tflite   classifiers: batch 1 × max_length tokens, signature `classify` (+ .int8 variant)

The folder is built under a temporary name and renamed into place only after every artifact was loaded back and
matched the Keras model (`llmctl.export.checks`); a failed or interrupted export leaves the previous one untouched.
Importing this package does not import TensorFlow; `run` does.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from llmctl import atomic, locks
from llmctl.errors import ArtifactError
from llmctl.export.plan import MANIFEST, make_plan
from llmctl.progress import Reporter
from llmctl.results import Result

__all__ = ["run"]


@locks.scoped  # the run / dataset directory lock is released when the command ends
def run(exp, *, reporter: Reporter | None = None) -> Result:
    """Export the run named by `exp.run` as `exp.export` asks; returns what was written and the self-checks."""
    reporter = reporter or Reporter("none")
    plan = make_plan(exp)
    plan.run.require_model()  # before the lock file is made beside the export folder (inside the run by default)
    locks.acquire_replaced(plan.out, "export directory")  # one export into a folder at a time (until the end)
    atomic.clean_stale_siblings(plan.out)  # what an interrupted export left: .tmp-<name>.* beside it
    started = time.perf_counter()
    reporter.info(f"export: loading {plan.run.root}")

    from llmctl.export import checks as checks_mod
    from llmctl.export import manifest as manifest_mod
    from llmctl.export.source import load_source

    source = load_source(exp)
    artifacts: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    with atomic.directory(plan.out, replace=plan.overwrite) as tmp:
        _write_side_files(tmp, source)
        if "saved_model" in plan.formats:
            reporter.info("export: writing the SavedModel")
            artifacts["saved_model"], checks["saved_model"] = _write_saved_model(tmp, source)
        for quantize in plan.tflite_variants:
            artifact, checks[f"tflite_{_weights(quantize)}"] = _write_tflite(tmp, source, quantize, reporter)
            artifacts.setdefault("tflite", []).append(artifact)
        bad = checks_mod.failures(checks)
        if bad:
            raise ArtifactError(f"exported artifacts disagree with the Keras model ({', '.join(bad)})",
                                hint="nothing was written; rerun with --debug and report it")
        manifest = manifest_mod.build(source, folder=tmp, artifacts=artifacts, checks=checks)
        atomic.write_json(tmp / MANIFEST, manifest)
    return _result(plan, source, manifest, time.perf_counter() - started)


def _weights(quantize: str) -> str:
    from llmctl.export.tflite import QUANTIZE_SUFFIX

    return QUANTIZE_SUFFIX[quantize]


def _write_side_files(tmp, source) -> None:
    """tokenizer/ (byte-identical to the run's; its fingerprint was checked), labels.json, stopwords.txt."""
    from llmctl.export import manifest as manifest_mod

    shutil.copytree(source.run.tokenizer, tmp / "tokenizer", ignore=shutil.ignore_patterns(atomic.TMP_PREFIX + "*"))
    if source.labels is not None:
        atomic.write_json(tmp / "labels.json", source.labels)
    stopwords = manifest_mod.stopwords_text(source.normalizer)
    if stopwords is not None:
        atomic.write_text(tmp / manifest_mod.STOPWORDS_FILE, stopwords)


def _write_saved_model(tmp, source) -> tuple[dict[str, Any], dict[str, Any]]:
    from llmctl.data.tokenizers import EOS_ID, PAD_ID
    from llmctl.export import checks, modules, saved_model
    from llmctl.export.manifest import total_bytes

    path = tmp / "saved_model"
    if source.kind == "classify":
        from llmctl.data.doc_batches import length_cap

        # any input length: a whole-document run (finetune.max_length null) reads every token, as in training
        cap = length_cap(source.exp.finetune.max_length)
        signatures = saved_model.write(modules.ClassifierModule(source.model, max_length=cap), path)
        check = checks.saved_model_classifier(path, source.model, source.max_length)
    else:
        signatures = saved_model.write(modules.LanguageModelModule(source.model, eos_id=EOS_ID, pad_id=PAD_ID), path)
        check = checks.saved_model_lm(path, source.model)
    return {"path": path.name, "signatures": signatures, "bytes": total_bytes(tmp, path.name)}, check


def _write_tflite(tmp, source, quantize: str, reporter: Reporter) -> tuple[dict[str, Any], dict[str, Any]]:
    from llmctl.export import checks, modules, tflite

    (name, fn), = modules.tflite_functions(source.model, source.kind, max_length=source.max_length).items()
    weights = _weights(quantize)
    reporter.info(f"export: converting `{name}` to TFLite ({weights})")
    content = tflite.convert(fn, name, quantize=quantize, workdir=tmp)
    filename = f"{name}.{weights}.tflite"
    (tmp / filename).write_bytes(content)  # inside the temporary export folder, renamed as a whole
    if source.kind == "classify":
        check = checks.tflite_classifier(content, source.model, source.max_length)
    else:
        check = checks.tflite_step(content, source.model)
    artifact = {"path": filename, "signature": name, "weights": weights, "batch_size": 1,
                **({"sequence_length": source.max_length} if source.kind == "classify" else {}),
                "io": tflite.signature_io(content)[name], "ops": tflite.model_ops(content), "bytes": len(content)}
    return artifact, check


def _result(plan, source, manifest: dict[str, Any], seconds: float) -> Result:
    values: dict[str, Any] = {"export_dir": str(plan.out), "kind": source.kind,
                              "checkpoint": source.checkpoint["path"], "seconds": round(seconds, 2)}
    for path, size in manifest["files"].items():
        if path.endswith(".tflite"):
            values[f"{path} bytes"] = size
    if "saved_model" in manifest["artifacts"]:
        values["saved_model bytes"] = manifest["artifacts"]["saved_model"]["bytes"]
    for artifact, numbers in manifest["checks"].items():
        for key, value in numbers.items():
            values[f"{artifact}.{key}"] = value
    values["manifest"] = manifest
    return Result(title=f"export: {plan.run.root.name} → {plan.out}", values=values,
                  lines=[f"wrote {plan.out} ({', '.join(plan.formats)}); see {plan.out / MANIFEST}"])
