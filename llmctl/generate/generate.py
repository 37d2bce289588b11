"""`llmctl generate`: write text with a trained language model (greedy, sampling with temperature/top-k/top-p, beam).

Prompts come from the command line (`--prompt`, `--prompts-file`, stdin — collected by the CLI), else from
`generate.prompts`, else one empty prompt. Each prompt is normalised with the run's `data.normalize` and encoded
with the run's tokenizer; characters (char tokenizer) or words (word tokenizer) missing from the vocabulary become
`<unk>` and are named in a warning. The model is conditioned the way its training data looked:

* `lm` runs whose documents end with `<eos>` (several documents or files): the prompt follows `<eos>`, i.e. it is
  the start of a new document (an empty prompt is just `<eos>`);
* `lm` runs trained on one continuous text (a single text file, `documents: file`): the prompt alone, from the zero
  state; an empty prompt starts from `<bos>`;
* `pairs` runs: `<bos> prompt <sep>`, the prefix `preprocess.pair_template` gives the response.

Output (stdout): one prompt without `--json` is streamed — the prompt, then the continuation as it is generated
(every 16 tokens); several prompts are printed one after another, separated by a `---` line; with `--json` one JSON
object per output line (`prompt`, `text`, `tokens`, `finish_reason`, `strategy`, ...). Generation of a prompt ends
at `<eos>` (`finish_reason: eos`), at `generate.max_new_tokens` (`length`) or at the first stop string (`stop`; the
stop string is not part of the text). The same `generate.seed` (default `run.seed`) gives the same text.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Sequence

from llmctl.errors import ArtifactError
from llmctl.progress import Reporter
from llmctl.results import Result

STREAM_CHUNK = 16          # tokens per streamed chunk (one compiled-loop call each)
MAX_BATCH = 256            # prompts decoded together
XLA_MIN_STEPS = 4096       # decode steps from which XLA's compile time pays off (docs/benchmarks.md)


def _eos_terminated(opened) -> bool:
    """Did the run's training documents end with <eos>? (dataset manifest if still there, else the run config)."""
    from pathlib import Path

    from llmctl.runs import DatasetDir

    dataset = opened.info.get("dataset")
    if dataset:
        manifest = DatasetDir(Path(dataset))
        try:
            if manifest.exists():
                flags = manifest.read_manifest().get("documents", {}).get("eos_after_document", {})
                if "train" in flags:
                    return bool(flags["train"])
        except ArtifactError:
            pass
    data = opened.exp.data
    single = (data.documents == "file" and len(data.train) == 1 and data.train[0].format in ("auto", "text")
              and Path(data.train[0].path).suffix.lower() not in (".jsonl", ".tsv", ".csv")
              and not Path(data.train[0].path).is_dir() and "*" not in str(data.train[0].path))
    return not single


def _unknown(tokenizer, text: str) -> list[str]:
    """Characters / words of `text` the vocabulary lacks (they encode to <unk>)."""
    if tokenizer.kind == "char":
        pieces = text
    elif tokenizer.kind == "word":
        from llmctl.data.tokenizers import split_words

        pieces = split_words(text)
    else:
        return []
    return sorted({p for p in pieces if tokenizer.token_to_id(p) is None})


def encode_prompts(opened, prompts: Sequence[str], reporter: Reporter) -> list[list[int]]:
    """Token ids of each prompt, with the conditioning prefix of the run's kind (see the module docstring)."""
    from llmctl.data.tokenizers import BOS_ID, EOS_ID, UNK_ID

    tokenizer = opened.tokenizer
    norm = None if opened.normalizer.identity else opened.normalizer
    after_eos = opened.kind != "pairs" and _eos_terminated(opened)
    out = []
    for i, prompt in enumerate(prompts):
        text = norm(prompt) if norm else prompt
        ids = tokenizer.encode(text) if text else []
        if UNK_ID in ids:
            missing = _unknown(tokenizer, text)
            shown = ", ".join(repr(m) for m in missing[:8]) + (" ..." if len(missing) > 8 else "")
            where = f"prompt {i + 1}" if len(prompts) > 1 else "the prompt"
            reporter.warn(f"{where}: {ids.count(UNK_ID)} token(s) not in the {tokenizer.kind} vocabulary are read "
                          f"as <unk>: {shown or '(unknown)'}")
        if opened.kind == "pairs":
            from llmctl.data.preprocess import pair_template

            template, start = pair_template(ids, [])
            ids = template[:start]
        elif after_eos:
            ids = [EOS_ID, *ids]
        elif not ids:
            ids = [BOS_ID]
        out.append(ids)
    return out


