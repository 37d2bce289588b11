"""The compiled decoder against plain references: full-sequence logits, a Python greedy loop, one-by-one prompts,
and the unrolled reference `beam_search` (tiny random-weight models; both the XLA and the plain-graph loop)."""

from __future__ import annotations

import numpy as np
import pytest

from llmctl.tfenv import import_tf

tf = import_tf()

from llmctl.generate.decode import Decoder  # noqa: E402
from llmctl.generate.logit_processors import apply_repetition_penalty  # noqa: E402
from llmctl.models.lstm_lm import build_language_model  # noqa: E402
from llmctl.schema import ModelConfig  # noqa: E402
from tests.generate.reference_decoders import beam_search  # noqa: E402

VOCAB = 37
EOS = 3
PROMPTS = [[5, 6, 7], [8], [9, 10, 11, 12, 13, 14, 15], [20, 21]]


def make_model(seed: int = 0, eos_bias: float | None = None):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_language_model(ModelConfig(embedding_dim=12, layers=2, units=20, dropout=0.0, output_dropout=0.0),
                                 VOCAB)
    # random init gives nearly flat logits; scale the head so decoding decisions are clear-cut
    model.head.kernel.assign(model.head.kernel * 8.0)
    if eos_bias is not None:
        bias = np.zeros(VOCAB, np.float32)
        bias[EOS] = eos_bias
        model.head.bias.assign(bias)
    return model


@pytest.fixture(scope="module")
def model():
    return make_model()


def reference_greedy(model, prompt, n, *, eos=EOS, penalty=1.0, min_new=0):
    """Token-by-token greedy decoding in eager mode with the model's own sequence call."""
    logits, states = model(tf.constant([prompt]), model.initial_state(1))
    logits = logits[:, -1]
    out = []
    for step in range(n):
        scores = logits
        if penalty != 1.0:
            history = tf.constant([out or [-1]], tf.int32)
            scores = apply_repetition_penalty(scores, history, penalty)
        scores = scores.numpy()
        if step < min_new:
            scores[:, eos] = -np.inf
        token = int(np.argmax(scores[0]))
        out.append(token)
        if token == eos:
            return out[:-1], "eos"
        logits, states = model(tf.constant([[token]]), states)
        logits = logits[:, -1]
    return out, "length"


@pytest.mark.parametrize("jit", [True, False])
def test_incremental_logits_equal_full_sequence_logits(model, jit):
    tokens = np.random.default_rng(1).integers(5, VOCAB, size=(3, 25)).astype(np.int32)
    full, _ = model(tf.constant(tokens), model.initial_state(3))
    decoder = Decoder(model, jit_compile=jit)
    step = tf.function(decoder.step, jit_compile=jit)
    logits, states = decoder.prefill(tokens[:, :4].tolist())
    np.testing.assert_allclose(logits.numpy(), full[:, 3].numpy(), atol=1e-5, rtol=0)
    for t in range(4, tokens.shape[1]):
        logits, states = step(tf.constant(tokens[:, t]), states)
        np.testing.assert_allclose(logits.numpy(), full[:, t].numpy(), atol=1e-5, rtol=0)


