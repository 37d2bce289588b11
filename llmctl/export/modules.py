"""The `tf.Module`s that become SavedModels: named signatures with any batch size and sequence length.

Language model (`LanguageModelModule`), all token ids int32, all states float32 [B, units]:

    prefill(token_ids [B, T])                       → logits [B, T, V], h0, c0, ..., h{L-1}, c{L-1}
    step(token_id [B], h0, c0, ...)                 → logits [B, V], h0, c0, ...
    generate(prompt_ids [B, T], prompt_lengths [B], max_new_tokens [], temperature [], top_k [], top_p [], seed [])
                                                    → token_ids [B, max_new_tokens], lengths [B]

`prefill` starts from the zero state and returns the logits of every position (the next-token logits are
`logits[:, -1]`) and the state after the last position. `generate` takes right-padded prompts (pad id 0) with their
lengths; temperature <= 0 is greedy, top_k = 0 and top_p = 1 switch those filters off; it stops a row at `<eos>`.

Classifier (`ClassifierModule`):

    classify(token_ids [B, T])                      → probabilities [B, C], logits [B, C]

Token ids beyond `max_length` are dropped (training truncated documents the same way); pads (id 0) go at the end.

`tflite_functions(...)` gives the same computations at batch 1 (and the classifier at exactly `max_length` tokens),
the fixed shapes TFLite wants.
"""

from __future__ import annotations

from typing import Any, Callable

from llmctl.export import graphs
from llmctl.tfenv import import_tf

tf = import_tf()


def _state_specs(layers: int, units: int, batch: int | None) -> list[Any]:
    return [tf.TensorSpec([batch, units], tf.float32, name=name) for name in graphs.state_names(layers)]


def _named(logits, flat: list[Any], layers: int) -> dict[str, Any]:
    out = {"logits": logits}
    out.update(zip(graphs.state_names(layers), flat, strict=True))
    return out


def step_function(model, batch: int | None) -> Callable:
    """`step(token_id [batch], h0, c0, ...)` as a `tf.function` (batch None = any)."""
    layers = model.num_layers

    def step(token_id, *flat):
        logits, new_flat = graphs.one_step(model, token_id, list(flat))
        return _named(logits, new_flat, layers)

    specs = [tf.TensorSpec([batch], tf.int32, name="token_id")] + _state_specs(layers, model.units, batch)
    return tf.function(step, input_signature=specs)


def classify_function(model, max_length: int, batch: int | None, length: int | None) -> Callable:
    """`classify(token_ids [batch, length])` as a `tf.function` (None = any)."""

    def classify(token_ids):
        probabilities, logits = graphs.classify(model, token_ids, max_length)
        return {"probabilities": probabilities, "logits": logits}

    return tf.function(classify, input_signature=[tf.TensorSpec([batch, length], tf.int32, name="token_ids")])


class LanguageModelModule(tf.Module):
    """prefill / step / generate over a trained `LSTMLanguageModel` (see the module docstring)."""

    def __init__(self, model, *, eos_id: int, pad_id: int):
        super().__init__(name="llmctl_language_model")
        self.model = model
        layers = model.num_layers

        def prefill(token_ids):
            logits, flat = graphs.prefill(model, token_ids)
            return _named(logits, flat, layers)

        def generate(prompt_ids, prompt_lengths, max_new_tokens, temperature, top_k, top_p, seed):
            tokens, lengths = graphs.decode(model, prompt_ids, prompt_lengths, max_new_tokens, temperature, top_k,
                                            top_p, seed, eos_id=eos_id, pad_id=pad_id)
            return {"token_ids": tokens, "lengths": lengths}

        self.prefill = tf.function(prefill, input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids")])
        self.step = step_function(model, batch=None)
        self.generate = tf.function(generate, input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="prompt_ids"),
            tf.TensorSpec([None], tf.int32, name="prompt_lengths"),
            tf.TensorSpec([], tf.int32, name="max_new_tokens"),
            tf.TensorSpec([], tf.float32, name="temperature"),
            tf.TensorSpec([], tf.int32, name="top_k"),
            tf.TensorSpec([], tf.float32, name="top_p"),
            tf.TensorSpec([], tf.int64, name="seed"),
        ])

    def signatures(self) -> dict[str, Any]:
        return {"prefill": self.prefill.get_concrete_function(), "step": self.step.get_concrete_function(),
                "generate": self.generate.get_concrete_function()}


class ClassifierModule(tf.Module):
    """classify over a trained `SequenceClassifier` (see the module docstring)."""

    def __init__(self, model, *, max_length: int):
        super().__init__(name="llmctl_classifier")
        self.model = model
        self.classify = classify_function(model, max_length, batch=None, length=None)

    def signatures(self) -> dict[str, Any]:
        return {"classify": self.classify.get_concrete_function()}


def tflite_functions(model, kind: str, *, max_length: int) -> dict[str, Callable]:
    """The fixed-shape functions converted to TFLite, by signature name: `step` (LM) or `classify` (classifier)."""
    if kind == "classify":
        return {"classify": classify_function(model, max_length, batch=1, length=max_length)}
    return {"step": step_function(model, batch=1)}
