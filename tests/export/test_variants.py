"""Other model shapes and run layouts: tied embeddings with a projection, one layer, a `pairs` run that only has
model.keras (no checkpoints) — exported with both formats and checked against Keras."""

from __future__ import annotations

import numpy as np
import pytest

from tests.export.conftest import export_run
from tests.export.reference import keras_greedy, keras_logits, max_abs_diff
from tests.export.tiny_runs import TEXT, make_lm_run, read_manifest

TOL = 1e-4


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    from llmctl.data.tokenizers import load_tokenizer
    from llmctl.models.checkpoint_io import run_language_model
    from llmctl.models.keras_file import read_model_file
    from llmctl.models.lstm_lm import LSTMLanguageModel

    run = make_lm_run(tmp_path_factory.mktemp("runs"), name="tied_pairs", steps=60, kind="pairs", keras_only=True,
                      model={"tie_embeddings": True, "embedding_dim": 12, "units": 20, "layers": 1})
    export_run(run)
    model = read_model_file(run.model, lambda: run_language_model(run)[0], LSTMLanguageModel)
    return run, model, load_tokenizer(run.tokenizer)


def test_tied_projection_model_exports_with_parity(tied):
    from llmctl.tfenv import import_tf

    tf = import_tf()
    run, model, tokenizer = tied
    assert model.projection is not None and model.head is None
    manifest = read_manifest(run.export)
    assert manifest["kind"] == "pairs" and manifest["source"]["checkpoint"]["path"].endswith("model.keras")
    assert manifest["prompt"] == {"template": "<bos> {prompt} <sep>", "prefix_ids": [2], "suffix_ids": [4],
                                  "empty_prompt_ids": [2, 4], "stop_id": 3}
    assert manifest["state"]["order"] == ["h0", "c0"] and manifest["model"]["tie_embeddings"] is True
    ids = np.asarray([tokenizer.encode(TEXT)[:40]], np.int32)
    ref_logits, _ = keras_logits(model, ids)
    saved = tf.saved_model.load(str(run.export / "saved_model"))
    assert max_abs_diff(saved.signatures["prefill"](token_ids=tf.constant(ids))["logits"], ref_logits) < TOL

    from llmctl.export.tflite import signature_runner

    runner = signature_runner(run.export / "step.float32.tflite", "step")
    state = {n: np.zeros((1, 20), np.float32) for n in ("h0", "c0")}
    worst = 0.0
    for t, token in enumerate(ids[0]):
        out = runner(token_id=np.array([token], np.int32), **state)
        state = {n: out[n] for n in state}
        worst = max(worst, max_abs_diff(out["logits"][0], ref_logits[0, t]))
    assert worst < TOL


def test_pairs_prompt_template_through_generate(tied):
    from llmctl.tfenv import import_tf

    tf = import_tf()
    run, model, tokenizer = tied
    prompt = [2, *tokenizer.encode("The dog"), 4]
    saved = tf.saved_model.load(str(run.export / "saved_model"))
    out = saved.signatures["generate"](
        prompt_ids=tf.constant([prompt]), prompt_lengths=tf.constant([len(prompt)]), max_new_tokens=tf.constant(15),
        temperature=tf.constant(0.0), top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(0, tf.int64))
    got = out["token_ids"].numpy()[0, : int(out["lengths"][0])].tolist()
    assert got == keras_greedy(model, prompt, 15)


def test_bidirectional_classifier_exports_with_parity(tmp_path_factory):
    """The backward stack (`tf.reverse_sequence`) converts to builtin TFLite ops and matches Keras."""
    import keras

    from llmctl.export.tflite import model_ops, signature_runner
    from llmctl.models.classifier import load_classifier
    from llmctl.tfenv import import_tf
    from tests.export.tiny_runs import REVIEWS, make_classifier_run

    tf = import_tf()
    run = make_classifier_run(tmp_path_factory.mktemp("runs"), name="bi", steps=10,
                              finetune={"bidirectional": True, "max_length": 16})
    export_run(run)
    model, _ = load_classifier(run, "best")
    assert model.bidirectional
    path = run.export / "classify.float32.tflite"
    assert not [op for op in model_ops(path.read_bytes()) if op.startswith(("Flex", "CUSTOM"))]
    runner = signature_runner(path, "classify")
    saved = tf.saved_model.load(str(run.export / "saved_model"))
    ids = np.zeros((len(REVIEWS), 16), np.int32)
    for row, n in enumerate(range(2, 2 + len(REVIEWS))):
        ids[row, : min(n, 16)] = np.arange(5, 5 + min(n, 16))
    expected = np.asarray(keras.ops.softmax(model(ids, training=False), axis=-1))
    for row in range(len(REVIEWS)):
        got = runner(token_ids=ids[row:row + 1])["probabilities"]
        assert max_abs_diff(got, expected[row:row + 1]) < TOL
    names = list(saved.signatures)
    assert "classify" in names
