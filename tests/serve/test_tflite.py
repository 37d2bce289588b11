"""`serve.backend: tflite`: the exported int8 step model behind the same API — completions and streams through the
official client, the same errors, the graph loop's token choice (numpy twin, checked against TensorFlow), and its
agreement with the float32 graph backend on the tiny run (measured; the demo-size numbers are in docs/serve.md)."""

from __future__ import annotations

import numpy as np
import pytest

from llmctl.serve import tflite_backend as tb
from tests.serve.conftest import API_KEY, MAIN
from tests.serve.servers import ThreadServer, load, request

AUTH = {"Authorization": f"Bearer {API_KEY}"}
PROMPTS = ["The quick", "A language", "The dog", "Small models", "The fox", "The lazy", "It", "The sun"]
# measured on the tiny run (2x24 LSTM, char vocabulary, 80 Adam steps): teacher-forced top-1 99.75 %, greedy
# completions identical 8/8 (30 tokens each); the bounds leave room for other machines' float rounding
MIN_TOP1 = 0.95
MIN_SAME_GREEDY = 0.75


@pytest.fixture(scope="module")
def tflite_server(serve_lm_run):
    srv = ThreadServer(load(serve_lm_run, *MAIN, "serve.backend=tflite"))
    yield srv
    srv.stop()


def test_numpy_token_choice_equals_the_graph_loop():
    from llmctl.generate import graph_sampling as gs
    from llmctl.generate.decode import Decoder
    from llmctl.tfenv import import_tf

    tf = import_tf()
    rng = np.random.default_rng(0)
    n, vocab = 48, 300
    for trial in range(4):
        logits = (rng.standard_normal((n, vocab)) * (1 + trial)).astype(np.float32)
        temperature = rng.uniform(0.3, 1.5, n).astype(np.float32)
        targets = np.array([gs.top_p_target(p) for p in rng.choice([None, 0.5, 0.9, 1.0], n)], np.float32)
        seed = rng.integers(0, 2**31 - 1, n).astype(np.int32)
        rows = rng.integers(0, 40, n).astype(np.int32)
        steps = rng.integers(0, 300, n).astype(np.int32)
        assert np.array_equal(tb.row_uniforms(seed, rows, steps),
                              gs.row_uniforms(tf.constant(seed), tf.constant(rows), tf.constant(steps)).numpy())
        for k in (None, 20):
            want = gs.sample_rows(tf.constant(logits), tf.constant(temperature), tf.constant(targets),
                                  tf.constant(seed), tf.constant(rows), tf.constant(steps), top_k=k).numpy()
            assert np.array_equal(tb.sample_rows(logits, temperature, targets, seed, rows, steps, top_k=k), want)
    # the logit processors: repetition penalty over the generated tokens, EOS masked before min_new_tokens
    graph = Decoder(None, strategy="sample", repetition_penalty=1.3, min_new_tokens=4)
    ours = tb.TFLiteDecoder.__new__(tb.TFLiteDecoder)
    ours.repetition_penalty, ours.min_new_tokens, ours.eos_id = 1.3, 4, 3
    generated = np.full((n, 10), -1, np.int32)
    lengths = rng.integers(0, 10, n).astype(np.int32)
    for r in range(n):
        generated[r, :lengths[r]] = rng.integers(0, vocab, lengths[r])
    want = graph._process(tf.constant(logits), tf.constant(lengths), tf.constant(generated)).numpy()
    assert np.array_equal(ours.process(logits, lengths, generated), want)


def test_tflite_backend_serves_completions_and_streams(tflite_server):
    import openai

    client = openai.OpenAI(base_url=tflite_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    card = client.models.list().data[0].model_dump()
    assert card["backend"]["name"] == "tflite" and card["backend"]["bytes"] > 0
    plain = client.completions.create(model="tiny_lm", prompt="The quick", max_tokens=24, temperature=0.8, top_p=0.9,
                                      seed=4)
    assert 0 < plain.usage.completion_tokens <= 24 and plain.choices[0].finish_reason in ("stop", "length")
    again = client.completions.create(model="tiny_lm", prompt="The quick", max_tokens=24, temperature=0.8, top_p=0.9,
                                      seed=4)
    assert again.choices[0].text == plain.choices[0].text   # seeded: the same text
    chunks = list(client.completions.create(model="tiny_lm", prompt="The quick", max_tokens=24, temperature=0.8,
                                            top_p=0.9, seed=4, stream=True))
    texts = [c.choices[0].text for c in chunks]
    assert "".join(texts) == plain.choices[0].text and sum(1 for t in texts if t) >= 2
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    out = client.completions.create(model="tiny_lm", prompt=["The quick", "The lazy"], max_tokens=40, temperature=0,
                                    stop=["o"])
    assert [c.index for c in out.choices] == [0, 1] and all("o" not in c.text for c in out.choices)


def test_tflite_errors_are_the_graph_backends(tflite_server, server):
    bodies = [{"prompt": "x", "max_tokens": 0}, {"prompt": "x", "logprobs": 3}, {"prompt": "x" * 200},
              {"prompt": 5}, {"prompt": "x", "n": 2}, {"prompt": "x", "model": "other"}]
    for body in bodies:
        got = request(tflite_server.host, tflite_server.port, "POST", "/v1/completions", body, headers=AUTH)
        want = request(server.host, server.port, "POST", "/v1/completions", body, headers=AUTH)
        assert got[0] == want[0] and 400 <= got[0] < 500, (body, got)
        assert got[1]["error"]["code"] == want[1]["error"]["code"] and got[1]["error"]["param"] == want[1]["error"][
            "param"]
    status, _, _ = request(tflite_server.host, tflite_server.port, "POST", "/v1/completions", {"prompt": "x"})
    assert status == 401
    assert request(tflite_server.host, tflite_server.port, "GET", "/health")[0] == 200


def test_tflite_agrees_with_the_float32_graph_backend(tflite_server, server):
    from tests.export.tiny_runs import TEXT

    tokenizer = server.service.tokenizer
    numbers = tb.agreement(server.service.decoder.model, tflite_server.service.decoder,
                           tokenizer.encode(TEXT * 2)[:400])
    assert numbers["top1"] >= MIN_TOP1, numbers
    same = 0
    for prompt in PROMPTS:
        body = {"prompt": prompt, "max_tokens": 30, "temperature": 0}
        a = request(server.host, server.port, "POST", "/v1/completions", body, headers=AUTH)
        b = request(tflite_server.host, tflite_server.port, "POST", "/v1/completions", body, headers=AUTH)
        assert a[0] == b[0] == 200
        same += a[1]["choices"][0]["text"] == b[1]["choices"][0]["text"]
    assert same / len(PROMPTS) >= MIN_SAME_GREEDY, (same, numbers)


def test_runs_saved_with_the_earlier_backend_name_still_load():
    from llmctl.schema import Experiment

    assert Experiment.model_validate({"serve": {"backend": "tf"}}).serve.backend == "graph"
    with pytest.raises(ValueError, match="graph"):
        Experiment.model_validate({"serve": {"backend": "onnx"}})
