"""Teacher-forced response scoring of `<bos> prompt <sep> response <eos>` documents: the NLL of the response tokens
(and the `<eos>`) only. Training (`finetune.task: pairs`) and `llmctl evaluate` on a pairs run share it.
"""

from __future__ import annotations

import numpy as np

from llmctl.data.doc_batches import Documents, iterate, response_mask
from llmctl.errors import DataError
from llmctl.tfenv import import_tf

tf = import_tf()


def check_pairs(ds) -> None:
    if ds.task != "pairs" or not ds.layout.response("train").is_file():
        raise DataError(f"finetune.task=pairs needs a prompt/response dataset, but {ds.root} was built with "
                        f"data.task={ds.task}",
                        hint="set data.task=pairs with prompt and response columns and run `llmctl preprocess` again")


def pair_batch(docs: Documents, index: np.ndarray, tokens: np.ndarray):
    """(inputs [B, T-1], targets [B, T-1], weights [B, T-1]) for teacher forcing with a response-only loss."""
    weights = response_mask(tokens, docs.response_starts[index])
    return tokens[:, :-1], tokens[:, 1:], weights


def masked_nll(model, inputs, targets, weights, training: bool):
    """(sum of response-token NLL, number of response tokens) for one batch."""
    logits, _ = model(inputs, None, training=training)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    return tf.reduce_sum(ce * weights), tf.reduce_sum(weights)


class ResponseScorer:
    """Compiled masked NLL over a split: mean response loss (nats per response token)."""

    def __init__(self, model, *, batch_size: int, max_length: int):
        self.batch_size, self.max_length = int(batch_size), int(max_length)
        spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([None, None], tf.float32)]
        self._fn = tf.function(lambda x, y, w: masked_nll(model, x, y, w, False), input_signature=spec,
                               reduce_retracing=True)

    def __call__(self, docs: Documents) -> tuple[float, float]:
        total, count = 0.0, 0.0
        for index, tokens in iterate(docs, self.batch_size, self.max_length, shuffle=False, by_length=True):
            if tokens.shape[1] < 2:
                continue
            nll, n = self._fn(*pair_batch(docs, index, tokens))
            total, count = total + float(nll), count + float(n)
        return total, count
