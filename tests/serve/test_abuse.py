"""Abuse and faults: every bad request is a 4xx with an OpenAI-style error naming the problem — never a 500, never a
dead server; a full queue is 429 at once; a client that disconnects mid-stream frees its row; the API key."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from tests.serve.conftest import API_KEY
from tests.serve.servers import metric, request

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def post(server, body, headers=AUTH, path="/v1/completions"):
    return request(server.host, server.port, "POST", path, body, headers=headers)


def assert_error(answer, status, want_status, param=None, code=None, words=()):
    assert status == want_status, answer
    err = answer["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["param"] == param
    if code is not None:
        assert err["code"] == code
    for word in words:
        assert word in err["message"]


@pytest.mark.parametrize("body,param,code,words", [
    (b'{"prompt": "The", "max_tokens": 5', None, "invalid_json", ["not valid JSON"]),
    (b"\xff\xfe not utf-8", None, "invalid_json", ["UTF-8"]),
    (b'["a", "list"]', None, "invalid_json", ["JSON object", "array"]),
    (b"", None, "invalid_json", []),
    ({"max_tokens": 5}, "prompt", "missing", ["required"]),
    ({"prompt": 17}, "prompt", "invalid_type", ["string"]),
    ({"prompt": []}, "prompt", "invalid_type", []),
    ({"prompt": [1, 2, 3]}, "prompt", "unsupported_parameter", ["token ids"]),
    ({"prompt": "The", "max_tokens": "5"}, "max_tokens", "invalid_type", ["integer", "string"]),
    ({"prompt": "The", "max_tokens": 2.5}, "max_tokens", "invalid_type", []),
    ({"prompt": "The", "max_tokens": True}, "max_tokens", "invalid_type", []),
    ({"prompt": "The", "max_tokens": 0}, "max_tokens", "invalid_value", ["between 1 and 64"]),
    ({"prompt": "The", "max_tokens": -3}, "max_tokens", "invalid_value", []),
    ({"prompt": "The", "max_tokens": 65}, "max_tokens", "invalid_value", ["serve.max_tokens_limit"]),
    ({"prompt": "The", "temperature": "hot"}, "temperature", "invalid_type", []),
    ({"prompt": "The", "temperature": -0.1}, "temperature", "invalid_value", []),
    ({"prompt": "The", "top_p": 0}, "top_p", "invalid_value", []),
    ({"prompt": "The", "top_p": 1.5}, "top_p", "invalid_value", []),
    ({"prompt": "The", "stop": 5}, "stop", "invalid_type", []),
    ({"prompt": "The", "stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value", ["at most 4"]),
    ({"prompt": "The", "stop": [""]}, "stop", "invalid_value", []),
    ({"prompt": "The", "seed": "1"}, "seed", "invalid_type", []),
    ({"prompt": "The", "stream": "yes"}, "stream", "invalid_type", []),
    ({"prompt": "The", "n": 2}, "n", "unsupported_parameter", []),
    ({"prompt": "The", "logprobs": 3}, "logprobs", "unsupported_parameter", []),
    ({"prompt": "The", "echo": True}, "echo", "unsupported_parameter", []),
    ({"prompt": "The", "best_of": 2}, "best_of", "unsupported_parameter", []),
    ({"prompt": "The", "frobnicate": 1}, "frobnicate", "unsupported_parameter", ["frobnicate"]),
    ({"prompt": "x" * 60}, "prompt", "context_length_exceeded", ["serve.max_prompt_tokens"]),
    ({"prompt": ["ok", "y" * 60]}, "prompt", "context_length_exceeded", ["prompt[1]"]),
    ({"prompt": ["a"] * 9}, "prompt", "invalid_value", ["serve.max_prompts"]),
])
def test_bad_completion_requests_are_400_naming_the_field(server, body, param, code, words):
    status, answer, _ = post(server, body)
    assert_error(answer, status, 400, param, code, words)


def test_no_op_values_of_openai_fields_are_accepted(server):
    status, answer, _ = post(server, {"prompt": "The", "max_tokens": 3, "n": 1, "echo": False, "logprobs": None,
                                      "presence_penalty": 0, "frequency_penalty": 0.0, "best_of": 1, "user": "u1"})
    assert status == 200, answer


def test_wrong_model_wrong_endpoint_wrong_method(server):
    status, answer, _ = post(server, {"model": "gpt-4", "prompt": "The"})
    assert_error(answer, status, 404, code="model_not_found", words=["tiny_lm"])
    status, answer, _ = post(server, {"input": "text"}, path="/v1/classify")
    assert_error(answer, status, 400, code="wrong_endpoint", words=["/v1/completions"])
    status, answer, _ = request(server.host, server.port, "GET", "/v1/completions", headers=AUTH)
    assert_error(answer, status, 405)
    status, answer, _ = request(server.host, server.port, "GET", "/v2/nothing", headers=AUTH)
    assert_error(answer, status, 404)


def test_body_too_large_is_413_with_and_without_content_length(server):
    big = json.dumps({"prompt": "x" * 10_000}).encode()
    status, answer, _ = post(server, big)
    assert_error(answer, status, 413, code="body_too_large", words=["4096", "serve.max_body_bytes"])
    # chunked transfer encoding: no Content-Length, the limit still holds while reading
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        head = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(head.encode())
        for i in range(0, len(big), 1000):
            part = big[i:i + 1000]
            sock.sendall(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        reply = b""
        while b"body_too_large" not in reply:   # headers and body may arrive in separate reads
            part = sock.recv(65536)
            if not part:
                break
            reply += part
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "body_too_large" in reply


def test_api_key_is_required_on_v1_only(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        status, answer, _ = post(server, {"prompt": "The", "max_tokens": 2}, headers=headers)
        assert_error(answer, status, 401, code="invalid_api_key")
        status, answer, _ = request(server.host, server.port, "GET", "/v1/models", headers=headers)
        assert status == 401
    assert request(server.host, server.port, "GET", "/health")[0] == 200
    assert request(server.host, server.port, "GET", "/metrics")[0] == 200


def test_openai_client_sees_the_errors(server, client):
    import openai

    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="tiny_lm", prompt="The", max_tokens=0)
    assert bad.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.completions.create(model="tiny_lm", prompt="The", max_tokens=2, extra_body={"mirostat": 2})
    assert unknown.value.body["param"] == "mirostat"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="The", max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).completions.create(
            model="tiny_lm", prompt="The", max_tokens=2)


def test_server_still_answers_after_the_abuse_and_counted_no_500(server):
    status, answer, _ = post(server, {"prompt": "The", "max_tokens": 4, "temperature": 0})
    assert status == 200 and answer["choices"][0]["finish_reason"] in ("stop", "length")
    assert request(server.host, server.port, "GET", "/health")[0] == 200
    assert metric(server.host, server.port, "llmctl_errors_total", '{code="invalid_json"}') >= 1
    for status in ("500",):
        assert metric(server.host, server.port, "llmctl_requests_total",
                      f'{{endpoint="completions",status="{status}"}}') == 0


# ---------------------------------------------------------------- one row, one queue slot


def _stream_first_event(server, body):
    """Open a streamed completion on a raw socket; returns the socket after the first SSE event arrived."""
    sock = socket.create_connection((server.host, server.port), timeout=60)
    data = json.dumps({**body, "stream": True}).encode()
    sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    received = b""
    while b"data: " not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 200")
    return sock


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_queue_full_is_429_at_once(narrow_server):
    srv = narrow_server
    holder = _stream_first_event(srv, {"prompt": "The", "max_tokens": 2000, "temperature": 0})  # the only row
    waiting: dict = {}
    thread = threading.Thread(target=lambda: waiting.update(answer=post(srv, {"prompt": "A", "max_tokens": 2},
                                                                        headers={})))
    thread.start()
    try:
        assert _wait(lambda: srv.service.batcher.queued == 1)   # the only queue slot
        t0 = time.perf_counter()
        status, answer, headers = post(srv, {"prompt": "B", "max_tokens": 2}, headers={})
        assert time.perf_counter() - t0 < 5
        assert_error(answer, status, 429, code="queue_full", words=["serve.max_queue"])
        assert headers.get("retry-after") == "1"
    finally:
        holder.close()   # the client goes away: its row is freed, the queued request runs
    thread.join(120)
    assert waiting["answer"][0] == 200


def test_client_disconnect_mid_stream_frees_its_row(narrow_server):
    srv = narrow_server
    before = metric(srv.host, srv.port, "llmctl_generated_tokens_total")
    sock = _stream_first_event(srv, {"prompt": "The", "max_tokens": 2000, "temperature": 0})
    sock.close()
    assert _wait(lambda: srv.service.batcher.running == 0)
    produced = metric(srv.host, srv.port, "llmctl_generated_tokens_total") - before
    assert produced < 2000   # it left before its 2000 tokens
    # the row is free: the next request (max_batch = 1) is answered
    status, answer, _ = post(srv, {"prompt": "The", "max_tokens": 5, "temperature": 0}, headers={})
    assert status == 200 and answer["usage"]["completion_tokens"] <= 5
    assert request(srv.host, srv.port, "GET", "/health")[0] == 200


def test_client_disconnect_while_waiting_for_a_plain_completion_frees_its_row(narrow_server):
    srv = narrow_server
    before = metric(srv.host, srv.port, "llmctl_generated_tokens_total")
    data = json.dumps({"prompt": "The", "max_tokens": 2000, "temperature": 0}).encode()
    sock = socket.create_connection((srv.host, srv.port), timeout=60)
    sock.sendall(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    assert _wait(lambda: srv.service.batcher.running == 1)
    sock.close()
    assert _wait(lambda: srv.service.batcher.running == 0)
    assert metric(srv.host, srv.port, "llmctl_generated_tokens_total") - before < 2000