def test_ragged_prefill_equals_each_prompt_alone(model):
    decoder = Decoder(model)
    logits, states = decoder.prefill(PROMPTS)
    for row, prompt in enumerate(PROMPTS):
        alone, alone_states = model(tf.constant([prompt]), model.initial_state(1))
        np.testing.assert_allclose(logits[row].numpy(), alone[0, -1].numpy(), atol=1e-5, rtol=0)
        for (h, c), (h1, c1) in zip(states, alone_states, strict=True):
            np.testing.assert_allclose(h[row].numpy(), h1[0].numpy(), atol=1e-5, rtol=0)
            np.testing.assert_allclose(c[row].numpy(), c1[0].numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("jit", [True, False])
def test_greedy_in_graph_equals_python_loop(jit):
    model = make_model(seed=3, eos_bias=1.0)  # EOS is likely: exercises early finishing rows
    decoder = Decoder(model, jit_compile=jit)
    out = decoder.generate(PROMPTS, 30)
    for i, prompt in enumerate(PROMPTS):
        tokens, reason = reference_greedy(model, prompt, 30)
        assert out.sequences[i] == [tokens]
        assert out.finish[i] == [reason]


def test_repetition_penalty_and_min_new_tokens_match_reference():
    model = make_model(seed=5, eos_bias=3.0)  # EOS dominates: without min_new_tokens it ends at once
    plain = Decoder(model).generate(PROMPTS[:2], 20)
    assert all(seq == [[]] and reason == ["eos"] for seq, reason in zip(plain.sequences, plain.finish, strict=True))
    decoder = Decoder(model, repetition_penalty=1.8, min_new_tokens=6)
    out = decoder.generate(PROMPTS, 20)
    for i, prompt in enumerate(PROMPTS):
        tokens, reason = reference_greedy(model, prompt, 20, penalty=1.8, min_new=6)
        assert out.sequences[i] == [tokens]
        assert out.finish[i] == [reason]
        assert len(tokens) >= 6  # EOS was masked before min_new_tokens


@pytest.mark.parametrize("strategy,settings", [("greedy", {}), ("sample", {"top_p": 0.9, "temperature": 0.8}),
                                               ("sample", {"top_k": 5}), ("beam", {"beam_width": 3, "n_best": 2})])
def test_batched_prompts_equal_one_by_one(model, strategy, settings):
    decoder = Decoder(model, strategy=strategy, jit_compile=False, **settings)  # XLA: see the other tests
    batched = decoder.generate(PROMPTS, 15, seed=9)
    for i, prompt in enumerate(PROMPTS):
        alone = decoder.generate([prompt], 15, seed=9, rows=[i])
        assert alone.sequences[0] == batched.sequences[i]
        assert alone.finish[0] == batched.finish[i]


@pytest.mark.parametrize("jit", [True, False])
def test_same_seed_same_tokens_other_seed_other_tokens(model, jit):
    decoder = Decoder(model, strategy="sample", temperature=1.5, jit_compile=jit)
    first = decoder.generate(PROMPTS, 25, seed=1234)
    again = Decoder(model, strategy="sample", temperature=1.5, jit_compile=jit).generate(PROMPTS, 25, seed=1234)
    other = decoder.generate(PROMPTS, 25, seed=4321)
    assert first.sequences == again.sequences
    assert first.sequences != other.sequences


def test_chunked_streaming_equals_one_call_and_can_stop(model):
    decoder = Decoder(model, strategy="sample", top_p=0.95)
    whole = decoder.generate(PROMPTS, 40, seed=2)
    chunks = []
    streamed = decoder.generate(PROMPTS, 40, seed=2, chunk=7, on_chunk=lambda t, f: chunks.append(t.copy()))
    assert streamed.sequences == whole.sequences
    joined = np.concatenate(chunks, axis=1)
    for i, seq in enumerate(whole.sequences):
        produced = [int(t) for t in joined[i] if t >= 0]
        assert produced[:len(seq[0])] == seq[0]
    calls = []
    stopped = decoder.generate(PROMPTS, 40, seed=2, chunk=5, on_chunk=lambda t, f: calls.append(1) or len(calls) < 2)
    assert len(calls) == 2 and stopped.steps == 10
    assert all(reason == ["stopped"] or reason == ["eos"] for reason in stopped.finish)


@pytest.mark.parametrize("width,n_best,length_penalty", [(4, 2, 0.7), (3, 1, 1.0), (2, 2, 0.0)])
def test_beam_loop_equals_unrolled_reference(width, n_best, length_penalty):
    model = make_model(seed=7, eos_bias=0.5)
    decoder = Decoder(model, strategy="beam", beam_width=width, n_best=n_best, length_penalty=length_penalty)
    out = decoder.generate(PROMPTS, 12)

    def step_fn(tokens, states):
        logits, states = model(tokens[:, None], states)
        return logits[:, -1], states

    for i, prompt in enumerate(PROMPTS):
        logits, states = model(tf.constant([prompt]), model.initial_state(1))
        ref = beam_search(step_fn, states, logits[:, -1], beam_width=width, max_new_tokens=12, eos_id=EOS,
                          length_penalty=length_penalty, n_best=n_best)
        expected = []
        for j in range(n_best):
            ids = ref.sequences[0, j, :int(ref.lengths[0, j])].numpy().tolist()
            expected.append(ids[:-1] if ids and ids[-1] == EOS else ids)
        assert out.sequences[i] == expected
        np.testing.assert_allclose(out.scores[i], ref.scores[0].numpy(), rtol=1e-5)


def test_decoder_rejects_bad_settings(model):
    with pytest.raises(ValueError):
        Decoder(model, strategy="nucleus")
    with pytest.raises(ValueError):
        Decoder(model, strategy="sample", temperature=0.0)
    with pytest.raises(ValueError):
        Decoder(model, strategy="beam", beam_width=2, n_best=3)
    with pytest.raises(ValueError):
        Decoder(model).prefill([[1, 2], []])


ROW_CASES = [  # (prompt, RowSettings kwargs)
    ([5, 6, 7], dict(max_new_tokens=12, seed=3, row=0, greedy=True)),
    ([8], dict(max_new_tokens=20, seed=4, row=1, greedy=False, temperature=0.7, top_p=0.9)),
    ([9, 10, 11, 12], dict(max_new_tokens=5, seed=5, row=0, greedy=False, temperature=1.4)),
    ([20, 21], dict(max_new_tokens=16, seed=6, row=2, greedy=False, temperature=1.0, top_p=0.6)),
    ([13, 14], dict(max_new_tokens=9, seed=7, row=0, greedy=True)),
]


def _alone(model, prompt, s, jit):
    """The same row through `Decoder.generate` with a decoder configured for exactly its settings."""
    if s.greedy:
        decoder = Decoder(model, jit_compile=jit)
    else:
        decoder = Decoder(model, strategy="sample", temperature=s.temperature, top_p=s.top_p, jit_compile=jit)
    out = decoder.generate([prompt], s.max_new_tokens, seed=s.seed, rows=[s.row])
    return out.sequences[0][0], out.finish[0][0]


@pytest.mark.parametrize("jit,full,pad", [(False, False, False), (True, True, True)])
def test_rows_with_own_settings_joining_and_leaving_equal_each_alone(jit, full, pad):
    """Dynamic batching in miniature: rows with different settings and lengths start at different times, finished
    rows leave, and every row still gets exactly the tokens it gets decoded alone."""
    from llmctl.generate.decode import RowBatch, RowSettings

    model = make_model(seed=3, eos_bias=0.5)
    settings = [RowSettings(**kw) for _, kw in ROW_CASES]
    decoder = Decoder(model, strategy="sample", jit_compile=jit)
    width = 24
    batch = decoder.start([ROW_CASES[0][0], ROW_CASES[1][0]], settings[:2], width)
    owners = [0, 1]
    results = {}
    pending = [2, 3, 4]
    while owners:
        batch, _ = decoder.advance(batch, 3, pad_to=8 if pad else None, full=full)
        finished = batch.finished.numpy()
        lengths = batch.lengths.numpy()
        generated = batch.generated.numpy()
        keep = []
        for r, owner in enumerate(owners):
            if finished[r]:
                ids = generated[r, :lengths[r]].tolist()
                ended = bool(ids) and ids[-1] == EOS
                results[owner] = (ids[:-1] if ended else ids, "eos" if ended else "length")
            else:
                keep.append(r)
        owners = [owners[r] for r in keep]
        batch = batch.take(keep) if keep else None
        if pending:   # one new row joins after every chunk
            k = pending.pop(0)
            new = decoder.start([ROW_CASES[k][0]], [settings[k]], width)
            batch = new if batch is None else RowBatch.concat(batch, new)
            owners.append(k)
    assert len(results) == len(ROW_CASES)
    for k, (prompt, _) in enumerate(ROW_CASES):
        assert results[k] == _alone(model, prompt, settings[k], jit), k
