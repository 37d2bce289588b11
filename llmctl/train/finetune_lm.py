"""`finetune.task: lm` — domain adaptation: continue language-model training on a new corpus from the parent's
weights, as pretrain's language-model task (`llmctl.train.pretrain.run(..., init_model=...)`): same batching,
checkpoints, resume, schedules, budgets and outputs. The result is a language model run (kind `lm`, with `parent`
recorded in run.json), usable by `generate`, `evaluate`, `export` and as the parent of a further finetune.

The corpus must be preprocessed with the parent's tokenizer (`tokenizer: {from: <parent run>}`); its `<unk>` rate
under that tokenizer is reported (how much of the new domain the parent's vocabulary misses). With
`finetune.extend_vocab` the dataset's tokenizer may extend the parent's instead (every parent id keeps its token):
the new embedding rows — and output-layer rows — start at the mean of the parent's (ULMFiT).
"""

from __future__ import annotations

import numpy as np

from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.train import parent as parent_mod


def extend_weights(parent_model, model, old_vocab: int) -> None:
    """Copy the parent's weights into `model` (same architecture, vocabulary ≥ the parent's); rows of new tokens
    in the embedding and the output layer start at the mean of the parent's rows."""
    new_rows = model.vocab_size - old_vocab
    model.embedding.embeddings.assign(parent_mod.extend_rows(parent_model.embedding.embeddings.numpy(), new_rows))
    for src, dst in zip(parent_model.lstms, model.lstms, strict=True):
        dst.set_weights(src.get_weights())
    if model.projection is not None:
        model.projection.set_weights(parent_model.projection.get_weights())
    if model.head is not None:
        kernel, bias = parent_model.head.get_weights()
        model.head.set_weights([parent_mod.extend_rows(kernel.T, new_rows).T,
                                parent_mod.extend_rows(bias[:, None], new_rows)[:, 0]])
    else:
        bias = parent_model.output_bias.numpy()
        model.output_bias.assign(parent_mod.extend_rows(bias[:, None], new_rows)[:, 0])


def run(exp, reporter: Reporter, parent) -> Result:
    from llmctl.data.dataset import open_dataset
    from llmctl.errors import ConfigError
    from llmctl.train import pretrain

    if parent is None:
        raise ConfigError("finetune.task=lm adapts a pretrained language model: finetune.parent is not set",
                          hint="set finetune.parent to a run made by `llmctl pretrain` (or train from scratch with "
                               "`llmctl pretrain`)")
    ds = open_dataset(exp.data.dir)
    old_vocab = parent_mod.check_dataset_tokenizer(parent, ds, allow_extension=exp.finetune.extend_vocab)
    rates = parent_mod.unk_rates(ds)
    reporter.table("domain adaptation", [
        ("parent", f"{parent.name} ({exp.finetune.checkpoint} checkpoint)"),
        ("vocabulary", f"{ds.vocab_size:,} tokens" + (f" ({ds.vocab_size - old_vocab:,} new, initialised at the "
                                                      "mean embedding)" if old_vocab else " (the parent's)")),
        *[(f"<unk> rate {split}", f"{rate:.2%}") for split, rate in rates.items()]])
    if rates.get("train", 0.0) > 0.05 and not old_vocab:
        reporter.warn(f"{rates['train']:.1%} of the new corpus is <unk> under the parent's tokenizer: the model "
                      "cannot learn those words (a subword tokenizer or finetune.extend_vocab helps)")

    def init_model(model) -> None:
        lm, _ = parent_mod.load_parent_model(parent, exp.finetune.checkpoint)
        if old_vocab is None:
            model.set_weights(lm.get_weights())
        else:
            extend_weights(lm, model, old_vocab)
        reporter.info(f"weights initialised from {parent.name} ({exp.finetune.checkpoint})")

    result = pretrain.run(exp, reporter, init_model=init_model, title="finetune lm", parent=parent,
                          run_info={"parent": parent.name, "finetune_task": "lm",
                                    "unk_rate": {k: float(np.round(v, 6)) for k, v in rates.items()},
                                    "extended_vocab_from": old_vocab})
    result.values.update({"parent": parent.name, **{f"unk_rate_{k}": v for k, v in rates.items()}})
    return result
