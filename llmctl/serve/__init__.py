"""`llmctl serve`: a trained run as an HTTP service (OpenAI-compatible subset), with dynamic batching.

    run(exp, on_event=print_fn)   # blocks until SIGTERM / Ctrl-C; returns a Result

Modules: `service` (the run, loaded before binding), `batcher` (the decoder thread: dynamic batching over the one
in-graph decode loop), `app` (routes), `requests` (request bodies), `errors` (OpenAI-style errors), `metrics`
(Prometheus). FastAPI + uvicorn are imported only here, when a server starts.

Start-up: the run is opened and its model loaded first, so a missing run or checkpoint is a one-line error (exit 4)
before anything listens; then the socket is bound (a port in use is a resource error, exit 6), the warm-up runs in
the background (/health answers 503 until it is done) and the server answers. SIGTERM (or Ctrl-C) stops accepting
connections, lets in-flight requests finish (up to `serve.graceful_timeout_s`), ends the decoder thread and returns
normally: exit 0 for SIGTERM, 130 for Ctrl-C like every other command.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Callable

from llmctl.errors import ConfigError, ResourceError
from llmctl.results import Result

API_KEY_ENV = "LLMCTL_API_KEY"


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"serve.host {host!r} is not an address this machine can bind ({exc.strerror})",
                          hint="use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ResourceError(f"cannot listen on {host}:{port}: {exc.strerror}",
                            hint="pick another --port (0 = any free port) or stop the program using it") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def build(exp, on_ready: Callable[[float], None] | None = None):
    """(service, app, metrics) for `exp` — the model loaded, not yet warmed up (tests serve this in a thread)."""
    from llmctl.serve.app import create_app
    from llmctl.serve.metrics import Metrics
    from llmctl.serve.service import Service
    from llmctl.tfenv import import_tf

    import_tf()
    metrics = Metrics()
    service = Service(exp, metrics)
    api_key = exp.serve.api_key or os.environ.get(API_KEY_ENV) or None
    return service, create_app(service, metrics, api_key=api_key, on_ready=on_ready), metrics


def run(exp, reporter=None, on_event: Callable[[str, dict], None] | None = None) -> Result:
    """Serve until SIGTERM / Ctrl-C. `on_event(name, values)`: `listening` {url, model, kind} once bound,
    `ready` {seconds} once warmed up, `stopped` {} after a graceful stop (the CLI prints them)."""
    import uvicorn

    cfg = exp.serve
    emit = on_event or (lambda name, values: None)
    t0 = time.time()
    service, app, _ = build(exp, on_ready=lambda seconds: emit("ready", {"seconds": time.time() - t0}))
    sock = _bind(cfg.host, cfg.port)
    url = url_of(sock)
    config = uvicorn.Config(app, log_level="warning", access_log=cfg.access_log, lifespan="on",
                            timeout_graceful_shutdown=int(cfg.graceful_timeout_s), ws="none")
    server = uvicorn.Server(config)
    terminated = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the signal it stopped for once it is done; with this handler a SIGTERM ends in a normal
        # return (exit 0) instead of the default action (killed by the signal)
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.set())
    emit("listening", {"url": url, "model": service.name, "kind": service.kind})
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    emit("stopped", {})
    return Result(title=f"serve: {service.name}", values={"url": url, "model": service.name, "kind": service.kind,
                                                           "seconds": time.time() - t0}, rendered=True)
