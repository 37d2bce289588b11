"""`finetune.task: pairs` — prompt → response: teacher-forced language-model training on
`<bos> prompt <sep> response <eos>` documents with the loss on the response tokens (and the `<eos>`) only.

The model is the parent's `LSTMLanguageModel` (or a fresh one from `exp.model`), so the run is used like any language
model run: `llmctl generate` wraps prompts as `<bos> prompt <sep>` and stops at `<eos>`, `llmctl evaluate` reports
the response perplexity, exact match and BLEU/chrF. Batches are padded, length-bucketed whole documents (truncated to
`finetune.max_length` tokens); layer groups `[embedding, lstm_0 .., head]` support gradual unfreezing and
discriminative learning rates as for classification. The best epoch by valid response loss is kept.
"""

from __future__ import annotations

import math
import time

import numpy as np

from llmctl.data.doc_batches import Documents, iterate, response_mask
from llmctl.errors import ConfigError, DataError
from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.tfenv import import_tf, seed_everything
from llmctl.train import parent as parent_mod
from llmctl.train import ulmfit

tf = import_tf()


def check_pairs(ds) -> None:
    if ds.task != "pairs" or not ds.layout.response("train").is_file():
        raise DataError(f"finetune.task=pairs needs a prompt/response dataset, but {ds.root} was built with "
                        f"data.task={ds.task}",
                        hint="set data.task=pairs with prompt and response columns and run `llmctl preprocess` again")


def pair_batch(docs: Documents, index: np.ndarray, tokens: np.ndarray):
    """(inputs [B, T-1], targets [B, T-1], weights [B, T-1]) for teacher forcing with a response-only loss."""
    weights = response_mask(tokens, docs.response_starts[index])
    return tokens[:, :-1], tokens[:, 1:], weights


def masked_nll(model, inputs, targets, weights, training: bool):
    """(sum of response-token NLL, number of response tokens) for one batch."""
    logits, _ = model(inputs, None, training=training)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.reduce_sum(ce * weights), tf.reduce_sum(weights)


class ResponseScorer:
    """Compiled masked NLL over a split: mean response loss (nats per response token)."""

    def __init__(self, model, *, batch_size: int, max_length: int):
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([None, None], tf.float32)]
        self._fn = tf.function(lambda x, y, w: masked_nll(model, x, y, w, False), input_signature=spec,
                               reduce_retracing=True)

    def __call__(self, docs: Documents) -> tuple[float, float]:
        total, count = 0.0, 0.0
        for index, tokens in iterate(docs, self.batch_size, self.max_length, shuffle=False, by_length=True):
            if tokens.shape[1] < 2:
                continue
            nll, n = self._fn(*pair_batch(docs, index, tokens))
            total, count = total + float(nll), count + float(n)
        return total, count


def build_model(exp, ds, parent, reporter: Reporter):
    from llmctl.models.lstm_lm import build_language_model

    if parent is None:
        model = build_language_model(exp.model, ds.vocab_size)
        if exp.model.pretrained_embeddings is not None:
            from llmctl.models.embeddings_init import load_pretrained_vectors

            matrix, _ = load_pretrained_vectors(exp.model.pretrained_embeddings, ds.tokenizer(),
                                                exp.model.embedding_dim, seed=exp.run.seed)
            model.embedding.embeddings.assign(matrix)
        return model, f"from scratch: {exp.model.layers}×{exp.model.units} LSTM, emb {exp.model.embedding_dim}"
    parent_mod.adopt_architecture(exp, parent, reporter)
    lm, info = parent_mod.load_parent_model(parent, exp.finetune.checkpoint)
    model = build_language_model(exp.model, lm.vocab_size)
    model.set_weights(lm.get_weights())
    return model, (f"from {parent.name} ({exp.finetune.checkpoint} checkpoint, step {info.get('step')}): "
                   f"{exp.model.layers}×{exp.model.units} LSTM, emb {exp.model.embedding_dim}")


