"""`llmctl evaluate` on a prompt→response run: response perplexity, exact match, BLEU and chrF.

    result = evaluate_pairs(exp, run, reporter)
    result = evaluate_run(exp, opened, reporter)          # the same, as `llmctl.evaluate` dispatches it

* `response_loss` / `response_ppl` — teacher-forced NLL over the response tokens and `<eos>` of every pair of the
  split (prompt tokens are context, not scored), per token.
* `exact_match` — share of the first `evaluate.max_generate` pairs whose greedy response (from `<bos> prompt <sep>`,
  stopped at `<eos>`) has exactly the reference's token ids.
* `bleu`, `chrf` — sacrebleu corpus BLEU and chrF of the decoded responses against the decoded references (both
  went through the run's normalisation and tokenizer, so they are compared in the same form). BLEU uses the
  *effective order* (n-gram orders no hypothesis reaches are left out of the geometric mean): plain BLEU-4 is 0 for
  any corpus of responses shorter than four tokens. The sacrebleu signatures are in the card.
Greedy decoding (`llmctl.generate.decode.Decoder`, as `llmctl generate --set generate.strategy=greedy` does) runs at
most (longest reference + 8) tokens: a longer output cannot match.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from llmctl.errors import ConfigError
from llmctl.evaluation.card import save_card
from llmctl.results import Result
from llmctl.runs import RunDir

DECODE_MARGIN = 8
DECODE_BATCH = 256
SHOWN_EXAMPLES = 5


def _references(docs, ds_tokens, offsets, count: int) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt prefixes `<bos> prompt <sep>`, reference response ids without `<eos>`) of the first `count` pairs,
    read from the full documents (never truncated)."""
    from llmctl.data.tokenizers import EOS_ID

    prefixes, references = [], []
    for i in range(count):
        start, end = int(offsets[i]), int(offsets[i + 1])
        doc = np.asarray(ds_tokens[start:end], dtype=np.int64)
        rs = int(docs.response_starts[i])
        response = doc[rs:]
        if response.size and response[-1] == EOS_ID:
            response = response[:-1]
        prefixes.append([int(t) for t in doc[:rs]])
        references.append([int(t) for t in response])
    return prefixes, references


def evaluate_run(exp, opened, reporter) -> Result:
    """Entry point for `llmctl.evaluate` (`opened`: `llmctl.inference_run.InferenceRun`)."""
    return evaluate_pairs(exp, opened.run, reporter)


def evaluate_pairs(exp, run: RunDir, reporter) -> Result:
    from sacrebleu.metrics import BLEU, CHRF

    from llmctl.data.dataset import open_dataset
    from llmctl.data.doc_batches import Documents
    from llmctl.evaluation.classify import check_run_dataset, run_max_length
    from llmctl.generate.decode import Decoder
    from llmctl.models.checkpoint_io import restore_model
    from llmctl.models.response_nll import ResponseScorer, check_pairs

    ev = exp.evaluate
    if ev.files:
        raise ConfigError("evaluate.files holds plain text; a prompt→response run is evaluated on a pairs split",
                          hint="use --split train|valid|test, or `llmctl generate` for new prompts")
    t0 = time.perf_counter()
    ds = open_dataset(exp.data.dir)
    check_pairs(ds)
    check_run_dataset(run, ds)
    split = ev.split
    max_length = run_max_length(run, exp.finetune.max_length)
    docs = Documents.from_dataset(ds, split, max_length=max_length, responses=True)
    model, loaded = restore_model(run, ev.checkpoint)
    total, count = ResponseScorer(model, batch_size=max(exp.train.batch_size, 64), max_length=max_length)(docs)
    loss = total / count if count else float("nan")

    n_gen = min(ev.max_generate, len(docs))
    tokenizer = ds.tokenizer()
    measures: dict[str, Any] = {"response_tokens": int(count), "response_loss": loss,
                                "response_ppl": math.exp(loss) if loss < 700 else float("inf"), "generated": n_gen}
    examples = []
    if n_gen:
        prefixes, references = _references(docs, ds.tokens(split), ds.doc_offsets(split), n_gen)
        decoder = Decoder(model, strategy="greedy", jit_compile=False)  # one-off graph: XLA compile costs more
        budget = max(len(r) for r in references) + DECODE_MARGIN
        outputs = []
        for start in range(0, n_gen, DECODE_BATCH):
            generated = decoder.generate(prefixes[start:start + DECODE_BATCH], budget)
            outputs += [hyps[0] for hyps in generated.sequences]
        hyps = [tokenizer.decode(o) for o in outputs]
        refs = [tokenizer.decode(r) for r in references]
        exact = float(np.mean([o == r for o, r in zip(outputs, references, strict=True)]))
        bleu, chrf = BLEU(effective_order=True), CHRF()
        measures.update(exact_match=exact, bleu=float(bleu.corpus_score(hyps, [refs]).score),
                        chrf=float(chrf.corpus_score(hyps, [refs]).score),
                        bleu_signature=str(bleu.get_signature()), chrf_signature=str(chrf.get_signature()))
        for prefix, ref, hyp in list(zip(prefixes, refs, hyps, strict=True))[:SHOWN_EXAMPLES]:
            examples.append({"prompt": tokenizer.decode(prefix[1:-1]), "reference": ref, "output": hyp})
        reporter.table(f"{run.root.name}: {split} examples (greedy)",
                       [[e["prompt"], e["reference"], e["output"]] for e in examples],
                       columns=("prompt", "reference", "output"))
    measures.update(checkpoint=loaded.get("checkpoint"), examples_shown=examples)
    return save_card(run, ds, task="pairs", split=split, examples=len(docs), measures=measures, started=t0,
                     settings={"decoding": "greedy", "max_length": max_length})
