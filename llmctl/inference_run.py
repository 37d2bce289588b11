"""A trained run opened for inference (`evaluate`, `generate`): checked, with its own config, tokenizer and model.

    opened = open_run(exp)                        # ArtifactError (one line) for anything missing or inconsistent
    model, checkpoint = load_language_model(opened, "best")

Everything comes from the run directory itself — the saved config.yaml (model shape, `data.normalize`), tokenizer/
and run.json — so a run can be evaluated or sampled after its dataset is gone. run.json's `tokenizer_fingerprint`
is the fingerprint of the data the run was trained on: tokenizer + normalisation
(`llmctl.data.preprocess.dataset_fingerprint`); a bare tokenizer fingerprint is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmctl.errors import ArtifactError
from llmctl.runs import RunDir


@dataclass
class InferenceRun:
    run: RunDir
    info: dict[str, Any]
    kind: str                 # lm | classify | pairs
    exp: Any                  # the run's own Experiment (its saved config.yaml)
    tokenizer: Any
    normalizer: Any           # llmctl.data.normalize.Normalizer of the run's data.normalize
    fingerprint: str          # data fingerprint the run was trained with (tokenizer + normalisation)


def open_run(exp) -> InferenceRun:
    """The run `exp.run.dir/exp.run.name`, which must hold a trained model, a config, a tokenizer and run.json."""
    from llmctl.config_validation import validate
    from llmctl.data.normalize import Normalizer
    from llmctl.data.preprocess import dataset_fingerprint
    from llmctl.data.tokenizers.checked import load_checked_tokenizer

    run = RunDir.of(exp)
    run.require_model()
    info = run.read_info()
    kind = info.get("kind", "lm")
    if not run.config.is_file():
        raise ArtifactError(f"{run.root} has no config.yaml", hint="pass a run directory made by llmctl")
    saved = validate(run.saved_config(), source=str(run.config))
    tokenizer = load_checked_tokenizer(run.tokenizer, run.root)
    normalizer = Normalizer(saved.data.normalize)
    combined = dataset_fingerprint(tokenizer.fingerprint(), normalizer.settings())
    recorded = info.get("tokenizer_fingerprint") or combined
    if recorded not in (combined, tokenizer.fingerprint()):
        raise ArtifactError(f"{run.tokenizer} (fingerprint {combined} with the config's data.normalize) does not "
                            f"match {recorded} recorded in {run.info}",
                            hint="restore the run's own tokenizer/ and config.yaml, or train the run again")
    return InferenceRun(run=run, info=info, kind=kind, exp=saved, tokenizer=tokenizer, normalizer=normalizer,
                        fingerprint=recorded)


def _has_checkpoint(run: RunDir) -> bool:
    from llmctl.models.checkpoint_io import read_pointer

    pointer = read_pointer(run.checkpoints) if run.checkpoints.is_dir() else {}
    return bool(pointer.get("best") or pointer.get("last"))


def load_language_model(opened: InferenceRun, which: str = "best"):
    """(model, checkpoint details) for checkpoint `which`: `best`, `last` or a checkpoint path.

    A run without checkpoints but with model.keras (which holds the best weights) is loaded from that file when
    `which` is `best`. Details: which, path, step, valid_loss.
    """
    run = opened.run
    if _has_checkpoint(run) or which not in ("best", "last"):
        from llmctl.models.checkpoint_io import restore_model

        model, details = restore_model(run, which)
        return model, {"which": which, "path": details["checkpoint"], "step": details.get("step"),
                       "valid_loss": details.get("valid_loss")}
    if which == "best" and run.model.is_file():
        from llmctl.models.checkpoint_io import run_language_model
        from llmctl.models.keras_file import read_model_file
        from llmctl.models.lstm_lm import LSTMLanguageModel

        model = read_model_file(run.model, lambda: run_language_model(run)[0], LSTMLanguageModel)
        return model, {"which": "best", "path": str(run.model), "step": None, "valid_loss": None}
    raise ArtifactError(f"run {run.root} has no `{which}` checkpoint", hint="use checkpoint=best or train the run")

