"""Checkpoints: complete state, atomic saves, keep-last, and the inference loader `restore_model`."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from llmctl.tfenv import import_tf

tf = import_tf()

from llmctl.errors import ArtifactError, ResourceError  # noqa: E402
from llmctl.models.lstm_lm import build_language_model  # noqa: E402
from llmctl.runs import RunDir  # noqa: E402
from llmctl.schema import ModelConfig, TrainConfig  # noqa: E402
from llmctl.train import checkpoints as ck  # noqa: E402
from llmctl.train.optimizers import build_optimizer  # noqa: E402

MODEL = ModelConfig(embedding_dim=8, layers=2, units=12, dropout=0.1, recurrent_dropout=0.0)


def _setup(tmp_path, keep_last=2):
    model = build_language_model(MODEL, 30)
    optimizer = build_optimizer(TrainConfig(optimizer="adam", lr=1e-3))
    optimizer.build(model.trainable_variables)
    store = ck.CheckpointStore(tmp_path / "checkpoints", model=model, optimizer=optimizer,
                               carry_shapes=[(4, 12)] * 4, keep_last=keep_last)
    return model, optimizer, store


def _bump(model, value):
    for v in model.trainable_variables:
        v.assign(tf.fill(v.shape, float(value)))


def test_every_lstm_weight_and_rng_state_is_in_the_checkpoint(tmp_path):
    model, optimizer, store = _setup(tmp_path)
    names = ck.model_variable_map(model)
    assert {"lstm_0/lstm_cell/kernel", "lstm_1/lstm_cell/recurrent_kernel", "head/kernel"} <= set(names)
    assert any(k.startswith("rng/") for k in names)  # dropout seed generators
    prefix = store.save("last", step=3, progress={"step": 3}, states=None)
    saved = {name for name, _ in tf.train.list_variables(str(prefix))}
    assert any("lstm_1.Slstm_cell.Skernel" in s for s in saved)
    assert any("optimizer" in s and "momentum" in s for s in saved)


def test_save_and_restore_round_trip_with_progress_and_state(tmp_path):
    model, optimizer, store = _setup(tmp_path)
    _bump(model, 0.5)
    states = [np.full((4, 12), i, np.float32) for i in range(4)]
    store.save("last", step=10, progress={"step": 10, "epoch": 1}, states=states, metrics={"valid_loss": 2.0})
    _bump(model, 0.0)
    progress, restored, prefix = store.restore("last")
    assert progress == {"step": 10, "epoch": 1} and prefix.name == "last-000000010"
    assert all(np.allclose(v, 0.5) for v in model.trainable_variables)
    for a, b in zip(states, restored, strict=True):
        np.testing.assert_array_equal(a, b)


def test_keep_last_prunes_old_checkpoints_and_best_is_kept(tmp_path):
    model, optimizer, store = _setup(tmp_path, keep_last=2)
    for step in (10, 20):
        store.save("last", step=step, progress={"step": step}, states=None)
    store.save("best", step=20, progress={"step": 20}, states=None, metrics={"valid_loss": 1.5})
    store.save("last", step=30, progress={"step": 30}, states=None)
    pointer = store.pointer()
    assert [e["step"] for e in pointer["last"]] == [20, 30] and pointer["best"]["step"] == 20
    files = sorted(p.name.split(".")[0] for p in store.directory.glob("*.index"))
    assert files == ["best-000000020", "last-000000020", "last-000000030"]


def test_disk_full_during_save_is_a_resource_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer, store = _setup(tmp_path)
    _bump(model, 0.25)
    store.save("last", step=10, progress={"step": 10}, states=None)
    before = (store.directory / ck.POINTER).read_text()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.checkpoint, "write", full)
    with pytest.raises(ResourceError) as info:
        store.save("last", step=20, progress={"step": 20}, states=None)
    line = info.value.one_line()
    assert "disk full" in line and "step 10) is intact" in line and "\n" not in line
    assert (store.directory / ck.POINTER).read_text() == before
    assert not [p for p in store.directory.iterdir() if p.name.startswith(".tmp-")]
    monkeypatch.undo()
    _bump(model, 0.0)
    progress, _, prefix = store.restore("last")
    assert progress["step"] == 10 and all(np.allclose(v, 0.25) for v in model.trainable_variables)


def test_a_save_killed_before_the_pointer_update_is_never_used(tmp_path, monkeypatch):
    model, optimizer, store = _setup(tmp_path)
    store.save("last", step=10, progress={"step": 10}, states=None)
    real = ck.atomic.write_json

    def killed(path, data):
        raise KeyboardInterrupt  # the process dies after moving the files, before the pointer switch

    monkeypatch.setattr(ck.atomic, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        store.save("last", step=20, progress={"step": 20}, states=None)
    monkeypatch.setattr(ck.atomic, "write_json", real)
    assert [e["step"] for e in store.pointer()["last"]] == [10]
    progress, _, _ = store.restore("last")
    assert progress["step"] == 10
    store.save("last", step=30, progress={"step": 30}, states=None)  # the orphan files are pruned
    assert not list(store.directory.glob("last-000000020.*"))


def _run_dir(tmp_path, model, store):
    run = RunDir(tmp_path)
    cfg = {"model": json.loads(MODEL.model_dump_json())}
    run.config.write_text(json.dumps(cfg))  # YAML is a superset of JSON
    run.write_info(kind="lm", vocab_size=30)
    return run


def test_restore_model_rebuilds_from_the_run_and_loads_best_last_or_a_path(tmp_path):
    model, optimizer, store = _setup(tmp_path)
    run = _run_dir(tmp_path, model, store)
    _bump(model, 0.1)
    store.save("best", step=5, progress={}, states=None, metrics={"valid_loss": 1.25})
    _bump(model, 0.2)
    store.save("last", step=8, progress={}, states=None)
    best, info = ck.restore_model(run, "best")
    assert info["step"] == 5 and info["valid_loss"] == 1.25 and info["vocab_size"] == 30
    assert all(np.allclose(v, 0.1) for v in best.trainable_variables)
    last, info = ck.restore_model(run, "last")
    assert info["step"] == 8 and all(np.allclose(v, 0.2) for v in last.trainable_variables)
    explicit, info = ck.restore_model(run, str(tmp_path / "checkpoints" / "best-000000005.index"))
    assert all(np.allclose(v, 0.1) for v in explicit.trainable_variables) and info["step"] == 5
    logits, _ = best(tf.constant([[1, 2, 3]]), None)
    assert logits.shape == (1, 3, 30)


def test_restore_model_errors_are_artifact_errors(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        ck.restore_model(RunDir(tmp_path / "nope"))
    model, optimizer, store = _setup(tmp_path)
    run = _run_dir(tmp_path, model, store)
    with pytest.raises(ArtifactError) as info:
        ck.restore_model(run, "best")
    assert "no `best` checkpoint" in info.value.one_line()
    store.save("last", step=1, progress={}, states=None)
    with pytest.raises(ArtifactError, match="not found"):
        ck.restore_model(run, "checkpoints/last-999")
    run.write_info(vocab_size=31)  # another vocabulary: the weights no longer fit
    with pytest.raises(ArtifactError, match="does not match"):
        ck.restore_model(run, "last")


def test_stale_temporaries_are_cleaned_on_open(tmp_path):
    (tmp_path / "checkpoints" / ".tmp-ckpt.abc").mkdir(parents=True)
    _setup(tmp_path)
    assert not os.listdir(tmp_path / "checkpoints")
