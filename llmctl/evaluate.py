"""`llmctl evaluate`: measure a trained run and save its protocol card in `<run>/eval/<name>.json`.

The run's kind (run.json) picks the protocol: each entry of `PROTOCOLS` names a module whose
`evaluate_run(exp, opened, reporter) -> Result` computes and saves the card for that kind of run —
`lm` → `llmctl.evaluation.lm` (NLL, bits, perplexities, accuracies over every token of a split or of text files).
Adding a kind (classification, prompt→response) is one entry here and one module under `llmctl/evaluation/`.
"""

from __future__ import annotations

import importlib

from llmctl.errors import ArtifactError
from llmctl.progress import Reporter
from llmctl.results import Result

PROTOCOLS: dict[str, str] = {
    "lm": "llmctl.evaluation.lm",
    "classify": "llmctl.evaluation.classify",
    "pairs": "llmctl.evaluation.pairs",
}


def run(exp, reporter: Reporter | None = None) -> Result:
    """Evaluate the run `exp` names (`exp.evaluate`: split or files, checkpoint, context, batch_size, bptt)."""
    from llmctl.inference_run import open_run

    reporter = reporter or Reporter("none")
    opened = open_run(exp)
    module = PROTOCOLS.get(opened.kind)
    if module is None:
        raise ArtifactError(f"run {opened.run.root} is a `{opened.kind}` run; this llmctl evaluates "
                            f"{', '.join(PROTOCOLS)} runs", hint="evaluate a language-model run, or update llmctl")
    return importlib.import_module(module).evaluate_run(exp, opened, reporter)
