"""Shared fixtures: one tiny trained language-model run and one classifier run, each exported once per session
(TFLite conversion takes seconds), float32 + dynamic-range int8."""

from __future__ import annotations

import pytest

from tests.export.tiny_runs import make_classifier_run, make_lm_run


def export_run(run, *overrides: str):
    """Export `run` (its own saved config + overrides) through the public entry point; returns the Result."""
    import llmctl.export
    from llmctl.config import load
    from llmctl.progress import Reporter

    exp = load(run.root, list(overrides))
    return llmctl.export.run(exp, reporter=Reporter("none"))


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory):
    return make_lm_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def lm_export(lm_run):
    result = export_run(lm_run, "export.quantize=dynamic_int8")
    return lm_run.export, result


@pytest.fixture(scope="session")
def lm_model(lm_run):
    from llmctl.train.checkpoints import restore_model

    model, _ = restore_model(lm_run, "best")
    return model


@pytest.fixture(scope="session")
def lm_tokenizer(lm_run):
    from llmctl.data.tokenizers import load_tokenizer

    return load_tokenizer(lm_run.tokenizer)


@pytest.fixture(scope="session")
def classifier_run(tmp_path_factory):
    return make_classifier_run(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def classifier_export(classifier_run):
    result = export_run(classifier_run, "export.quantize=dynamic_int8")
    return classifier_run.export, result


@pytest.fixture(scope="session")
def classifier_source(classifier_run):
    from llmctl.config import load
    from llmctl.export.source import load_source

    return load_source(load(classifier_run.root))
