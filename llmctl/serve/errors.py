"""Errors a request can cause, answered as OpenAI-style JSON: `{"error": {"message", "type", "param", "code"}}`.

Raised anywhere under a route; `llmctl.serve.app` turns every `ApiError` into its status code and JSON body. A
request never gets a 500 for something it sent: anything unexpected is a bug, logged and answered with a 500 of
the same shape, and the server keeps answering.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """One error answer: HTTP `status`, a one-line `message` naming the problem (and the fix), OpenAI's `type`, the
    request field at fault (`param`) and a machine-readable `code`."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str | None = "invalid_value") -> ApiError:
    """400: the request body is not what the endpoint takes."""
    return ApiError(400, message, param=param, code=code)


def unauthorized() -> ApiError:
    return ApiError(401, "missing or wrong API key: send the header `Authorization: Bearer KEY` with the server's "
                         "serve.api_key", type="authentication_error", code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"})


def not_found(message: str, code: str = "not_found") -> ApiError:
    return ApiError(404, message, code=code)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than {limit} bytes (serve.max_body_bytes): send less text per "
                         "request", code="body_too_large")


def queue_full(limit: int) -> ApiError:
    return ApiError(429, f"the server is at capacity ({limit} prompts queued, serve.max_queue): retry shortly",
                    type="rate_limit_error", code="queue_full", headers={"Retry-After": "1"})


def not_ready(state: str) -> ApiError:
    return ApiError(503, f"the model is not ready yet ({state}): poll GET /health until it answers 200",
                    type="server_error", code="not_ready", headers={"Retry-After": "1"})


def shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down and takes no new requests", type="server_error",
                    code="shutting_down")


def internal(exc: BaseException) -> ApiError:
    return ApiError(500, f"internal error ({type(exc).__name__}): please report it with the server log",
                    type="server_error", code="internal_error")
