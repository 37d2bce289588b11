"""docs/export_example.py runs on an exported tiny run with plain TensorFlow + LiteRT + tokenizers (llmctl blocked)
and its SavedModel and TFLite continuations are identical."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.export.reference import keras_greedy
from tests.export.tiny_runs import PROMPT

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "export_example.py"
# llmctl is made unimportable before the example starts: it must work from the export folder alone
LAUNCH = "import runpy, sys; sys.modules['llmctl'] = None; sys.argv = sys.argv[1:]; " \
         "runpy.run_path(sys.argv[0], run_name='__main__')"


def _example(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", LAUNCH, str(EXAMPLE), *args, "--json"], capture_output=True,
                          text=True, timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_language_model_continuations_are_identical(lm_export, lm_model, lm_tokenizer):
    got = _example(str(lm_export[0]), "--prompt", PROMPT, "--max-new-tokens", "40")
    ids = got["token_ids"]
    assert ids["saved_model"] == ids["saved_model_generate"] == ids["tflite"]
    assert got["text"]["saved_model"] == got["text"]["tflite"] == PROMPT + lm_tokenizer.decode(ids["tflite"])
    prompt = [3, *lm_tokenizer.encode(PROMPT)]  # the manifest's prompt format: <eos> prompt
    assert got["prompt_ids"] == prompt
    assert ids["tflite"] == keras_greedy(lm_model, prompt, 40)


def test_classifier_labels_are_identical_and_normalised_like_training(classifier_export, classifier_source):
    import numpy as np

    text = "A  WONDERFUL and   moving Story"
    got = _example(str(classifier_export[0]), "--text", text)
    assert got["saved_model"]["label"] == got["tflite"]["label"] == "positive"
    saved, lite = got["saved_model"]["probabilities"], got["tflite"]["probabilities"]
    diff = max(abs(a - b) for a, b in zip(saved, lite, strict=True))
    assert diff < 1e-4
    # llmctl's own path: the run's Normalizer (lowercase, whitespace, English stop words) + tokenizer + Keras model
    source = classifier_source
    ids = source.tokenizer.encode(source.normalizer(text))
    assert source.normalizer(text) == "wonderful moving story"
    logits = np.asarray(source.model(np.asarray([ids], np.int32), training=False))[0]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert max(abs(a - b) for a, b in zip(got["saved_model"]["probabilities"], expected, strict=True)) < 1e-4
