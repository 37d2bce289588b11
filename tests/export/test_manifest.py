"""manifest.json: what a deployment needs, consistent with the files and the run it came from."""

from __future__ import annotations

import json

from tests.export.tiny_runs import LABELS, read_manifest


def test_language_model_manifest(lm_export, lm_run, lm_tokenizer):
    folder, result = lm_export
    manifest = read_manifest(folder)
    assert manifest["format"] == "llmctl-export" and manifest["kind"] == "lm"
    assert manifest["llmctl_version"] == __import__("llmctl").__version__
    assert manifest["tokenizer"]["fingerprint"] == lm_tokenizer.fingerprint()
    assert manifest["tokenizer"]["run_fingerprint"] == json.loads(lm_run.info.read_text())["tokenizer_fingerprint"]
    assert manifest["tokenizer"]["vocab_size"] == lm_tokenizer.vocab_size == manifest["model"]["vocab_size"]
    assert manifest["special_tokens"] == {"pad": 0, "unk": 1, "bos": 2, "eos": 3, "sep": 4}
    # conditioned like `llmctl generate`: documents ended with <eos>, so a prompt starts after <eos>
    assert manifest["prompt"] == {"template": "<eos> {prompt}", "prefix_ids": [3], "suffix_ids": [],
                                  "empty_prompt_ids": [3], "stop_id": 3}
    assert manifest["normalize"]["stopwords"] is None and not (folder / "stopwords.txt").exists()
    assert manifest["state"]["order"] == ["h0", "c0", "h1", "c1"] and manifest["state"]["units"] == 24
    assert manifest["model"]["layers"] == 2 and manifest["model"]["embedding_dim"] == 16
    summary = json.loads(lm_run.summary.read_text())
    assert manifest["metrics"]["best_valid_loss"] == summary["best_valid_loss"]
    assert "devices.cpus" not in manifest["metrics"]
    assert manifest["source"]["checkpoint"]["which"] == "best"
    # every file is listed with its real size; the tokenizer travels with the model
    listed = manifest["files"]
    actual = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*")
              if p.is_file() and p.name != "manifest.json"}
    assert listed == actual
    assert "tokenizer/tokenizer.json" in listed and "step.float32.tflite" in listed and "step.int8.tflite" in listed
    sigs = manifest["artifacts"]["saved_model"]["signatures"]
    assert sigs["step"]["inputs"]["token_id"] == {"shape": [None], "dtype": "int32"}
    assert sigs["prefill"]["outputs"]["logits"]["shape"] == [None, None, lm_tokenizer.vocab_size]
    assert set(sigs["generate"]["inputs"]) == {"prompt_ids", "prompt_lengths", "max_new_tokens", "temperature",
                                               "top_k", "top_p", "seed"}
    tfl = {t["weights"]: t for t in manifest["artifacts"]["tflite"]}
    assert tfl["float32"]["io"]["inputs"]["h0"] == {"shape": [1, 24], "dtype": "float32"}
    assert tfl["int8"]["bytes"] == listed["step.int8.tflite"]
    assert manifest["checks"]["tflite_float32"]["max_abs_diff"] < 1e-4
    assert manifest["checks"]["saved_model"]["prefill_max_abs_diff"] < 1e-4
    assert result.values["kind"] == "lm" and result.values["export_dir"] == str(folder)


def test_classifier_manifest(classifier_export):
    folder, _ = classifier_export
    manifest = read_manifest(folder)
    assert manifest["kind"] == "classify" and manifest["labels"] == LABELS
    assert json.loads((folder / "labels.json").read_text()) == LABELS
    assert manifest["max_length"] == 24 and manifest["model"]["num_classes"] == 2
    assert set(manifest["artifacts"]["saved_model"]["signatures"]) == {"classify"}
    assert manifest["normalize"] == {"nfkc": False, "lowercase": True, "collapse_whitespace": True,
                                     "stopwords": "stopwords.txt",
                                     "order": ["nfkc", "lowercase", "collapse_whitespace", "stopwords"]}
    words = (folder / "stopwords.txt").read_text().split()
    assert "the" in words and "not" not in words and words == sorted(words)
    assert "prompt" not in manifest
    tfl = manifest["artifacts"]["tflite"][0]
    assert tfl["signature"] == "classify" and tfl["sequence_length"] == 24
    assert tfl["io"]["inputs"]["token_ids"] == {"shape": [1, 24], "dtype": "int32"}
