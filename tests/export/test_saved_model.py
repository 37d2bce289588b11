"""SavedModel signatures: any batch size and length, parity with Keras, in-graph generation, plain-TF loading."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.export.reference import keras_greedy, keras_logits, max_abs_diff
from tests.export.tiny_runs import PROMPT, TEXT

TOL = 1e-4


@pytest.fixture(scope="module")
def saved(lm_export):
    from llmctl.tfenv import import_tf

    tf = import_tf()
    return tf.saved_model.load(str(lm_export[0] / "saved_model"))


def _call(saved, name, **inputs):
    from llmctl.tfenv import import_tf

    tf = import_tf()
    out = saved.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


def _states(out, layers=2):
    return {f"{k}{i}": out[f"{k}{i}"] for i in range(layers) for k in ("h", "c")}


def test_signatures_are_named(saved):
    assert set(saved.signatures) == {"prefill", "step", "generate"}


@pytest.mark.parametrize("batch,length", [(1, 1), (1, 37), (3, 16)])
def test_prefill_matches_keras_at_any_batch_and_length(saved, lm_model, lm_tokenizer, batch, length):
    ids = np.asarray(lm_tokenizer.encode(TEXT), np.int32)
    rows = np.stack([ids[r * 11: r * 11 + length] for r in range(batch)])
    ref_logits, ref_flat = keras_logits(lm_model, rows)
    out = _call(saved, "prefill", token_ids=rows)
    assert out["logits"].shape == ref_logits.shape
    assert max_abs_diff(out["logits"], ref_logits) < TOL
    for name, ref in zip(["h0", "c0", "h1", "c1"], ref_flat, strict=True):
        assert max_abs_diff(out[name], ref) < TOL


def test_step_continues_prefill_like_keras_on_the_whole_text(saved, lm_model, lm_tokenizer):
    ids = np.asarray(lm_tokenizer.encode(TEXT)[:60], np.int32)[None, :]
    ref_logits, _ = keras_logits(lm_model, ids)
    out = _call(saved, "prefill", token_ids=ids[:, :20])
    states, worst = _states(out), 0.0
    for t in range(20, ids.shape[1]):
        out = _call(saved, "step", token_id=ids[:, t], **states)
        states = _states(out)
        worst = max(worst, max_abs_diff(out["logits"][0], ref_logits[0, t]))
    assert worst < TOL


def _generate(saved, prompts, lengths, n, temperature=0.0, top_k=0, top_p=1.0, seed=0):
    width = max(max(lengths), 1)
    ids = np.zeros((len(prompts), width), np.int32)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = prompt
    return _call(saved, "generate", prompt_ids=ids, prompt_lengths=np.asarray(lengths, np.int32),
                 max_new_tokens=np.int32(n), temperature=np.float32(temperature), top_k=np.int32(top_k),
                 top_p=np.float32(top_p), seed=np.int64(seed))


def test_generate_greedy_equals_keras_greedy(saved, lm_model, lm_tokenizer):
    prompt = lm_tokenizer.encode(PROMPT)
    out = _generate(saved, [prompt], [len(prompt)], 40)
    expected = keras_greedy(lm_model, prompt, 40)
    assert out["token_ids"].shape == (1, 40)
    assert out["token_ids"][0, : out["lengths"][0]].tolist() == expected
    assert len(set(expected)) > 3, "the tiny model should say something non-trivial"


@pytest.mark.parametrize("settings", [dict(strategy="greedy"),
                                      dict(strategy="sample", temperature=0.8, top_k=8),
                                      dict(strategy="sample", temperature=1.3, top_p=0.9)])
def test_generate_equals_llmctl_decoder(saved, lm_model, lm_tokenizer, settings):
    """Same tokens as `llmctl.generate.decode.Decoder` (what `llmctl generate` runs) for the same settings and seed:
    greedy, and sampling through the same filters and per-(seed, row, step) random stream."""
    from llmctl.generate.decode import Decoder

    prompts = [lm_tokenizer.encode(p) for p in ("The quick brown ", "A lang", "Small models")]
    decoder = Decoder(lm_model, jit_compile=False, **settings)
    expected = decoder.generate(prompts, 30, seed=1234)
    out = _generate(saved, prompts, [len(p) for p in prompts], 30, temperature=settings.get("temperature", 0.0)
                    if settings["strategy"] == "sample" else 0.0, top_k=settings.get("top_k") or 0,
                    top_p=settings.get("top_p") or 1.0, seed=1234)
    for row, seqs in enumerate(expected.sequences):
        got = out["token_ids"][row, : out["lengths"][row]].tolist()
        assert [t for t in got if t != 3] == seqs[0]  # Decoder leaves the final <eos> out


def test_generate_equals_llmctls_in_graph_greedy_decoder(saved, lm_model, lm_tokenizer):
    """Same continuation as the reference `GreedyDecoder` (prefill + tf.while_loop over the Keras model)."""
    from tests.generate.reference_decoders import GreedyDecoder

    prompts = [lm_tokenizer.encode(p) for p in ("The quick brown ", "The dog")]
    decoder = GreedyDecoder(lm_model, max_new_tokens=30)
    for prompt, expected in zip(prompts, decoder(prompts), strict=True):
        out = _generate(saved, [prompt], [len(prompt)], 30)
        got = out["token_ids"][0, : out["lengths"][0]].tolist()
        assert [t for t in got if t != 3] == expected  # GreedyDecoder cuts at <eos>


def test_generate_handles_ragged_prompts_like_single_rows(saved, lm_tokenizer):
    prompts = [lm_tokenizer.encode(p) for p in ("The quick brown ", "A lang", "Small models run fast")]
    lengths = [len(p) for p in prompts]
    batched = _generate(saved, prompts, lengths, 25)
    for row, prompt in enumerate(prompts):
        single = _generate(saved, [prompt], [len(prompt)], 25)
        assert batched["token_ids"][row].tolist() == single["token_ids"][0].tolist()


def test_generate_sampling_is_seeded_and_respects_top_k(saved, lm_model, lm_tokenizer):
    prompt = lm_tokenizer.encode(PROMPT)
    a = _generate(saved, [prompt, prompt], [len(prompt)] * 2, 30, temperature=1.0, seed=11)
    b = _generate(saved, [prompt, prompt], [len(prompt)] * 2, 30, temperature=1.0, seed=11)
    c = _generate(saved, [prompt, prompt], [len(prompt)] * 2, 30, temperature=1.0, seed=12)
    assert a["token_ids"].tolist() == b["token_ids"].tolist()
    assert a["token_ids"].tolist() != c["token_ids"].tolist()
    # top_k = 1 is greedy whatever the temperature
    k1 = _generate(saved, [prompt], [len(prompt)], 30, temperature=1.5, top_k=1, seed=5)
    assert k1["token_ids"][0, : k1["lengths"][0]].tolist() == keras_greedy(lm_model, prompt, 30)


def test_generate_zero_new_tokens(saved, lm_tokenizer):
    prompt = lm_tokenizer.encode(PROMPT)
    out = _generate(saved, [prompt], [len(prompt)], 0)
    assert out["token_ids"].shape == (1, 0) and out["lengths"].tolist() == [0]


def test_decode_stops_rows_at_eos_and_pads():
    """graphs.decode on a model whose output always prefers <eos> after one step: rows stop, pads follow."""
    from llmctl.export import graphs
    from llmctl.models.lstm_lm import LSTMLanguageModel
    from llmctl.tfenv import import_tf

    tf = import_tf()
    model = LSTMLanguageModel(12, 4, 1, 6, dropout=0.0, output_dropout=0.0)
    model.build()
    bias = np.zeros(12, np.float32)
    bias[3] = 50.0
    model.head.bias.assign(bias)
    tokens, lengths = graphs.decode(model, tf.constant([[7, 8, 0], [9, 0, 0]]), tf.constant([3, 1]), 5,
                                    0.0, 0, 1.0, 0, eos_id=3, pad_id=0)
    assert tokens.numpy().tolist() == [[3, 0, 0, 0, 0], [3, 0, 0, 0, 0]]
    assert lengths.numpy().tolist() == [1, 1]


PLAIN_TF_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["keras"] = None  # prove the SavedModel needs no Keras (and no llmctl) to load and run
    import numpy as np
    import tensorflow as tf
    path, ids, prompt = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    m = tf.saved_model.load(path)
    out = m.signatures["prefill"](token_ids=tf.constant(ids, tf.int32))
    state = {k: v for k, v in out.items() if k != "logits"}
    step = m.signatures["step"](token_id=tf.constant([ids[0][-1]] * len(ids), tf.int32), **state)
    gen = m.signatures["generate"](prompt_ids=tf.constant([prompt], tf.int32),
                                   prompt_lengths=tf.constant([len(prompt)], tf.int32),
                                   max_new_tokens=tf.constant(20), temperature=tf.constant(0.0),
                                   top_k=tf.constant(0), top_p=tf.constant(1.0), seed=tf.constant(0, tf.int64))
    print(json.dumps({"logits": out["logits"].numpy().tolist(), "step": step["logits"].numpy().tolist(),
                      "generated": gen["token_ids"].numpy()[0, :int(gen["lengths"][0])].tolist(),
                      "modules": sorted(m for m in sys.modules if m.split(".")[0] == "llmctl")}))
""")


def test_loads_in_a_fresh_process_with_plain_tensorflow(lm_export, lm_model, lm_tokenizer):
    ids = np.asarray(lm_tokenizer.encode(TEXT), np.int32)[:30].reshape(2, 15)
    prompt = lm_tokenizer.encode(PROMPT)
    proc = subprocess.run([sys.executable, "-c", PLAIN_TF_SCRIPT, str(lm_export[0] / "saved_model"),
                           json.dumps(ids.tolist()), json.dumps(prompt)], capture_output=True, text=True,
                          timeout=300, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["modules"] == []
    ref_logits, ref_flat = keras_logits(lm_model, ids)
    assert max_abs_diff(got["logits"], ref_logits) < TOL
    # the step input repeats the last prompt token of row 0 in every row
    ref_step0, _ = lm_model(np.full((2, 1), ids[0, -1]), [(ref_flat[0], ref_flat[1]), (ref_flat[2], ref_flat[3])],
                            training=False)
    assert max_abs_diff(got["step"], np.asarray(ref_step0)[:, 0]) < TOL
    assert got["generated"] == keras_greedy(lm_model, prompt, 20)
