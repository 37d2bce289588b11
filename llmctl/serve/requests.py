"""Request bodies of the OpenAI-compatible endpoints, checked field by field into typed objects.

Every problem is an `ApiError` 400 that names the field (`param`) and what it must be. Fields this server does not
implement are refused by name rather than ignored — except OpenAI fields sent at their no-op value (`n: 1`,
`echo: false`, `presence_penalty: 0`, ...), which some clients always send.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from llmctl.serve.errors import invalid

COMPLETION_FIELDS = ("model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "n", "user")
# OpenAI fields accepted only at the value that changes nothing
NO_OP = {"best_of": (1,), "echo": (False,), "logprobs": (None,), "presence_penalty": (0, 0.0),
         "frequency_penalty": (0, 0.0), "logit_bias": (None, {}), "suffix": (None,), "stream_options": (None,)}
MAX_STOPS = 4
MAX_TEMPERATURE = 100.0


@dataclass(frozen=True)
class Defaults:
    """What a completion request gets for the fields it leaves out (from the run's `generate` section)."""

    max_tokens: int
    temperature: float        # 0 = greedy
    top_p: float | None
    seed: int
    stop: tuple[str, ...]


@dataclass
class Completion:
    model: str | None
    prompts: list[str]
    single: bool              # `prompt` was a string (not a list)
    max_tokens: int
    temperature: float        # 0 = greedy
    top_p: float | None
    stop: list[str]
    seed: int
    stream: bool


@dataclass
class Classify:
    model: str | None
    inputs: list[str]
    single: bool


def parse_json(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise invalid("request body is not UTF-8 text: send JSON encoded as UTF-8", code="invalid_json") from None
    except json.JSONDecodeError as exc:
        raise invalid(f"request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): send "
                      "one JSON object", code="invalid_json") from None
    if not isinstance(data, dict):
        raise invalid(f"request body must be a JSON object, got a JSON {_kind(data)}", code="invalid_json")
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__)


def _unknown(data: dict[str, Any], known: tuple[str, ...], no_op: dict[str, tuple]) -> None:
    for key, value in data.items():
        if key in known:
            continue
        if key in no_op:
            if any(value == ok and type(value) is type(ok) or (value is None and ok is None) for ok in no_op[key]):
                continue
            allowed = " or ".join(json.dumps(ok) for ok in no_op[key])
            raise invalid(f"`{key}` is not supported by this server (only {allowed}, which changes nothing)",
                          param=key, code="unsupported_parameter")
        raise invalid(f"unknown or unsupported field `{key}`: this endpoint takes {', '.join(known)}", param=key,
                      code="unsupported_parameter")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _texts(value: Any, field: str, max_items: int) -> tuple[list[str], bool]:
    if isinstance(value, str):
        return [value], True
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) > max_items:
            raise invalid(f"`{field}` has {len(value)} entries, more than this server takes in one request "
                          f"({max_items}, serve.max_prompts / serve.max_queue): split it over several requests",
                          param=field)
        return list(value), False
    if isinstance(value, list) and value and all(_is_int(v) for v in value):
        raise invalid(f"`{field}` as token ids is not supported: send the text", param=field,
                      code="unsupported_parameter")
    raise invalid(f"`{field}` must be a string or a non-empty array of strings, got {_kind(value)}", param=field,
                  code="invalid_type")


def parse_completion(data: dict[str, Any], defaults: Defaults, *, max_tokens_limit: int,
                     max_prompts: int) -> Completion:
    """The completion request in `data` (a parsed JSON object)."""
    _unknown(data, COMPLETION_FIELDS, NO_OP)
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid(f"`model` must be a string, got {_kind(model)}", param="model", code="invalid_type")
    if "prompt" not in data:
        raise invalid("`prompt` is required: a string or an array of strings", param="prompt", code="missing")
    prompts, single = _texts(data["prompt"], "prompt", max_prompts)

    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        max_tokens = min(defaults.max_tokens, max_tokens_limit)
    elif not _is_int(max_tokens):
        raise invalid(f"`max_tokens` must be an integer, got {_kind(max_tokens)}", param="max_tokens",
                      code="invalid_type")
    elif not 1 <= max_tokens <= max_tokens_limit:
        raise invalid(f"`max_tokens` must be between 1 and {max_tokens_limit} (serve.max_tokens_limit), got "
                      f"{max_tokens}", param="max_tokens")

    temperature = data.get("temperature")
    if temperature is None:
        temperature = defaults.temperature
    elif not _is_number(temperature):
        raise invalid(f"`temperature` must be a number, got {_kind(temperature)}", param="temperature",
                      code="invalid_type")
    elif not 0 <= temperature <= MAX_TEMPERATURE:
        raise invalid(f"`temperature` must be between 0 (greedy) and {MAX_TEMPERATURE:g}, got {temperature}",
                      param="temperature")

    top_p = data.get("top_p")
    if top_p is None:
        top_p = defaults.top_p
    elif not _is_number(top_p):
        raise invalid(f"`top_p` must be a number, got {_kind(top_p)}", param="top_p", code="invalid_type")
    elif not 0 < top_p <= 1:
        raise invalid(f"`top_p` must be in (0, 1], got {top_p}", param="top_p")

    stop = data.get("stop")
    if stop is None:
        stops = list(defaults.stop)
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        raise invalid(f"`stop` must be a string or an array of strings, got {_kind(stop)}", param="stop",
                      code="invalid_type")
    if len(stops) > MAX_STOPS:
        raise invalid(f"`stop` takes at most {MAX_STOPS} strings, got {len(stops)}", param="stop")
    if any(not s for s in stops):
        raise invalid("`stop` strings must not be empty", param="stop")

    seed = data.get("seed")
    if seed is None:
        seed = defaults.seed
    elif not _is_int(seed):
        raise invalid(f"`seed` must be an integer, got {_kind(seed)}", param="seed", code="invalid_type")

    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid(f"`stream` must be true or false, got {_kind(stream)}", param="stream", code="invalid_type")

    n = data.get("n", 1)
    if n is not None and (not _is_int(n) or n != 1):
        raise invalid(f"`n` must be 1 (one completion per prompt), got {json.dumps(n)}", param="n",
                      code="unsupported_parameter")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise invalid(f"`user` must be a string, got {_kind(user)}", param="user", code="invalid_type")
    return Completion(model=model, prompts=prompts, single=single, max_tokens=int(max_tokens),
                      temperature=float(temperature), top_p=None if top_p is None else float(top_p), stop=stops,
                      seed=int(seed), stream=stream)


def parse_classify(data: dict[str, Any], *, max_prompts: int) -> Classify:
    _unknown(data, ("model", "input", "user"), {})
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid(f"`model` must be a string, got {_kind(model)}", param="model", code="invalid_type")
    if "input" not in data:
        raise invalid("`input` is required: a string or an array of strings", param="input", code="missing")
    inputs, single = _texts(data["input"], "input", max_prompts)
    return Classify(model=model, inputs=inputs, single=single)
