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

from llmctl import atomic
from llmctl.errors import ArtifactError
from llmctl.export.plan import MANIFEST, make_plan
from llmctl.progress import Reporter
from llmctl.results import Result

__all__ = ["run"]


def run(exp, *, reporter: Reporter | None = None) -> Result:
    """Export the run named by `exp.run` as `exp.export` asks; returns what was written and the self-checks."""
    reporter = reporter or Reporter("none")
    plan = make_plan(exp)
    started = time.perf_counter()
    reporter.info(f"export: loading {plan.run.root}")

    from llmctl.export import checks as checks_mod
    from llmctl.export import manifest as manifest_mod
    from llmctl.export import modules, saved_model, tflite
    from llmctl.export.source import load_source

    source = load_source(exp)
    model, kind = source.model, source.kind
    artifacts: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    with atomic.directory(plan.out, replace=plan.overwrite) as tmp:
        # byte-identical to the run's tokenizer (its fingerprint was checked by load_source)
        shutil.copytree(plan.run.tokenizer, tmp / "tokenizer", ignore=shutil.ignore_patterns(atomic.TMP_PREFIX + "*"))
        if source.labels is not None:
            atomic.write_json(tmp / "labels.json", source.labels)
        stopwords = manifest_mod.stopwords_text(source.normalizer)
        if stopwords is not None:
            atomic.write_text(tmp / manifest_mod.STOPWORDS_FILE, stopwords)

        if "saved_model" in plan.formats:
            reporter.info("export: writing the SavedModel")
            if kind == "classify":
                module = modules.ClassifierModule(model, max_length=source.max_length)
            else:
                module = modules.LanguageModelModule(model, eos_id=manifest_mod.SPECIAL_TOKENS["eos"],
                                                     pad_id=manifest_mod.SPECIAL_TOKENS["pad"])
            signatures = saved_model.write(module, tmp / "saved_model")
            checks["saved_model"] = (checks_mod.saved_model_classifier(tmp / "saved_model", model, source.max_length)
                                     if kind == "classify" else checks_mod.saved_model_lm(tmp / "saved_model", model))
            artifacts["saved_model"] = {"path": "saved_model", "signatures": signatures,
                                        "bytes": manifest_mod.total_bytes(tmp, "saved_model")}

        if plan.tflite_variants:
            (name, fn), = modules.tflite_functions(model, kind, max_length=source.max_length).items()
            for quantize in plan.tflite_variants:
                suffix = tflite.QUANTIZE_SUFFIX[quantize]
                reporter.info(f"export: converting `{name}` to TFLite ({suffix})")
                content = tflite.convert(fn, name, quantize=quantize, workdir=tmp)
                filename = f"{name}.{suffix}.tflite"
                (tmp / filename).write_bytes(content)
                checks[f"tflite_{suffix}"] = (checks_mod.tflite_classifier(content, model, source.max_length)
                                              if kind == "classify" else checks_mod.tflite_step(content, model))
                artifacts.setdefault("tflite", []).append({
                    "path": filename, "signature": name, "weights": suffix, "batch_size": 1,
                    **({"sequence_length": source.max_length} if kind == "classify" else {}),
                    "io": tflite.signature_io(content)[name], "ops": tflite.model_ops(content),
                    "bytes": len(content)})

        bad = checks_mod.failures(checks)
        if bad:
            raise ArtifactError(f"exported artifacts disagree with the Keras model ({', '.join(bad)})",
                                hint="nothing was written; rerun with --debug and report it")
        manifest = manifest_mod.build(source, folder=tmp, artifacts=artifacts, checks=checks)
        atomic.write_json(tmp / MANIFEST, manifest)

    seconds = time.perf_counter() - started
    values: dict[str, Any] = {"export_dir": str(plan.out), "kind": kind, "checkpoint": source.checkpoint["path"],
                              "seconds": round(seconds, 2)}
    for path, size in manifest["files"].items():
        if path.endswith(".tflite"):
            values[f"{path} bytes"] = size
    if "saved_model" in artifacts:
        values["saved_model bytes"] = artifacts["saved_model"]["bytes"]
    for artifact, numbers in checks.items():
        for key, value in numbers.items():
            values[f"{artifact}.{key}"] = value
    values["manifest"] = manifest
    return Result(title=f"export: {plan.run.root.name} → {plan.out}", values=values,
                  lines=[f"wrote {plan.out} ({', '.join(plan.formats)}); see {plan.out / MANIFEST}"])
