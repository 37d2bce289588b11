"""TFLite: builtin ops only, named signatures, float32 parity with Keras, greedy continuation, int8 variant."""

from __future__ import annotations

import numpy as np
import pytest

from tests.export.reference import keras_greedy, keras_logits, max_abs_diff
from tests.export.tiny_runs import PROMPT, REVIEWS, TEXT

TOL = 1e-4
STATE_NAMES = ["h0", "c0", "h1", "c1"]


def _runner(path, name):
    from llmctl.export.tflite import signature_runner

    return signature_runner(path, name)


def _feed(runner, ids, units):
    state = {n: np.zeros((1, units), np.float32) for n in STATE_NAMES}
    logits = []
    for token in ids:
        out = runner(token_id=np.array([token], np.int32), **state)
        state = {n: out[n] for n in STATE_NAMES}
        logits.append(out["logits"][0])
    return np.stack(logits), state, out


@pytest.mark.parametrize("weights", ["float32", "int8"])
def test_files_use_builtin_ops_only_and_name_their_signature(lm_export, classifier_export, weights):
    from ai_edge_litert.interpreter import Interpreter

    from llmctl.export.tflite import model_ops

    for folder, name in ((lm_export[0], "step"), (classifier_export[0], "classify")):
        path = folder / f"{name}.{weights}.tflite"
        ops = model_ops(path.read_bytes())
        assert ops and not [op for op in ops if op.startswith(("Flex", "CUSTOM"))], ops
        assert list(Interpreter(model_path=str(path)).get_signature_list()) == [name]


def test_step_float32_matches_keras_over_real_text(lm_export, lm_model, lm_tokenizer):
    ids = lm_tokenizer.encode(TEXT)[:80]
    ref_logits, ref_flat = keras_logits(lm_model, np.asarray([ids]))
    logits, state, _ = _feed(_runner(lm_export[0] / "step.float32.tflite", "step"), ids, lm_model.units)
    assert max_abs_diff(logits, ref_logits[0]) < TOL
    for name, ref in zip(STATE_NAMES, ref_flat, strict=True):
        assert max_abs_diff(state[name], ref) < TOL


def test_step_float32_greedy_equals_keras_greedy(lm_export, lm_model, lm_tokenizer):
    prompt = lm_tokenizer.encode(PROMPT)
    runner = _runner(lm_export[0] / "step.float32.tflite", "step")
    _, state, out = _feed(runner, prompt, lm_model.units)
    new = []
    for _ in range(40):
        token = int(np.argmax(out["logits"][0]))
        new.append(token)
        if token == 3:  # <eos>
            break
        out = runner(token_id=np.array([token], np.int32), **state)
        state = {n: out[n] for n in STATE_NAMES}
    assert new == keras_greedy(lm_model, prompt, 40)


def test_int8_is_smaller_and_close(lm_export, lm_model, lm_tokenizer):
    folder = lm_export[0]
    assert (folder / "step.int8.tflite").stat().st_size < (folder / "step.float32.tflite").stat().st_size
    ids = lm_tokenizer.encode(TEXT)[:60]
    ref_logits, _ = keras_logits(lm_model, np.asarray([ids]))
    logits, _, _ = _feed(_runner(folder / "step.int8.tflite", "step"), ids, lm_model.units)
    agreement = np.mean(np.argmax(logits, -1) == np.argmax(ref_logits[0], -1))

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    # int8 weights are an approximation: next-token probabilities within a few points, same top-1 almost always
    assert max_abs_diff(softmax(logits), softmax(ref_logits[0])) < 0.06 and agreement >= 0.9


def test_classifier_float32_matches_keras(classifier_export, classifier_source):
    from llmctl.export import graphs

    model, tokenizer, width = classifier_source.model, classifier_source.tokenizer, classifier_source.max_length
    runner = _runner(classifier_export[0] / "classify.float32.tflite", "classify")
    texts = [text for text, _ in REVIEWS] + ["a moving and wonderful plot that never gets dull or weak at all"]
    for text in texts:
        ids = np.zeros((1, width), np.int32)
        encoded = tokenizer.encode(text)[:width]
        ids[0, : len(encoded)] = encoded
        expected, _ = graphs.classify(model, ids, width)
        keras_probs = np.asarray(__import__("keras").ops.softmax(model(ids, training=False), axis=-1))
        got = runner(token_ids=ids)["probabilities"]
        assert max_abs_diff(got, keras_probs) < TOL and max_abs_diff(expected, keras_probs) < TOL


def test_conversion_needing_flex_ops_is_a_one_line_error(tmp_path):
    from llmctl.errors import ArtifactError
    from llmctl.export.tflite import convert
    from llmctl.tfenv import import_tf

    tf = import_tf()

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
    def needs_flex(x):
        return {"y": tf.linalg.svd(tf.matmul(x, x, transpose_a=True), compute_uv=False)}

    with pytest.raises(ArtifactError) as info:
        convert(needs_flex, "odd", quantize="none", workdir=tmp_path)
    line = info.value.one_line()
    assert "\n" not in line and "Svd" in line and "export.formats=[saved_model]" in line
    assert list(tmp_path.iterdir()) == []
