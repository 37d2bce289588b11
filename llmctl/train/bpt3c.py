"""Whole-document classifier batches for BPT3C (ULMFiT's backpropagation through time for text classification).

A padded batch [B, W] is read in `train.bptt`-sized chunks, carrying the LSTM state and running pooling statistics
(`SequenceClassifier.encode_chunk`). Everything before the last `finetune.backprop_tokens` tokens (rounded up to
whole chunks) is read here, forward only, outside the gradient tape; the train step then reads the tail from that
state and pools over the whole document. Memory and step time are bounded by the chunk size and the tail length,
whatever the document length.

    reader = ChunkedReader(model, chunk=bptt, backprop_tokens=256)
    batch = reader.training_batch(tokens, labels)        # arrays cut along `reader.batch_axes`
    loss = reader.loss_function(class_weights)(*batch, training=True)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from llmctl.data.doc_batches import PAD_ID
from llmctl.tfenv import import_tf

tf = import_tf()


class ChunkedReader:
    """Prefix pass (no gradient) + tail step over whole documents for one `SequenceClassifier`."""

    def __init__(self, model, *, chunk: int, backprop_tokens: int):
        if chunk < 1 or backprop_tokens < 1:
            raise ValueError("chunk and backprop_tokens must be positive")
        self.model = model
        self.chunk = int(chunk)
        self.tail = -(-int(backprop_tokens) // self.chunk) * self.chunk
        units, layers = model.encoder.units, model.encoder.num_layers
        stat = tf.TensorSpec([None, units], tf.float32)
        self.state_signature = [tf.TensorSpec([2 * layers, None, units], tf.float32), stat, stat, stat,
                                tf.TensorSpec([None], tf.float32)]
        chunk_spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.bool)]
        self._prefix_fn = tf.function(self._prefix_chunk, input_signature=chunk_spec + self.state_signature,
                                      reduce_retracing=True)

    batch_axes = (0, 0, 1, 0, 0, 0, 0, 0)  # the batch axis of each array of `training_batch` (states: [2L, B, U])

    def _prefix_chunk(self, tokens, mask, states, total, high, last, count):
        states, stats = self.model.encode_chunk(tokens, mask, states, (total, high, last, count), training=True)
        return (states, *stats)

    def layout(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, mask) with the start token prepended (if the model has one), padded to whole chunks."""
        tokens = np.asarray(tokens, dtype=np.int32)
        mask = tokens != PAD_ID
        if self.model.start_id is not None:
            start = np.full((tokens.shape[0], 1), self.model.start_id, dtype=np.int32)
            tokens = np.concatenate([start, tokens], axis=1)
            mask = np.concatenate([np.zeros((tokens.shape[0], 1), dtype=bool), mask], axis=1)
        width = -(-tokens.shape[1] // self.chunk) * self.chunk
        pad = width - tokens.shape[1]
        if pad:
            tokens = np.pad(tokens, [(0, 0), (0, pad)], constant_values=PAD_ID)
            mask = np.pad(mask, [(0, 0), (0, pad)], constant_values=False)
        return tokens, mask

    def training_batch(self, tokens: np.ndarray, labels: np.ndarray) -> tuple:
        """Read every chunk before the tail (forward only); the step's inputs for the tail."""
        tokens, mask = self.layout(tokens)
        prefix = max(0, tokens.shape[1] - self.tail)
        states, stats = self.model.initial_chunk_state(tokens.shape[0])
        carry = (states, *stats)
        for start in range(0, prefix, self.chunk):
            if mask[:, start:].any():
                carry = self._prefix_fn(tokens[:, start:start + self.chunk], mask[:, start:start + self.chunk],
                                        *carry)
        return (tokens[:, prefix:], mask[:, prefix:], *carry, np.asarray(labels, dtype=np.int32))

    def logits(self, tokens, mask, states, total, high, last, count, labels, training: bool = True):
        """(class logits, labels): read the tail from the carried state and pool over the whole document."""
        model = self.model
        _, stats = model.encode_chunk(tokens, mask, states, (total, high, last, count), training=training)
        return model.head(model.pool_from_stats(stats), training=training), labels

    def loss_function(self, weight_table) -> Callable[..., Any]:
        """The class-weighted mean cross-entropy of a `training_batch`."""

        def loss_fn(*batch, training=True):
            logits, labels = self.logits(*batch, training=training)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            w = tf.gather(weight_table, labels)
            return tf.reduce_sum(ce * w) / tf.maximum(tf.reduce_sum(w), 1e-9)

        return loss_fn
