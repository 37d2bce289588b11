"""model.keras is a graph of stock Keras layers: plain Keras (llmctl unimportable) loads it and computes llmctl's
logits; llmctl reads it back into its own models; a file that does not fit the run's model is an artifact error."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from llmctl.tfenv import import_tf

tf = import_tf()

from llmctl.errors import ArtifactError  # noqa: E402
from llmctl.models.classifier import SequenceClassifier  # noqa: E402
from llmctl.models.keras_file import read_model_file, save_model_file  # noqa: E402
from llmctl.models.lstm_lm import LSTMLanguageModel  # noqa: E402

TOL = 1e-5
TOKENS = np.asarray([[3, 7, 9, 12, 5, 4, 1, 2], [5, 9, 11, 2, 0, 0, 0, 0]], dtype=np.int32)
ENCODER = {"vocab_size": 30, "embedding_dim": 8, "num_layers": 2, "units": 6, "embedding_dropout": 0.1,
           "dropout": 0.2, "recurrent_dropout": 0.0}

# llmctl is made unimportable: the files must load with keras / tensorflow alone
PLAIN_KERAS = """
import json, sys
sys.modules["llmctl"] = None
import numpy as np, keras
out = {}
for name, path in json.loads(sys.argv[1]).items():
    model = keras.saving.load_model(path)
    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    out[name] = {"logits": np.asarray(model(np.asarray(json.loads(sys.argv[2]), np.int32))).tolist(),
                 "modules": sorted({type(layer).__module__.split(".")[0] for layer in model.layers}),
                 "cudnn": [(l.activation.__name__, l.recurrent_activation.__name__, l.recurrent_dropout, l.unroll,
                            l.use_bias) for l in lstms]}
assert not any(m == "llmctl" or m.startswith("llmctl.") for m in sys.modules if sys.modules[m] is not None)
print(json.dumps(out))
"""


def _randomise(model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(scale=0.3, size=w.shape).astype(np.float32))


def _lm(**options) -> LSTMLanguageModel:
    model = LSTMLanguageModel(30, embedding_dim=8, num_layers=2, units=6, name="lstm_lm", **options)
    model.build()
    _randomise(model)
    return model


def _classifier(**options) -> SequenceClassifier:
    model = SequenceClassifier(ENCODER, 3, head_dropout=0.1, name="classifier", **options)
    model.build()
    _randomise(model, 1)
    return model


def _normalised_classifier() -> SequenceClassifier:
    model = _classifier(pooling="concat", head_units=4, start_id=3, head_norm="batch")
    for norm in (model.pool_norm, model.hidden_norm):   # variances must stay positive
        norm.moving_variance.assign(np.abs(np.asarray(norm.moving_variance)) + 0.05)
    return model


MODELS = {
    "lm": lambda: _lm(),
    "lm_tied_projection": lambda: _lm(tie_embeddings=True),  # units 6 ≠ embedding 8: a projection
    "lm_one_layer_tied": lambda: LSTMLanguageModel(30, embedding_dim=6, num_layers=1, units=6, tie_embeddings=True),
    "classifier_concat_start": lambda: _classifier(pooling="concat", head_units=4, start_id=3),
    "classifier_last_no_hidden": lambda: _classifier(pooling="last", head_units=0),
    "classifier_bidirectional": lambda: _classifier(pooling="concat", head_units=4, bidirectional=True),
    "classifier_head_norm": _normalised_classifier,
}


def _logits(model) -> np.ndarray:
    out = model(tf.constant(TOKENS), training=False)
    return np.asarray(out[0] if isinstance(out, tuple) else out)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras_files")
    models, paths = {}, {}
    for name, make in MODELS.items():
        models[name] = make()
        if not models[name].built:
            models[name].build()
            _randomise(models[name], 2)
        paths[name] = str(root / f"{name}.keras")
        save_model_file(models[name], paths[name])
    proc = subprocess.run([sys.executable, "-c", PLAIN_KERAS, json.dumps(paths), json.dumps(TOKENS.tolist())],
                          capture_output=True, text=True, timeout=600, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return models, paths, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(MODELS))
def test_plain_keras_loads_the_file_and_reproduces_the_logits(saved, name):
    models, _, plain = saved
    got = np.asarray(plain[name]["logits"], np.float32)
    expected = _logits(models[name])
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) < TOL
    assert plain[name]["modules"] == ["keras"]  # stock layers only


@pytest.mark.parametrize("name", list(MODELS))
def test_the_files_lstm_layers_stay_cudnn_eligible(saved, name):
    for activation, recurrent, recurrent_dropout, unroll, use_bias in saved[2][name]["cudnn"]:
        assert (activation, recurrent, recurrent_dropout, unroll, use_bias) == ("tanh", "sigmoid", 0.0, False, True)


@pytest.mark.parametrize("name", list(MODELS))
def test_llmctl_reads_the_file_back_into_its_own_model(saved, name):
    models, paths, _ = saved
    kind = SequenceClassifier if name.startswith("classifier") else LSTMLanguageModel
    original = models[name]
    fresh = kind.from_config(original.get_config())
    fresh.build()
    loaded = read_model_file(paths[name], lambda: fresh, kind)
    assert loaded is fresh
    assert np.max(np.abs(_logits(loaded) - _logits(original))) < TOL


def test_a_file_for_another_model_is_an_artifact_error(saved):
    _, paths, _ = saved
    other = LSTMLanguageModel(30, embedding_dim=8, num_layers=2, units=7)
    other.build()
    with pytest.raises(ArtifactError, match="does not match the model in the run's config.yaml"):
        read_model_file(paths["lm"], lambda: other, LSTMLanguageModel)
    with pytest.raises(ArtifactError, match="does not match"):
        read_model_file(paths["classifier_concat_start"], lambda: other, LSTMLanguageModel)


def test_files_of_the_registered_classes_still_load(tmp_path):
    import keras

    model = _lm()
    path = tmp_path / "old.keras"
    keras.saving.save_model(model, path)  # what llmctl wrote before model.keras was a stock graph
    loaded = read_model_file(path, lambda: pytest.fail("no rebuild for a registered class"), LSTMLanguageModel)
    assert isinstance(loaded, LSTMLanguageModel)
    assert np.max(np.abs(_logits(loaded) - _logits(model))) < TOL
