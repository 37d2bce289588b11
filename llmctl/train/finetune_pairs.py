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

import numpy as np

from llmctl.data.doc_batches import Documents
from llmctl.errors import ConfigError
from llmctl.models.response_nll import ResponseScorer, check_pairs, masked_nll, pair_batch
from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.tfenv import import_tf
from llmctl.train import parent as parent_mod
from llmctl.train import ulmfit
from llmctl.train.tasks import DocumentTask, init_embeddings, model_sizes, require_valid

tf = import_tf()


class PairsTask(DocumentTask):
    """Prompt → response with the loss on the response; the best evaluation by valid response loss."""

    kind, title = "pairs", "finetune pairs"

    def open(self, dist) -> None:
        from llmctl.data.dataset import open_dataset

        super().open(dist)
        exp, ft = self.exp, self.exp.finetune
        if exp.model.output != "full":
            raise ConfigError("model.output=sampled is not supported by finetune.task=pairs (documents are short)",
                              hint="set model.output=full")
        self.ds = ds = open_dataset(exp.data.dir)
        check_pairs(ds)
        if self.parent is not None:
            parent_mod.check_dataset_tokenizer(self.parent, ds)
        require_valid(ds)
        self.vocab_size = ds.vocab_size
        self.train_docs = Documents.from_dataset(ds, "train", max_length=ft.max_length, responses=True)
        self.valid_docs = Documents.from_dataset(ds, "valid", max_length=ft.max_length, responses=True)
        cut = int(np.count_nonzero(self.train_docs.response_starts >= self.train_docs.lengths))
        if cut:
            self.reporter.warn(f"{cut} training pair(s) have no response token left within finetune.max_length="
                               f"{ft.max_length}; they teach nothing (raise finetune.max_length)")

    def run_info(self) -> dict:
        return {"parent": None if self.parent is None else self.parent.name}

    def build(self, resuming: bool) -> None:
        from llmctl.models.lstm_lm import build_language_model

        exp, ft = self.exp, self.exp.finetune
        self.model = build_language_model(exp.model, self.vocab_size)
        if self.parent is None:
            init_embeddings(exp, self.model.embedding, self.ds.tokenizer())
            self.origin = "from scratch"
        else:
            lm, info = parent_mod.load_parent_model(self.parent, ft.checkpoint)
            self.model.set_weights(lm.get_weights())
            self.origin = f"from {self.parent.name} ({ft.checkpoint} checkpoint, step {info.get('step')})"
        self.scorer = ResponseScorer(self.model, batch_size=max(exp.train.batch_size, 64), max_length=ft.max_length)

    def groups(self) -> list:
        return ulmfit.language_model_groups(self.model)

    def host_batch(self, index: np.ndarray, tokens: np.ndarray) -> tuple:
        if tokens.shape[1] < 2:  # nothing to predict: a batch of weight 0
            tokens = np.pad(tokens, [(0, 0), (0, 2 - tokens.shape[1])])
        inputs, targets, weights = pair_batch(self.train_docs, index, tokens)
        return inputs, targets, weights.astype(np.float32)

    def loss_sum(self, batch, training: bool):
        nll, _ = masked_nll(self.model, *batch, training)
        return nll

    def evaluate(self) -> dict:
        total, count = self.scorer(self.valid_docs)
        loss = total / max(count, 1.0)
        return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else float("inf")}

    def describe_data(self) -> list:
        return [("dataset", f"{self.ds.root} ({len(self.train_docs):,} train / {len(self.valid_docs):,} valid pairs)"),
                ("loss", "response tokens + <eos> only (teacher forcing)")]

    def describe_model(self, trainer) -> list:
        return [("model", f"{self.origin}: {model_sizes(self.model)}; {self.model.count_params():,} parameters")]

    def summary(self, p) -> dict:
        best = p.best_metrics
        return {**super().summary(p), "valid_response_loss": best.get("loss"), "valid_response_ppl": best.get("ppl")}

    def result_lines(self, run, p, which: str, stop: str) -> list[str]:
        return [f"model.keras holds the best epoch ({p.best_epoch}) by valid response loss; "
                f"`llmctl evaluate {run.root}` for exact match and BLEU/chrF"]


def run(exp, reporter: Reporter, parent) -> Result:
    from llmctl.train.driver import drive

    return drive(exp, PairsTask(exp, parent), reporter)