def make_task(exp, model, train: Documents, valid: Documents):
    from llmctl.train.doc_trainer import DocTask

    ft, cfg = exp.finetune, exp.train

    def loss_fn(inputs, targets, weights, training=True):
        nll, n = masked_nll(model, inputs, targets, weights, training)
        return nll / tf.maximum(n, 1.0)

    def batches(epoch: int):
        for index, tokens in iterate(train, cfg.batch_size, ft.max_length, shuffle=True,
                                     seed=exp.run.seed * 1000 + epoch):
            if tokens.shape[1] >= 2:
                yield pair_batch(train, index, tokens)

    scorer = ResponseScorer(model, batch_size=max(cfg.batch_size, 64), max_length=ft.max_length)

    def evaluate() -> dict[str, float]:
        total, count = scorer(valid)
        loss = total / max(count, 1.0)
        return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else float("inf")}

    spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, None], tf.float32)]
    return DocTask(name="pairs", model=model, groups=ulmfit.language_model_groups(model), loss_fn=loss_fn,
                   input_signature=spec, batches=batches, steps_per_epoch=-(-len(train) // cfg.batch_size),
                   evaluate=evaluate, monitor="loss", mode="min")


def run(exp, reporter: Reporter, parent) -> Result:
    from llmctl.data.dataset import open_dataset
    from llmctl.train import doc_run, doc_trainer

    t_start = time.perf_counter()
    ft = exp.finetune
    doc_trainer.check_supported(exp.train, exp.distribute, "pairs")
    if exp.model.output != "full":
        raise ConfigError("model.output=sampled is not supported by finetune.task=pairs (documents are short)",
                        hint="set model.output=full")
    seed_everything(exp.run.seed, exp.run.deterministic)
    ds = open_dataset(exp.data.dir)
    check_pairs(ds)
    if parent is not None:
        parent_mod.check_dataset_tokenizer(parent, ds)
    doc_run.require_valid(ds)
    train = Documents.from_dataset(ds, "train", max_length=ft.max_length, responses=True)
    valid = Documents.from_dataset(ds, "valid", max_length=ft.max_length, responses=True)
    cut = int(np.count_nonzero(train.response_starts >= train.lengths))
    if cut:
        reporter.warn(f"{cut} training pair(s) have no response token left within finetune.max_length="
                      f"{ft.max_length}; they teach nothing (raise finetune.max_length)")

    model, described = build_model(exp, ds, parent, reporter)
    task = make_task(exp, model, train, valid)
    stepper = doc_trainer.build_stepper(task, exp.train, ft, jit_compile=exp.train.jit_compile is True)
    run_dir, resuming = doc_run.prepare_run(exp, ds, kind="pairs", parent=parent)
    store = doc_run.checkpoint_store(run_dir, model, stepper, exp.train.keep_last)
    start = doc_run.restore_start(store, model, stepper.average) if resuming else None
    if start:
        reporter.info(f"resuming {run_dir.root} after epoch {start['epoch']} (step {start['step']})")
    reporter.table("finetune pairs", [
        ("run", str(run_dir.root)), ("dataset", f"{ds.root} ({len(train):,} train / {len(valid):,} valid pairs)"),
        ("model", f"{described}; {model.count_params():,} parameters"),
        ("loss", "response tokens + <eos> only (teacher forcing)")])

    outcome, log = doc_run.fit(exp, task, stepper, store, run_dir, start, reporter)
    final = task.evaluate()
    summary = {**doc_run.summary_base(run_dir, "pairs", parent, outcome, model, t_start),
               "valid_response_loss": final["loss"], "valid_response_ppl": final["ppl"], "history": outcome.history}
    doc_run.finish(run_dir, model, log, summary)
    values = {k: v for k, v in summary.items() if k != "history"}
    return Result(title=f"finetune pairs: {run_dir.root.name}", values=values,
                  lines=[f"model.keras holds the best epoch ({outcome.best_epoch}) by valid response loss; "
                         f"`llmctl evaluate {run_dir.root}` for exact match and BLEU/chrF"])
