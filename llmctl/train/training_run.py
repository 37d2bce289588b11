"""The run directory of a training command (pretrain, finetune): start it, resume it or replace it.

    run, resuming = open_training_run(exp, ds, kind="lm", info={...}, dist=dist)

`run.resume` (never / auto / always) and `run.overwrite` decide: `always` needs a `last` checkpoint, `auto` resumes
when there is one; a directory left by a run that stopped before its first checkpoint is replaced by a new start.
The run directory is locked (`llmctl.locks`) for the rest of the command; `RunDir.prepare` saves the resolved
config and refuses a directory holding a different run. A resumed run must still speak the dataset's tokenizer; a
new start drops stale checkpoints and copies the dataset's tokenizer into the run. run.json records the kind, the
tokenizer fingerprint, the vocabulary size and the dataset.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from llmctl import atomic, locks
from llmctl.errors import ArtifactError, ConfigError
from llmctl.runs import RunDir


def open_training_run(exp, ds, *, kind: str, info: dict[str, Any], parent: RunDir | None = None, dist=None,
                      refuse_other_kind: bool = False) -> tuple[RunDir, bool]:
    """Create / reopen the run directory per run.resume and run.overwrite. Returns (run, resuming).

    `info`: run.json fields after the common ones; `parent`: the run fine-tuned from (refused when it is this run);
    `dist` (`llmctl.train.distribution.Distribution`): every worker decides, then only the chief touches the
    directory, between two barriers; `refuse_other_kind`: refuse a directory holding another kind of run that is not
    resumed (document fine-tuning), before `RunDir.prepare` compares the configs.
    """
    from llmctl.train.checkpoints import read_pointer

    run = RunDir.of(exp)
    want = exp.run.resume
    if exp.run.overwrite and want == "always":
        raise ConfigError("--resume and --overwrite contradict each other", hint="pass only one of them")
    if parent is not None and Path(parent.root).resolve() == run.root.resolve():
        raise ConfigError(f"finetune.parent is the run directory itself ({run.root})",
                          hint="give the fine-tuned run another run.name")
    if want == "always" and not run.exists():
        raise ArtifactError(f"cannot resume: {run.root} does not exist", hint="run without --resume to start the run")
    if dist is None or dist.is_chief:
        locks.acquire_run(run.root)  # one writer per run directory; released when the command ends
    existing = run.exists()
    pointer = read_pointer(run.checkpoints) if existing else {}
    has_checkpoint = bool(pointer.get("last"))
    # a run that failed or was killed before its first checkpoint (config.yaml, run.json, tokenizer/ only) was
    # never started: a plain rerun replaces it, whatever its config said (no --overwrite needed)
    stub = existing and not has_checkpoint and not pointer.get("best") and not run.model.is_file()
    if want == "always" and not has_checkpoint:
        raise ArtifactError(f"cannot resume: {run.root} has no checkpoint (it stopped before the first one)",
                            hint="run the same command without --resume to start it again")
    resuming = want in ("auto", "always") and has_checkpoint and not exp.run.overwrite
    if refuse_other_kind and existing and not stub and not exp.run.overwrite and not resuming:
        recorded = run.read_info() if run.info.is_file() else {}
        if recorded.get("kind") not in (None, kind):
            raise ArtifactError(f"run directory {run.root} holds a `{recorded.get('kind')}` run",
                                hint="choose another run.name, or pass --overwrite to replace it")
    if dist is not None:
        dist.barrier()  # every worker decided before the chief touches the directory
    if dist is None or dist.is_chief:
        allow_existing = resuming or (want == "auto" and existing and not has_checkpoint)
        run.prepare(exp, kind=kind, resume=allow_existing, overwrite=exp.run.overwrite or stub)
        if resuming:
            recorded = run.read_info().get("tokenizer_fingerprint")
            if recorded and recorded != ds.fingerprint:
                raise ArtifactError(f"cannot resume {run.root}: it was trained with tokenizer {recorded}, the "
                                    f"dataset now has {ds.fingerprint}",
                                    hint="resume with the original dataset or start over with --overwrite")
        else:
            if run.checkpoints.exists():  # a run that never checkpointed: nothing to keep
                shutil.rmtree(run.checkpoints)
            with atomic.directory(run.tokenizer, replace=True) as tmp:
                for item in ds.layout.tokenizer.iterdir():
                    if item.is_file():
                        shutil.copy2(item, tmp / item.name)
        run.write_info(kind=kind, tokenizer_fingerprint=ds.fingerprint, vocab_size=ds.vocab_size,
                       dataset=str(ds.root), **info)
    if dist is not None:
        dist.barrier()
    return run, resuming
