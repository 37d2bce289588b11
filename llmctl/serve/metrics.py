"""Prometheus metrics of one server (its own registry, so several servers in one process never collide).

`GET /metrics` answers `Metrics.render()` in the Prometheus text format: requests by endpoint and status, errors by
code, queue depth and rows being decoded, prompt and generated tokens, and a latency histogram by endpoint.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llmctl_requests", "HTTP requests answered", ["endpoint", "status"], registry=r)
        self.errors = Counter("llmctl_errors", "Requests answered with an error", ["code"], registry=r)
        self.queue_depth = Gauge("llmctl_queue_depth", "Prompts waiting for a batch slot", registry=r)
        self.active_rows = Gauge("llmctl_active_rows", "Prompts being decoded now", registry=r)
        self.prompt_tokens = Counter("llmctl_prompt_tokens", "Prompt tokens read", registry=r)
        self.generated_tokens = Counter("llmctl_generated_tokens", "Tokens generated", registry=r)
        self.batch_rows = Histogram("llmctl_batch_rows", "Rows per decode-loop call", registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
        self.latency = Histogram("llmctl_request_latency_seconds", "Time from request to last byte", ["endpoint"],
                                 registry=r, buckets=LATENCY_BUCKETS)
        self.ready = Gauge("llmctl_ready", "1 once the model is loaded and warmed up", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
