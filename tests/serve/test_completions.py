"""`llmctl serve` completions against `llmctl generate`: the same text for the same prompt, seed and settings, one
request at a time and many at once (dynamic batching: rows with different settings and lengths decoded together),
through the official `openai` client (plain and streamed) and plain HTTP."""

from __future__ import annotations

import io
import json
import sys
from concurrent.futures import ThreadPoolExecutor

from llmctl.generate import generate
from llmctl.progress import Reporter
from tests.serve.conftest import API_KEY, MAIN
from tests.serve.servers import load, request

AUTH = {"Authorization": f"Bearer {API_KEY}"}
FINISH = {"eos": "stop", "stop": "stop", "length": "length"}

# (request fields, the `llmctl generate` settings that mean the same)
CASES = [
    ({"prompt": "The quick", "max_tokens": 30, "temperature": 0},
     ("generate.strategy=greedy", "generate.max_new_tokens=30")),
    ({"prompt": "A language", "max_tokens": 40, "temperature": 0.8, "top_p": 0.9, "seed": 5},
     ("generate.strategy=sample", "generate.temperature=0.8", "generate.top_p=0.9", "generate.seed=5",
      "generate.max_new_tokens=40")),
    ({"prompt": "The dog", "max_tokens": 25, "temperature": 1.3, "seed": 11},
     ("generate.strategy=sample", "generate.temperature=1.3", "generate.seed=11", "generate.max_new_tokens=25")),
    ({"prompt": ["The quick", "Small models", "The"], "max_tokens": 20, "temperature": 1.0, "seed": 2},
     ("generate.strategy=sample", "generate.temperature=1.0", "generate.seed=2", "generate.max_new_tokens=20")),
    ({"prompt": "The fox", "max_tokens": 60, "temperature": 0.7, "seed": 3, "stop": [" the", "og"]},
     ("generate.strategy=sample", "generate.temperature=0.7", "generate.seed=3", "generate.max_new_tokens=60",
      'generate.stop=[" the", "og"]')),
    ({"prompt": "A", "max_tokens": 3, "temperature": 0.5, "top_p": 0.5, "seed": 99},
     ("generate.strategy=sample", "generate.temperature=0.5", "generate.top_p=0.5", "generate.seed=99",
      "generate.max_new_tokens=3")),
    # fields left out take the run's generate section (here: sample at temperature 0.9, seed = run.seed)
    ({"prompt": "The lazy", "max_tokens": 50}, ("generate.max_new_tokens=50",)),
]


def generated(run, prompts, overrides):
    """`llmctl generate --json` records for `prompts` with the server's config + `overrides`."""
    out = io.StringIO()
    saved, sys.stdout = sys.stdout, out
    try:
        generate.run(load(run, *MAIN, *overrides), reporter=Reporter("none"), prompts=prompts, as_json=True)
    finally:
        sys.stdout = saved
    return [json.loads(line) for line in out.getvalue().splitlines()]


def expected(run):
    out = []
    for body, overrides in CASES:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        out.append([(r["text"], FINISH[r["finish_reason"]]) for r in generated(run, prompts, overrides)])
    return out


def complete(server, body):
    status, answer, _ = request(server.host, server.port, "POST", "/v1/completions", {"model": "tiny_lm", **body},
                                headers=AUTH)
    assert status == 200, answer
    return [(c["text"], c["finish_reason"]) for c in sorted(answer["choices"], key=lambda c: c["index"])]


def test_completions_equal_generate_one_at_a_time_and_batched(server, serve_lm_run):
    want = expected(serve_lm_run)
    assert any(len(text) > 0 for case in want for text, _ in case)
    assert len({text for case in want for text, _ in case}) > 5   # the cases really differ
    alone = [complete(server, body) for body, _ in CASES]
    assert alone == want
    batcher = server.service.batcher
    batcher.max_rows = 0
    with ThreadPoolExecutor(len(CASES) * 2) as pool:   # every case twice, all at once
        together = list(pool.map(lambda body: complete(server, body), [body for body, _ in CASES] * 2))
    assert together == want + want
    assert batcher.max_rows > 1   # they were decoded together


def test_openai_client_completion_usage_and_stream(server, client):
    plain = client.completions.create(model="tiny_lm", prompt="The quick", max_tokens=24, temperature=0.8, seed=4)
    assert plain.object == "text_completion" and plain.model == "tiny_lm"
    assert len(plain.choices) == 1 and plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.prompt_tokens == len("The quick") + 1   # <eos> first: the start of a document
    assert 0 < plain.usage.completion_tokens <= 24
    chunks = list(client.completions.create(model="tiny_lm", prompt="The quick", max_tokens=24, temperature=0.8,
                                            seed=4, stream=True))
    texts = [c.choices[0].text for c in chunks]
    assert "".join(texts) == plain.choices[0].text
    assert sum(1 for t in texts if t) >= 2   # token by token, not one blob
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_openai_client_list_prompt_and_stop(server, client):
    out = client.completions.create(model="tiny_lm", prompt=["The quick", "The lazy"], max_tokens=40,
                                    temperature=0, stop=["o"])
    assert [c.index for c in out.choices] == [0, 1]
    for choice in out.choices:
        assert "o" not in choice.text
    streamed = {}
    for chunk in client.completions.create(model="tiny_lm", prompt=["The quick", "The lazy"], max_tokens=40,
                                           temperature=0, stop=["o"], stream=True):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert streamed == {c.index: c.text for c in out.choices}


def test_models_and_health(server, client):
    models = client.models.list()
    card = models.data[0]
    assert card.id == "tiny_lm"
    extra = card.model_dump()
    assert extra["kind"] == "lm" and len(extra["tokenizer_fingerprint"]) == 16
    status, health, _ = request(server.host, server.port, "GET", "/health")
    assert status == 200 and health["status"] == "ready"
    status, text, headers = request(server.host, server.port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in ("llmctl_requests_total", "llmctl_queue_depth", "llmctl_generated_tokens_total",
                 "llmctl_request_latency_seconds_bucket", "llmctl_errors_total"):
        assert name in text
