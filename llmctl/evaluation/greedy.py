"""Batched greedy decoding of responses with a language model, in one compiled graph per prompt length.

    decoder = GreedyDecoder(model, max_new_tokens=64)
    outputs = decoder([[2, 17, 18, 4], ...])     # prompt prefixes → generated ids (cut before <eos>)

Prompts are grouped by length, so a batch needs no padding: prefill runs the whole prefix once, then a
`tf.while_loop` feeds back the arg-max token through the model with explicit LSTM state until every row has
produced `<eos>` or `max_new_tokens` are out. A small reference implementation (the export tests compare exported
graphs against it); `llmctl.generate.decode.Decoder` is the production decoder and gives the same tokens.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from llmctl.data.pair_prompts import cut_at_eos
from llmctl.data.tokenizers import EOS_ID
from llmctl.tfenv import import_tf

tf = import_tf()


class GreedyDecoder:
    def __init__(self, model, *, max_new_tokens: int, batch_size: int = 64):
        self.model = model
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self._fn = tf.function(self._decode, input_signature=[tf.TensorSpec([None, None], tf.int32)])

    def _decode(self, prompts):
        model = self.model
        logits, states = model(prompts, None, training=False)
        token = tf.argmax(logits[:, -1], axis=-1, output_type=tf.int32)
        batch = tf.shape(prompts)[0]
        out = tf.TensorArray(tf.int32, size=0, dynamic_size=True, element_shape=[None])
        done = tf.zeros([batch], tf.bool)
        for i in tf.range(self.max_new_tokens):
            out = out.write(i, tf.where(done, tf.fill([batch], EOS_ID), token))
            done = tf.logical_or(done, tf.equal(token, EOS_ID))
            if tf.reduce_all(done):
                break
            logits, states = model(token[:, None], states, training=False)
            token = tf.argmax(logits[:, -1], axis=-1, output_type=tf.int32)
        return tf.transpose(out.stack())

    def __call__(self, prefixes: Sequence[Sequence[int]]) -> list[list[int]]:
        results: list[list[int]] = [[] for _ in prefixes]
        by_length: dict[int, list[int]] = defaultdict(list)
        for index, prefix in enumerate(prefixes):
            by_length[len(prefix)].append(index)
        for length, indices in sorted(by_length.items()):
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                batch = np.asarray([prefixes[i] for i in chunk], dtype=np.int32).reshape(len(chunk), length)
                generated = self._fn(batch).numpy()
                for row, index in enumerate(chunk):
                    results[index] = cut_at_eos(generated[row])
        return results
