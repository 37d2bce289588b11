"""What a task supplies to the training driver (`llmctl.train.driver`), and the padded-document tasks' shared part.

A task is its data, its model and layer groups, a forward pass (Σ weighted losses of one micro-batch on one
replica) run by the shared `GradientStep`, and an evaluator. `Task` gives the defaults; the language-model stream
task lives in `llmctl.train.pretrain`, the document tasks in `finetune_classify` and `finetune_pairs`.

Document batches (`DocumentTask`): length-bucketed, padded whole documents (`llmctl.data.doc_batches`), seeded per
epoch. A step reads `train.batch_size × train.grad_accum` documents, cut by rows into `grad_accum` micro-batches
and each of those into one shard per replica — so accumulation and replicas give the update of one device on the
same documents. The last array of a batch holds its per-target loss weights.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from llmctl.tfenv import import_tf
from llmctl.train import ulmfit

tf = import_tf()


class Task:
    """Defaults of the task protocol the driver calls (see `llmctl.train.driver.Driver`)."""

    kind = "lm"            # run.json kind
    title = "train"        # report and result title
    monitor, mode = "loss", "min"  # the valid metric that selects `best` (and counts for early stopping)
    validates = True       # a validation split is evaluated
    diverges = False       # a finite loss above DIVERGED_FACTOR × ln(vocab) stops the run
    evaluate_each_epoch = False  # evaluate at every epoch end even with train.eval_every
    keeps_history = False  # every evaluation goes into the progress record and summary.json
    average_decay: float | None = None
    jit_reason = ""
    vocab_size = 0
    parent_run = None      # RunDir fine-tuned from
    reporter = None        # set by the driver

    def __init__(self, exp, parent=None):
        self.exp, self.parent = exp, parent
        self.parent_run = None if parent is None else parent.run

    # data, before the run directory exists
    def open(self, dist) -> None:
        raise NotImplementedError

    def run_info(self) -> dict[str, Any]:
        return {}

    def data_record(self) -> dict[str, Any]:
        return {}

    # model (built under the strategy's scope) and step
    def build(self, resuming: bool) -> None:
        raise NotImplementedError

    def groups(self) -> list[tuple[str, list[Any]]]:
        raise NotImplementedError

    def lr_multipliers(self, groups: int) -> list[float]:
        return [1.0] * groups

    def trainer(self, dist, groups, optimizers, multipliers, average, *, gpus: int):
        raise NotImplementedError

    # batches
    def steps_per_epoch(self, epoch: int) -> int:
        raise NotImplementedError

    def tokens_per_epoch(self) -> int:
        raise NotImplementedError

    def elements(self, epoch: int, start: int) -> Iterator[tuple[Any, int | None]]:
        """(step element, tokens it trains on — None: the step's weight total) from data position `start`."""
        raise NotImplementedError

    def lr_scale(self, epoch: int, step: int) -> float:
        return 1.0

    # the state carried from step to step (none for documents)
    def carry_shapes(self) -> list[tuple[int, ...]]:
        return []

    def initial_carry(self):
        return ()

    def restore_carry(self, arrays):
        return ()

    def checkpoint_carry(self, carry) -> list[np.ndarray] | None:
        return None

    # evaluation and outputs
    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError

    def logged(self, metrics: dict[str, float]) -> dict[str, Any]:
        """The metrics.csv fields of a train or valid row."""
        return {"loss": metrics["loss"]}

    def flops_per_token(self) -> float | None:
        return None

    def describe_data(self) -> list[tuple[str, Any]]:
        return []

    def describe_model(self, trainer) -> list[tuple[str, Any]]:
        return []

    def batching(self) -> str:
        return ""

    def summary(self, p) -> dict[str, Any]:
        """Result fields the task adds."""
        return {}

    def summary_details(self, p) -> dict[str, Any]:
        """summary.json-only fields the task adds."""
        return {}

    def result_lines(self, run, p, which: str, stop: str) -> list[str]:
        return [f"stopped by {stop}; model.keras holds the {which} weights (step "
                f"{p.best_step if which == 'best' else p.step})"]


def require_valid(ds) -> None:
    """Document tasks select their best epoch on the valid split: refuse a dataset without one."""
    from llmctl.errors import DataError

    if not ds.has("valid"):
        raise DataError(f"dataset {ds.root} has no valid split to select the best epoch on",
                        hint="give data.valid or set data.split.valid > 0 and run `llmctl preprocess` again")


def init_embeddings(exp, embedding_layer, tokenizer) -> dict[str, Any] | None:
    """`model.pretrained_embeddings` into `embedding_layer` (a fresh model only); the coverage statistics."""
    if exp.model.pretrained_embeddings is None:
        return None
    from llmctl.models.embeddings_init import load_pretrained_vectors

    matrix, stats = load_pretrained_vectors(exp.model.pretrained_embeddings, tokenizer, embedding_layer.output_dim,
                                            seed=exp.run.seed)
    embedding_layer.embeddings.assign(matrix)
    return stats


def describe_embeddings(stats: dict[str, Any] | None) -> list[tuple[str, Any]]:
    if not stats:
        return []
    return [("embeddings", f"{stats['covered']:,}/{stats['vocab']:,} tokens covered ({stats['coverage']:.1%}; "
                           f"{stats['exact']:,} exact, {stats['lowercase']:,} lowercase) from {stats['path']}")]


def model_sizes(model) -> str:
    """'2×64 LSTM, emb 32' from the model itself (the one owner of its sizes)."""
    lm = getattr(model, "encoder", model)
    return f"{lm.num_layers}×{lm.units} LSTM, emb {lm.embedding_dim}"


class DocumentTrainer:
    """The padded-document step: `GradientStep` over the task's layer groups."""

    def __init__(self, gradient, dist):
        self.gradient, self.dist = gradient, dist
        self.trainable = (True,) * len(gradient.names)  # the groups that train (the driver sets it per epoch)

    @property
    def jit(self) -> bool:
        return self.gradient.jit

    def probe_jit(self, element, carry, step_index: int) -> str | None:
        return None

    def step(self, element, carry, step_index: int, lr: float):
        if not self.dist.distributed:
            element = tf.nest.map_structure(tf.convert_to_tensor, element)
        seed = tf.constant([0, int(step_index)], dtype=tf.int64)
        summary, carry = self.gradient.run(self.trainable, element, carry, seed, tf.constant(float(lr), tf.float32))
        loss_sum, count, norm = (float(v) for v in summary.numpy())
        return loss_sum, count, norm, carry


class DocumentTask(Task):
    """Padded whole documents with layer groups, gradual unfreezing and discriminative learning rates."""

    # with train.eval_every, epoch ends are not evaluated again (only where training ends): few-label runs have
    # short epochs, and evaluating each one would spend the time budget on the valid split
    keeps_history = True
    batch_axes: tuple[int, ...] | None = None  # the batch axis of each array of a host batch (None: all 0)

    def __init__(self, exp, parent=None):
        super().__init__(exp, parent)
        self.average_decay = exp.finetune.average_decay

    def open(self, dist) -> None:
        self.dist = dist

    def lr_multipliers(self, groups: int) -> list[float]:
        return ulmfit.lr_multipliers(groups, self.exp.finetune.discriminative_lr)

    def trainer(self, dist, groups, optimizers, multipliers, average, *, gpus: int):
        from llmctl.train.step import GradientStep

        cfg = self.exp.train
        language_model = getattr(self.model, "encoder", self.model)
        if cfg.lstm_kernel == "keras" and hasattr(language_model, "lstm_kernel"):
            language_model.lstm_kernel = "keras"  # else `auto`: the fused CPU kernel (graph recurrence: lengths vary)
        jit = cfg.jit_compile is True
        self.jit_reason = f"train.jit_compile={cfg.jit_compile} (documents: XLA only when asked)"
        gradient = GradientStep(dist, groups, optimizers, forward=lambda batch, carry, seed, m: (
            self.loss_sum(batch, training=True), carry), clip_norm=cfg.clip_norm, multipliers=multipliers, jit=jit,
            average=average)
        return DocumentTrainer(gradient, dist)

    def groups(self) -> list[tuple[str, list[Any]]]:
        return self.model.layer_groups()

    @property
    def step_documents(self) -> int:
        return self.exp.train.batch_size * self.exp.train.grad_accum

    def steps_per_epoch(self, epoch: int) -> int:
        return -(-len(self.train_docs) // self.step_documents)

    def tokens_per_epoch(self) -> int:
        cap = self.exp.finetune.max_length
        lengths = self.train_docs.lengths
        return int(np.minimum(lengths, cap).sum() if cap else lengths.sum())

    def batching(self) -> str:
        return (f"padded documents, {self.exp.train.batch_size} per batch, max length "
                f"{self.exp.finetune.max_length or 'none'}")

    def host_batch(self, index: np.ndarray, tokens: np.ndarray) -> tuple:
        """The step's arrays for documents `index` (padded `tokens`), per-target weights last."""
        raise NotImplementedError

    def loss_sum(self, batch, training: bool):
        """Σ weighted losses of one (micro-)batch."""
        raise NotImplementedError

    def elements(self, epoch: int, start: int):
        from llmctl.data.doc_batches import iterate

        exp = self.exp
        accum, replicas = exp.train.grad_accum, self.dist.num_replicas
        batches = iterate(self.train_docs, self.step_documents, exp.finetune.max_length, shuffle=True,
                          seed=exp.run.seed * 1000 + epoch)
        for i, (index, tokens) in enumerate(batches):
            if i < start:
                continue  # the data position of a resumed run: nothing computed for the batches before it
            batch = self.host_batch(index, tokens)
            axes = self.batch_axes or (0,) * len(batch)
            micro = [_split(batch, axes, accum, k) for k in range(accum)]
            shards = [tuple(_split(m, axes, replicas, r) for m in micro) for r in range(replicas)]
            n_tokens = int(np.count_nonzero(tokens))
            if self.dist.distributed:
                element = self.dist.strategy.experimental_distribute_values_from_function(
                    lambda ctx, shards=shards: tf.nest.map_structure(tf.convert_to_tensor,
                                                                     shards[ctx.replica_id_in_sync_group]))
            else:
                element = shards[0]
            yield element, n_tokens

    def summary(self, p) -> dict[str, Any]:
        return {"task": self.kind, "parent": None if self.parent is None else self.parent.name}

    def summary_details(self, p) -> dict[str, Any]:
        return {"history": p.history}


def _split(batch: tuple, axes: Sequence[int], parts: int, k: int) -> tuple:
    """Part `k` of `parts` of every array of `batch`, cut along its batch axis (contiguous rows)."""
    if parts == 1:
        return batch
    out = []
    for array, axis in zip(batch, axes, strict=True):
        array = np.asarray(array)
        bounds = np.linspace(0, array.shape[axis], parts + 1).round().astype(int)
        out.append(np.take(array, np.arange(bounds[k], bounds[k + 1]), axis=axis))
    return tuple(out)
