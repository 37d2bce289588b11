"""Session fixtures: a tiny trained language-model run and classifier run (tests/export/tiny_runs.py), and the
servers over them (uvicorn in a thread on a free loopback port), each started once."""

from __future__ import annotations

import pytest

from tests.export.tiny_runs import make_classifier_run, make_lm_run
from tests.serve.servers import ThreadServer, load

API_KEY = "test-key-123"
# the main server: small limits so that every limit can be hit with small requests; the XLA loop (the default)
MAIN = ("serve.max_batch=4", "serve.max_queue=32", "serve.max_prompts=8", "serve.max_tokens_limit=64",
        "serve.max_prompt_tokens=40", "serve.max_body_bytes=4096", f"serve.api_key={API_KEY}", "serve.chunk=4",
        "serve.batch_wait_ms=30", "serve.xla=true", "generate.strategy=sample", "generate.temperature=0.9")
# one row, one queue slot, one step per loop call, no EOS before 2000 tokens: a long request holds the only row
# until its client goes away
NARROW = ("serve.max_batch=1", "serve.max_queue=1", "serve.max_tokens_limit=2000", "serve.chunk=1",
          "serve.batch_wait_ms=0", "serve.xla=false", "generate.min_new_tokens=2000")


@pytest.fixture(scope="session")
def serve_lm_run(tmp_path_factory):
    return make_lm_run(tmp_path_factory.mktemp("serve_runs"), name="tiny_lm", steps=80)


@pytest.fixture(scope="session")
def serve_classifier_run(tmp_path_factory):
    return make_classifier_run(tmp_path_factory.mktemp("serve_runs"), name="tiny_classifier", steps=20)


@pytest.fixture(scope="session")
def server(serve_lm_run):
    srv = ThreadServer(load(serve_lm_run, *MAIN))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def narrow_server(serve_lm_run):
    srv = ThreadServer(load(serve_lm_run, *NARROW))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def classifier_server(serve_classifier_run):
    srv = ThreadServer(load(serve_classifier_run))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
