"""The run behind a server: loaded and checked before the port is bound, warmed up after.

`Service(exp)` opens the run (`RUN_OR_CONFIG` → `exp.run.dir/exp.run.name`) exactly as `generate` / `predict` do —
a missing or damaged run is a one-line `ArtifactError` before anything listens — and holds either

* a language-model / prompt→response run: its decoder — `serve.backend: graph`, the in-graph `Decoder`, or
  `tflite`, `tflite_backend.TFLiteDecoder` over the exported int8 step model (per-row settings, the run's
  `generate.top_k`, `repetition_penalty` and `min_new_tokens` for every row) — and a `Batcher` thread; prompts
  are encoded by `generate.encode_prompts` (same conditioning prefix, same normalisation), or
* a classifier run: `predict.Classifier`, the code and numbers of `llmctl predict`.

`warm_up()` traces every graph a request can need (prefill; the greedy, sampling and top-p variants of the decode
loop) so that the first request is not slow; `state` is `loading` → `warming` → `ready`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from llmctl.serve.errors import invalid
from llmctl.serve.requests import Completion, Defaults


class _Warnings:
    """A `Reporter` stand-in for `encode_prompts`: per-request warnings (unknown characters) are not printed."""

    def __init__(self):
        self.messages: list[str] = []

    def warn(self, text: str) -> None:
        self.messages.append(text)


@dataclass
class Encoded:
    ids: list[list[int]]
    warnings: list[str]


class Service:
    def __init__(self, exp, metrics=None):
        from llmctl.inference_run import open_run
        from llmctl.runs import RunDir

        self.exp = exp
        self.cfg = exp.serve
        self.metrics = metrics
        self.state = "loading"
        self.started = time.time()
        self.ready_at: float | None = None
        self.lock = threading.Lock()
        run = RunDir.of(exp)
        run.require_model()
        kind = run.read_info().get("kind", "lm")
        self.name = run.root.name
        self.batcher = None
        self.classifier = None
        self.backend: dict[str, Any] = {"name": self.cfg.backend}
        if kind == "classify":
            from llmctl.predict import Classifier

            self.classifier = Classifier(run, exp.evaluate.checkpoint)
            self.kind = "classify"
            self.fingerprint = self.classifier.run.read_info().get("tokenizer_fingerprint")
            self.tokenizer = self.classifier.tokenizer
            self.checkpoint = self.classifier.loaded.get("checkpoint")
            return
        self.opened = open_run(exp)
        self.kind = self.opened.kind
        self.fingerprint = self.opened.fingerprint
        self.tokenizer = self.opened.tokenizer
        self._load_language_model()

    def _load_language_model(self) -> None:
        from llmctl.generate.decode import Decoder
        from llmctl.inference_run import load_language_model
        from llmctl.serve.batcher import Batcher

        gen, cfg = self.exp.generate, self.cfg
        model, checkpoint = load_language_model(self.opened, gen.checkpoint)
        self.checkpoint = checkpoint.get("path")
        if cfg.backend == "tflite":
            from llmctl.serve.tflite_backend import tflite_decoder

            self.decoder, self.backend = tflite_decoder(self.exp, self.opened, model, checkpoint, top_k=gen.top_k,
                                                        repetition_penalty=gen.repetition_penalty,
                                                        min_new_tokens=gen.min_new_tokens)
        else:
            self.decoder = Decoder(model, strategy="sample", top_k=gen.top_k,
                                   repetition_penalty=gen.repetition_penalty, min_new_tokens=gen.min_new_tokens,
                                   jit_compile=cfg.xla)
            self.backend = {"xla": cfg.xla}
        self.backend = {"name": cfg.backend, **self.backend}
        seed = gen.seed if gen.seed is not None else self.exp.run.seed
        self.defaults = Defaults(max_tokens=gen.max_new_tokens,
                                 temperature=gen.temperature if gen.strategy == "sample" else 0.0,
                                 top_p=gen.top_p if gen.strategy == "sample" else None, seed=seed,
                                 stop=tuple(gen.stop))
        self.batcher = Batcher(self.decoder, self.tokenizer, max_batch=cfg.max_batch,
                               batch_wait_ms=cfg.batch_wait_ms, max_queue=cfg.max_queue, chunk=cfg.chunk,
                               width=cfg.max_tokens_limit, metrics=self.metrics)

    # ---------------------------------------------------------------- lifecycle

    def warm_up(self) -> None:
        """Trace every graph a request can need, then start the decoder thread; state becomes `ready`."""
        self.state = "warming"
        if self.classifier is not None:
            self.classifier.predict(["warm up", "a second, longer text to warm up with"])
        else:
            from llmctl.generate.decode import RowSettings
            from llmctl.serve.batcher import host

            # every loop the batcher can run: XLA — the one full variant at each padded row count; plain graph —
            # each variant (greedy / sampling / sampling with top-p), traced once for any row count
            batcher = self.batcher
            kinds = [(False, 0.9)] if batcher.full else [(True, None), (False, None), (False, 0.9)]
            for greedy, top_p in kinds:
                for rows in batcher.buckets or [2]:
                    settings = [RowSettings(2, seed=1, row=i, greedy=greedy, temperature=0.9, top_p=top_p)
                                for i in range(min(rows, 2))]
                    batch = self.decoder.start([[3, 5, 6], [3]][:len(settings)], settings,
                                               self.cfg.max_tokens_limit)
                    batch, _ = self.decoder.advance(batch, 2, pad_to=batcher.pad_to(rows), full=batcher.full)
                    host(type(batch).concat(batch, batch).take([1]).generated)
            self.batcher.start()
        self.state = "ready"
        self.ready_at = time.time()
        if self.metrics is not None:
            self.metrics.ready.set(1)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.stop(self.cfg.graceful_timeout_s)

    # ---------------------------------------------------------------- model description

    def model_card(self) -> dict[str, Any]:
        card = {"id": self.name, "object": "model", "created": int(self.started), "owned_by": "llmctl",
                "kind": self.kind, "tokenizer_fingerprint": self.fingerprint, "tokenizer": self.tokenizer.kind,
                "vocab_size": self.tokenizer.vocab_size, "checkpoint": self.checkpoint}
        if self.classifier is not None:
            card["labels"] = list(self.classifier.labels)
            card["endpoints"] = ["/v1/classify"]
        else:
            card["endpoints"] = ["/v1/completions"]
            card["backend"] = dict(self.backend)
            card["limits"] = {"max_tokens": self.cfg.max_tokens_limit, "max_prompt_tokens": self.cfg.max_prompt_tokens,
                              "max_prompts": self.cfg.max_prompts}
        return card

    def check_model(self, requested: str | None) -> None:
        from llmctl.serve.errors import not_found

        if requested is not None and requested != self.name:
            raise not_found(f"model `{requested}` is not served here: this server serves `{self.name}` (see "
                            "GET /v1/models)", code="model_not_found")

    # ---------------------------------------------------------------- requests

    def encode(self, request: Completion) -> Encoded:
        """Token ids of each prompt with its run's conditioning prefix; 400 for a prompt above the limit."""
        from llmctl.generate.generate import encode_prompts

        warnings = _Warnings()
        ids = encode_prompts(self.opened, request.prompts, warnings)
        limit = self.cfg.max_prompt_tokens
        for i, row in enumerate(ids):
            if len(row) > limit:
                where = "`prompt`" if request.single else f"`prompt[{i}]`"
                raise invalid(f"{where} is {len(row)} tokens, more than this server takes ({limit}, "
                              "serve.max_prompt_tokens): shorten it", param="prompt",
                              code="context_length_exceeded")
        return Encoded(ids, warnings.messages)

    def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        with self.lock:
            return self.classifier.predict(texts)


def require_kind(service: Service, endpoint: str) -> None:
    """400 when the endpoint does not fit the run's kind."""
    if endpoint == "completions" and service.kind == "classify":
        raise invalid(f"`{service.name}` is a classifier run: it labels texts through POST /v1/classify, it does "
                      "not write text", code="wrong_endpoint")
    if endpoint == "classify" and service.kind != "classify":
        raise invalid(f"`{service.name}` is a `{service.kind}` run: it writes text through POST /v1/completions; "
                      "/v1/classify needs a classifier run", code="wrong_endpoint")