def run(exp, reporter: Reporter | None = None, prompts: list[str] | None = None, as_json: bool = False) -> Result:
    """Generate for `prompts` (or `generate.prompts`, or one empty prompt); writes the text to stdout."""
    from llmctl.generate.decode import Decoder
    from llmctl.generate.text_output import continuation, cut_at_stop
    from llmctl.inference_run import load_language_model, open_run
    from llmctl.tfenv import import_tf

    import_tf()
    reporter = reporter or Reporter("none")
    gen = exp.generate
    opened = open_run(exp)
    if opened.kind == "classify":
        raise ArtifactError(f"run {opened.run.root} is a classifier: it predicts labels, it does not write text",
                            hint="use `llmctl evaluate` on classifier runs; generate needs a language-model run")
    texts = list(prompts) if prompts else (list(gen.prompts) or [""])
    model, checkpoint = load_language_model(opened, gen.checkpoint)
    ids = encode_prompts(opened, texts, reporter)
    seed = gen.seed if gen.seed is not None else exp.run.seed
    batches = [list(range(i, min(i + MAX_BATCH, len(ids)))) for i in range(0, len(ids), MAX_BATCH)]
    jit = gen.strategy != "beam" and gen.max_new_tokens * len(batches) >= XLA_MIN_STEPS
    decoder = Decoder.from_config(model, gen, jit_compile=jit)
    settings = decoder.describe()
    stream = len(texts) == 1 and not as_json and gen.strategy != "beam"
    out = sys.stdout
    t0 = time.perf_counter()
    records: list[dict[str, Any]] = []
    new_tokens = 0
    for group in batches:
        group_ids = [ids[i] for i in group]
        if stream:
            result, text_of = _streamed(decoder, opened, texts[0], group_ids[0], gen, seed, out)
        else:
            result = decoder.generate(group_ids, gen.max_new_tokens, seed=seed, rows=group)
            text_of = None
        new_tokens += result.new_tokens
        for k, i in enumerate(group):
            for rank, (seq, reason) in enumerate(zip(result.sequences[k], result.finish[k], strict=True)):
                text, stopped = cut_at_stop(continuation(opened.tokenizer, group_ids[k], seq), gen.stop)
                record: dict[str, Any] = {"index": i, "prompt": texts[i], "text": text_of or text,
                                          "tokens": len(seq), "finish_reason": "stop" if stopped else reason,
                                          **settings}
                if gen.strategy == "sample":
                    record["seed"] = seed
                if result.scores is not None:
                    record.update(rank=rank, score=result.scores[k][rank])
                records.append(record)
                if as_json:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                elif not stream:
                    if len(records) > 1:
                        out.write("---\n")
                    out.write(texts[i] + text + "\n")
        out.flush()
    seconds = time.perf_counter() - t0
    values = {"run": str(opened.run.root), "checkpoint": checkpoint.get("which"),
              "checkpoint_path": checkpoint.get("path"), "prompts": len(texts), "outputs": len(records),
              "new_tokens": new_tokens, "seconds": seconds, "tokens_per_s": new_tokens / seconds if seconds else None,
              "xla": jit, **settings, "seed": seed}
    reporter.metrics("generate", {k: values[k] for k in ("outputs", "new_tokens", "seconds", "tokens_per_s")})
    return Result(title=f"generate: {opened.run.root.name}", values=values, rendered=True)


def _streamed(decoder, opened, prompt: str, prompt_ids: list[int], gen, seed: int, out):
    """Generate for one prompt, printing the prompt and then the continuation every `STREAM_CHUNK` tokens."""
    from llmctl.generate.text_output import StreamPrinter, continuation, cut_at_stop

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    write(prompt)
    printer = StreamPrinter(opened.tokenizer, prompt_ids, gen.stop, write)

    def on_chunk(tokens, finished) -> bool:
        row = [int(t) for t in tokens[0] if t >= 0 and t != decoder.eos_id]
        return printer.feed(row)

    result = decoder.generate([prompt_ids], gen.max_new_tokens, seed=seed, rows=[0], chunk=STREAM_CHUNK,
                              on_chunk=on_chunk)
    final, _ = cut_at_stop(continuation(opened.tokenizer, prompt_ids, result.sequences[0][0]), gen.stop)
    printer.finish(final)
    write("\n")
    return result, final
