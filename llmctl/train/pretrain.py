"""`llmctl pretrain`: train a language model from scratch on a preprocessed dataset — the stream task of the
training driver (`llmctl.train.driver`).

    result = run(exp, reporter=Reporter("rich"))

`LanguageModelTask` supplies the token stream (`llmctl.data.batching`: windows of `train.bptt`, the LSTM state
carried across them), the model (+ pretrained embeddings, or a parent's weights for `finetune.task=lm`), the XLA
and LSTM-kernel decisions, the stream step (`llmctl.train.loop.Trainer`) and the exact stream evaluation of the
valid split. Everything else — run directory, budgets, checkpoints, Ctrl-C, outputs — is the driver's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from llmctl.errors import ArtifactError, DataError
from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.runs import DatasetDir, RunDir
from llmctl.train.tasks import Task, describe_embeddings, init_embeddings, model_sizes


def _check_tokenizer_source(exp, ds) -> None:
    """`tokenizer.from` names a dataset, run or tokenizer folder: the dataset must use that very tokenizer."""
    source = exp.tokenizer.from_
    if source is None:
        return
    from llmctl.data.tokenizers import METADATA_FILE, load_tokenizer

    source = Path(source)
    for folder in (DatasetDir(source).tokenizer, RunDir(source).tokenizer, source):
        if (folder / METADATA_FILE).is_file():
            break
    else:
        raise ArtifactError(f"tokenizer.from={source} holds no tokenizer (looked for {source}/tokenizer/)",
                            hint="point tokenizer.from at a dataset or run directory")
    try:
        reused = load_tokenizer(folder)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read the tokenizer in {folder} ({exc})",
                            hint="point tokenizer.from at a dataset or run directory") from None
    if exp.tokenizer.extend:  # the dataset's tokenizer must extend that one (`tokenizer.extend`)
        from llmctl.train.parent import extension_of

        if extension_of(reused, ds.tokenizer()) is None and reused.fingerprint() != ds.tokenizer().fingerprint():
            raise ArtifactError(f"dataset {ds.root} was not made by extending the tokenizer of {source}",
                                hint="run `llmctl preprocess CONFIG --force` to rebuild the dataset")
        return
    expected = reused.fingerprint()
    actual = ds.manifest.get("tokenizer", {}).get("tokenizer_fingerprint") or ds.tokenizer().fingerprint()
    if expected != actual:
        raise ArtifactError(f"dataset {ds.root} was made with tokenizer {actual}, but tokenizer.from "
                            f"({source}) has {expected}",
                            hint="run `llmctl preprocess CONFIG --force` to rebuild the dataset with that tokenizer")


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cudnn_rows(model, gpus: int) -> list[tuple[str, str]]:
    rows = []
    for name, reasons in model.cudnn_report():
        verdict = "cuDNN-eligible: yes" if not reasons else f"cuDNN-eligible: no: because {', '.join(reasons)}"
        if not gpus:
            verdict += " (no GPU: the CPU kernel runs)"
        rows.append((name, verdict))
    return rows


class LanguageModelTask(Task):
    """Next-token prediction over the dataset's token stream."""

    kind = "lm"
    diverges = True

    def __init__(self, exp, *, title: str = "pretrain", init_model: Callable[[Any], None] | None = None,
                 run_info: dict[str, Any] | None = None, parent=None):
        super().__init__(exp, parent)
        self.title, self.init_model, self.extra_info = title, init_model, run_info or {}

    # -- data
    def open(self, dist) -> None:
        from llmctl.data.batching import build_steps
        from llmctl.data.dataset import open_dataset
        from llmctl.limits import check_training_memory

        exp, cfg = self.exp, self.exp.train
        self.dist = dist
        self.ds = ds = open_dataset(exp.data.dir)
        if ds.task != "lm":
            self.reporter.warn(f"dataset {ds.root} was built for task={ds.task}; pretraining reads its token "
                               "stream as plain text")
        _check_tokenizer_source(exp, ds)
        if not ds.has("train"):
            raise DataError(f"dataset {ds.root} has an empty train split", hint="give preprocess training text")
        self.vocab_size = ds.vocab_size
        self.train_tokens = ds.tokens("train")
        self.valid_tokens = ds.tokens("valid") if ds.has("valid") else None
        self.validates = self.valid_tokens is not None
        self.source = build_steps(self.train_tokens, cfg, seed=exp.run.seed, num_replicas=dist.num_replicas)
        check_training_memory(exp, ds.vocab_size)

    def run_info(self) -> dict[str, Any]:
        ds = self.ds
        return {"dataset_manifest_sha256": _sha256(ds.layout.manifest),
                "dataset_tokens": {s: int(ds.manifest["splits"][s]["tokens"]) for s in ds.splits()},
                **self.extra_info}

    def data_record(self) -> dict[str, Any]:
        return {"mode": self.source.mode, "seed": self.exp.run.seed, "variable_bptt": self.exp.train.variable_bptt}

    # -- model and step
    def build(self, resuming: bool) -> None:
        from llmctl.models.lstm_lm import build_language_model

        self.model = build_language_model(self.exp.model, self.ds.vocab_size)
        self.embedding_stats = init_embeddings(self.exp, self.model.embedding, self.ds.tokenizer())
        if self.init_model is not None and not resuming:
            self.init_model(self.model)

    def groups(self) -> list[tuple[str, list[Any]]]:
        return [("model", list(self.model.trainable_variables))]

    def trainer(self, dist, groups, optimizers, multipliers, average, *, gpus: int):
        from llmctl.models.stream_nll import StreamEvaluator
        from llmctl.train.loop import SampledSoftmax, Trainer, decide_jit, decide_lstm_kernel

        exp, cfg = self.exp, self.exp.train
        self.gpus = gpus
        self.sampled = None
        if exp.model.output == "sampled":
            counts = SampledSoftmax.count_tokens(self.train_tokens, self.ds.vocab_size)
            self.sampled = SampledSoftmax(counts, exp.model.sampled_negatives)
        kernel, self.kernel_reason = decide_lstm_kernel(cfg.lstm_kernel, gpus=gpus, variable_bptt=cfg.variable_bptt,
                                                        mixed_precision=cfg.mixed_precision)
        self.model.lstm_kernel = kernel
        jit, why = decide_jit(cfg.jit_compile, gpus=gpus, mixed_precision=cfg.mixed_precision,
                              variable_bptt=cfg.variable_bptt, distributed=dist.distributed)
        if jit is None:
            from llmctl.train.xla_choice import choose_xla

            jit, why = choose_xla(exp.model, cfg, self.ds.vocab_size, self.source.fixed_width or cfg.bptt,
                                  self.source.replica_batch, self.sampled, lstm_kernel=kernel)
        self.jit_reason = why
        trainer = Trainer(self.model, optimizers[0], dist, clip_norm=cfg.clip_norm,
                          carry_state=self.source.carry_state, jit=jit, sampled=self.sampled, seed=exp.run.seed,
                          state_reset=cfg.state_reset)
        trainer.replica_batch = self.source.replica_batch
        self.stream = trainer
        self.evaluator = StreamEvaluator(self.model, jit=jit and not gpus)
        return trainer

    # -- batches and the carried state
    def steps_per_epoch(self, epoch: int) -> int:
        return self.source.steps(epoch)

    def tokens_per_epoch(self) -> int:
        return self.source.tokens_per_epoch()

    def elements(self, epoch: int, start: int):
        from llmctl.data.batching import dataset_fn_for, step_arrays

        if self.dist.distributed:
            fn = dataset_fn_for(self.source, epoch, start, replicas_per_worker=self.dist.replicas_per_worker)
            iterator = iter(self.dist.strategy.distribute_datasets_from_function(fn))
        else:
            iterator = step_arrays(self.source, epoch, start_step=start)
        for element in iterator:
            yield element, None

    def lr_scale(self, epoch: int, step: int) -> float:
        cfg = self.exp.train
        return self.source.mean_window(epoch, step) / cfg.bptt if cfg.variable_bptt else 1.0

    def carry_shapes(self) -> list[tuple[int, ...]]:
        return [(self.exp.train.batch_size, self.model.units)] * (2 * self.model.num_layers)

    def initial_carry(self):
        return self.stream.zero_states()

    def restore_carry(self, arrays):
        return self.stream.scatter_states(arrays)

    def checkpoint_carry(self, carry) -> list[np.ndarray]:
        if carry is None or not self.source.carry_state:
            return [np.zeros(shape, np.float32) for shape in self.carry_shapes()]
        return self.stream.gather_states(carry)

    # -- evaluation and outputs
    def evaluate(self) -> dict[str, float]:
        from llmctl.schema import eval_bptt

        result = self.evaluator(self.valid_tokens, batch_size=self.exp.evaluate.batch_size, bptt=eval_bptt(self.exp))
        return {"loss": result.loss, "ppl": result.perplexity, "bits": result.bits_per_token}

    def flops_per_token(self) -> float:
        model = self.model
        flops = float(model.flops_per_token())
        if self.sampled is not None:
            width = model.embedding_dim if model.projection is not None else model.units
            flops += 2.0 * width * (self.sampled.num_sampled + 1) - 2.0 * width * self.ds.vocab_size
        return 3.0 * flops  # forward + backward

    def describe_data(self) -> list[tuple[str, Any]]:
        valid = len(self.valid_tokens) if self.valid_tokens is not None else 0
        return [("dataset", f"{self.ds.root} (train {len(self.train_tokens):,} tokens, valid {valid:,}, vocab "
                            f"{self.ds.vocab_size:,})")]

    def describe_model(self, trainer) -> list[tuple[str, Any]]:
        return [("XLA", f"{'on' if trainer.jit else 'off'} — {self.jit_reason}"), ("LSTM kernel", self.kernel_reason),
                ("model", f"{model_sizes(self.model)}, {self.model.count_params():,} params, output "
                          f"{self.exp.model.output}"),
                *_cudnn_rows(self.model, self.gpus), *describe_embeddings(self.embedding_stats)]

    def batching(self) -> str:
        cfg = self.exp.train
        return f"{self.source.mode}, {cfg.batch_size} × {cfg.bptt}" + (" (variable)" if cfg.variable_bptt else "")

    def summary_details(self, p) -> dict[str, Any]:
        from llmctl.schema import eval_bptt

        return {"batching": self.source.describe(),
                "eval": {"batch_size": self.exp.evaluate.batch_size, "bptt": eval_bptt(self.exp), "split": "valid"}}



def run(exp, reporter: Reporter | None = None, *, init_model=None, run_info: dict[str, Any] | None = None,
        title: str = "pretrain", parent=None) -> Result:
    """Train the language model `exp` describes; returns the final metrics (also in summary.json).

    `init_model(model)` (used by `finetune.task=lm`) initialises the freshly built model, e.g. with a parent run's
    weights; `run_info` adds fields to run.json."""
    from llmctl.train.driver import drive

    task = LanguageModelTask(exp, title=title, init_model=init_model, run_info=run_info, parent=parent)
    return drive(exp, task, reporter)
