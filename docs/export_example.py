"""Use an `llmctl export` folder with plain TensorFlow, LiteRT and the `tokenizers` library — no llmctl needed.

    python docs/export_example.py runs/demo/export --prompt "The " --max-new-tokens 40
    python docs/export_example.py runs/demo_classify/export --text "a wonderful film"

Language models: the prompt is continued greedily three ways — the SavedModel's `prefill` + `step` signatures in a
Python loop, its `generate` signature (the whole loop inside one graph), and the TFLite `step` model through a
LiteRT signature runner — and the three continuations are printed (they are identical).
Classifiers: the text is classified with the SavedModel's `classify` signature and the TFLite `classify` model.
Text goes through the run's normalisation (manifest `normalize`) and, for language models, the prompt template
(manifest `prompt`) before the tokenizer. `--json` prints one JSON object instead. Described in docs/artifacts.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import unicodedata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

SPACES = re.compile(r"[^\S\n]+")   # whitespace runs other than newlines
LINE_EDGES = re.compile(r" *\n *")  # spaces around a newline
WORD = re.compile(r"[\w']+")         # a word for stop-word matching
GAPS = re.compile(r"[ \t]{2,}")      # double spaces a removed word leaves behind


def normalizer(folder: Path, rules: dict):
    """The run's text normalisation (NFKC → lowercase → whitespace collapse → stop words), as in training."""
    stop = set()
    if rules["stopwords"]:
        stop = set((folder / rules["stopwords"]).read_text(encoding="utf-8").split())

    def normalize(text: str) -> str:
        if rules["nfkc"]:
            text = unicodedata.normalize("NFKC", text)
        if rules["lowercase"]:
            text = text.lower()
        if rules["collapse_whitespace"]:
            text = LINE_EDGES.sub("\n", SPACES.sub(" ", text)).strip(" ")
        if stop:
            text = WORD.sub(lambda m: "" if m.group().lower() in stop else m.group(), text)
            text = LINE_EDGES.sub("\n", GAPS.sub(" ", text)).strip(" ")
        return text

    return normalize


def greedy_with_saved_model_steps(model, prompt: list[int], max_new: int, eos: int) -> list[int]:
    out = model.signatures["prefill"](token_ids=tf.constant([prompt], tf.int32))
    logits = out.pop("logits")[:, -1]       # next-token logits after the prompt
    state = out                             # h0, c0, h1, c1, ...
    new: list[int] = []
    while len(new) < max_new:
        token = int(np.argmax(logits[0]))
        new.append(token)
        if token == eos:
            break
        out = model.signatures["step"](token_id=tf.constant([token], tf.int32), **state)
        logits = out.pop("logits")
        state = out
    return new


def greedy_with_saved_model_generate(model, prompt: list[int], max_new: int) -> list[int]:
    out = model.signatures["generate"](
        prompt_ids=tf.constant([prompt], tf.int32), prompt_lengths=tf.constant([len(prompt)], tf.int32),
        max_new_tokens=tf.constant(max_new, tf.int32), temperature=tf.constant(0.0),  # 0 → greedy
        top_k=tf.constant(0, tf.int32), top_p=tf.constant(1.0), seed=tf.constant(0, tf.int64))
    length = int(out["lengths"][0])
    return [int(t) for t in out["token_ids"][0, :length]]


def greedy_with_tflite(path: Path, manifest: dict, prompt: list[int], max_new: int, eos: int) -> list[int]:
    runner = Interpreter(model_path=str(path)).get_signature_runner("step")
    units = manifest["state"]["units"]
    state = {name: np.zeros((1, units), np.float32) for name in manifest["state"]["order"]}
    for token in prompt:                    # feed the prompt one token at a time (batch 1)
        out = runner(token_id=np.array([token], np.int32), **state)
        state = {name: out[name] for name in state}
    new: list[int] = []
    while len(new) < max_new:
        token = int(np.argmax(out["logits"][0]))
        new.append(token)
        if token == eos:
            break
        out = runner(token_id=np.array([token], np.int32), **state)
        state = {name: out[name] for name in state}
    return new


def classify(folder: Path, manifest: dict, tokenizer: Tokenizer, text: str) -> dict:
    max_length = manifest["max_length"]
    normalize = normalizer(folder, manifest["normalize"])
    ids = tokenizer.encode(normalize(text), add_special_tokens=False).ids[:max_length]
    padded = np.zeros((1, max_length), np.int32)       # right-padded with <pad> = 0
    padded[0, : len(ids)] = ids
    saved = tf.saved_model.load(str(folder / "saved_model"))
    sm_probs = saved.signatures["classify"](token_ids=tf.constant([ids], tf.int32))["probabilities"].numpy()[0]
    runner = Interpreter(model_path=str(folder / "classify.float32.tflite")).get_signature_runner("classify")
    tfl_probs = runner(token_ids=padded)["probabilities"][0]
    labels = manifest["labels"]
    return {"text": text,
            "saved_model": {"label": labels[int(np.argmax(sm_probs))], "probabilities": sm_probs.tolist()},
            "tflite": {"label": labels[int(np.argmax(tfl_probs))], "probabilities": tfl_probs.tolist()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--prompt", default="The ", help="language models: text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--text", default="a wonderful film", help="classifiers: text to classify")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    folder = args.export_dir
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    tokenizer = Tokenizer.from_file(str(folder / manifest["tokenizer"]["file"]))
    lite = "classify.float32.tflite" if manifest["kind"] == "classify" else "step.float32.tflite"
    if not (folder / "saved_model").is_dir() or not (folder / lite).is_file():
        print(f"{folder} lacks saved_model/ or {lite}: export with export.formats=[saved_model, tflite]",
              file=sys.stderr)
        return 2

    if manifest["kind"] == "classify":
        result = classify(folder, manifest, tokenizer, args.text)
        if args.json:
            print(json.dumps(result))
        else:
            for name in ("saved_model", "tflite"):
                probs = ", ".join(f"{p:.3f}" for p in result[name]["probabilities"])
                print(f"{name:>12}: {result[name]['label']}  [{probs}]")
        return 0

    normalize, template = normalizer(folder, manifest["normalize"]), manifest["prompt"]
    encoded = tokenizer.encode(normalize(args.prompt), add_special_tokens=False).ids
    prompt = template["prefix_ids"] + encoded + template["suffix_ids"] if encoded else template["empty_prompt_ids"]
    eos = template["stop_id"]
    saved = tf.saved_model.load(str(folder / "saved_model"))
    runs = {"saved_model": greedy_with_saved_model_steps(saved, prompt, args.max_new_tokens, eos),
            "saved_model_generate": greedy_with_saved_model_generate(saved, prompt, args.max_new_tokens),
            "tflite": greedy_with_tflite(folder / "step.float32.tflite", manifest, prompt, args.max_new_tokens, eos)}
    # decoded together with the prompt, so word-level tokenizers put the space between them
    texts = {name: tokenizer.decode(prompt + ids, skip_special_tokens=True) for name, ids in runs.items()}
    if args.json:
        print(json.dumps({"prompt": args.prompt, "prompt_ids": prompt, "token_ids": runs, "text": texts}))
    else:
        for name, text in texts.items():
            print(f"{name:>20}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
