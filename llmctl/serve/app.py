"""The HTTP routes: an OpenAI-compatible subset over a `Service`, on FastAPI (Starlette) — served by uvicorn.

| route | what |
|---|---|
| `GET /health` | 200 `{"status": "ready"}` once the model is loaded and warmed up, else 503 |
| `GET /metrics` | Prometheus text format (`llmctl.serve.metrics`) |
| `GET /v1/models`, `GET /v1/models/{id}` | the run: id (run name), kind, tokenizer fingerprint, limits |
| `POST /v1/completions` | language-model / prompt→response runs; `stream: true` answers server-sent events |
| `POST /v1/classify` | classifier runs: label + probabilities per input, the numbers of `llmctl predict` |

Every error is OpenAI-style JSON (`errors.ApiError`) with a 4xx status for anything the client did (malformed JSON,
wrong types, limits, unknown fields, 401 without the API key, 404, 405, 413, 429) and never takes the server down.
`/v1/*` needs `Authorization: Bearer KEY` when `serve.api_key` is set; /health and /metrics never do.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import threading
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmctl.serve.errors import ApiError, internal, invalid, not_found, not_ready, too_large, unauthorized
from llmctl.serve.requests import parse_classify, parse_completion, parse_json
from llmctl.serve.service import require_kind

log = logging.getLogger("llmctl.serve")
DRAIN_LIMIT = 64 << 20   # a too-large body is read (and dropped) up to this size so the client gets its 413


def create_app(service, metrics, api_key: str | None = None, on_ready=None) -> FastAPI:
    """The ASGI app over `service` (already loaded; warmed up in a thread at start-up; `on_ready(seconds)` is
    called once it is ready) with its `metrics`."""
    cfg = service.cfg

    @contextlib.asynccontextmanager
    async def lifespan(app):
        def warm():
            try:
                service.warm_up()
            except Exception:  # noqa: BLE001 - the server keeps answering /health (503) and says why in the log
                service.state = "failed"
                log.exception("warm-up failed")
                return
            if on_ready is not None:
                on_ready(service.ready_at - service.started)

        threading.Thread(target=warm, name="llmctl-warm-up", daemon=True).start()
        yield
        await asyncio.to_thread(service.close)

    app = FastAPI(title="llmctl serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def error_response(exc: ApiError, endpoint: str) -> JSONResponse:
        metrics.errors.labels(code=exc.code or str(exc.status)).inc()
        metrics.requests.labels(endpoint=endpoint, status=str(exc.status)).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            err = not_found(f"no route {request.method} {request.url.path}: see GET /v1/models, POST "
                            "/v1/completions, POST /v1/classify, GET /health, GET /metrics")
        elif exc.status_code == 405:
            err = ApiError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed")
        else:
            err = ApiError(exc.status_code, str(exc.detail), code=str(exc.status_code))
        return error_response(err, "other")

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode("utf-8", "replace"), f"Bearer {api_key}".encode("utf-8")):
            raise unauthorized()

    def check_ready() -> None:
        if service.state != "ready":
            raise not_ready(service.state)

    async def read_json(request: Request) -> dict[str, Any]:
        limit = cfg.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise invalid("the Content-Length header is not a number", code="invalid_header")
            if int(declared) > limit:
                await _drain(request)
                raise too_large(limit)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                await _drain(request, size)
                raise too_large(limit)
            chunks.append(chunk)
        return parse_json(b"".join(chunks))

    async def guarded(endpoint: str, request: Request, handler) -> Response:
        t0 = time.perf_counter()
        try:
            response = await handler()
        except ApiError as exc:
            return error_response(exc, endpoint)
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 JSON; the server goes on
            log.exception("%s failed", endpoint)
            return error_response(internal(exc), endpoint)
        if not isinstance(response, StreamingResponse):
            metrics.requests.labels(endpoint=endpoint, status=str(response.status_code)).inc()
            metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - t0)
        return response

    # ---------------------------------------------------------------- routes

    @app.get("/health")
    async def health():
        body = {"status": service.state, "model": service.name, "kind": service.kind}
        if service.state == "ready":
            body.update(ready_after_s=round(service.ready_at - service.started, 3),
                        queued=service.batcher.queued if service.batcher else 0,
                        running=service.batcher.running if service.batcher else 0)
        return JSONResponse(body, status_code=200 if service.state == "ready" else 503)

    @app.get("/metrics")
    async def metrics_route():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def models(request: Request):
        async def handler():
            check_key(request)
            return JSONResponse({"object": "list", "data": [service.model_card()]})
        return await guarded("models", request, handler)

    @app.get("/v1/models/{model_id}")
    async def model(request: Request, model_id: str):
        async def handler():
            check_key(request)
            service.check_model(model_id)
            return JSONResponse(service.model_card())
        return await guarded("models", request, handler)

    @app.post("/v1/completions")
    async def completions(request: Request):
        async def handler():
            check_key(request)
            check_ready()
            require_kind(service, "completions")
            data = await read_json(request)
            req = parse_completion(data, service.defaults, max_tokens_limit=cfg.max_tokens_limit,
                                   max_prompts=min(cfg.max_prompts, cfg.max_queue))
            service.check_model(req.model)
            encoded = service.encode(req)
            return await _complete(service, metrics, request, req, encoded)
        return await guarded("completions", request, handler)

    @app.post("/v1/classify")
    async def classify(request: Request):
        async def handler():
            check_key(request)
            check_ready()
            require_kind(service, "classify")
            data = await read_json(request)
            req = parse_classify(data, max_prompts=cfg.max_prompts)
            service.check_model(req.model)
            predictions = await asyncio.to_thread(service.classify, req.inputs)
            return JSONResponse({"object": "list", "model": service.name,
                                 "data": [{"index": i, **p} for i, p in enumerate(predictions)]})
        return await guarded("classify", request, handler)

    return app


async def _drain(request: Request, seen: int = 0) -> None:
    """Read and drop the rest of a too-large body (bounded), so the client is not cut off mid-send."""
    with contextlib.suppress(Exception):
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > DRAIN_LIMIT:
                break


async def _complete(service, metrics, request: Request, req, encoded) -> Response:
    from llmctl.generate.decode import RowSettings
    from llmctl.serve.batcher import Job

    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    jobs = []
    for i, ids in enumerate(encoded.ids):
        greedy = req.temperature == 0
        settings = RowSettings(req.max_tokens, seed=req.seed, row=i, greedy=greedy,
                               temperature=1.0 if greedy else req.temperature, top_p=req.top_p)

        def sink(event, i=i):
            loop.call_soon_threadsafe(events.put_nowait, (i, event))

        jobs.append(Job(ids, settings, list(req.stop), req.stream, sink))
    service.batcher.submit(jobs)       # 429 at once when the queue is full
    prompt_tokens = sum(len(ids) for ids in encoded.ids)
    metrics.prompt_tokens.inc(prompt_tokens)
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": service.name, "system_fingerprint": service.fingerprint}
    t0 = time.perf_counter()

    def cancel() -> None:
        for job in jobs:
            job.cancel()

    if req.stream:
        return StreamingResponse(_sse(head, jobs, events, cancel, metrics, t0), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    results: dict[int, tuple] = {}
    try:
        while len(results) < len(jobs):
            try:
                i, event = await asyncio.wait_for(events.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    cancel()
                    return Response(status_code=499)
                continue
            if event[0] == "error":
                cancel()
                raise ApiError(500, event[1], type="server_error", code="decode_failed")
            if event[0] == "done":
                results[i] = event
    except asyncio.CancelledError:
        cancel()
        raise
    choices = [{"text": results[i][1], "index": i, "logprobs": None, "finish_reason": results[i][2]}
               for i in range(len(jobs))]
    completion_tokens = sum(results[i][3] for i in range(len(jobs)))
    return JSONResponse({**head, "choices": choices,
                         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                   "total_tokens": prompt_tokens + completion_tokens}})


async def _sse(head, jobs, events: asyncio.Queue, cancel, metrics, t0) -> AsyncIterator[bytes]:
    """Server-sent events: one `data:` chunk per text delta, a final chunk per prompt with its finish_reason,
    then `data: [DONE]`. A client that goes away cancels its rows (they leave the batch at the next chunk)."""
    done = 0
    status = "200"
    try:
        while done < len(jobs):
            i, event = await events.get()
            if event[0] == "delta":
                choice = {"text": event[1], "index": i, "logprobs": None, "finish_reason": None}
            elif event[0] == "done":
                done += 1
                choice = {"text": "", "index": i, "logprobs": None, "finish_reason": event[2]}
            else:
                status = "500"
                err = {"error": {"message": event[1], "type": "server_error", "param": None, "code": "decode_failed"}}
                yield f"data: {json.dumps(err)}\n\n".encode()
                break
            yield f"data: {json.dumps({**head, 'choices': [choice]}, ensure_ascii=False)}\n\n".encode()
        yield b"data: [DONE]\n\n"
    except BaseException:
        status = "499"
        raise
    finally:
        cancel()
        metrics.requests.labels(endpoint="completions", status=status).inc()
        metrics.latency.labels(endpoint="completions").observe(time.perf_counter() - t0)
