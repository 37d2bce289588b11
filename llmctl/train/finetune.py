"""`llmctl finetune`: adapt a pretrained language model (`finetune.parent`) — or train from scratch — for one task.

    result = run(exp, reporter=Reporter("rich"))

* `lm` — domain adaptation: continue language-model training on a new corpus from the parent's weights, with
  pretrain's own training loop (`llmctl.train.finetune_lm`); the run is a language model again (kind `lm`).
* `classify` — ULMFiT-style text classification (`llmctl.train.finetune_classify`), kind `classify`.
* `pairs` — prompt → response with the loss on the response only (`llmctl.train.finetune_pairs`), kind `pairs`.

Every task trains through the one driver (`llmctl.train.driver`), the parent's architecture adopted once.
Guard rails before any training: the parent exists and is a language model; the dataset was made with the parent's
tokenizer; the dataset has what the task needs (labels, prompt/response boundaries).
"""

from __future__ import annotations

from llmctl import locks
from llmctl.progress import Reporter
from llmctl.results import Result
from llmctl.tfenv import import_tf


@locks.scoped  # the run / dataset directory lock is released when the command ends
def run(exp, reporter: Reporter | None = None) -> Result:
    """Fine-tune per `exp.finetune.task`; returns the final metrics (also in the run's summary.json)."""
    import_tf()
    from llmctl.train.parent import adopt_architecture, open_parent

    reporter = reporter or Reporter("none")
    parent = open_parent(exp)
    if parent is not None:
        exp = adopt_architecture(exp, parent, reporter)  # once: the run's saved config owns the sizes from here on
    task = exp.finetune.task
    if task == "lm":
        from llmctl.train import finetune_lm

        return finetune_lm.run(exp, reporter, parent)
    if task == "classify":
        from llmctl.train import finetune_classify

        return finetune_classify.run(exp, reporter, parent)
    from llmctl.train import finetune_pairs

    return finetune_pairs.run(exp, reporter, parent)
