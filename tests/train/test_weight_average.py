"""Polyak averaging of the weights (`finetune.average_decay`): the update rule, the swap, and exact resume."""

import numpy as np
import pytest

from llmctl.tfenv import import_tf
from llmctl.train.weight_average import WeightAverage

tf = import_tf()


def test_average_follows_the_warm_up_decay_then_the_set_decay():
    w = tf.Variable([1.0, 2.0])
    avg = WeightAverage([w], decay=0.5)
    expected = np.array([1.0, 2.0])
    for n, value in enumerate([3.0, 5.0, -1.0], start=1):
        w.assign([value, value])
        avg.apply()
        d = min(0.5, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * value
        assert np.allclose(avg.shadow[0].numpy(), expected)
    assert int(avg.updates.numpy()) == 3


def test_swapped_shows_the_average_then_restores_the_raw_weights():
    w = tf.Variable([4.0])
    avg = WeightAverage([w], decay=0.9)
    w.assign([10.0])
    avg.apply()
    with avg.swapped():
        inside = w.numpy().copy()
    assert np.allclose(inside, 4.0 + (10.0 - 4.0) * (1 - min(0.9, 2 / 11)))
    assert np.allclose(w.numpy(), [10.0])


def test_decay_must_be_a_fraction():
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage([tf.Variable(1.0)], decay=1.0)


def test_classify_with_averaging_saves_the_average_and_resumes_exactly(tmp_path):
    from test_finetune import CLASSIFY, experiment, write_sentiment

    from llmctl.data import preprocess
    from llmctl.models.classifier import load_classifier
    from llmctl.runs import RunDir
    from llmctl.train import finetune

    write_sentiment(tmp_path)
    plain = CLASSIFY.format(run="plain", data="clf")
    text = CLASSIFY.format(run="avg", data="clf").replace("head_dropout: 0.0}", "head_dropout: 0.0, "
                                                          "average_decay: 0.9}")
    exp = experiment(tmp_path, text, overrides=["train.epochs=3"])
    preprocess.run(exp)
    full = finetune.run(exp)
    assert full.values["valid_accuracy"] >= 0.9
    averaged = load_classifier(RunDir.of(exp), "last")[0].get_weights()

    # resumed after epoch 1: the same averaged weights at the end
    again = experiment(tmp_path, text.replace("name: avg", "name: avg2"), "again.yaml", overrides=["train.epochs=1"])
    finetune.run(again)
    resumed = experiment(tmp_path, text.replace("name: avg", "name: avg2"), "again.yaml",
                         overrides=["train.epochs=3", "run.resume=always"])
    second = finetune.run(resumed)
    assert second.values["steps"] == full.values["steps"]
    for a, b in zip(averaged, load_classifier(RunDir.of(resumed), "last")[0].get_weights(), strict=True):
        assert np.allclose(a, b, atol=1e-6)

    # averaging does not change training, only what is saved: the raw run ends elsewhere
    raw = experiment(tmp_path, plain, "plain.yaml", overrides=["train.epochs=3"])
    finetune.run(raw)
    raw_weights = load_classifier(RunDir.of(raw), "last")[0].get_weights()
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(averaged, raw_weights, strict=True))
