"""Run-directory plumbing shared by the document fine-tuning tasks (classify, pairs): create or resume the run,
copy the tokenizer, record run.json, checkpoint through the pretrain `CheckpointStore`, write the final artifacts.

Resume is per epoch: the `last` checkpoint is written after every epoch (model, every group optimizer, progress),
so `--resume` continues with the next epoch; the `best` checkpoint holds the weights with the best validation
metric and becomes `model.keras` at the end.
"""

from __future__ import annotations

from typing import Any

from llmctl.runs import RunDir
from llmctl.train.training_run import open_training_run


def require_valid(ds) -> None:
    """Document tasks select their best epoch on the valid split: refuse a dataset without one."""
    from llmctl.errors import DataError

    if not ds.has("valid"):
        raise DataError(f"dataset {ds.root} has no valid split to select the best epoch on",
                        hint="give data.valid or set data.split.valid > 0 and run `llmctl preprocess` again")


def prepare_run(exp, ds, *, kind: str, parent, extra_info: dict[str, Any] | None = None) -> tuple[RunDir, bool]:
    """Create or reopen the run directory per run.resume / run.overwrite (`open_training_run`), refusing a directory
    that holds another kind of run. Returns (run, resuming)."""
    return open_training_run(exp, ds, kind=kind, parent=None if parent is None else parent.run,
                             refuse_other_kind=True,
                             info={"parent": None if parent is None else str(parent.run.root), **(extra_info or {})})


class _OptimizerSet:
    """Several optimizers (and the weight average, if any) seen as one by `CheckpointStore` (their variables in a
    fixed order)."""

    def __init__(self, optimizers, average=None):
        self.variables = [v for opt in optimizers for v in opt.variables]
        if average is not None:
            self.variables += average.variables


def checkpoint_store(run: RunDir, model, stepper, keep_last: int):
    from llmctl.train.checkpoints import CheckpointStore

    return CheckpointStore(run.checkpoints, model=model, optimizer=_OptimizerSet(stepper.optimizers, stepper.average),
                           carry_shapes=[], keep_last=keep_last)


def restore_start(store, model, average=None) -> dict[str, Any]:
    """The `start` state for `doc_trainer.fit` when resuming: best weights first, then the last checkpoint. With a
    weight `average`, checkpoints hold the averaged weights as the model's (and the raw ones as the average's
    shadow): they are swapped back so that training continues on the raw weights."""
    from llmctl.train.checkpoints import load_weights, resolve_checkpoint

    best_weights = None
    if store.pointer().get("best"):
        prefix, _ = resolve_checkpoint(store.directory, "best")
        load_weights(model, prefix)
        best_weights = model.get_weights()
    progress, _, _ = store.restore("last")
    if average is not None:
        average.swap()
    progress["best_weights"] = best_weights
    return progress


def save_keras(run: RunDir, model) -> None:
    """model.keras, atomically (a graph of stock Keras layers: `llmctl.models.keras_file`)."""
    from llmctl.models.keras_file import save_model_file

    save_model_file(model, run.model)


def log_writer(run: RunDir, resume_step: int | None, *, perplexity: bool = True):
    """(MetricsLog, row callback for `doc_trainer.fit`) — train/valid rows into metrics.csv and TensorBoard.
    `perplexity=False` (classification) leaves the ppl column empty."""
    from llmctl.train.metrics_log import MetricsLog

    log = MetricsLog(run, resume_step=resume_step)

    def write(row: dict[str, Any]) -> None:
        values = {k: v for k, v in row.items() if k not in ("step", "split") and isinstance(v, (int, float))}
        values["epoch"] = int(row.get("epoch", 1)) - 1
        if not perplexity:
            values["ppl"] = None
        log.log(row["split"], step=int(row["step"]), **values)

    return log, write


def fit(exp, task, stepper, store, run: RunDir, start: dict[str, Any] | None, reporter, *, perplexity: bool = True):
    """Train `task` with `doc_trainer.fit`, logging to metrics.csv/TensorBoard and checkpointing every epoch (`best`
    tagged with the valid `task.monitor`). Returns (outcome, log); the log is closed if training fails."""
    from llmctl.train import doc_trainer

    log, write_row = log_writer(run, start["step"] if start else None, perplexity=perplexity)

    def save(which: str, state: dict[str, Any]) -> None:
        store.save(which, step=state["step"], progress=state, states=None,
                   metrics={"valid_" + task.monitor: state["best_value"]})

    try:
        outcome = doc_trainer.fit(task, stepper, exp.train, exp.finetune, reporter=reporter, log=write_row, save=save,
                                  start=start)
    except BaseException:
        log.close()
        raise
    return outcome, log


def summary_base(run: RunDir, task: str, parent, outcome, model, started: float) -> dict[str, Any]:
    """The summary.json fields every document task shares (the task adds its valid measures)."""
    import time

    return {"run_dir": str(run.root), "task": task, "parent": None if parent is None else parent.name,
            "stop_reason": outcome.stopped_by, "epochs_completed": outcome.epochs_done, "steps": outcome.steps,
            "best_epoch": outcome.best_epoch, "train_time_s": outcome.seconds,
            "wall_time_s": time.perf_counter() - started, "params": int(model.count_params())}


def finish(run: RunDir, model, log, summary: dict[str, Any]) -> None:
    """model.keras (best weights), summary.json, loss.png."""
    from llmctl.train.metrics_log import write_loss_plot, write_summary

    log.close()
    save_keras(run, model)
    write_summary(run.summary, summary)
    write_loss_plot(log.rows(), run.loss_plot, title=f"{run.root.name}: loss")
